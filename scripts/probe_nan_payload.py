"""Which column does a wrongly written value come from? Every NaN of the logits gets a payload that
names its column (valid NaNs positive, garbage NaNs past the row's length negative); all NaNs still
rank alike (SPEC §3), so the selection is unchanged, but a value copied from the wrong column shows
which one. Prints each mismatch: row, position, index written, and the column the value came from.

    python scripts/probe_nan_payload.py [dtype] [dist] [seed ...]
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import persistent_topk as pt  # noqa: E402
from persistent_topk import reference  # noqa: E402
from distributions import make_logits  # noqa: E402
from test_gpu import path_lengths  # noqa: E402

dtype = getattr(torch, sys.argv[1]) if len(sys.argv) > 1 else torch.float32
dist = sys.argv[2] if len(sys.argv) > 2 else "specials"
seeds = [int(s) for s in sys.argv[3:]] + [torch.seed() for _ in range(20)]
rows, stride, k = 20, 100_003, 2048
wide = dtype == torch.float32
ibits = torch.int32 if wide else torch.int16
bad = 0
for seed in seeds:
    g = torch.Generator().manual_seed(seed)
    lengths = path_lengths(stride, k, g, rows)
    logits = make_logits(dist, rows, stride, dtype, g, lengths)  # CPU
    col = torch.arange(stride).expand(rows, stride)
    garbage = col >= lengths.clamp(min=0).long()[:, None]
    if wide:
        payload = torch.where(garbage, 0xFFC00000 + col, 0x7FC00000 + col)  # quiet NaN, column in mantissa
        payload = (payload & 0xFFFFFFFF).to(torch.int64)
        payload = torch.where(payload >= 2**31, payload - 2**32, payload).to(torch.int32)
    else:
        payload = torch.where(garbage, 0xFF80 | (1 + col % 127), 0x7F80 | (1 + col % 127)).to(torch.int64)
        payload = torch.where(payload >= 2**15, payload - 2**16, payload).to(torch.int16)
    b = logits.view(ibits).clone()
    b = torch.where(torch.isnan(logits), payload, b)
    logits = b.view(dtype).cuda()
    want_idx, want_val = reference.reference_topk(logits.cpu(), lengths, k)
    for attempt in range(3):
        out = torch.full((rows, k), 0x5EED5EED, dtype=torch.int32, device="cuda")
        values = torch.zeros((rows, k), dtype=ibits, device="cuda").view(dtype)
        pt.top_k_per_row(logits, lengths.cuda(), k, out=out, values=values)
        torch.cuda.synchronize()
        got_idx, got_bits = out.cpu(), values.view(ibits).cpu()
        want_bits = want_val.view(ibits)
        for r in range(rows):
            cols = ((got_idx[r] != want_idx[r]) | (got_bits[r] != want_bits[r])).nonzero().flatten()[:4].tolist()
            for c in cols:
                bad += 1
                v = int(got_bits[r, c])
                if wide:
                    src = (v & 0x3FFFFF, "garbage" if v < 0 else "valid")
                else:
                    src = ((v & 0x7F) - 1, "garbage(mod127)" if v < 0 else "valid(mod127)")
                print(f"seed {seed} try {attempt} row {r} n {int(lengths[r])} pos {c} idx {int(got_idx[r, c])} "
                      f"want idx {int(want_idx[r, c])} value bits {v & 0xFFFFFFFF:#x} from column {src}", flush=True)
print(f"probe {dtype} {dist}: {bad} mismatching entries")
