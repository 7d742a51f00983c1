#!/usr/bin/env bash
# Creates a Cloud TPU VM (a single host or a pod slice) for lasar_jax.
#
# Usage: launch/tpu_create.sh --name=NAME --zone=ZONE [--accelerator-type=TYPE] [--version=RUNTIME]
#                             [--project=PROJECT] [--spot | --preemptible] [--dry-run]
#
# Flags (each also read from the environment variable in brackets, so the four launch/tpu_*.sh
# scripts can share one set of exports):
#   --name=NAME              TPU VM name [TPU_NAME]; required.
#   --zone=ZONE              zone, e.g. us-central2-b (v4) or us-west4-a (v5e) [TPU_ZONE]; required.
#   --accelerator-type=TYPE  slice type, e.g. v4-32, v5litepod-16, v5p-16, v6e-16
#                            [TPU_ACCELERATOR_TYPE]; default v5litepod-16.
#   --version=RUNTIME        TPU software version [TPU_RUNTIME_VERSION]; default by type:
#                            v4 tpu-ubuntu2204-base, v5litepod v2-alpha-tpuv5-lite,
#                            v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e.
#   --project=PROJECT        Google Cloud project [GCP_PROJECT]; default: gcloud's configured one.
#   --spot                   create a Spot VM (cheaper, may be preempted at any time).
#   --preemptible            create a preemptible VM (older form of --spot, at most 24 hours).
#   --dry-run                print the gcloud command instead of running it.
#   -h, --help               print this help.
#
# Example:
#   launch/tpu_create.sh --name=lasar-v4 --zone=us-central2-b --accelerator-type=v4-32 --spot

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
TYPE="${TPU_ACCELERATOR_TYPE:-v5litepod-16}"
VERSION="${TPU_RUNTIME_VERSION:-}"
PROJECT="${GCP_PROJECT:-}"
CAPACITY=()
for arg in "$@"; do
  case "$arg" in
    --name=*) NAME="${arg#*=}" ;;
    --zone=*) ZONE="${arg#*=}" ;;
    --accelerator-type=*) TYPE="${arg#*=}" ;;
    --version=*) VERSION="${arg#*=}" ;;
    --project=*) PROJECT="${arg#*=}" ;;
    --spot) CAPACITY=(--spot) ;;
    --preemptible) CAPACITY=(--preemptible) ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage "$0"; exit 0 ;;
    *) die "unknown argument '$arg'" ;;
  esac
done
FLAGS=()
tpu_target_flags FLAGS
if [[ -z "$VERSION" ]]; then
  case "$TYPE" in
    v4-*) VERSION=tpu-ubuntu2204-base ;;
    v5litepod-*) VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    *) die "no default runtime for accelerator type '$TYPE'; pass --version" ;;
  esac
fi

run gcloud compute tpus tpu-vm create "$NAME" "${FLAGS[@]}" --accelerator-type="$TYPE" \
  --version="$VERSION" "${CAPACITY[@]}"
