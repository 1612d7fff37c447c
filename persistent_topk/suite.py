"""The DSA benchmark suite (dsa_suite.json, an identical copy of the project's shared suite): its cases,
each case's k, dtype, stride and row lengths (generated exactly as the suite's length_rules say), and
the per-case targets (dsa_targets.json, a copy of the shared targets.json: the fastest public kernel's
time over floor on an H200, and the goal)."""
from __future__ import annotations

import json
from importlib import resources
from typing import Dict, List

import numpy as np
import torch

# The logits dtypes a case may name (the suite's "about" lists them); float32 when a case names none.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_DTYPE = "float32"


def _read_json(name: str) -> Dict:
    return json.loads(resources.files("persistent_topk").joinpath(name).read_text())


def load_suite() -> Dict:
    return _read_json("dsa_suite.json")


def load_targets() -> Dict[str, Dict]:
    """Case name -> {"fastest_public_time_over_floor" (None where no public kernel takes the case),
    "fastest_public", "goal_time_over_floor"}."""
    return _read_json("dsa_targets.json")["cases"]


def case_k(case: Dict, suite: Dict) -> int:
    """The case's own "k", else the suite's."""
    return int(case.get("k", suite["k"]))


def case_dtype_name(case: Dict) -> str:
    """The case's "dtype" as the suite spells it ("float32" when it names none)."""
    name = case.get("dtype", DEFAULT_DTYPE)
    if name not in DTYPES:
        raise ValueError(f"case {case['name']}: unknown dtype {name!r} (expected one of {sorted(DTYPES)})")
    return name


def case_dtype(case: Dict) -> torch.dtype:
    """The torch dtype of the case's logits: its "dtype", default float32."""
    return DTYPES[case_dtype_name(case)]


def case_lengths(case: Dict) -> np.ndarray:
    """int32 [rows] lengths of one suite case."""
    rows, spec = case["rows"], case["lengths"]
    if "uniform" in spec:
        return np.full(rows, spec["uniform"], dtype=np.int32)
    if "loguniform" in spec:
        lo, hi = spec["loguniform"]
        rng = np.random.default_rng(spec["seed"])
        return np.exp(rng.uniform(np.log(lo), np.log(hi), rows)).astype(np.int32)
    if "one_long" in spec:
        lengths = np.full(rows, spec["one_long"][1], dtype=np.int32)
        lengths[0] = spec["one_long"][0]
        return lengths
    if "mtp" in spec:
        mtp = spec["mtp"]
        next_n = mtp["next_n"]
        lo, hi = mtp["loguniform"]
        rng = np.random.default_rng(mtp["seed"])
        seq = np.exp(rng.uniform(np.log(lo), np.log(hi), rows // next_n)).astype(np.int32)
        r = np.arange(rows)
        return (seq[r // next_n] - next_n + (r % next_n) + 1).astype(np.int32)
    if "causal" in spec:
        return (spec["causal"]["context"] + np.arange(rows) + 1).astype(np.int32)
    raise ValueError(f"unknown length rule in case {case['name']}: {spec}")


def case_stride(case: Dict, lengths: np.ndarray) -> int:
    """The logits width: the case's 'stride', else the longest row rounded up to a multiple of 16."""
    if "stride" in case:
        return int(case["stride"])
    return int((int(lengths.max()) + 15) // 16 * 16)


def cases() -> List[Dict]:
    return load_suite()["cases"]
