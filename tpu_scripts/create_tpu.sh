#!/usr/bin/env bash
# Creates a Cloud TPU VM or pod slice (directly, or through a queued resource).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS="$TPU_SETTINGS ACCELERATOR_TYPE RUNTIME_VERSION CREATE_FLAGS POLL_SECONDS"
SWITCHES="$TPU_SWITCHES SPOT PREEMPTIBLE RESERVED"
parse_flags "$@"
tpu_defaults
: "${ACCELERATOR_TYPE:=v4-64}"
: "${RUNTIME_VERSION:=$(default_runtime "$ACCELERATOR_TYPE")}"
: "${SPOT:=0}" "${PREEMPTIBLE:=0}" "${RESERVED:=0}" "${CREATE_FLAGS:=}" "${POLL_SECONDS:=60}"

usage() {
  cat <<EOF
Usage: $PROGRAM [--flag=value ...]
Creates TPU_NAME: a single TPU VM (v4-8, v5litepod-8, ...) or a pod slice (v4-64, v3-256,
...) whose workers all get the same image. With --queued the request waits in a queue
until capacity frees up; this script then polls until the TPU exists.

$(tpu_usage)
Creation settings:
  ACCELERATOR_TYPE  --accelerator-type   TPU type and size            [$ACCELERATOR_TYPE]
  RUNTIME_VERSION   --runtime-version    TPU software version         [$RUNTIME_VERSION]
                    (default by generation: v2/v3/v4 tpu-ubuntu2204-base, v5e
                    v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e)
  SPOT              --spot               spot capacity (cheap, can be preempted) [$SPOT]
  PREEMPTIBLE       --preemptible        preemptible (older form of spot; not queued) [$PREEMPTIBLE]
  RESERVED          --reserved           use the project's reservation [$RESERVED]
  CREATE_FLAGS      --create-flags       more gcloud flags, space-separated, e.g.
                                         '--service-account=SA --network=NET' [$CREATE_FLAGS]
  POLL_SECONDS      --poll-seconds       queued: seconds between checks [$POLL_SECONDS]

Example:
  $PROGRAM --name=copoet --zone=us-central2-b --accelerator-type=v4-64 --spot
EOF
}
if [ "${HELP:-0}" = 1 ]; then usage; exit 0; fi

read -ra extra <<<"$CREATE_FLAGS"
capacity=()
if [ "$SPOT" = 1 ]; then capacity+=(--spot); fi
if [ "$RESERVED" = 1 ]; then capacity+=(--reserved); fi

if [ "$QUEUED" = 1 ]; then
  # Queued resources know --spot and --reserved, not --preemptible.
  [ "$PREEMPTIBLE" = 0 ] || die '--preemptible does not apply to queued resources; use --spot'
  run gcloud compute tpus queued-resources create "$QR_NAME" "${TPU_FLAGS[@]}" \
    --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
    --runtime-version="$RUNTIME_VERSION" "${capacity[@]}" "${extra[@]}"
  if [ "$DRY_RUN" = 1 ]; then exit 0; fi
  while :; do
    state=$(gcloud compute tpus queued-resources describe "$QR_NAME" "${TPU_FLAGS[@]}" \
      --format='value(state.state)')
    echo "$(date -u +%FT%TZ) queued resource $QR_NAME: $state"
    case $state in
      ACTIVE) break ;;
      FAILED | SUSPENDED) die "queued resource $QR_NAME is $state; delete it with teardown.sh --queued" ;;
    esac
    sleep "$POLL_SECONDS"
  done
else
  if [ "$PREEMPTIBLE" = 1 ]; then capacity+=(--preemptible); fi
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${TPU_FLAGS[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" \
    "${capacity[@]}" "${extra[@]}"
fi
if [ "$DRY_RUN" = 0 ]; then
  echo "TPU $TPU_NAME ($ACCELERATOR_TYPE, $RUNTIME_VERSION) in $ZONE is up; next: install.sh" >&2
fi
