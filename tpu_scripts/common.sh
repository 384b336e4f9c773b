# shellcheck shell=bash disable=SC2034
# Sourced by the TPU scripts: settings from --flags or the environment, DRY_RUN, prompts,
# and the settings every TPU command shares. Not meant to be run on its own.
# (SC2034: the variables set here are read by the scripts that source this file.)

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROGRAM=$(basename "$0")

die() {
  echo "$PROGRAM: $*" >&2
  exit 2
}

# Prints a command in a form that can be pasted back into a shell.
print_cmd() {
  local out='+' arg
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=@,+%^-]+$ ]]; then
      out+=" $arg"
    else
      out+=" '${arg//\'/\'\\\'\'}'"
    fi
  done
  printf '%s\n' "$out"
}

# Runs a command that changes something; with DRY_RUN=1 only prints it.
run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then
    print_cmd "$@"
  else
    print_cmd "$@" >&2
    "$@"
  fi
}

# Quotes one value for the remote shell of an ssh --command.
q() { printf '%q' "$1"; }

# parse_flags "$@": --some-name=VALUE sets SOME_NAME when SOME_NAME is in $SETTINGS;
# --some-switch sets SOME_SWITCH=1 when it is in $SWITCHES; words after `--` land in
# EXTRA_ARGS (extra flags for t5x). Flags win over the environment.
parse_flags() {
  EXTRA_ARGS=()
  local name value
  while [ $# -gt 0 ]; do
    case $1 in
      -h | --help) HELP=1 ;;
      --) shift; EXTRA_ARGS=("$@"); return 0 ;;
      --*)
        name=${1#--}
        value=1
        if [[ $name == *=* ]]; then
          value=${name#*=}
          name=${name%%=*}
        fi
        [ "$name" = name ] && name=tpu-name  # --name is short for --tpu-name
        name=$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')
        if [[ " $SWITCHES " == *" $name "* ]]; then
          [[ $value =~ ^[01]$ ]] || die "$1 is a switch: give it alone (or =0 / =1)"
        elif [[ " $SETTINGS " != *" $name "* ]] || [[ $1 != *=* ]]; then
          die "unknown or incomplete flag '$1'; settings are --name=value (see --help)"
        fi
        printf -v "$name" '%s' "$value"
        ;;
      *) die "unexpected argument '$1' (settings are --name=value; see --help)" ;;
    esac
    shift
  done
}

# Settings shared by every TPU script; call after parse_flags.
TPU_SETTINGS='TPU_NAME ZONE PROJECT QR_NAME'
TPU_SWITCHES='QUEUED DRY_RUN'
tpu_defaults() {
  : "${TPU_NAME:=t5x-tpu}"
  : "${ZONE:=us-central2-b}"
  : "${PROJECT:=}"
  : "${QUEUED:=0}"
  : "${QR_NAME:=$TPU_NAME-qr}"
  : "${DRY_RUN:=0}"
  # Flags every `gcloud compute tpus ...` command takes.
  TPU_FLAGS=(--zone="$ZONE")
  if [ -n "$PROJECT" ]; then TPU_FLAGS+=(--project="$PROJECT"); fi
  export TPU_NAME ZONE PROJECT QUEUED QR_NAME DRY_RUN
}

tpu_usage() {
  cat <<EOF
TPU settings (environment variable, or --flag=value):
  TPU_NAME          --tpu-name, --name   TPU VM / pod slice name      [$TPU_NAME]
  ZONE              --zone               zone                         [$ZONE]
  PROJECT           --project            project (empty: gcloud's)    [$PROJECT]
  QUEUED            --queued             created as a queued resource [$QUEUED]
  QR_NAME           --qr-name            its queued-resource name     [$QR_NAME]
  DRY_RUN           --dry-run            print gcloud commands only   [$DRY_RUN]
EOF
}

# The TPU software version Google recommends for JAX on each generation.
default_runtime() {
  case $1 in
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) die "no default runtime for accelerator '$1'; set RUNTIME_VERSION" ;;
  esac
}

# Asks before something destructive unless YES=1; refuses without a terminal.
confirm() {
  if [ "${YES:-0}" = 1 ] || [ "${DRY_RUN:-0}" = 1 ]; then return 0; fi
  [ -t 0 ] || die "$1: no terminal to ask on; pass --yes"
  local answer
  read -r -p "$1 [y/N] " answer
  [[ $answer == [yY]* ]] || die 'cancelled'
}

# The state of the TPU VM (READY, PREEMPTED, ...), or NOT_FOUND. A dry run cannot ask,
# so it prints the query and assumes ASSUME_STATE.
tpu_state() {
  if [ "$DRY_RUN" = 1 ]; then
    print_cmd gcloud compute tpus tpu-vm describe "$TPU_NAME" "${TPU_FLAGS[@]}" \
      --format='value(state)' >&2
    echo "${ASSUME_STATE:-NOT_FOUND}"
    return 0
  fi
  gcloud compute tpus tpu-vm describe "$TPU_NAME" "${TPU_FLAGS[@]}" \
    --format='value(state)' 2>/dev/null || echo NOT_FOUND
}
