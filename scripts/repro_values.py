"""Replays the inputs of test_distributions_on_every_path (tests/test_gpu.py) for given generator seeds
and fresh ones, many times, and prints every values/indices mismatch against the oracle with its row,
position, index and bits. Poison 0x1234 tells "never written" apart from "written wrong".

    python scripts/repro_values.py [dist] [dtype] [seed ...]
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import persistent_topk as pt  # noqa: E402
from persistent_topk import reference  # noqa: E402
from distributions import make_logits  # noqa: E402
from test_gpu import path_lengths  # noqa: E402

dist = sys.argv[1] if len(sys.argv) > 1 else "specials"
dtype = getattr(torch, sys.argv[2]) if len(sys.argv) > 2 else torch.bfloat16
seeds = [int(s) for s in sys.argv[3:]] + [torch.seed() for _ in range(30)]
rows, stride, k = 20, 100_003, 2048
bad_runs = 0
for seed in seeds:
    g = torch.Generator().manual_seed(seed)
    lengths = path_lengths(stride, k, g, rows)
    logits = make_logits(dist, rows, stride, dtype, g, lengths, device="cuda")
    want_idx, want_val = reference.reference_topk(logits.cpu(), lengths, k)
    want_bits = want_val.view(torch.int16)
    for attempt in range(3):
        out = torch.full((rows, k), 0x5EED5EED, dtype=torch.int32, device="cuda")
        values = torch.full((rows, k), 0x1234, dtype=torch.int16, device="cuda").view(dtype)
        pt.top_k_per_row(logits, lengths.cuda(), k, out=out, values=values)
        torch.cuda.synchronize()
        got_idx, got_bits = out.cpu(), values.view(torch.int16).cpu()
        if torch.equal(got_idx, want_idx) and torch.equal(got_bits, want_bits):
            continue
        bad_runs += 1
        for r in range(rows):
            cols = ((got_idx[r] != want_idx[r]) | (got_bits[r] != want_bits[r])).nonzero().flatten()[:6].tolist()
            if cols:
                n = int(lengths[r])
                print(f"seed {seed} attempt {attempt} row {r} n {n} start%16 "
                      f"{logits[r].data_ptr() % 16} positions {cols} idx got {got_idx[r, cols].tolist()} "
                      f"want {want_idx[r, cols].tolist()} bits got {[hex(v & 0xFFFF) for v in got_bits[r, cols].tolist()]} "
                      f"want {[hex(v & 0xFFFF) for v in want_bits[r, cols].tolist()]}", flush=True)
print(f"repro_values {dist} {dtype}: {bad_runs} bad runs of {3 * len(seeds)}")
