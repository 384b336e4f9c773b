#!/usr/bin/env bash
# Runs on each TPU worker (launch.sh copies it to ~/t5x_worker_run.sh): starts, stops and
# reports one detached `t5x` job, with its log copied to LOG_DIR while it runs.
set -euo pipefail

usage() {
  cat <<EOF
Usage: $(basename "$0") start T5X_ARGS... | stop | status
  start   stop any previous job, then run \`t5x T5X_ARGS...\` detached from this shell
  stop    end the job (its whole process group)
  status  exit 0 while the job runs, 3 when it does not; print its exit code if it ended
Settings (environment; paths relative to the home folder):
  VENV              the virtual environment           [${VENV:-t5x_venv}]
  WORKDIR           the checkout t5x runs in          [${WORKDIR:-t5x-instruct}]
  RUN_DIR           pid, exit codes, logs             [${RUN_DIR:-t5x_run}]
  LOG_DIR           gs://... or a folder to copy logs to (empty: none) [${LOG_DIR:-}]
  LAUNCH_ID         names this launch's log folder    [${LAUNCH_ID:-the UTC time}]
  LOG_SYNC_SECONDS  log copy period                   [${LOG_SYNC_SECONDS:-120}]
  WORKER_NUMBER     this worker's index (empty: asked from the TPU metadata server) [${WORKER_NUMBER:-}]
EOF
}
case ${1:-} in
  -h | --help) usage; exit 0 ;;
  start | stop | status | job) ;;
  *) usage >&2; exit 2 ;;
esac

cd ~
VENV=$(realpath -m "${VENV:-t5x_venv}")
WORKDIR=$(realpath -m "${WORKDIR:-t5x-instruct}")
RUN_DIR=$(realpath -m "${RUN_DIR:-t5x_run}")
LOG_DIR=${LOG_DIR:-}
LAUNCH_ID=${LAUNCH_ID:-$(date -u +%Y%m%d-%H%M%S)}
LOG_SYNC_SECONDS=${LOG_SYNC_SECONDS:-120}
mkdir -p "$RUN_DIR"

# This VM's index within the slice: the TPU metadata server knows it (WORKER_NUMBER
# overrides, e.g. off Google Cloud).
worker_number() {
  if [ -n "${WORKER_NUMBER:-}" ]; then echo "$WORKER_NUMBER"; return 0; fi
  curl -sf -m 5 -H 'Metadata-Flavor: Google' \
    http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number ||
    echo 0
}

# Copies files into LOG_DIR (a bucket or a folder); a failed copy never stops the job.
publish() {
  local dest=$1
  shift
  case $LOG_DIR in
    '') ;;
    gs://*) gcloud storage cp "$@" "$LOG_DIR/$dest" >/dev/null 2>&1 || true ;;
    *) mkdir -p "$LOG_DIR/$dest" && cp "$@" "$LOG_DIR/$dest" || true ;;
  esac
}

job_pgid() { cat "$RUN_DIR/pgid" 2>/dev/null || true; }

running() {
  local pgid
  pgid=$(job_pgid)
  [ -n "$pgid" ] && kill -0 -- "-$pgid" 2>/dev/null
}

stop() {
  if running; then
    local pgid
    pgid=$(job_pgid)
    kill -TERM -- "-$pgid"
    # Give the job a moment to finish writing, then make sure it is gone.
    for _ in 1 2 3 4 5 6 7 8 9 10; do running || break; sleep 1; done
    if running; then kill -KILL -- "-$pgid" || true; fi
  fi
  rm -f "$RUN_DIR/pgid"
}

# The detached job: `t5x ARGS` with its output in RUN_DIR/LAUNCH_ID/worker-N.log.
job() {
  ps -o pgid= $$ | tr -d ' ' >"$RUN_DIR/pgid"
  local n log rc syncer
  n=$(worker_number)
  mkdir -p "$RUN_DIR/$LAUNCH_ID"
  log=$RUN_DIR/$LAUNCH_ID/worker-$n.log
  ln -sfn "$log" "$RUN_DIR/current.log"
  rm -f "$RUN_DIR/worker-$n.exit"
  (while sleep "$LOG_SYNC_SECONDS"; do publish "$LAUNCH_ID/" "$log"; done) &
  syncer=$!
  if [ -d "$WORKDIR" ]; then cd "$WORKDIR"; fi
  if [ ! -d gin ] && [[ ${1:-} =~ ^(train|infer|eval)$ ]]; then
    # No checkout here (a wheel install): find gin/... inside the installed package.
    local package
    package=$("$VENV/bin/python" -c 'import os, t5x; print(os.path.dirname(t5x.__file__))')
    set -- "$1" "--gin_search_paths=$package" "${@:2}"
  fi
  echo "$(date -u +%FT%TZ) $(hostname) worker $n: t5x $*" >"$log"
  set +e
  "$VENV/bin/t5x" "$@" >>"$log" 2>&1
  rc=$?
  set -e
  echo "$(date -u +%FT%TZ) exit code $rc" >>"$log"
  kill "$syncer" 2>/dev/null || true
  echo "$rc" >"$RUN_DIR/worker-$n.exit"
  publish "$LAUNCH_ID/" "$log"
  publish "" "$RUN_DIR/worker-$n.exit"
  rm -f "$RUN_DIR/pgid"
}

command=$1
shift
case $command in
  start)
    [ $# -gt 0 ] || { usage >&2; exit 2; }
    stop
    n=$(worker_number)
    rm -f "$RUN_DIR/worker-$n.exit"
    # A new launch: forget the previous launch's exit code in LOG_DIR too.
    case $LOG_DIR in
      gs://*) gcloud storage rm "$LOG_DIR/worker-$n.exit" >/dev/null 2>&1 || true ;;
      ?*) rm -f "$LOG_DIR/worker-$n.exit" ;;
    esac
    # setsid: the job leads its own process group, so `stop` ends it and its children,
    # and the ssh session that started it can close.
    export VENV WORKDIR RUN_DIR LOG_DIR LAUNCH_ID LOG_SYNC_SECONDS
    setsid nohup bash "$(realpath "$0")" job "$@" >/dev/null 2>&1 </dev/null &
    for _ in $(seq 50); do [ -s "$RUN_DIR/pgid" ] && break; sleep 0.1; done
    echo "$(hostname) worker $n: started t5x $* (log: $RUN_DIR/$LAUNCH_ID/worker-$n.log)"
    ;;
  job) job "$@" ;;
  stop) stop ;;
  status)
    n=$(worker_number)
    if [ -f "$RUN_DIR/worker-$n.exit" ]; then echo "exit code $(cat "$RUN_DIR/worker-$n.exit")"; fi
    if running; then echo running; exit 0; fi
    echo 'not running'
    exit 3
    ;;
esac
