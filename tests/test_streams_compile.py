"""Streams, torch.compile and CUDA graphs on the GPU (issue 11 item 5), bit for bit against the CPU oracle.

- Two streams, each with its own Workspace (and its own plan), run long rows at the same time.
- The default workspace (ops called without workspace=) is one per (device, stream).
- torch.compile(fullgraph=True) of a function that calls the ops, with and without workspace=, over a
  dynamic number of rows: one graph serves every row count.
- A compiled function captured in a CUDA graph, replayed with new lengths and new logits.
- One workspace handed from one stream to another in stream order.

What is NOT tested, because the library does not detect it: one Workspace used by two calls that run
at the same time on two streams. That is the caller's error (SPEC §6: "Two calls running at once on
two streams must not share a workspace"). Both launches would claim rows from the same work-queue
counters and, without plan=, write their own plans into the same bytes of the workspace; what any row
then gets is undefined. A Workspace does not record which stream uses it and nothing on the device
checks it, so no error is raised and no test here pretends otherwise.
test_one_workspace_handed_between_streams_in_order shows the legal way to share one.

Every output is poisoned before the call and compared with persistent_topk.reference.reference_topk
bit for bit; inputs are fresh random draws each run (the seed is printed on failure).
"""
import pytest
import torch

import persistent_topk as pt
from persistent_topk import plan as plan_module
from persistent_topk import reference
from persistent_topk import workspace as workspace_module
from distributions import make_logits
from test_gpu import I32, POISON, assert_same


def poisoned(rows, k):
    return torch.full((rows, k), POISON, dtype=I32, device="cuda")


def mixed_lengths(rows, stride, k, g):
    """int32 lengths (CPU) with at least one full-width row, rows long enough for a team of CTAs, rows
    for one CTA, short rows (<= k), empty and negative rows and one past the stride, shuffled."""
    edges = torch.tensor([stride, -3, 0, 1, k - 1, k, k + 1, 9_000, 16_500, 40_000, stride // 2 + 7, stride + 100])
    lengths = torch.randint(-2, stride + 50, (rows,), generator=g)
    n = min(rows, len(edges))
    lengths[:n] = edges[torch.randperm(len(edges), generator=g)[:n]]
    lengths[0] = stride
    return lengths[torch.randperm(rows, generator=g)].to(I32)


def fresh_plan_status(workspace, rows, stride, k):
    """Status of the plan in a workspace's plan buffer (the plan a compiled function made there)."""
    return pt.TopKPlan(rows, stride, k, workspace.device, workspace.plan_buffer, None, None).status()


# ----------------------------------------------------------------------------------------------------
# (a) Two streams, each with its own workspace
# ----------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("with_plan", [False, True], ids=["no_plan", "plan"])
def test_two_streams_each_with_its_own_workspace(with_plan, gen):
    """Two micro-batches (two-batch overlap): each on its own stream with its own lengths, Workspace
    and (with_plan) plan, several layers queued on both streams alternately before anything is waited
    for. Stream 0 runs float32 logits, stream 1 bfloat16; every row of every layer exact."""
    rows, stride, k, layers = 6, 131_072, 2048, 3
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    dtypes, dists = [torch.float32, torch.bfloat16], ["normal", "shared_high_bits"]
    workspaces = [pt.Workspace("cuda", rows, stride, k) for _ in streams]
    lengths = [mixed_lengths(rows, stride, k, gen) for _ in streams]
    lengths_cuda = [n.cuda() for n in lengths]
    logits = [[make_logits(dists[s], rows, stride, dtypes[s], gen, lengths[s], device="cuda") for _ in range(layers)]
              for s in range(2)]
    outs = [[poisoned(rows, k) for _ in range(layers)] for _ in range(2)]
    torch.cuda.synchronize()

    plans = [None, None]
    for s, stream in enumerate(streams):
        stream.wait_stream(torch.cuda.current_stream())
        if with_plan:
            with torch.cuda.stream(stream):
                plans[s] = pt.make_plan(lengths_cuda[s], stride, k, workspace=workspaces[s])
    for layer in range(layers):
        for s, stream in enumerate(streams):
            with torch.cuda.stream(stream):
                pt.top_k_per_row(logits[s][layer], lengths_cuda[s], k, out=outs[s][layer], plan=plans[s],
                                 workspace=workspaces[s])
    torch.cuda.synchronize()

    for s in range(2):
        for layer in range(layers):
            want, _ = reference.reference_topk(logits[s][layer].cpu(), lengths[s], k)
            assert_same(outs[s][layer], want, f"stream {s} ({dtypes[s]}) layer {layer}")
        if with_plan:
            assert plans[s].status() == plan_module.FRESH, f"stream {s}"


# ----------------------------------------------------------------------------------------------------
# (b) The default workspace is per (device, stream)
# ----------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_default_workspace_is_one_per_device_and_stream(gen):
    """Calls without workspace= on two streams use two different default workspaces (keyed by device
    and stream in persistent_topk.workspace._default), are exact while both streams run, and a later
    call on the same stream finds the same workspace again."""
    rows, stride, k, launches = 6, 131_072, 2048, 2
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    device = torch.device("cuda", torch.cuda.current_device())
    keys = [(device, stream.cuda_stream) for stream in streams]
    for key in keys:  # streams come from a pool: forget what an earlier test left under these handles
        workspace_module._default.pop(key, None)
    jobs = []
    for launch in range(launches):
        for s in range(2):
            lengths = mixed_lengths(rows, stride, k, gen)
            logits = make_logits("normal", rows, stride, torch.float32, gen, lengths, device="cuda")
            jobs.append((s, logits, lengths, lengths.cuda(), poisoned(rows, k)))
    torch.cuda.synchronize()
    for stream in streams:
        stream.wait_stream(torch.cuda.current_stream())
    for s, logits, _, lengths_cuda, out in jobs:
        with torch.cuda.stream(streams[s]):
            pt.top_k_per_row(logits, lengths_cuda, k, out=out)
    torch.cuda.synchronize()
    for i, (s, logits, lengths, _, out) in enumerate(jobs):
        want, _ = reference.reference_topk(logits.cpu(), lengths, k)
        assert_same(out, want, f"launch {i} on stream {s}")

    found = [workspace_module._default.get(key) for key in keys]
    assert all(ws is not None for ws in found), \
        f"no default workspace under {keys}; the keys are {list(workspace_module._default)}"
    first, second = found
    assert first is not second
    assert first.buffer.data_ptr() != second.buffer.data_ptr()
    assert first.plan_buffer.data_ptr() != second.plan_buffer.data_ptr()
    main = workspace_module._default.get((device, torch.cuda.current_stream().cuda_stream))
    assert main is not first and main is not second

    s, logits, lengths, lengths_cuda, _ = jobs[0]
    with torch.cuda.stream(streams[0]):
        out = pt.top_k_per_row(logits, lengths_cuda, k)
    torch.cuda.synchronize()
    assert workspace_module._default[keys[0]] is first, "a second call on the same stream changed its workspace"
    want, _ = reference.reference_topk(logits.cpu(), lengths, k)
    assert_same(out, want, "second call on stream 0")


# ----------------------------------------------------------------------------------------------------
# (c) torch.compile(fullgraph=True) over a dynamic number of rows
# ----------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("workspace_kind", ["explicit", "default"])
def test_compile_fullgraph_with_a_dynamic_row_count(workspace_kind, gen):
    """A compiled function calling top_k_per_row (output allocated inside the graph) and
    top_k_page_table_transform (into a poisoned out=) on CUDA tensors, called with 3 row counts whose
    row dimension is marked dynamic: one graph for all three, every output exact.

    "explicit": workspace=Workspace(...) is an argument of the compiled function. "default": no
    workspace=, so the ops use the default workspace of (device, current stream); default workspaces
    grow in eager mode only (SPEC §6), so one eager call at the largest row count comes first."""
    from torch._dynamo.utils import counters

    stride, k, page_size = 65_536, 2048, 64
    row_counts = (3, 10, 17)
    pages = -(-stride // page_size)
    workspace = pt.Workspace("cuda", max(row_counts), stride, k) if workspace_kind == "explicit" else None
    if workspace is None:
        warm = make_logits("normal", max(row_counts), stride, torch.float32, gen, device="cuda")
        pt.top_k_per_row(warm, torch.full((max(row_counts),), stride, dtype=I32, device="cuda"), k)
        pt.top_k_page_table_transform(warm, torch.full((max(row_counts),), stride, dtype=I32, device="cuda"),
                                      torch.zeros((max(row_counts), pages), dtype=I32, device="cuda"), page_size, k)

    def step(logits, lengths, table, slots, workspace):
        indices = pt.top_k_per_row(logits, lengths, k, workspace=workspace)
        pt.top_k_page_table_transform(logits, lengths, table, page_size, k, out=slots, workspace=workspace)
        return indices

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    graphs_before = counters["stats"]["unique_graphs"]
    for rows in row_counts:
        lengths = mixed_lengths(rows, stride, k, gen)
        logits = make_logits("normal", rows, stride, torch.float32, gen, lengths, device="cuda")
        table = torch.randint(0, 1 << 20, (rows, pages), generator=gen).to(I32)
        lengths_cuda, table_cuda, slots = lengths.cuda(), table.cuda(), poisoned(rows, k)
        for t in (logits, lengths_cuda, table_cuda, slots):
            torch._dynamo.mark_dynamic(t, 0)
        indices = compiled(logits, lengths_cuda, table_cuda, slots, workspace)
        torch.cuda.synchronize()
        want, _ = reference.reference_topk(logits.cpu(), lengths, k)
        want_slots, _ = reference.reference_topk(logits.cpu(), lengths, k, page_table=table, page_size=page_size)
        assert_same(indices, want, f"compiled top_k_per_row, {rows} rows")
        assert_same(slots, want_slots, f"compiled top_k_page_table_transform, {rows} rows")
    graphs = counters["stats"]["unique_graphs"] - graphs_before
    assert graphs == 1, f"{graphs} graphs compiled for row counts {row_counts} (expected one dynamic graph)"


# ----------------------------------------------------------------------------------------------------
# (d) A compiled function inside a captured CUDA graph
# ----------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["workspace", "workspace_and_plan", "default_workspace"])
def test_compiled_function_in_a_cuda_graph_replays_with_new_lengths(variant, gen):
    """A decode step as an engine that compiles and captures it: torch.compile(fullgraph=True) of a
    function calling top_k_per_row and top_k_page_table_transform into static outputs, warmed up on a
    side stream, captured once with torch.cuda.graph on that stream, then replayed with new lengths
    (rows moving between every path) and new logits; every replay exact.

    "workspace": workspace=Workspace(...), locked after capture. "workspace_and_plan": the function
    also makes the step's plan in that workspace (plan= to both calls), so each replay re-plans from
    the live lengths and the plan stays FRESH. "default_workspace": no workspace=; the default
    workspace of the capture stream is made by an eager call on that stream before capture."""
    rows, stride, k, page_size = 8, 70_000, 2048, 64
    pages = -(-stride // page_size)
    with_plan = variant == "workspace_and_plan"
    workspace = None if variant == "default_workspace" else pt.Workspace("cuda", rows, stride, k)
    logits = make_logits("normal", rows, stride, torch.float32, gen, device="cuda")
    lengths = torch.full((rows,), stride, dtype=I32, device="cuda")
    table_cpu = torch.randint(0, 1 << 20, (rows, pages), generator=gen).to(I32)
    table = table_cpu.cuda()
    out, slots = poisoned(rows, k), poisoned(rows, k)

    def step(logits, lengths, table, out, slots, workspace):
        plan = pt.make_plan(lengths, stride, k, workspace=workspace) if with_plan else None
        pt.top_k_per_row(logits, lengths, k, out=out, plan=plan, workspace=workspace)
        pt.top_k_page_table_transform(logits, lengths, table, page_size, k, out=slots, plan=plan, workspace=workspace)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        if workspace is None:  # the capture stream's default workspace, made (and sized) in eager mode
            pt.top_k_per_row(logits, lengths, k)
            pt.top_k_page_table_transform(logits, lengths, table, page_size, k)
        for _ in range(2):
            compiled(logits, lengths, table, out, slots, workspace)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        compiled(logits, lengths, table, out, slots, workspace)
    if workspace is not None:
        workspace.lock()

    for replay in range(4):
        new = mixed_lengths(rows, stride, k, gen)
        lengths.copy_(new)
        logits.copy_(make_logits("ties" if replay % 2 else "normal", rows, stride, torch.float32, gen, new))
        out.fill_(POISON)
        slots.fill_(POISON)
        graph.replay()
        torch.cuda.synchronize()
        cpu_logits = logits.cpu()
        want, _ = reference.reference_topk(cpu_logits, new, k)
        want_slots, _ = reference.reference_topk(cpu_logits, new, k, page_table=table_cpu, page_size=page_size)
        assert_same(out, want, f"replay {replay}: top_k_per_row")
        assert_same(slots, want_slots, f"replay {replay}: top_k_page_table_transform")
        if with_plan:
            assert fresh_plan_status(workspace, rows, stride, k) == plan_module.FRESH, f"replay {replay}"


# ----------------------------------------------------------------------------------------------------
# (e) One workspace, two streams: only one at a time
# ----------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_one_workspace_handed_between_streams_in_order(gen):
    """One Workspace may serve two streams when the caller orders them (an event recorded on one,
    waited for on the other): here calls without a plan, which write their own plan into the
    workspace, alternate between two streams, each waiting for the last. All exact.

    Using it from both streams at the same time is the caller's error and is not detected (see the
    module docstring); nothing here tests for a detection that does not exist."""
    rows, stride, k, launches = 6, 131_072, 2048, 4
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    workspace = pt.Workspace("cuda", rows, stride, k)
    jobs = []
    for _ in range(launches):
        lengths = mixed_lengths(rows, stride, k, gen)
        logits = make_logits("shared_high_bits", rows, stride, torch.float32, gen, lengths, device="cuda")
        jobs.append((logits, lengths, lengths.cuda(), poisoned(rows, k)))
    torch.cuda.synchronize()
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream())
    for i, (logits, _, lengths_cuda, out) in enumerate(jobs):
        stream = streams[i % 2]
        stream.wait_event(done)
        with torch.cuda.stream(stream):
            pt.top_k_per_row(logits, lengths_cuda, k, out=out, workspace=workspace)
            done = torch.cuda.Event()
            done.record(stream)
    torch.cuda.synchronize()
    for i, (logits, lengths, _, out) in enumerate(jobs):
        want, _ = reference.reference_topk(logits.cpu(), lengths, k)
        assert_same(out, want, f"launch {i} on stream {i % 2}")
