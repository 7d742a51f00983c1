#!/usr/bin/env bash
# Deletes a Cloud TPU VM (every worker of the slice, and their local disks with the logs).
#
# Usage: launch/tpu_delete.sh --name=NAME --zone=ZONE [--project=PROJECT] [--yes] [--dry-run]
#
# Flags (environment variable in brackets):
#   --name=NAME        TPU VM name [TPU_NAME]; required.
#   --zone=ZONE        zone of the TPU VM [TPU_ZONE]; required.
#   --project=PROJECT  Google Cloud project [GCP_PROJECT]; default: gcloud's configured one.
#   --yes              do not ask for confirmation (gcloud --quiet).
#   --dry-run          print the gcloud command instead of running it.
#   -h, --help         print this help.
#
# Example:
#   launch/tpu_delete.sh --name=lasar-v4 --zone=us-central2-b

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
PROJECT="${GCP_PROJECT:-}"
CONFIRM=()
for arg in "$@"; do
  case "$arg" in
    --name=*) NAME="${arg#*=}" ;;
    --zone=*) ZONE="${arg#*=}" ;;
    --project=*) PROJECT="${arg#*=}" ;;
    --yes) CONFIRM=(--quiet) ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage "$0"; exit 0 ;;
    *) die "unknown argument '$arg'" ;;
  esac
done
FLAGS=()
tpu_target_flags FLAGS

run gcloud compute tpus tpu-vm delete "$NAME" "${FLAGS[@]}" "${CONFIRM[@]}"
