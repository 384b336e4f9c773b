#!/usr/bin/env bash
# Multi-node GPU training without a scheduler: one t5x process per host over ssh, joined
# through jax.distributed. Ctrl-C (or any host failing) stops every host.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS='HOSTS HOSTFILE MODEL_DIR GIN_FILE T5X_COMMAND T5X REMOTE_DIR REMOTE_ENV COORDINATOR PORT SSH LOG_DIR'
SWITCHES='DRY_RUN'
parse_flags "$@"
: "${HOSTS:=}" "${HOSTFILE:=}" "${MODEL_DIR:=}" "${GIN_FILE:=gin/copoet_11b.gin}"
: "${T5X_COMMAND:=train}" "${T5X:=.venv/bin/t5x}" "${REMOTE_DIR:=$(cd "$SCRIPTS_DIR/.." && pwd)}"
: "${REMOTE_ENV:=}" "${PORT:=12345}" "${SSH:=ssh -o BatchMode=yes}" "${DRY_RUN:=0}"
: "${LOG_DIR:=logs/ssh-$(date -u +%Y%m%d-%H%M%S)}"

hosts=()
if [ -n "$HOSTFILE" ] && [ "${HELP:-0}" = 0 ]; then
  [ -f "$HOSTFILE" ] || die "HOSTFILE=$HOSTFILE: no such file"
  while read -r host _; do
    if [ -n "$host" ] && [[ $host != \#* ]]; then hosts+=("$host"); fi
  done <"$HOSTFILE"
fi
read -ra more <<<"${HOSTS//,/ }"
hosts+=("${more[@]}")
# The coordinator is process 0's host, as the other hosts reach it.
first=${hosts[0]:-}
: "${COORDINATOR:=${first#*@}}"

usage() {
  cat <<EOF
Usage: $PROGRAM --hosts=HOST1,HOST2,... --model-dir=DIR [--flag=value ...] [-- MORE_T5X_FLAGS]
On host i (0-based, in the order given) runs, over ssh, in REMOTE_DIR:
  T5X T5X_COMMAND --gin_file=GIN_FILE --gin.MODEL_DIR="MODEL_DIR" MORE_T5X_FLAGS
    --multiprocess_gpu --coordinator_address=COORDINATOR:PORT
    --process_count=NUMBER_OF_HOSTS --process_index=i
Each host's output goes to LOG_DIR/i-HOST.log here. Every host needs the project at
REMOTE_DIR and MODEL_DIR on a filesystem (or bucket) they all share. Ctrl-C ends all
hosts' processes (ssh -tt: closing the connection hangs them up); so does the first one
to fail. Restarting with the same MODEL_DIR resumes from the latest checkpoint.

Settings (environment variable, or --flag=value):
  HOSTS        --hosts         hosts ([user@]name), comma- or space-separated [$HOSTS]
  HOSTFILE     --hostfile      file with one host per line (# comments)   [$HOSTFILE]
  MODEL_DIR    --model-dir     shared folder or gs:// for checkpoints      [$MODEL_DIR]
  GIN_FILE     --gin-file      gin file(s), space-separated                [$GIN_FILE]
  T5X_COMMAND  --t5x-command   train, infer or eval                        [$T5X_COMMAND]
  T5X          --t5x           t5x program on the hosts (from REMOTE_DIR)  [$T5X]
  REMOTE_DIR   --remote-dir    project folder on the hosts                 [$REMOTE_DIR]
  REMOTE_ENV   --remote-env    VAR=value ... set for t5x (e.g. NCCL_SOCKET_IFNAME=eth0) [$REMOTE_ENV]
  COORDINATOR  --coordinator   process 0's address (default: the first host) [$COORDINATOR]
  PORT         --port          coordinator port                            [$PORT]
  SSH          --ssh           ssh command                                 [$SSH]
  LOG_DIR      --log-dir       local folder for the hosts' logs            [$LOG_DIR]
  DRY_RUN      --dry-run       print the ssh commands only                 [$DRY_RUN]
EOF
}
if [ "${HELP:-0}" = 1 ]; then usage; exit 0; fi
[ ${#hosts[@]} -gt 0 ] || die 'no hosts: set HOSTS (--hosts=a,b) or HOSTFILE; see --help'
[ -n "$MODEL_DIR" ] || die 'set MODEL_DIR (--model-dir=DIR); see --help'

args=("$T5X_COMMAND")
read -ra gin_files <<<"$GIN_FILE"
for f in "${gin_files[@]}"; do args+=("--gin_file=$f"); done
if [ "$T5X_COMMAND" = train ]; then args+=("--gin.MODEL_DIR=\"$MODEL_DIR\""); fi
args+=("${EXTRA_ARGS[@]}" --multiprocess_gpu "--coordinator_address=$COORDINATOR:$PORT"
  "--process_count=${#hosts[@]}")
read -ra ssh_cmd <<<"$SSH"
read -ra remote_env <<<"$REMOTE_ENV"

# The command line host $1 runs, quoted for its shell.
remote_command() {
  local line a
  line="cd $(q "$REMOTE_DIR") && exec env"
  for a in "${remote_env[@]}" "$T5X" "${args[@]}" "--process_index=$1"; do line+=" $(q "$a")"; done
  echo "$line"
}

if [ "$DRY_RUN" = 1 ]; then
  for i in "${!hosts[@]}"; do print_cmd "${ssh_cmd[@]}" -tt "${hosts[i]}" "$(remote_command "$i")"; done
  exit 0
fi

mkdir -p "$LOG_DIR"
pids=()
stop_all() {
  if [ ${#pids[@]} -gt 0 ]; then kill "${pids[@]}" 2>/dev/null || true; fi
}
trap 'echo "stopping all hosts" >&2; stop_all; wait; exit 130' INT TERM
for i in "${!hosts[@]}"; do
  log="$LOG_DIR/$i-${hosts[i]#*@}.log"
  echo "process $i on ${hosts[i]}: log $log" >&2
  # -tt: a terminal on the far side, so that ending this ssh hangs up the remote t5x.
  "${ssh_cmd[@]}" -tt "${hosts[i]}" "$(remote_command "$i")" </dev/null >"$log" 2>&1 &
  pids+=($!)
done
status=0
for _ in "${pids[@]}"; do
  if ! wait -n; then
    if [ "$status" = 0 ]; then echo "a host failed; stopping the others (see $LOG_DIR)" >&2; fi
    status=1
    stop_all
  fi
done
exit "$status"
