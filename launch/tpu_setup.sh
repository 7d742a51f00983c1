#!/usr/bin/env bash
# Installs lasar_jax on every worker of a TPU VM: the code, a Python 3.11 venv, jax[tpu] at the
# jax version pinned in setup.py, and the package itself (`pip install -e .`).
#
# Usage: launch/tpu_setup.sh --name=NAME --zone=ZONE [--project=PROJECT] [--source=archive|git]
#                            [--repo=URL] [--ref=REF] [--remote-dir=DIR] [--venv=DIR] [--dry-run]
#
# The whole checkout is needed on the workers, not only the package: stage configs are loaded by
# path (`--config=configs/grpo.py`). Run it again after changing the code; the venv is reused.
#
# Flags (environment variable in brackets):
#   --name=NAME           TPU VM name [TPU_NAME]; required.
#   --zone=ZONE           zone of the TPU VM [TPU_ZONE]; required.
#   --project=PROJECT     Google Cloud project [GCP_PROJECT]; default: gcloud's configured one.
#   --source=archive|git  [LASAR_SOURCE]; default archive:
#                           archive: `git archive` of REF of the local checkout this script is in,
#                                    copied to every worker with `tpu-vm scp --worker=all`;
#                           git:     every worker clones --repo and checks out REF.
#   --repo=URL            git URL the workers clone with --source=git [LASAR_REPO].
#   --ref=REF             commit, branch or tag to install [LASAR_REF]; default HEAD.
#   --remote-dir=DIR      checkout directory on the workers, replaced on every run
#                         [LASAR_REMOTE_DIR]; default lasar_jax (relative to the home directory).
#   --venv=DIR            virtual environment on the workers [LASAR_VENV]; default lasar_venv.
#   --dry-run             print the commands instead of running them.
#   -h, --help            print this help.
#
# Example:
#   launch/tpu_setup.sh --name=lasar-v4 --zone=us-central2-b

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
PROJECT="${GCP_PROJECT:-}"
SOURCE="${LASAR_SOURCE:-archive}"
REPO="${LASAR_REPO:-}"
REF="${LASAR_REF:-HEAD}"
REMOTE_DIR="${LASAR_REMOTE_DIR:-lasar_jax}"
VENV="${LASAR_VENV:-lasar_venv}"
for arg in "$@"; do
  case "$arg" in
    --name=*) NAME="${arg#*=}" ;;
    --zone=*) ZONE="${arg#*=}" ;;
    --project=*) PROJECT="${arg#*=}" ;;
    --source=*) SOURCE="${arg#*=}" ;;
    --repo=*) REPO="${arg#*=}" ;;
    --ref=*) REF="${arg#*=}" ;;
    --remote-dir=*) REMOTE_DIR="${arg#*=}" ;;
    --venv=*) VENV="${arg#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage "$0"; exit 0 ;;
    *) die "unknown argument '$arg'" ;;
  esac
done
[[ -n "$NAME" ]] || die "--name (or TPU_NAME) is required"
[[ -n "$ZONE" ]] || die "--zone (or TPU_ZONE) is required"
JAX_VERSION="$(sed -n 's/.*"jax==\([0-9.]*\)".*/\1/p' "$REPO_ROOT/setup.py")"
[[ -n "$JAX_VERSION" ]] || die "no jax==X pin found in $REPO_ROOT/setup.py"

FLAGS=()
gcloud_location_flags FLAGS
case "$SOURCE" in
  archive)
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    ARCHIVE="$TMP/lasar_jax.tar.gz"
    run git -C "$REPO_ROOT" archive --format=tar.gz --output="$ARCHIVE" "$REF"
    run gcloud compute tpus tpu-vm scp "$ARCHIVE" "$NAME:lasar_jax.tar.gz" --worker=all "${FLAGS[@]}"
    FETCH="rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf lasar_jax.tar.gz -C $REMOTE_DIR"
    FETCH+=" && rm lasar_jax.tar.gz"
    ;;
  git)
    [[ -n "$REPO" ]] || die "--source=git needs --repo (or LASAR_REPO)"
    FETCH="rm -rf $REMOTE_DIR && git clone --quiet $(quote_args "$REPO") $REMOTE_DIR"
    FETCH+=" && git -C $REMOTE_DIR checkout --quiet $(quote_args "$REF")"
    ;;
  *) die "--source must be 'archive' or 'git', got '$SOURCE'" ;;
esac

# Python 3.11 (setup.py's python_requires) is not the system Python of the TPU VM images.
INSTALL="cd ~ && $FETCH"
INSTALL+=" && if ! command -v python3.11 >/dev/null; then sudo apt-get update -qq"
INSTALL+=" && sudo apt-get install -y -qq python3.11 python3.11-venv; fi"
INSTALL+=" && if [ ! -x $VENV/bin/python ]; then python3.11 -m venv $VENV; fi"
INSTALL+=" && $VENV/bin/pip install -q --upgrade pip"
INSTALL+=" && $VENV/bin/pip install -q \"jax[tpu]==$JAX_VERSION\""
INSTALL+=" && $VENV/bin/pip install -q -e $REMOTE_DIR"
INSTALL+=" && $VENV/bin/python -c \"import jax, lasar_jax; print(jax.__version__)\""
run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${FLAGS[@]}" --command="$INSTALL"
