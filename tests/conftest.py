"""Shared test set-up: CPU only, quiet TensorFlow, a persistent compilation cache."""
import os
import pathlib
import subprocess
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'

jax.config.update('jax_compilation_cache_dir', str(ROOT / '.pytest_cache' / 'jax'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


@pytest.fixture(scope='session')
def shared_dir() -> pathlib.Path:
  """../shared (reference data and T5X fixtures), read in place; absent in a user's clone."""
  if not SHARED.is_dir():
    pytest.skip(f'{SHARED} is absent (a user clone without the reference data); CI has it')
  return SHARED


# Subprocesses (`t5x ...`) run on the CPU, quietly, sharing the compilation cache.
ENV = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3',
           JAX_COMPILATION_CACHE_DIR=str(ROOT / '.pytest_cache' / 'jax'))


@pytest.fixture(scope='session')
def quickstart(tmp_path_factory):
  """(MODEL_DIR, completed process) of the README's quickstart, trained once per session."""
  model_dir = tmp_path_factory.mktemp('quickstart') / 'model'
  proc = subprocess.run(
      [sys.executable, '-m', 't5x_cli.main', 'train', '--gin_file=gin/quickstart.gin',
       f'--gin.MODEL_DIR="{model_dir}"'],
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return model_dir, proc


@pytest.fixture(scope='session')
def served(quickstart, tmp_path_factory):
  """(URL, session log folder) of `t5x serve` on the quickstart model, for the session."""
  sys.path.insert(0, str(ROOT / 'benchmarks'))
  import serve_load
  log_dir = tmp_path_factory.mktemp('copoet_sessions')
  with serve_load.running_server(quickstart[0], log_dir, seed=0, env=ENV) as url:
    yield url, log_dir
