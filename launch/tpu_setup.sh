#!/usr/bin/env bash
# Installs lasar_jax on every worker of a TPU VM: the code, a Python 3.11 venv, jax[tpu] at the
# jax version pinned in setup.py, and the package itself (`pip install -e .`); with --bucket, also
# mounts a Cloud Storage bucket on every worker with Cloud Storage FUSE (gcsfuse).
#
# Usage: launch/tpu_setup.sh --name=NAME --zone=ZONE [--project=PROJECT] [--source=archive|git]
#                            [--repo=URL] [--ref=REF] [--remote-dir=DIR] [--venv=DIR]
#                            [--bucket=BUCKET [--mount-dir=DIR]] [--dry-run]
#
# The whole checkout is needed on the workers, not only the package: stage configs are loaded by
# path (`--config=configs/grpo.py`). Run it again after changing the code; the venv is reused.
#
# The run's workdir must be one directory every worker sees, and lasar_jax writes it with ordinary
# file operations (temporary file or directory, then rename), so it cannot be a gs:// URL. With
# --bucket=BUCKET every worker installs gcsfuse if it is missing (apt repository
# gcsfuse-CODENAME at packages.cloud.google.com) and mounts the bucket at --mount-dir, as the ssh
# user, with --implicit-dirs (directories that exist only as object-name prefixes are seen) and
# --rename-dir-limit=200000 (directory renames, which orbax checkpoints and the Hugging Face export
# do, are allowed on buckets without hierarchical namespace; the value of gcsfuse's own
# aiml-checkpointing profile). A worker where DIR is already a mount point is left as it is. Pass
# a path under the mount as the workdir of tpu_run.sh, e.g. --workdir=/mnt/BUCKET/runs/grpo. The
# worker's service account must be allowed to list, read and write objects in the bucket. Mounts
# do not survive a reboot: run this again after one.
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
#   --bucket=BUCKET       Cloud Storage bucket to mount on every worker, its name without gs://
#                         [GCS_BUCKET]; default: mount nothing.
#   --mount-dir=DIR       absolute mount point of the bucket on the workers [GCS_MOUNT_DIR];
#                         default /mnt/BUCKET.
#   --dry-run             print the commands instead of running them.
#   -h, --help            print this help.
#
# Example:
#   launch/tpu_setup.sh --name=lasar-v4 --zone=us-central2-b --bucket=my-bucket  # at /mnt/my-bucket

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
BUCKET="${GCS_BUCKET:-}"
MOUNT_DIR="${GCS_MOUNT_DIR:-}"
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
    --bucket=*) BUCKET="${arg#*=}" ;;
    --mount-dir=*) MOUNT_DIR="${arg#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage "$0"; exit 0 ;;
    *) die "unknown argument '$arg'" ;;
  esac
done
FLAGS=()
tpu_target_flags FLAGS
if [[ -n "$BUCKET" ]]; then
  [[ "$BUCKET" != gs://* ]] || die "--bucket takes the bucket name without gs://," \
    "e.g. --bucket=${BUCKET#gs://}"
  [[ "$BUCKET" =~ ^[a-z0-9][a-z0-9._-]*[a-z0-9]$ ]] || die "--bucket='$BUCKET' is not a bucket name"
  MOUNT_DIR="${MOUNT_DIR:-/mnt/$BUCKET}"
  [[ "$MOUNT_DIR" == /* ]] || die "--mount-dir must be an absolute path, got '$MOUNT_DIR'"
elif [[ -n "$MOUNT_DIR" ]]; then
  die "--mount-dir needs --bucket (or GCS_BUCKET)"
fi
JAX_VERSION="$(sed -n 's/.*"jax==\([0-9.]*\)".*/\1/p' "$REPO_ROOT/setup.py")"
[[ -n "$JAX_VERSION" ]] || die "no jax==X pin found in $REPO_ROOT/setup.py"


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

# Mounted before the install: a wrong bucket name or a missing permission stops it early.
if [[ -n "$BUCKET" ]]; then
  DIR="$(quote_args "$MOUNT_DIR")"
  KEYRING=/usr/share/keyrings/cloud.google.asc
  MOUNT="set -o pipefail; if ! command -v gcsfuse >/dev/null; then"
  MOUNT+=" curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg"
  MOUNT+=" | sudo tee $KEYRING >/dev/null"
  MOUNT+=" && echo \"deb [signed-by=$KEYRING] https://packages.cloud.google.com/apt"
  MOUNT+=" gcsfuse-\$(lsb_release -c -s) main\""
  MOUNT+=" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null"
  MOUNT+=" && sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse; fi"
  MOUNT+=" && if mountpoint -q $DIR; then echo \"\$(hostname): $DIR is already mounted\";"
  MOUNT+=" else sudo mkdir -p $DIR && sudo chown \"\$(id -u):\$(id -g)\" $DIR"
  MOUNT+=" && gcsfuse --implicit-dirs --rename-dir-limit=200000 $BUCKET $DIR; fi"
  run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${FLAGS[@]}" --command="$MOUNT"
fi

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
