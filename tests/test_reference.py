"""The CPU oracle against torch.topk (selected values) and an independent brute force (indices, order,
ties, padding), over random shapes, k, dtypes and adversarial distributions."""
import numpy as np
import pytest
import torch

import persistent_topk as pt
from persistent_topk import reference
from distributions import ALL, make_logits
from oracle import brute_force

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def random_lengths(rows, stride, k, g):
    """Lengths covering the edges: 0, k-1, k, k+1, stride, > stride, negative, and random."""
    edges = torch.tensor([0, k - 1, k, k + 1, stride, stride + 7, -1, -5, 1])
    lengths = torch.randint(-3, stride + 10, (rows,), generator=g)
    lengths[: min(rows, len(edges))] = edges[: min(rows, len(edges))]
    return lengths[torch.randperm(rows, generator=g)].to(torch.int32)


@pytest.mark.parametrize("dist", sorted(ALL))
@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_matches_brute_force(dist, dtype, gen):
    for _ in range(3):
        rows = int(torch.randint(1, 12, (1,), generator=gen))
        stride = int(torch.randint(1, 700, (1,), generator=gen))
        k = int(torch.randint(1, 300, (1,), generator=gen))
        lengths = random_lengths(rows, stride, k, gen)
        logits = make_logits(dist, rows, stride, dtype, gen, lengths)
        for by_value in (False, True):
            got, _ = reference.reference_topk(logits, lengths, k, sorted=by_value)
            want = brute_force(logits, torch.zeros(rows), lengths, k, sorted=by_value)
            np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{dist} {dtype} k={k} sorted={by_value}")


@pytest.mark.parametrize("dist", ["normal", "ties", "shared_high_bits", "specials", "huge", "mostly_neg_inf"])
def test_selected_values_equal_torch_topk(dist, gen):
    rows, stride, k = 6, 5000, 2048
    lengths = torch.tensor([0, 100, 2047, 2048, 2049, 5000], dtype=torch.int32)
    logits = make_logits(dist, rows, stride, torch.float32, gen, lengths)
    values = torch.empty(rows, k)
    idx = pt.top_k_per_row(logits, lengths, k, values=values, sorted=True)
    for r in range(rows):
        n = int(lengths[r])
        m = min(k, n)
        want = torch.topk(logits[r, :n].double(), m).values
        torch.testing.assert_close(values[r, :m].double(), want, rtol=0, atol=0, equal_nan=True)
        assert (idx[r, m:] == -1).all() and torch.isneginf(values[r, m:]).all()
        assert ((idx[r, :m] >= 0) & (idx[r, :m] < n)).all()


def test_spec_ranking_rules():
    # NaN above +inf, -0.0 just below +0.0, lowest index wins ties, ascending index order by default.
    x = torch.tensor([[1.0, float("nan"), float("inf"), -0.0, 0.0, 1.0, 1.0, -float("inf")]])
    n = torch.tensor([8], dtype=torch.int32)
    assert pt.top_k_per_row(x, n, 3).tolist() == [[0, 1, 2]]
    assert pt.top_k_per_row(x, n, 3, sorted=True).tolist() == [[1, 2, 0]]
    assert pt.top_k_per_row(x, n, 5, sorted=True).tolist() == [[1, 2, 0, 5, 6]]
    z = torch.tensor([[-0.0, 0.0, -0.0, 0.0]])
    assert pt.top_k_per_row(z, torch.tensor([4], dtype=torch.int32), 2).tolist() == [[1, 3]]
    assert pt.top_k_per_row(z, torch.tensor([4], dtype=torch.int32), 3, sorted=True).tolist() == [[1, 3, 0]]


@pytest.mark.parametrize("next_n", [1, 2, 4])
def test_decode_rows(next_n, gen):
    batch, stride, k = 5, 900, 64
    seq_lens = torch.randint(-2, stride + 5, (batch,), generator=gen).to(torch.int32)
    seq_lens[0] = 1  # shorter than next_n: early draft rows are empty
    logits = make_logits("normal", batch * next_n, stride, torch.float32, gen)
    got = pt.top_k_per_row_decode(logits, seq_lens, next_n, k)
    lengths = torch.tensor([int(seq_lens[r // next_n]) - next_n + r % next_n + 1 for r in range(batch * next_n)])
    want = brute_force(logits, torch.zeros(batch * next_n), lengths, k)
    np.testing.assert_array_equal(got.numpy(), want)


def test_prefill_rows_are_relative_to_starts(gen):
    rows, stride, k = 7, 800, 50
    starts = torch.randint(-3, stride + 3, (rows,), generator=gen).to(torch.int32)
    ends = (starts + torch.randint(-5, 400, (rows,), generator=gen)).to(torch.int32)
    logits = make_logits("ties", rows, stride, torch.float32, gen)
    for by_value in (False, True):
        got = pt.top_k_per_row_prefill(logits, starts, ends, k, sorted=by_value)
        want = brute_force(logits, starts, ends - starts, k, sorted=by_value)
        np.testing.assert_array_equal(got.numpy(), want)


def test_page_table_transform(gen):
    rows, stride, k, page_size = 4, 1000, 300, 64
    lengths = torch.tensor([0, 200, 1000, 700], dtype=torch.int32)
    pages = (stride + page_size - 1) // page_size
    page_table = torch.randint(0, 10_000, (rows, pages), generator=gen).to(torch.int32)
    logits = make_logits("normal", rows, stride, torch.float32, gen, lengths)
    got = pt.top_k_page_table_transform(logits, lengths, page_table, page_size, k)
    plain = pt.top_k_per_row(logits, lengths, k)
    for r in range(rows):
        for j in range(k):
            i = int(plain[r, j])
            want = -1 if i < 0 else int(page_table[r, i // page_size]) * page_size + i % page_size
            assert int(got[r, j]) == want


def test_row_strided_view_and_k_larger_than_stride(gen):
    base = make_logits("normal", 6, 530, torch.float32, gen)
    view = base[:, 3:503]  # row pitch 530, width 500
    lengths = torch.tensor([500, 499, 3, 0, 600, 250], dtype=torch.int32)
    got = pt.top_k_per_row(view, lengths, 700)
    np.testing.assert_array_equal(got.numpy(), brute_force(view, torch.zeros(6), lengths, 700))
    assert (got[:, 500:] == -1).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_values_keep_the_bits_of_nans(dtype, gen):
    """values are the selected logits' exact bits: NaN payloads and signs survive (CPU torch's gather
    on 16-bit floats rewrites them, so the oracle must not use it on floats)."""
    bits_dtype = torch.int32 if dtype == torch.float32 else torch.int16
    nan_bits = [0x7FC00001, -0x00400001, 0x7FC00000] if dtype == torch.float32 else \
        ([0x7F84, -1, 0x7FC0] if dtype == torch.bfloat16 else [0x7E01, -1, 0x7E00])
    rows, stride, k = 3, 300, 64
    logits = torch.randn((rows, stride), generator=gen).to(dtype)
    raw = logits.view(bits_dtype)
    for j, b in enumerate(nan_bits):
        raw[:, 10 * j::37] = b
    indices, values = reference.reference_topk(logits, torch.tensor([300, 200, 50]), k)
    want = raw.gather(1, indices.clamp(min=0).long())
    got = values.view(bits_dtype)
    assert torch.equal(got[indices >= 0], want[indices >= 0])
