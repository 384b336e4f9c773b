#!/usr/bin/env bash
# Deletes the TPU VM / pod slice (and its queued resource). MODEL_DIR in GCS is kept.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS="$TPU_SETTINGS"
SWITCHES="$TPU_SWITCHES YES"
parse_flags "$@"
tpu_defaults
: "${YES:=0}"

usage() {
  cat <<EOF
Usage: $PROGRAM [--flag=value ...]
Deletes TPU_NAME (with --queued: the queued resource QR_NAME and its TPU). Checkpoints
and logs in the bucket stay. Asks first unless --yes.

$(tpu_usage)
  YES               --yes                do not ask                   [$YES]
EOF
}
if [ "${HELP:-0}" = 1 ]; then usage; exit 0; fi

if [ "$QUEUED" = 1 ]; then
  confirm "Delete queued resource $QR_NAME and TPU $TPU_NAME in $ZONE?"
  # --force also deletes the TPU the queued resource created.
  run gcloud compute tpus queued-resources delete "$QR_NAME" "${TPU_FLAGS[@]}" --force --quiet
else
  confirm "Delete TPU $TPU_NAME in $ZONE?"
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${TPU_FLAGS[@]}" --quiet
fi
