"""Device-side A/B timing of kernel variants built by benchmarks/harness/build.sh (ctypes, no torch build).

    python benchmarks/harness/diag.py DIR_WITH_LIBS [case-substring ...]

For each libpt_*.so and each chosen suite case: exactness against the CPU oracle, then the median µs of
a CUDA-graph replay with the L2 flushed (as the benchmark); "cold+" and "warm+": what the launch adds
to a graph (L2 flushed) after a trivial kernel, and after a small launch of this kernel that ran
every path's code, so the cost of fetching cold instructions shows apart from cold data; and a graph
holding two back-to-back launches (the second runs with warm code and L2).
Each launch is a call as the op makes it without a plan (the plan kernel, then the kernel); with
PT_PLAN_ONCE=1, the kernel alone with a plan made once before (as a decode step's layers call it).
PT_QUICK=1 times only the flushed graph ("flush"). PT_CASES="name=rows:length:stride;..." adds cases
(length: one for every row, or lo..hi log-uniform). PT_ROUNDS=n repeats everything n times. PT_NARROW=1
gives each case the stride of its longest row (engine-wide buffers against narrow ones). PT_NO_PDL=1
launches without programmatic dependent launch. PT_STAMPS=1 (a build with -DPERSISTENT_TOPK_STAMPS)
prints phase stamps and the launch's in-GPU span.
"""
import os
import ctypes
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from persistent_topk import reference, suite  # noqa: E402
from persistent_topk.bench import FLUSH_BYTES, capture_graph, time_graph_us  # noqa: E402

K = 2048
FLUSH = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
REPS = 40
QUICK = bool(os.environ.get("PT_QUICK"))  # only the flushed graph time and exactness
QUEUE_BYTES = 256  # the work queue's counters at the workspace's start (csrc/dispatch.cuh WorkspaceLayout)


def print_stamps(lib, graph):
    """Phase durations (cycles) of the first CTAs' latest row, from csrc/stamps.cuh's slots."""
    stamps = (ctypes.c_longlong * 256)()
    graph.replay()
    torch.cuda.synchronize()
    if lib.pt_stamps(stamps, 256) != 0:
        return
    for cta in range(int(os.environ.get("PT_STAMP_CTAS", "8"))):  # at most csrc/stamps.cuh's kStampCtas
        row = [stamps[cta * 16 + s] for s in range(16)]
        base = row[0]
        print(f"    cta {cta}: " + " ".join(f"{s}:{(v - base) if v >= base else -1}" for s, v in enumerate(row) if v))


def print_span(lib, graph):
    """Median in-GPU span (first CTA start to last CTA end, global timer) against the flushed graph time."""
    span = (ctypes.c_ulonglong * 2)()
    spans = []
    for _ in range(REPS):
        lib.pt_span(span, 1)
        FLUSH.zero_()
        graph.replay()
        torch.cuda.synchronize()
        lib.pt_span(span, 0)
        spans.append((span[1] - span[0]) / 1e3)
    spans.sort()
    print(f"    span (first CTA start .. last CTA end) {spans[len(spans) // 2]:.2f} us")


def main():
    ctas, clusters = ctypes.c_int(), ctypes.c_int()
    libdir = Path(sys.argv[1])
    wanted = sys.argv[2:]
    cases = [c for c in suite.cases() if not wanted or any(w in c["name"] for w in wanted)]
    # PT_CASES="r8-12k=8:12288:12288;m128=128:1024..8192:8192" adds cases: name=rows:length:stride, the
    # length one for every row or lo..hi for log-uniform lengths (as the suite draws them).
    for spec in filter(None, os.environ.get("PT_CASES", "").split(";")):
        name, shape = spec.split("=")
        rows, length, stride = shape.split(":")
        if ".." in length:
            lo, hi = (int(v) for v in length.split(".."))
            lengths = {"loguniform": [lo, hi], "seed": 7}
        else:
            lengths = {"uniform": int(length)}
        cases.append({"name": name, "rows": int(rows), "lengths": lengths, "stride": int(stride)})
    gen = torch.Generator(device="cuda").manual_seed(1)
    data = []
    for case in cases:
        lengths = torch.from_numpy(suite.case_lengths(case))
        stride = suite.case_stride(case, lengths.numpy())
        if os.environ.get("PT_NARROW"):  # the same rows in a buffer only as wide as the longest
            stride = int(lengths.max())
        logits = torch.randn((case["rows"], stride), generator=gen, device="cuda")
        want, _ = reference.reference_topk(logits.cpu(), lengths, K)
        data.append((case["name"], logits, lengths.cuda(), want))
    # The warm-up launch: 8 team rows and one solo row (a few-row launch has both paths).
    warm_lengths = torch.tensor([131072] * 8 + [4096], dtype=torch.int32, device="cuda")
    warm_logits = torch.randn((9, 131072), generator=gen, device="cuda")
    warm_out = torch.empty((9, K), dtype=torch.int32, device="cuda")
    print(f"{'variant':14s} {'case':26s} {'flush':>8s} {'cold+':>8s} {'warm+':>8s} {'2x':>8s}  exact")
    rounds = int(os.environ.get("PT_ROUNDS", "1"))
    for lib_path in sorted(libdir.glob("libpt_*.so")) * rounds:
        lib = ctypes.CDLL(str(lib_path))
        if hasattr(lib, "pt_resident") and lib.pt_resident(ctypes.byref(ctas), ctypes.byref(clusters)) == 0:
            print(f"{lib_path.stem}: resident {ctas.value} CTAs, {clusters.value} clusters")
        if hasattr(lib, "pt_resident_clusters"):
            by_size = (ctypes.c_int * 17)()
            if lib.pt_resident_clusters(by_size, 17) == 0:
                print("  resident clusters by size: " + " ".join(f"{s}:{by_size[s]}" for s in range(2, 17)))
        if os.environ.get("PT_NO_PDL") and hasattr(lib, "pt_set_pdl"):
            lib.pt_set_pdl(0)
        lib.pt_workspace_bytes.restype = ctypes.c_int64
        lib.pt_workspace_bytes.argtypes = [ctypes.c_int64, ctypes.c_int64]
        lib.pt_launch.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                  ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        plan_once = bool(os.environ.get("PT_PLAN_ONCE")) and hasattr(lib, "pt_select")
        if plan_once:
            lib.pt_select.argtypes = lib.pt_launch.argtypes
            lib.pt_make_plan.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                         ctypes.c_void_p]
        for case_name, logits, lengths, want in data:
            name = lib_path.stem[len("libpt_"):]
            rows, stride = logits.shape
            ws = torch.zeros(lib.pt_workspace_bytes(rows, stride), dtype=torch.uint8, device="cuda")
            out = torch.empty((rows, K), dtype=torch.int32, device="cuda")

            warm_ws = torch.zeros(lib.pt_workspace_bytes(9, 131072), dtype=torch.uint8, device="cuda")

            stream = torch.cuda.current_stream().cuda_stream
            if plan_once:
                assert lib.pt_make_plan(rows, stride, lengths.data_ptr(), K, ws.data_ptr(), stream) == 0

            def launch():
                call = lib.pt_select if plan_once else lib.pt_launch
                rc = call(logits.data_ptr(), logits.stride(0), rows, stride, lengths.data_ptr(), K, out.data_ptr(),
                          ws.data_ptr(), torch.cuda.current_stream().cuda_stream)
                assert rc == 0, rc

            def warm_up():
                rc = lib.pt_launch(warm_logits.data_ptr(), warm_logits.stride(0), 9, 131072, warm_lengths.data_ptr(), K,
                                   warm_out.data_ptr(), warm_ws.data_ptr(), torch.cuda.current_stream().cuda_stream)
                assert rc == 0, rc

            one = capture_graph(launch)
            out.fill_(-7)
            one.replay()
            # Exact, and the workspace's counters back at zero (they reset themselves).
            exact = torch.equal(out.cpu(), want) and not bool(ws[:QUEUE_BYTES].any())
            if QUICK:
                print(f"{name:14s} {case_name:26s} {time_graph_us(one, REPS, FLUSH):8.2f}  {exact}", flush=True)
                if os.environ.get("PT_STAMPS"):
                    print_stamps(lib, one)
                    print_span(lib, one)
                    print("    the second of two back-to-back launches (code and data warm):")
                    two = capture_graph(lambda: (launch(), launch()))
                    FLUSH.zero_()
                    print_stamps(lib, two)
                continue
            two = capture_graph(lambda: (launch(), launch()))
            warm_only, warm_then_one = capture_graph(warm_up), capture_graph(lambda: (warm_up(), launch()))
            fill_only, fill_then_one = capture_graph(lambda: warm_out.fill_(0)), capture_graph(
                lambda: (warm_out.fill_(0), launch()))
            warm_code_us = time_graph_us(warm_then_one, REPS, FLUSH) - time_graph_us(warm_only, REPS, FLUSH)
            cold_code_us = time_graph_us(fill_then_one, REPS, FLUSH) - time_graph_us(fill_only, REPS, FLUSH)
            print(f"{name:14s} {case_name:26s} {time_graph_us(one, REPS, FLUSH):8.2f} {cold_code_us:8.2f} "
                  f"{warm_code_us:8.2f} {time_graph_us(two, REPS, FLUSH):8.2f}  "
                  f"{exact}", flush=True)
            if os.environ.get("PT_STAMPS"):
                print_stamps(lib, one)


if __name__ == "__main__":
    main()
