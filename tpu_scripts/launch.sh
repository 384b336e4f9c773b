#!/usr/bin/env bash
# Starts `t5x train` (or infer / eval) on every worker of a TPU VM or pod slice.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS="$TPU_SETTINGS MODEL_DIR GIN_FILE T5X_COMMAND LOG_DIR WORKDIR VENV RUN_DIR LAUNCH_ID \
LOG_SYNC_SECONDS REMOTE_ENV"
SWITCHES="$TPU_SWITCHES FOLLOW"
parse_flags "$@"
tpu_defaults
: "${MODEL_DIR:=}" "${GIN_FILE:=gin/copoet_11b.gin}" "${T5X_COMMAND:=train}"
: "${LOG_DIR:=${MODEL_DIR%/}${MODEL_DIR:+/logs}}" "${WORKDIR:=t5x-instruct}" "${VENV:=t5x_venv}"
: "${RUN_DIR:=t5x_run}" "${LAUNCH_ID:=$(date -u +%Y%m%d-%H%M%S)}" "${LOG_SYNC_SECONDS:=120}"
: "${FOLLOW:=0}" "${REMOTE_ENV:=}"

usage() {
  cat <<EOF
Usage: $PROGRAM --model-dir=gs://BUCKET/RUN [--flag=value ...] [-- MORE_T5X_FLAGS ...]
Runs \`t5x T5X_COMMAND --gin_file=GIN_FILE --gin.MODEL_DIR="MODEL_DIR" MORE_T5X_FLAGS\`
on every worker at once, detached (closing this terminal does not stop it; a previous
job is stopped first). JAX finds the pod's other workers by itself: no multi-host flags.
Each worker's output goes to RUN_DIR/LAUNCH_ID/worker-N.log on the worker and is
copied to LOG_DIR/LAUNCH_ID/ every LOG_SYNC_SECONDS and at the end; its exit code to
LOG_DIR/worker-N.exit. Launching again with the same MODEL_DIR resumes from the latest
checkpoint there.

$(tpu_usage)
Job settings:
  MODEL_DIR         --model-dir          checkpoints etc.; gs:// so all workers share it [$MODEL_DIR]
  GIN_FILE          --gin-file           gin file(s), space-separated  [$GIN_FILE]
  T5X_COMMAND       --t5x-command        train, infer or eval          [$T5X_COMMAND]
  LOG_DIR           --log-dir            where logs are collected      [$LOG_DIR]
  LAUNCH_ID         --launch-id          names this launch's logs      [$LAUNCH_ID]
  LOG_SYNC_SECONDS  --log-sync-seconds   log copy period               [$LOG_SYNC_SECONDS]
  REMOTE_ENV        --remote-env         VAR=value ... for t5x on the workers, e.g.
                                         'COPOET_DATA_DIR=gs://b/copoet' [$REMOTE_ENV]
  WORKDIR / VENV / RUN_DIR (worker paths, relative to home) [$WORKDIR / $VENV / $RUN_DIR]
  FOLLOW            --follow             then follow worker 0's log    [$FOLLOW]

Example:
  $PROGRAM --name=copoet --model-dir=gs://my-bucket/copoet_11b --gin-file=gin/copoet_11b.gin \\
    -- --gin.copoet.data_dir.path=\\"gs://my-bucket/copoet_data\\"
EOF
}
if [ "${HELP:-0}" = 1 ]; then usage; exit 0; fi
[ -n "$MODEL_DIR" ] || die 'set MODEL_DIR (--model-dir=gs://BUCKET/RUN); see --help'

args=("$T5X_COMMAND")
read -ra gin_files <<<"$GIN_FILE"
for f in "${gin_files[@]}"; do args+=("--gin_file=$f"); done
if [ "$T5X_COMMAND" = train ]; then args+=("--gin.MODEL_DIR=\"$MODEL_DIR\""); fi
args+=("${EXTRA_ARGS[@]}")

remote="VENV=$(q "$VENV") WORKDIR=$(q "$WORKDIR") RUN_DIR=$(q "$RUN_DIR") LOG_DIR=$(q "$LOG_DIR")"
remote+=" LAUNCH_ID=$(q "$LAUNCH_ID") LOG_SYNC_SECONDS=$(q "$LOG_SYNC_SECONDS")"
read -ra remote_env <<<"$REMOTE_ENV"
for a in "${remote_env[@]}"; do
  [[ $a =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "REMOTE_ENV: '$a' is not VAR=value"
  remote+=" $(q "$a")"
done
remote+=" bash t5x_worker_run.sh start"
for a in "${args[@]}"; do remote+=" $(q "$a")"; done

run gcloud compute tpus tpu-vm scp "$SCRIPTS_DIR/worker_run.sh" "$TPU_NAME:t5x_worker_run.sh" \
  --worker=all "${TPU_FLAGS[@]}"
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${TPU_FLAGS[@]}" --worker=all --command="$remote"
echo "launch $LAUNCH_ID: logs in $LOG_DIR/$LAUNCH_ID/; follow with logs.sh --name=$TPU_NAME --follow" >&2
if [ "$FOLLOW" = 1 ]; then exec "$SCRIPTS_DIR/logs.sh" --follow; fi
