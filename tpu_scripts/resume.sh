#!/usr/bin/env bash
# Brings a run back after preemption: recreates the TPU if it is gone, reinstalls, and
# relaunches with the same MODEL_DIR, which resumes from its latest checkpoint.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Everything create_tpu.sh, install.sh and launch.sh take, passed on to them.
SETTINGS="$TPU_SETTINGS ACCELERATOR_TYPE RUNTIME_VERSION CREATE_FLAGS SOURCE GIT_REF WORKDIR VENV \
PYTHON EXTRAS JAX_TPU MODEL_DIR GIN_FILE T5X_COMMAND LOG_DIR RUN_DIR LOG_SYNC_SECONDS \
REMOTE_ENV POLL_SECONDS MAX_RELAUNCHES ASSUME_STATE ASSUME_QR_STATE ASSUME_EXIT ASSUME_RUNNING"
SWITCHES="$TPU_SWITCHES SPOT PREEMPTIBLE RESERVED WATCH"
parse_flags "$@"
tpu_defaults
: "${MODEL_DIR:=}" "${LOG_DIR:=${MODEL_DIR%/}${MODEL_DIR:+/logs}}" "${RUN_DIR:=t5x_run}"
: "${POLL_SECONDS:=300}" "${MAX_RELAUNCHES:=3}" "${WATCH:=0}"
for name in $SETTINGS $SWITCHES; do
  if [ -n "${!name+set}" ]; then export "${name?}"; fi
done

usage() {
  cat <<EOF
Usage: $PROGRAM --model-dir=gs://BUCKET/RUN [--flag=value ...] [-- MORE_T5X_FLAGS ...]
Looks at TPU_NAME once (or, with --watch, every POLL_SECONDS until the run ends):
  gone                    create_tpu.sh, install.sh, launch.sh
  PREEMPTED / TERMINATED  teardown.sh --yes, then as above (spot TPUs cannot restart)
  STOPPED                 gcloud ... start, launch.sh
  READY, job running      nothing
  READY, job not running  launch.sh
  worker 0 exited 0       done (exit 0); exited non-zero: relaunch, at most
                          MAX_RELAUNCHES times, then stop (exit 1)
Every launch uses the same MODEL_DIR, so training continues from the latest checkpoint.
Takes all the settings of create_tpu.sh, install.sh and launch.sh (see their --help).

$(tpu_usage)
  MODEL_DIR       --model-dir        the run                          [$MODEL_DIR]
  LOG_DIR         --log-dir          where exit codes are read        [$LOG_DIR]
  WATCH           --watch            keep watching until the run ends [$WATCH]
  POLL_SECONDS    --poll-seconds     seconds between looks            [$POLL_SECONDS]
  MAX_RELAUNCHES  --max-relaunches   relaunches after failed exits    [$MAX_RELAUNCHES]
  ASSUME_STATE, ASSUME_QR_STATE, ASSUME_EXIT, ASSUME_RUNNING (0/3): what a dry run
                  pretends the queries answered [${ASSUME_STATE:-NOT_FOUND}, ${ASSUME_QR_STATE:-NOT_FOUND}, ${ASSUME_EXIT:-}, ${ASSUME_RUNNING:-0}]

Example (leave it running in tmux/screen):
  $PROGRAM --name=copoet --accelerator-type=v4-64 --spot --model-dir=gs://my-bucket/copoet_11b \\
    --gin-file=gin/copoet_11b.gin --watch
EOF
}
if [ "${HELP:-0}" = 1 ]; then usage; exit 0; fi
[ -n "$MODEL_DIR" ] || die 'set MODEL_DIR (--model-dir=gs://BUCKET/RUN); see --help'

step() { bash "$SCRIPTS_DIR/$1" "${@:2}"; }
launch() { step launch.sh -- "${EXTRA_ARGS[@]}"; }
rebuild() { step create_tpu.sh && step install.sh && launch; }

# ask ANSWER COMMAND...: runs a query; a dry run prints it and answers ANSWER instead.
ask() {
  local answer=$1
  shift
  if [ "$DRY_RUN" = 1 ]; then print_cmd "$@" >&2; echo "$answer"; return 0; fi
  "$@" 2>/dev/null || true
}

qr_state() {
  local state
  state=$(ask "${ASSUME_QR_STATE:-NOT_FOUND}" gcloud compute tpus queued-resources describe \
    "$QR_NAME" "${TPU_FLAGS[@]}" --format='value(state.state)')
  echo "${state:-NOT_FOUND}"
}

# Worker 0's exit code of the latest launch; empty while it runs (or never ran). Without
# a bucket it can only be read from worker 0 itself, so only while the TPU ($1) is READY.
exit_code() {
  if [[ $LOG_DIR == gs://* ]]; then
    ask "${ASSUME_EXIT:-}" gcloud storage cat "$LOG_DIR/worker-0.exit"
  elif [ "$1" = READY ]; then
    ask "${ASSUME_EXIT:-}" gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${TPU_FLAGS[@]}" \
      --worker=0 --command="cat $(q "$RUN_DIR/worker-0.exit")"
  fi
}

# 0: the job runs on worker 0; 3: it does not; anything else: ssh failed, ask later.
job_status() {
  local cmd=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${TPU_FLAGS[@]}" --worker=0
    --command="RUN_DIR=$(q "$RUN_DIR") bash t5x_worker_run.sh status")
  if [ "$DRY_RUN" = 1 ]; then print_cmd "${cmd[@]}" >&2; return "${ASSUME_RUNNING:-0}"; fi
  "${cmd[@]}"
}

relaunches=0
# One look and one action. Returns 10 when the run is over, 11 when giving up.
check_once() {
  local state code rc
  state=$(tpu_state)
  if [ "$QUEUED" = 1 ] && [ "$state" = NOT_FOUND ]; then
    state=$(qr_state)
    case $state in
      NOT_FOUND) ;;
      WAITING_FOR_RESOURCES | ACCEPTED | PROVISIONING | CREATING) state=QUEUED ;;
      *) state=PREEMPTED ;;  # FAILED, SUSPENDED: the queued resource must be redone
    esac
  fi
  code=$(exit_code "$state")
  echo "$(date -u +%FT%TZ) $TPU_NAME: ${state:-NOT_FOUND}${code:+, worker 0 exited $code}" >&2
  if [ "$code" = 0 ]; then
    echo "the run finished; tear the TPU down with teardown.sh --name=$TPU_NAME" >&2
    return 10
  fi
  if [ -n "$code" ]; then
    relaunches=$((relaunches + 1))
    if [ "$relaunches" -gt "$MAX_RELAUNCHES" ]; then
      echo "worker 0 failed (exit $code) after $MAX_RELAUNCHES relaunches; see $LOG_DIR" >&2
      return 11
    fi
  fi
  case ${state:-NOT_FOUND} in
    NOT_FOUND) rebuild ;;
    PREEMPTED | TERMINATED)
      YES=1 step teardown.sh
      rebuild
      ;;
    STOPPED)
      run gcloud compute tpus tpu-vm start "$TPU_NAME" "${TPU_FLAGS[@]}"
      launch
      ;;
    READY)
      if [ -n "$code" ]; then launch; return 0; fi
      rc=0
      job_status >/dev/null || rc=$?
      if [ "$rc" = 3 ]; then launch; fi
      ;;
    *) echo "waiting: $TPU_NAME is $state" >&2 ;;  # CREATING, RESTARTING, QUEUED, ...
  esac
}

while :; do
  rc=0
  check_once || rc=$?
  case $rc in
    0) ;;
    10) exit 0 ;;
    11) exit 1 ;;
    *) echo "this round failed (exit $rc); trying again later" >&2 ;;
  esac
  if [ "$WATCH" = 0 ] || [ "$DRY_RUN" = 1 ]; then exit "$rc"; fi
  sleep "$POLL_SECONDS"
done
