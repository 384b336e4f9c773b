"""End-to-end runs started ahead of the tests that need them, on the core pytest leaves idle.

pytest runs one test at a time, and most tests keep one core busy: on a 2-core machine the
other waits. The long end-to-end fixtures (train the quickstart, the two-process runs, the
8-device partition run, the benchmarks' smoke runs) do nothing but run subprocesses and
read what they wrote, and no test changes their inputs. Declared with `@jobs.fixture`,
each becomes a job: once pytest knows which tests it will run, one background thread runs
the jobs those tests need, one after another, in the order the tests will ask for them.

A fixture whose job has finished returns its value at once; one whose job is running
waits for it; one whose job has not started runs it itself. So a job runs at most once
per session, whichever thread gets to it, and `pytest -k ...` starts only what it needs.
A job's function gets a fresh folder and returns the fixture's value; its failure (an
assertion on a return code) fails the tests that use the fixture, as before.
"""
import subprocess
import threading
from typing import Callable

import pytest

_FUNCTIONS: dict[str, Callable] = {}  # fixture name -> fn(folder) -> value
_live: set = set()  # subprocesses started by jobs, killed if the session ends first
_lock = threading.Lock()


class _Job:
  """One run of fn(folder), by whichever thread asks first; the others wait for it."""

  def __init__(self, fn, folder):
    self._fn, self._folder = fn, folder
    self._claim = threading.Lock()
    self._done = threading.Event()
    self._started = False
    self._value = self._error = None

  def run(self) -> None:
    with self._claim:
      if self._started:
        return
      self._started = True
    try:
      self._value = self._fn(self._folder)
    except BaseException as e:  # pylint: disable=broad-except
      self._error = e
    finally:
      self._done.set()

  def result(self):
    self.run()
    self._done.wait()
    if self._error is not None:
      raise self._error
    return self._value


class Runner:
  """The session's jobs and the thread that runs them ahead."""

  def __init__(self, tmp_path_factory):
    self._tmp = tmp_path_factory
    self._jobs: dict[str, _Job] = {}
    self._stopped = False

  def job(self, name: str) -> _Job:
    with _lock:
      if name not in self._jobs:
        self._jobs[name] = _Job(_FUNCTIONS[name], self._tmp.mktemp(name))
      return self._jobs[name]

  def start_ahead(self, names: list[str]) -> None:
    """Runs these jobs one by one in a daemon thread (the session waits for none of them)."""
    jobs = [self.job(n) for n in names]

    def work():
      for job in jobs:
        if self._stopped:
          return
        job.run()
    threading.Thread(target=work, name='jobs-ahead', daemon=True).start()

  def stop(self) -> None:
    """Starts no more jobs and kills the subprocesses of those still running."""
    self._stopped = True
    with _lock:
      for proc in list(_live):
        proc.kill()


def fixture(scope: str = 'session'):
  """Declares fn(folder) -> value as a fixture named like fn, run as a job (see above).
  Names are global: two jobs may not share one."""
  def wrap(fn):
    assert fn.__name__ not in _FUNCTIONS, f'two jobs named {fn.__name__}'
    _FUNCTIONS[fn.__name__] = fn

    def value(request):
      return request.getfixturevalue('_jobs').job(fn.__name__).result()
    value.__doc__ = fn.__doc__
    return pytest.fixture(scope=scope, name=fn.__name__)(value)
  return wrap


def names_needed(items) -> list[str]:
  """The jobs these tests use (fixtures of fixtures included), in order of first use."""
  seen = {}
  for item in items:
    for name in getattr(item, 'fixturenames', ()):
      if name in _FUNCTIONS:
        seen.setdefault(name, None)
  return list(seen)


def popen(argv, **kw) -> subprocess.Popen:
  """subprocess.Popen, killed if the session ends before it does."""
  proc = subprocess.Popen(argv, **kw)
  with _lock:
    _live.add(proc)
  return proc


def communicate(proc: subprocess.Popen, timeout: float) -> tuple:
  try:
    return proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise
  finally:
    with _lock:
      _live.discard(proc)


def run(argv, timeout: float, **kw) -> subprocess.CompletedProcess:
  """subprocess.run(argv, capture_output=True, text=True, timeout=...), killable (above)."""
  proc = popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
  out, err = communicate(proc, timeout)
  return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def eight_device_result(script: str, env: dict, timeout: float = 900):
  """The JSON of the last `RESULT {...}` line that `python script` prints when run with 8
  simulated CPU devices (XLA_FLAGS added to `env`)."""
  import json
  import sys
  env = dict(env, XLA_FLAGS='--xla_force_host_platform_device_count=8')
  proc = run([sys.executable, script], env=env, timeout=timeout)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  assert proc.returncode == 0 and lines, proc.stderr[-3000:]
  return json.loads(lines[-1][len('RESULT '):])


def concurrently(*calls: Callable) -> list:
  """[call() for call in calls], each in its own thread: for independent subprocess runs
  inside one test. Re-raises the first failure, after all have ended."""
  results, errors = [None] * len(calls), [None] * len(calls)

  def one(i):
    try:
      results[i] = calls[i]()
    except BaseException as e:  # pylint: disable=broad-except
      errors[i] = e
  threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  for e in errors:
    if e is not None:
      raise e
  return results
