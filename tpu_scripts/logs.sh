#!/usr/bin/env bash
# Gathers the workers' logs into a local folder, or follows one worker's log live.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS="$TPU_SETTINGS MODEL_DIR LOG_DIR LOCAL_DIR WORKER RUN_DIR"
SWITCHES="$TPU_SWITCHES FOLLOW"
parse_flags "$@"
tpu_defaults
: "${MODEL_DIR:=}" "${LOG_DIR:=${MODEL_DIR%/}${MODEL_DIR:+/logs}}" "${LOCAL_DIR:=logs/$TPU_NAME}"
: "${WORKER:=0}" "${RUN_DIR:=t5x_run}" "${FOLLOW:=0}"

usage() {
  cat <<EOF
Usage: $PROGRAM [--flag=value ...]
Copies LOG_DIR (gs://..., written by launch.sh's workers) into LOCAL_DIR; without a
gs:// LOG_DIR, copies RUN_DIR from worker WORKER instead. With --follow, shows worker
WORKER's current log as it grows (Ctrl-C stops following, not the job).

$(tpu_usage)
Log settings:
  MODEL_DIR   --model-dir   the run (LOG_DIR defaults to MODEL_DIR/logs) [$MODEL_DIR]
  LOG_DIR     --log-dir     where the workers copy their logs         [$LOG_DIR]
  LOCAL_DIR   --local-dir   local destination                         [$LOCAL_DIR]
  WORKER      --worker      worker to follow or copy from             [$WORKER]
  RUN_DIR     --run-dir     the job folder on the workers (from home) [$RUN_DIR]
  FOLLOW      --follow      follow the log instead of copying         [$FOLLOW]
EOF
}
if [ "${HELP:-0}" = 1 ]; then usage; exit 0; fi

if [ "$FOLLOW" = 1 ]; then
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${TPU_FLAGS[@]}" --worker="$WORKER" \
    --command="tail -n 100 -F $(q "$RUN_DIR/current.log")"
elif [[ $LOG_DIR == gs://* ]]; then
  run mkdir -p "$LOCAL_DIR"
  run gcloud storage cp -r "$LOG_DIR" "$LOCAL_DIR"
else
  run mkdir -p "$LOCAL_DIR/worker-$WORKER"
  run gcloud compute tpus tpu-vm scp --recurse "$TPU_NAME:$RUN_DIR" "$LOCAL_DIR/worker-$WORKER" \
    --worker="$WORKER" "${TPU_FLAGS[@]}"
fi
