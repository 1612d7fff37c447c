"""persistent_topk: exact, deterministic per-row top-k for DeepSeek-style sparse-attention decode.

See README.md for the semantics and ops.py for shapes and dtypes.
"""
from ._backend import has_cuda_kernels
from .ops import (top_k_page_table_transform, top_k_per_row, top_k_per_row_decode, top_k_per_row_prefill,
                  top_k_ragged_transform)
from .plan import TopKPlan, make_plan
from .reference import reference_topk
from .workspace import Workspace

__all__ = [
    "top_k_per_row", "top_k_per_row_decode", "top_k_per_row_prefill", "top_k_page_table_transform",
    "top_k_ragged_transform",
    "make_plan", "TopKPlan", "Workspace", "reference_topk", "has_cuda_kernels",
]
