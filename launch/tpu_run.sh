#!/usr/bin/env bash
# Runs `python -m lasar_jax.main` on every worker of a TPU VM (one process per host, all started
# together; jax.distributed finds the other hosts itself on Cloud TPU).
#
# Usage: launch/tpu_run.sh --name=NAME --zone=ZONE --workdir=DIR [--config=FILE]
#                          [--project=PROJECT] [--mode=nohup|tmux|foreground] [--run-name=RUN]
#                          [--remote-dir=DIR] [--venv=DIR] [--dry-run] [--config.KEY=VALUE ...]
#                          [-- MAIN_FLAG ...]
#
# Every --config.KEY=VALUE is passed on to lasar_jax.main as a config override, and so is every
# argument after `--`. The workdir must be one directory all workers share: a path under the
# bucket mount that `tpu_setup.sh --bucket=BUCKET` makes on every worker, e.g. /mnt/BUCKET/runs/x.
# A gs:// URL is refused: lasar_jax writes its workdir with ordinary file operations, not through
# Cloud Storage's API.
# Each worker writes its output to ~/lasar_logs/RUN.HOSTNAME.log (and, with --mode=nohup, its
# process id to ~/lasar_logs/RUN.HOSTNAME.pid).
#
# Flags (environment variable in brackets):
#   --name=NAME           TPU VM name [TPU_NAME]; required.
#   --zone=ZONE           zone of the TPU VM [TPU_ZONE]; required.
#   --workdir=DIR         run directory, absolute path on the bucket mount [LASAR_WORKDIR];
#                         required.
#   --config=FILE         stage config [LASAR_CONFIG]; default configs/grpo.py (the whole chain).
#   --project=PROJECT     Google Cloud project [GCP_PROJECT]; default: gcloud's configured one.
#   --mode=MODE           [LASAR_RUN_MODE]; default nohup:
#                           nohup:      start in the background and return; survives ssh drops;
#                           tmux:       start in a detached tmux session named RUN on every worker;
#                           foreground: stream every worker's output here until the run ends.
#   --run-name=RUN        name of the logs and tmux session [LASAR_RUN_NAME]; default
#                         lasar-YYYYmmdd-HHMMSS.
#   --remote-dir=DIR      checkout on the workers (see tpu_setup.sh) [LASAR_REMOTE_DIR]; default
#                         lasar_jax.
#   --venv=DIR            virtual environment on the workers [LASAR_VENV]; default lasar_venv.
#   --dry-run             print the gcloud command instead of running it.
#   -h, --help            print this help.
#
# Example:
#   launch/tpu_run.sh --name=lasar-v4 --zone=us-central2-b --workdir=/mnt/my-bucket/runs/office \
#       --config.data.format=lcrec --config.data.path=data/amazon2014_office \
#       --config.data.name=Office_Products --config.mesh.fsdp=-1 --config.mesh.data=1

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
WORKDIR="${LASAR_WORKDIR:-}"
CONFIG="${LASAR_CONFIG:-configs/grpo.py}"
PROJECT="${GCP_PROJECT:-}"
MODE="${LASAR_RUN_MODE:-nohup}"
RUN_NAME="${LASAR_RUN_NAME:-lasar-$(date +%Y%m%d-%H%M%S)}"
REMOTE_DIR="${LASAR_REMOTE_DIR:-lasar_jax}"
VENV="${LASAR_VENV:-lasar_venv}"
PASS=()
while (($#)); do
  case "$1" in
    --name=*) NAME="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --config=*) CONFIG="${1#*=}" ;;
    --config.*) PASS+=("$1") ;;
    --project=*) PROJECT="${1#*=}" ;;
    --mode=*) MODE="${1#*=}" ;;
    --run-name=*) RUN_NAME="${1#*=}" ;;
    --remote-dir=*) REMOTE_DIR="${1#*=}" ;;
    --venv=*) VENV="${1#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage "$0"; exit 0 ;;
    --) shift; PASS+=("$@"); break ;;
    *) die "unknown argument '$1'" ;;
  esac
  shift
done
# A worker path as the remote shell should see it: relative ones are under the home directory.
remote_path() {
  if [[ "$1" == /* ]]; then quote_args "$1"; else echo "\$HOME/$(quote_args "$1")"; fi
}

FLAGS=()
tpu_target_flags FLAGS
[[ -n "$WORKDIR" ]] || die "--workdir (or LASAR_WORKDIR) is required"
[[ "$RUN_NAME" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--run-name may hold only letters, digits, '_', '.', '-'"
if [[ "$WORKDIR" == gs://* ]]; then
  BUCKET_PATH="${WORKDIR#gs://}"
  die "--workdir=$WORKDIR: lasar_jax cannot write to gs:// URLs; mount the bucket on every worker" \
    "(tpu_setup.sh --bucket=${BUCKET_PATH%%/*}) and pass the mounted path, e.g." \
    "--workdir=/mnt/${BUCKET_PATH%/}"
fi
if [[ "$WORKDIR" != /* ]]; then
  echo "warning: --workdir=$WORKDIR is relative: each worker writes its own copy inside" \
    "$REMOTE_DIR, which tpu_setup.sh replaces; pass a path on the bucket mount" \
    "(tpu_setup.sh --bucket) to share one" >&2
fi

MAIN="$(remote_path "$VENV")/bin/python -m lasar_jax.main $(quote_args "--config=$CONFIG" "--workdir=$WORKDIR")"
MAIN+=" --distributed=on"
if ((${#PASS[@]})); then
  MAIN+=" $(quote_args "${PASS[@]}")"
fi
LOG="\$HOME/lasar_logs/$RUN_NAME.\$(hostname)"
case "$MODE" in
  nohup) START="nohup $MAIN > $LOG.log 2>&1 < /dev/null & echo \$! > $LOG.pid" ;;
  tmux) START="tmux new-session -d -s $RUN_NAME $(quote_args "$MAIN 2>&1 | tee $LOG.log")" ;;
  foreground) START="$MAIN 2>&1 | tee $LOG.log" ;;
  *) die "--mode must be nohup, tmux or foreground, got '$MODE'" ;;
esac

run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${FLAGS[@]}" \
  --command="set -o pipefail; mkdir -p \$HOME/lasar_logs && cd $(remote_path "$REMOTE_DIR") && $START"
