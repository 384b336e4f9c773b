"""Shared test set-up: CPU only, quiet TensorFlow, a compilation cache that outlives the
clone (compile_cache.py), end-to-end runs started ahead of the tests that read them
(jobs.py), and the `slow` marker on every test that needs one of those runs."""
import gc
import os
import pathlib
import sys

import compile_cache

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
compile_cache.configure()  # before JAX is imported

import pytest  # noqa: E402

import jobs  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'

# Subprocesses (`t5x ...`) run on the CPU, quietly, sharing the compilation cache.
ENV = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items):
  """A test that reads an end-to-end run (a jobs.py fixture, such as the quickstart) is
  slow, like the run itself: `pytest -m "not slow"` leaves it out."""
  for item in items:
    if jobs.names_needed([item]):
      item.add_marker(pytest.mark.slow)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish():
  """After the tests only the exit is left: its garbage collections would walk the millions
  of objects TensorFlow, torch and JAX hold (5-7 s of the inner loop); freeze them out."""
  gc.freeze()


@pytest.fixture(scope='session', autouse=True)
def _jobs(request, tmp_path_factory):
  """Starts the end-to-end runs that the selected tests need, in the background."""
  runner = jobs.Runner(tmp_path_factory)
  # (A pytest-xdist worker holds every test, not its share: there each job runs on demand.)
  if not hasattr(request.config, 'workerinput'):
    runner.start_ahead(jobs.names_needed(request.session.items))
  yield runner
  runner.stop()


@pytest.fixture(scope='session')
def shared_dir() -> pathlib.Path:
  """../shared (reference data and T5X fixtures), read in place; absent in a user's clone."""
  if not SHARED.is_dir():
    pytest.skip(f'{SHARED} is absent (a user clone without the reference data); CI has it')
  return SHARED


@jobs.fixture()
def quickstart(folder):
  """(MODEL_DIR, completed process) of the README's quickstart, trained once per session."""
  model_dir = folder / 'model'
  proc = jobs.run([sys.executable, '-m', 't5x_cli.main', 'train', '--gin_file=gin/quickstart.gin',
                   f'--gin.MODEL_DIR="{model_dir}"'], cwd=ROOT, env=ENV, timeout=900)
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
