"""The one place that knows whether the compiled CUDA kernels are present.

The package installs and runs on CPU tensors without them; a CUDA tensor then gets one clear error
that says how to build them, raised before anything is launched.
"""
from __future__ import annotations

import torch  # noqa: F401  (loads libc10/libtorch, which _C links against)

try:
    from . import _C  # type: ignore[attr-defined]
except ImportError as error:  # built without CUDA torch / nvcc, or not built at all
    _C = None
    _IMPORT_ERROR = error
else:
    _IMPORT_ERROR = None


def has_cuda_kernels() -> bool:
    return _C is not None


def require_cuda_kernels():
    if _C is None:
        raise RuntimeError(
            "persistent_topk: a CUDA tensor was passed, but this install has no CUDA kernels "
            f"({_IMPORT_ERROR}). Build them with a CUDA build of torch and nvcc: "
            "CUDA_HOME=/usr/local/cuda python -m pip install --no-build-isolation -e . (see README)")
    return _C


def workspace_bytes(rows: int, stride: int, k: int) -> int:
    return require_cuda_kernels().workspace_bytes(rows, stride, k)


def plan_bytes(rows: int) -> int:
    return require_cuda_kernels().plan_bytes(rows)
