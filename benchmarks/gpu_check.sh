#!/usr/bin/env bash
# The one-command GPU check (see benchmarks/gpu_check.py): run from anywhere after README's install.
#   benchmarks/gpu_check.sh                 # CUDA: GPU tests + real-size pipeline, every tier, eager + compiled
#   benchmarks/gpu_check.sh --json out.json # also keep every number
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "${PYTHON:-python}" "$here/gpu_check.py" "$@"
