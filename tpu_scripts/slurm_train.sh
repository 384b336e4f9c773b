#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one t5x process per node (the default: each sees
# the node's 8 GPUs) or per GPU, all joined through jax.distributed.
#   sbatch --nodes=4 tpu_scripts/slurm_train.sh --model-dir=/shared/runs/copoet_11b
# The #SBATCH lines are defaults; sbatch's own flags override them. sbatch runs a copy of
# this file, so it cannot source common.sh and keeps its few helpers to itself.
#SBATCH --job-name=t5x-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail

die() { echo "slurm_train.sh: $*" >&2; exit 2; }

EXTRA_ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) HELP=1 ;;
    --model-dir=*) MODEL_DIR=${1#*=} ;;
    --gin-file=*) GIN_FILE=${1#*=} ;;
    --t5x-command=*) T5X_COMMAND=${1#*=} ;;
    --t5x=*) T5X=${1#*=} ;;
    --port=*) PORT=${1#*=} ;;
    --workdir=*) WORKDIR=${1#*=} ;;
    --log-dir=*) LOG_DIR=${1#*=} ;;
    --dry-run) DRY_RUN=1 ;;
    --) shift; EXTRA_ARGS=("$@"); break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
: "${MODEL_DIR:=}" "${GIN_FILE:=gin/copoet_11b.gin}" "${T5X_COMMAND:=train}" "${T5X:=t5x}"
: "${PORT:=12345}" "${WORKDIR:=${SLURM_SUBMIT_DIR:-$PWD}}" "${LOG_DIR:=logs}" "${DRY_RUN:=0}"

if [ "${HELP:-0}" = 1 ]; then
  cat <<EOF
Usage: sbatch [SBATCH_FLAGS] slurm_train.sh --model-dir=DIR [--flag=value ...] [-- MORE_T5X_FLAGS]
Starts \`t5x T5X_COMMAND\` once per SLURM task with
  --multiprocess_gpu --coordinator_address=FIRST_NODE:PORT
  --process_count=\$SLURM_NTASKS --process_index=\$SLURM_PROCID
Task t writes LOG_DIR/JOBNAME-JOBID-t.log. A requeued job (preemption) starts again with
the same MODEL_DIR and so resumes from the latest checkpoint.
One process per GPU instead: sbatch --ntasks-per-node=8 --gpus-per-task=1 slurm_train.sh ...

Settings (environment variable, or --flag=value):
  MODEL_DIR    --model-dir     shared folder or gs:// for checkpoints   [$MODEL_DIR]
  GIN_FILE     --gin-file      gin file(s), space-separated             [$GIN_FILE]
  T5X_COMMAND  --t5x-command   train, infer or eval                     [$T5X_COMMAND]
  T5X          --t5x           the t5x program on the nodes             [$T5X]
  PORT         --port          coordinator port on the first node       [$PORT]
  WORKDIR      --workdir       folder the tasks run in (shared)         [$WORKDIR]
  LOG_DIR      --log-dir       per-task logs, relative to WORKDIR       [$LOG_DIR]
  DRY_RUN      --dry-run       print the commands each task would run   [$DRY_RUN]
EOF
  exit 0
fi
[ -n "$MODEL_DIR" ] || die 'set MODEL_DIR (--model-dir=DIR); see --help'
[ -n "${SLURM_JOB_NODELIST:-}" ] || die 'no SLURM allocation: submit with sbatch (or run inside salloc)'

# The allocation's nodes, first one first; scontrol expands ranges like gpu[01-04].
if command -v scontrol >/dev/null; then
  mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
else
  [[ $SLURM_JOB_NODELIST != *[* ]] || die "scontrol is needed to expand $SLURM_JOB_NODELIST"
  IFS=, read -ra nodes <<<"$SLURM_JOB_NODELIST"
fi
ntasks=${SLURM_NTASKS:-${#nodes[@]}}
coordinator="${nodes[0]}:$PORT"

cmd=("$T5X" "$T5X_COMMAND")
read -ra gin_files <<<"$GIN_FILE"
for f in "${gin_files[@]}"; do cmd+=("--gin_file=$f"); done
if [ "$T5X_COMMAND" = train ]; then cmd+=("--gin.MODEL_DIR=\"$MODEL_DIR\""); fi
cmd+=("${EXTRA_ARGS[@]}" --multiprocess_gpu "--coordinator_address=$coordinator"
  "--process_count=$ntasks")

# Each task appends its own index, which only exists inside the task.
# shellcheck disable=SC2016  # expanded by each task's shell, not this one
task='exec "$@" --process_index="$SLURM_PROCID"'
srun_cmd=(srun --kill-on-bad-exit=1 --output="$LOG_DIR/%x-%j-%t.log" bash -c "$task" t5x-task "${cmd[@]}")
echo "job ${SLURM_JOB_ID:-?}: $ntasks processes on ${#nodes[@]} nodes, coordinator $coordinator" >&2
if [ "$DRY_RUN" = 1 ]; then
  echo "+ cd $WORKDIR"
  echo "+ $(printf '%q ' "${srun_cmd[@]}")"
  # What srun would start: the same snippet, with each task's SLURM_PROCID, echoed.
  per_node=$(((ntasks + ${#nodes[@]} - 1) / ${#nodes[@]}))
  for ((t = 0; t < ntasks; t++)); do
    SLURM_PROCID=$t bash -c "$task" t5x-task echo "task $t on ${nodes[t / per_node]}:" "${cmd[@]}"
  done
  exit 0
fi
cd "$WORKDIR"
mkdir -p "$LOG_DIR"
exec "${srun_cmd[@]}"
