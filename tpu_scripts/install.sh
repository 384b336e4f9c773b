#!/usr/bin/env bash
# Installs the project and the TPU build of JAX on every worker of a TPU VM or pod slice.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SETTINGS="$TPU_SETTINGS SOURCE GIT_REF WORKDIR VENV PYTHON EXTRAS JAX_TPU"
SWITCHES="$TPU_SWITCHES"
parse_flags "$@"
tpu_defaults
: "${SOURCE:=$(cd "$SCRIPTS_DIR/.." && pwd)}"
: "${GIT_REF:=origin/HEAD}" "${WORKDIR:=t5x-instruct}" "${VENV:=t5x_venv}" "${PYTHON:=python3.11}"
: "${EXTRAS=}" "${JAX_TPU:=auto}"

usage() {
  cat <<EOF
Usage: $PROGRAM [--flag=value ...]
Installs the project into a virtual environment on every worker (all at once), then the
TPU build of JAX at the version the project pins. Run it again after changing the code.

$(tpu_usage)
Install settings (worker paths are relative to the worker's home folder):
  SOURCE    --source    what to install                                 [$SOURCE]
                        a local checkout: its files (git ls-files, so .gitignore'd ones
                          stay behind, uncommitted edits go along) are copied to WORKDIR
                          and installed with pip install -e;
                        a git URL: cloned into WORKDIR, GIT_REF checked out, pip install -e;
                        a wheel or sdist file: copied over and pip installed.
  GIT_REF   --git-ref   commit, tag or origin/BRANCH for a git URL      [$GIT_REF]
  WORKDIR   --workdir   the project's folder on the workers             [$WORKDIR]
  VENV      --venv      the virtual environment on the workers          [$VENV]
  PYTHON    --python    interpreter for the venv (>= 3.11; installed with apt when absent;
                        the TPU images run Ubuntu 22.04, whose own python3 is 3.10) [$PYTHON]
  EXTRAS    --extras    setup.py extras; hf adds torch + transformers for
                        t5x export-hf (several GB per worker)          [$EXTRAS]
  JAX_TPU   --jax-tpu   pip spec of TPU JAX; auto: jax[tpu] at the installed jax's
                        version; none: skip                             [$JAX_TPU]

Example:
  $PROGRAM --name=copoet --zone=us-central2-b
  $PROGRAM --name=copoet --source=https://github.com/ORG/t5x-instruct.git --git-ref=v0.1.0
EOF
}
if [ "${HELP:-0}" = 1 ]; then usage; exit 0; fi

target_suffix=${EXTRAS:+[$EXTRAS]}
# pip reads `name[extra]` as a package to download unless it looks like a path.
local_path() { case $1 in /*) echo "$1" ;; *) echo "./$1" ;; esac; }
venv=$(q "$VENV")
workdir=$(q "$WORKDIR")
copy_to_workers() {
  run gcloud compute tpus tpu-vm scp "$1" "$TPU_NAME:$2" --worker=all "${TPU_FLAGS[@]}"
}

if [ -d "$SOURCE" ]; then
  # The checkout's files as git sees them (tracked or new, not ignored, still present), so
  # build outputs and .venv stay behind.
  tarball="${TMPDIR:-/tmp}/t5x-src-$TPU_NAME.tar.gz"
  # shellcheck disable=SC2016  # expanded by the inner bash
  run bash -c 'cd "$1" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d "" f; do if [ -e "$f" ]; then printf "%s\0" "$f"; fi; done |
    tar --null -T - -czf "$2"' pack "$SOURCE" "$tarball"
  copy_to_workers "$tarball" t5x-src.tar.gz
  fetch="mkdir -p $workdir && tar -xzf t5x-src.tar.gz -C $workdir"
  pip_target="-e $(q "$(local_path "$WORKDIR")$target_suffix")"
elif [[ $SOURCE == *.whl || $SOURCE == *.tar.gz ]]; then
  [ -f "$SOURCE" ] || [ "$DRY_RUN" = 1 ] || die "$SOURCE: no such file"
  file=$(basename "$SOURCE")
  copy_to_workers "$SOURCE" "$file"
  fetch=true
  pip_target=$(q "./$file$target_suffix")
elif [[ $SOURCE =~ ^(https?|ssh|git):// || $SOURCE == git@* ]]; then
  fetch="if [ -d $workdir/.git ]; then git -C $workdir fetch -q --tags origin;
else git clone -q $(q "$SOURCE") $workdir; fi
git -C $workdir checkout -q $(q "$GIT_REF")"
  pip_target="-e $(q "$(local_path "$WORKDIR")$target_suffix")"
else
  die "SOURCE=$SOURCE is neither a folder, a .whl / .tar.gz file nor a git URL"
fi

case $JAX_TPU in
  none) jax_step=true ;;
  # Remote shell: ask the freshly installed jax for its version.
  auto) jax_step="$venv/bin/pip install -q \"jax[tpu]==\$($venv/bin/python -c 'import jax; print(jax.__version__)')\"" ;;
  *) jax_step="$venv/bin/pip install -q $(q "$JAX_TPU")" ;;
esac

py=$(q "$PYTHON")
remote="set -euo pipefail
if ! command -v $py >/dev/null; then
  # apt may still be busy with first-boot upgrades: wait for its lock.
  sudo apt-get -o DPkg::Lock::Timeout=600 update -q
  sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q $py $py-venv
fi
[ -x $venv/bin/python ] || $py -m venv $venv
$venv/bin/pip install -q --upgrade pip
$fetch
$venv/bin/pip install -q $pip_target
$jax_step
echo \"\$(hostname): \$($venv/bin/python -c 'import jax, t5x; print(\"jax\", jax.__version__)') installed\""

run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${TPU_FLAGS[@]}" --worker=all --command="$remote"
if [ "$DRY_RUN" = 0 ]; then echo "installed on every worker of $TPU_NAME; next: launch.sh" >&2; fi
