"""`t5x.load` on every source it accepts, and the `t5x` console script."""
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import hf_models
import t5x
from t5x import loader
from t5x_cli import main as cli
from t5x.conversion import converters


@pytest.fixture(scope='module')
def medium_model_dir(tmp_path_factory):
  """(transformers model, its HF folder, our MODEL_DIR) for a model whose max distance is 20."""
  model = hf_models.make('t5_1_1', 'medium', seed=5)
  root = tmp_path_factory.mktemp('api')
  model.save_pretrained(root / 'hf')
  converters.import_hf(str(root / 'hf'), str(root / 'model'))
  return model, root / 'hf', root / 'model'


def test_every_source_gives_the_same_logits(medium_model_dir):
  model, hf_dir, model_dir = medium_model_dir
  enc, dec = hf_models.padded_batch(model.config.vocab_size, seed=9)
  expected = hf_models.hf_logits(model, enc, dec)
  sources = [model_dir, model_dir / 'checkpoint_0', hf_dir]
  for source in sources:
    loaded = t5x.load(str(source))
    # Not derivable from shapes: it travels in model.gin (or config.json).
    assert loaded.config.relative_attention_max_distance == 20, source
    assert np.abs(loaded.logits(enc, dec) - expected).max() <= 1e-4, source


def test_the_notebook_model_is_what_the_loader_read(medium_model_dir):
  """t5x.load adds calls to the loader's result; both read the same numbers."""
  _, hf_dir, model_dir = medium_model_dir
  for source in (model_dir, hf_dir):
    read, model = loader.load(str(source)), t5x.load(str(source))
    assert isinstance(model, loader.Loaded) and not hasattr(read, 'generate')
    assert (read.config, read.source, read.merged_lora_rank) == (
        model.config, model.source, model.merged_lora_rank)
    flat = lambda m: jax.tree_util.tree_leaves_with_path(m.params)
    assert [p for p, _ in flat(read)] == [p for p, _ in flat(model)]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(flat(read), flat(model)))


def test_model_gin_describes_the_checkpoint(medium_model_dir):
  _, _, model_dir = medium_model_dir
  text = (model_dir / 'model.gin').read_text()
  assert 'network.T5Config:' in text and 'relative_attention_max_distance = 20' in text
  assert 'emb_dim = 48' in text and "mlp_activations = ('gelu', 'linear')" in text


def test_load_rejects_a_folder_without_a_model(tmp_path):
  with pytest.raises(FileNotFoundError, match='found no model'):
    t5x.load(str(tmp_path))


def test_logits_checks_its_inputs(medium_model_dir):
  loaded = t5x.load(str(medium_model_dir[2]))
  with pytest.raises(ValueError, match=r'\(2, 3\) and \(3, 3\)'):
    loaded.logits(np.ones((2, 3)), np.ones((3, 3)))


def test_console_script_lists_the_commands():
  # The script sits beside the interpreter of the venv it was installed into.
  exe = shutil.which('t5x', path=os.path.dirname(sys.executable)) or shutil.which('t5x')
  if exe is None:
    pytest.skip('the t5x console script is not installed (run `pip install -e .`)')
  out = subprocess.run([exe, '--help'], capture_output=True, text=True, check=True).stdout
  for command in ('import-hf', 'export-hf', 'import-t5x'):
    assert command in out


def test_cli_help_without_install(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(['--help'])
  assert e.value.code == 0 and 'import-t5x' in capsys.readouterr().out


def test_bfloat16_parameters_for_inference(medium_model_dir):
  model, _, model_dir = medium_model_dir
  full = t5x.load(str(model_dir))
  half = t5x.load(str(model_dir), param_dtype='bfloat16')
  leaves = lambda m: [np.asarray(x) for x in jax.tree_util.tree_leaves(m.params)]
  assert {x.dtype.name for x in leaves(half)} == {'bfloat16'}
  assert half.config.param_dtype == 'bfloat16' and half.config.dtype == full.config.dtype
  assert sum(x.nbytes for x in leaves(half)) * 2 == sum(x.nbytes for x in leaves(full))
  enc, dec = hf_models.padded_batch(model.config.vocab_size, seed=9)
  exact, rounded = full.logits(enc, dec), half.logits(enc, dec)
  # bfloat16 keeps 8 significant bits (relative rounding <= 2**-9 per weight); through this
  # 3+3-layer model the logits moved by 0.5% of their spread (0.26 of 51; measured), and
  # 98% of the argmax tokens stayed.
  spread = float(exact.max() - exact.min())
  assert 0 < np.abs(rounded - exact).max() <= 0.02 * spread
  assert np.mean(rounded.argmax(-1) == exact.argmax(-1)) >= 0.95
