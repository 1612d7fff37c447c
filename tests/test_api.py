"""The API contract on the CPU: argument checks (SPEC §7), torch.compile over the fake impls, plans."""
import pytest
import torch

import persistent_topk as pt
from persistent_topk import plan as plan_module

I32 = torch.int32


def _ok():
    return torch.randn(3, 100), torch.tensor([10, 50, 100], dtype=I32)


@pytest.mark.parametrize("make_call, error, name", [
    (lambda x, n: pt.top_k_per_row(x.numpy(), n), TypeError, "logits"),
    (lambda x, n: pt.top_k_per_row(x[0], n), ValueError, "logits"),
    (lambda x, n: pt.top_k_per_row(x.double(), n), TypeError, "logits"),
    (lambda x, n: pt.top_k_per_row(x.t(), n), ValueError, "logits"),
    (lambda x, n: pt.top_k_per_row(x, n.long()), TypeError, "lengths"),
    (lambda x, n: pt.top_k_per_row(x, n[:2]), ValueError, "lengths"),
    (lambda x, n: pt.top_k_per_row(x, n[None]), ValueError, "lengths"),
    (lambda x, n: pt.top_k_per_row(x, n, 0), ValueError, "k"),
    (lambda x, n: pt.top_k_per_row(x, n, 2.0), TypeError, "k"),
    (lambda x, n: pt.top_k_per_row(x, n, True), TypeError, "k"),
    (lambda x, n: pt.top_k_per_row(x, n, 8, out=torch.empty(3, 7, dtype=I32)), ValueError, "out"),
    (lambda x, n: pt.top_k_per_row(x, n, 8, out=torch.empty(3, 8)), TypeError, "out"),
    (lambda x, n: pt.top_k_per_row(x, n, 8, out=torch.empty(8, 3, dtype=I32).t()), ValueError, "out"),
    (lambda x, n: pt.top_k_per_row(x, n, 8, values=torch.empty(3, 8, dtype=torch.float16)), TypeError, "values"),
    (lambda x, n: pt.top_k_per_row(x, n, 8, values=torch.empty(3, 9)), ValueError, "values"),
    (lambda x, n: pt.top_k_per_row(x, n, 8, sorted=1), TypeError, "sorted"),
    (lambda x, n: pt.top_k_per_row(x, n, 8, plan="fresh"), TypeError, "plan"),
    (lambda x, n: pt.top_k_per_row(x, n, 8, workspace=object()), TypeError, "workspace"),
    (lambda x, n: pt.top_k_per_row_decode(x, n, 2), ValueError, "seq_lens"),
    (lambda x, n: pt.top_k_per_row_decode(x, n, 0), ValueError, "next_n"),
    (lambda x, n: pt.top_k_per_row_prefill(x, n, n.long()), TypeError, "row_ends"),
    (lambda x, n: pt.top_k_per_row_prefill(x, n[:1], n), ValueError, "row_starts"),
    (lambda x, n: pt.top_k_page_table_transform(x, n, torch.zeros(3, 2, 2, dtype=I32), 64), ValueError, "page_table"),
    (lambda x, n: pt.top_k_page_table_transform(x, n, torch.zeros(3, 2, dtype=I32), 64, row_to_table=n[:2]),
     ValueError, "row_to_table"),
    (lambda x, n: pt.top_k_page_table_transform(x, n, torch.zeros(3, 2, dtype=I32), 64, page_table_starts=n.long()),
     TypeError, "page_table_starts"),
    (lambda x, n: pt.top_k_page_table_transform(x, n, torch.zeros(3, 2, dtype=I32), 64, row_starts=n[:1]),
     ValueError, "row_starts"),
    (lambda x, n: pt.top_k_page_table_transform(x, n, torch.zeros(3, 2, dtype=I32), 64, k=8,
                                                raw_indices=torch.empty(3, 9, dtype=I32)), ValueError, "raw_indices"),
    (lambda x, n: pt.top_k_ragged_transform(x, n, n[:2]), ValueError, "offsets"),
    (lambda x, n: pt.top_k_ragged_transform(x, n, n.float()), TypeError, "offsets"),
    (lambda x, n: pt.top_k_per_row_decode(x, n, 1, page_table=torch.zeros(2, 4, dtype=I32)), ValueError, "page_table"),
    (lambda x, n: pt.top_k_per_row_decode(x, n, 1, raw_indices=torch.zeros(3, 2048, dtype=I32)), ValueError,
     "raw_indices"),
    (lambda x, n: pt.top_k_per_row(x, n, 8, row_starts=n.long()), TypeError, "row_starts"),
    (lambda x, n: pt.make_plan(n, 100, 8, ends=True), ValueError, "ends"),
    (lambda x, n: pt.top_k_page_table_transform(x, n, torch.zeros(3, 2, dtype=I32), 0), ValueError, "page_size"),
    (lambda x, n: pt.top_k_page_table_transform(x, n, torch.zeros(2, 2, dtype=I32), 64), ValueError, "page_table"),
    (lambda x, n: pt.top_k_page_table_transform(x, n, torch.zeros(3, 2), 64), TypeError, "page_table"),
])
def test_bad_input_names_the_argument(make_call, error, name):
    x, n = _ok()
    with pytest.raises(error, match=rf"^{name}\b"):
        make_call(x, n)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to mix devices")
def test_device_mix_is_rejected():
    x, n = _ok()
    with pytest.raises(ValueError, match="^lengths"):
        pt.top_k_per_row(x.cuda(), n)


def test_cuda_without_kernels_says_how_to_build(monkeypatch):
    monkeypatch.setattr(pt._backend, "_C", None)
    monkeypatch.setattr(pt._backend, "_IMPORT_ERROR", ImportError("no module named _C"))
    with pytest.raises(RuntimeError, match="no CUDA kernels.*pip install"):
        pt._backend.require_cuda_kernels()
    assert not pt.has_cuda_kernels()


def test_workspace_needs_a_cuda_device():
    with pytest.raises(ValueError, match="^Workspace"):
        pt.Workspace("cpu", 4, 100, 8)
    with pytest.raises(TypeError, match="^Workspace"):
        pt.Workspace("cuda", 4.0, 100, 8)


def test_compile_fullgraph_traces_every_op(gen):
    x = torch.randn(4, 3000, generator=gen)
    n = torch.tensor([0, 1000, 2500, 3000], dtype=I32)
    seq = torch.tensor([1000, 3000], dtype=I32)
    starts = torch.tensor([0, 10, 100, 2000], dtype=I32)
    table = torch.randint(0, 50, (4, 47), generator=gen).to(I32)

    def all_ops(x, n, seq, starts, table):
        values = torch.empty(4, 512)
        a = pt.top_k_per_row(x, n, 512, values=values, sorted=True)
        b = pt.top_k_per_row_decode(x, seq, 2, 512)
        c = pt.top_k_per_row_prefill(x, starts, n, 512)
        d = pt.top_k_page_table_transform(x, n, table, 64, 512)
        return a, values, b, c, d

    eager = all_ops(x, n, seq, starts, table)
    compiled = torch.compile(all_ops, fullgraph=True)(x, n, seq, starts, table)
    for e, c in zip(eager, compiled):
        torch.testing.assert_close(e, c, rtol=0, atol=0, equal_nan=True)
    assert (eager[0][0] == -1).all() and (eager[0][3, :512] >= 0).all()


def test_fake_impl_gives_shapes_under_fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x = torch.empty(5, 4000)
        n = torch.empty(5, dtype=I32)
        out = pt.top_k_per_row(x, n, 2048)
        assert out.shape == (5, 2048) and out.dtype == torch.int32


def test_plan_status_on_the_cpu(gen):
    x = torch.randn(3, 5000, generator=gen)
    n = torch.tensor([4000, -3, 9000], dtype=I32)
    plan = pt.make_plan(n, 5000, 2048)
    assert plan.cpu_lengths.tolist() == [4000, 0, 5000]
    fresh = pt.top_k_per_row(x, n, 2048, plan=plan)
    assert plan.status() == plan_module.FRESH
    same_clamped = torch.tensor([4000, -100, 5001], dtype=I32)  # equal once clamped: still fresh
    pt.top_k_per_row(x, same_clamped, 2048, plan=plan)
    assert plan.status() == plan_module.FRESH
    changed = torch.tensor([4000, 10, 5000], dtype=I32)
    stale = pt.top_k_per_row(x, changed, 2048, plan=plan)
    assert plan.status() == plan_module.STALE
    assert torch.equal(stale, pt.top_k_per_row(x, changed, 2048))  # exact despite the stale plan
    assert torch.equal(fresh, pt.top_k_per_row(x, n, 2048))
    pt.top_k_per_row(x, n, 2048, plan=plan)
    assert plan.status() == plan_module.STALE  # sticky until a new plan is made
    swapped = pt.make_plan(n, 5000, 2048)
    pt.top_k_per_row(x, n[[2, 1, 0]].contiguous(), 2048, plan=swapped)  # same sum and xor, rows traded
    assert swapped.status() == plan_module.STALE


def test_plan_windows_match_the_ops():
    seq = torch.tensor([5, 1, 9000], dtype=I32)
    decode = pt.make_plan(seq, 5000, 64, next_n=2)
    assert decode.rows == 6 and decode.cpu_lengths.tolist() == [4, 5, 0, 1, 5000, 5000]
    starts = torch.tensor([-5, 10, 6000], dtype=I32)
    ends = torch.tensor([100, 5, 7000], dtype=I32)
    prefill = pt.make_plan(ends, 5000, 64, row_starts=starts, ends=True)
    assert prefill.cpu_lengths.tolist() == [105, 0, 0]
    x = torch.randn(6, 5000)
    pt.top_k_per_row_decode(x, seq, 2, 64, plan=decode)
    pt.top_k_per_row_prefill(x[:3], starts, ends, 64, plan=prefill)
    assert decode.status() == plan_module.FRESH and prefill.status() == plan_module.FRESH


@pytest.mark.parametrize("call, name", [
    (lambda x, n, p: pt.top_k_per_row(x, n, 1024, plan=p), "plan"),          # another k
    (lambda x, n, p: pt.top_k_per_row(x[:2], n[:2], 2048, plan=p), "plan"),  # another row count
    (lambda x, n, p: pt.top_k_per_row(x[:, :4000], n, 2048, plan=p), "plan"),  # another stride
])
def test_a_plan_for_another_shape_is_refused(call, name):
    x, n = torch.randn(3, 5000), torch.tensor([10, 4000, 5000], dtype=I32)
    plan = pt.make_plan(n, 5000, 2048)
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call(x, n, plan)


@pytest.mark.parametrize("call, error, name", [
    (lambda n: pt.make_plan(n.long(), 100, 8), TypeError, "lengths"),
    (lambda n: pt.make_plan(n, -1, 8), ValueError, "stride"),
    (lambda n: pt.make_plan(n, 100, 0), ValueError, "k"),
    (lambda n: pt.make_plan(n, 100, 8, next_n=0), ValueError, "next_n"),
    (lambda n: pt.make_plan(n, 100, 8, row_starts=n[:1]), ValueError, "row_starts"),
])
def test_make_plan_checks_its_arguments(call, error, name):
    with pytest.raises(error, match=rf"^{name}\b"):
        call(torch.tensor([1, 2, 3], dtype=I32))
