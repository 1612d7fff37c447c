"""An independent brute-force formulation of SPEC §3 (numpy, one row at a time), used to test the
vectorised torch oracle in persistent_topk.reference."""
import numpy as np
import torch


def numpy_keys(x: torch.Tensor) -> np.ndarray:
    """Order keys computed with numpy on the raw bits (not with the library's code)."""
    if x.dtype == torch.float32:
        bits = x.contiguous().view(torch.int32).numpy().astype(np.int64) & 0xFFFFFFFF
        top, ones = 1 << 31, (1 << 32) - 1
    else:
        bits = x.contiguous().view(torch.int16).numpy().astype(np.int64) & 0xFFFF
        top, ones = 1 << 15, (1 << 16) - 1
    keys = np.where(bits >= top, ones - bits, bits + top)
    return np.where(np.isnan(x.float().numpy()), ones, keys)


def brute_force(logits, starts, lengths, k, sorted=False):
    """int64 [rows, k]: per row, lexsort by (key descending, index ascending), take m, order the result."""
    rows, stride = logits.shape
    out = np.full((rows, k), -1, dtype=np.int64)
    for r in range(rows):
        s = min(max(int(starts[r]), 0), stride)
        n = min(max(int(lengths[r]), 0), stride - s)
        keys = numpy_keys(logits[r, s:s + n])
        idx = np.arange(n)
        order = np.lexsort((idx, -keys))[:min(k, n)]
        if not sorted:
            order = np.sort(order)
        out[r, :len(order)] = order
    return out
