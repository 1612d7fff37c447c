"""The DSA benchmark suite (dsa_suite.json, an identical copy of the project's shared suite): its cases
and their row lengths, generated exactly as the suite's length_rules say."""
from __future__ import annotations

import json
from importlib import resources
from typing import Dict, List

import numpy as np


def load_suite() -> Dict:
    return json.loads(resources.files("persistent_topk").joinpath("dsa_suite.json").read_text())


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
