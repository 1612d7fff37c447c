#!/usr/bin/env bash
# Set up .venv with torch, numpy and pytest, and build persistent_topk into it (CUDA kernels when a
# CUDA build of torch and nvcc are present). Safe to run again: it only does what is missing.
#
# If the python3 on PATH already has torch (a GPU machine with torch preinstalled and no network),
# .venv is layered on top of it instead of downloading anything.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.14.1}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  if "$PY" -c "import torch" 2>/dev/null; then
    site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    "$PY" -c "import site; print('\n'.join(site.getsitepackages()))" > "$site/_parent_environment.pth"
    echo "setup.sh: using the torch of $PY ($("$PY" -c 'import torch; print(torch.__version__)'))"
  fi
fi
VPY=.venv/bin/python
missing=()
$VPY -c "import torch" 2>/dev/null || missing+=("torch==$TORCH_VERSION")
for mod in numpy pytest ninja setuptools matplotlib; do
  $VPY -c "import $mod" 2>/dev/null || missing+=("$mod")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  $VPY -m pip install -q "${missing[@]}"
fi

# nvcc on PATH may be a wrapper script; torch then links libcudart from the wrong place.
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
# The full build log (nvcc, ptxas resource report) goes to .build.log; the kernels' ptxas lines are shown.
if ! $VPY -m pip install -v --no-build-isolation --no-deps -e . > .build.log 2>&1; then
  tail -60 .build.log
  echo "setup.sh: building persistent_topk failed (full log: .build.log)"
  exit 1
fi
grep -E "ptxas info *: Used|spill stores" .build.log | sort -u || true
$VPY -c "import persistent_topk as pt; print('setup.sh: persistent_topk ready,', 'CUDA kernels built' if pt.has_cuda_kernels() else 'CPU only (no CUDA kernels)')"
