"""The main job: ``python -m persistent_topk.bench`` measures the DSA suite as SPEC §8 says.

On a GPU: every case runs as a CUDA-graph replay with the L2 flushed before each call (median of
--reps), next to torch.topk on the same logits masked to the lengths, and next to the floor
max(one trivial kernel's graph time, (valid logits + output bytes) / measured read bandwidth).
Every result is checked against the CPU oracle first. Writes benchmarks/results/latest.json and a PNG.

Without a GPU (or without the compiled kernels) it runs the CPU path on the smallest cases, checks
it against torch.topk and says so; nothing is written then.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from . import reference, suite
from ._backend import has_cuda_kernels
from .ops import top_k_per_row
from .workspace import Workspace

# L2 flush: writing this many bytes evicts an H100's 50 MB / H200's 60 MB L2 several times over.
FLUSH_BYTES = 256 << 20
# Streaming-read probe for the floor's bandwidth: large enough that launch cost is noise.
BANDWIDTH_PROBE_BYTES = 2 << 30


def capture_graph(fn):
    """A CUDA graph of fn(), captured after one warm-up call outside capture."""
    fn()  # warm-up outside capture (allocations, module load)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph


def time_graph_us(graph, reps: int, flush: Optional[torch.Tensor]) -> float:
    """Median µs of graph.replay() with the L2 flushed (flush.zero_()) before every replay, unless
    flush is None."""
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    graph.replay()
    for i in range(reps):
        if flush is not None:
            flush.zero_()
        starts[i].record()
        graph.replay()
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends))


def read_bandwidth(flush: torch.Tensor, reps: int) -> float:
    """Bytes/s of a streaming reduction over a buffer far larger than L2."""
    probe = torch.randn(BANDWIDTH_PROBE_BYTES // 4, device="cuda")
    result = torch.empty((), device="cuda")
    graph = capture_graph(lambda: torch.sum(probe, dim=0, out=result))
    us = time_graph_us(graph, reps, flush)
    del probe
    return BANDWIDTH_PROBE_BYTES / (us * 1e-6)


def gpu_case(case, k: int, reps: int, bandwidth: float, flush: torch.Tensor, gen: torch.Generator):
    lengths_np = suite.case_lengths(case)
    stride = suite.case_stride(case, lengths_np)
    rows = case["rows"]
    lengths_cpu = torch.from_numpy(lengths_np)
    lengths = lengths_cpu.cuda()
    logits = torch.randn((rows, stride), generator=gen, device="cuda")
    workspace = Workspace("cuda", rows, stride, k)
    out = torch.empty((rows, k), dtype=torch.int32, device="cuda")

    ours = capture_graph(lambda: top_k_per_row(logits, lengths, k, out=out, workspace=workspace))
    out.fill_(-7)
    ours.replay()
    want, _ = reference.reference_topk(logits.cpu(), lengths_cpu, k)
    if not torch.equal(out.cpu(), want):
        raise AssertionError(f"{case['name']}: the kernel disagrees with the CPU oracle")
    us = time_graph_us(ours, reps, flush)
    if not torch.equal(out.cpu(), want):
        raise AssertionError(f"{case['name']}: the kernel disagrees with the CPU oracle after timing")

    columns = torch.arange(stride, device="cuda")
    masked = torch.where(columns[None, :] < lengths[:, None], logits, float("-inf"))
    torch_k = min(k, stride)  # torch.topk cannot ask for more than the row has (short rows)
    topk_values = torch.empty((rows, torch_k), device="cuda")
    topk_indices = torch.empty((rows, torch_k), dtype=torch.int64, device="cuda")
    baseline = capture_graph(lambda: torch.topk(masked, torch_k, dim=1, out=(topk_values, topk_indices)))
    torch_us = time_graph_us(baseline, reps, flush)

    trivial = capture_graph(lambda: out.fill_(-1))
    trivial_us = time_graph_us(trivial, reps, flush)
    valid_bytes = int(lengths_cpu.clamp(0, stride).sum()) * logits.element_size() + rows * k * 4
    floor_us = max(trivial_us, valid_bytes / bandwidth * 1e6)
    return {"name": case["name"], "us": round(us, 2), "torch_us": round(torch_us, 2),
            "speedup": round(torch_us / us, 2), "floor_us": round(floor_us, 2),
            "time_over_floor": round(us / floor_us, 2)}


def print_table(rows, title):
    print(title)
    print(f"{'case':28s} {'us':>9s} {'torch_us':>9s} {'speedup':>8s} {'floor_us':>9s} {'x_floor':>8s}")
    for r in rows:
        print(f"{r['name']:28s} {r['us']:9.2f} {r['torch_us']:9.2f} {r['speedup']:8.2f} {r['floor_us']:9.2f} "
              f"{r['time_over_floor']:8.2f}")
    geo = math.exp(sum(math.log(r["speedup"]) for r in rows) / len(rows))
    print(f"geometric-mean speedup over torch.topk: {geo:.2f}x; slowest case speedup: "
          f"{min(r['speedup'] for r in rows):.2f}x")
    return geo


def plot(rows, path: Path, device: str):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot written")
        return
    names = [r["name"] for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.28
    ax.bar([x - width for x in xs], [r["torch_us"] for r in rows], width, label="torch.topk (masked)")
    ax.bar(list(xs), [r["us"] for r in rows], width, label="persistent_topk")
    ax.bar([x + width for x in xs], [r["floor_us"] for r in rows], width, label="floor")
    ax.set_yscale("log")
    ax.set_ylabel("µs (CUDA-graph replay, L2 flushed, median)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_title(f"DSA top-k suite, k=2048, float32 — {device}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def run_gpu(args):
    data = suite.load_suite()
    k = data["k"]
    selected = [c for c in data["cases"] if not args.cases or any(s in c["name"] for s in args.cases)]
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    bandwidth = read_bandwidth(flush, args.reps)
    device = torch.cuda.get_device_name()
    print(f"{device}: streaming read bandwidth {bandwidth / 1e12:.2f} TB/s; {args.reps} replays per timing")
    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    results = []
    for case in selected:
        results.append(gpu_case(case, k, args.reps, bandwidth, flush, gen))
        r = results[-1]
        print(f"  {r['name']:28s} {r['us']:8.2f} us  torch {r['torch_us']:8.2f} us  floor {r['floor_us']:6.2f} us",
              flush=True)
    record = {
        "device": device,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "csrc_tree": args.csrc_tree or "unknown",
        "read_bandwidth_tb_s": round(bandwidth / 1e12, 3),
        "reps": args.reps,
        "cases": results,
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out_dir / 'latest.json'}")
    plot(results, out_dir / "latest.png", device)
    print_table(results, f"\npersistent_topk on {device} (csrc tree {record['csrc_tree']})")


def run_cpu(args, why: str):
    print(f"{why}: running the CPU path on the smallest suite cases instead (nothing is written).")
    data = suite.load_suite()
    k = data["k"]
    small = sorted(data["cases"], key=lambda c: int(suite.case_lengths(c).astype("int64").sum()))[:3]
    gen = torch.Generator().manual_seed(args.seed)
    for case in small:
        lengths = torch.from_numpy(suite.case_lengths(case))
        stride = suite.case_stride(case, lengths.numpy())
        logits = torch.randn((case["rows"], stride), generator=gen)
        start = time.perf_counter()
        values = torch.empty(case["rows"], k)
        top_k_per_row(logits, lengths, k, values=values, sorted=True)
        ms = (time.perf_counter() - start) * 1e3
        for r in range(case["rows"]):
            n = min(int(lengths[r]), stride)
            want = torch.topk(logits[r, :n], min(k, n)).values
            assert torch.equal(values[r, : len(want)], want), f"{case['name']} row {r}"
        print(f"  {case['name']:28s} {ms:9.1f} ms on the CPU, values equal torch.topk")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=50, help="timed replays per measurement (median; >= 30)")
    parser.add_argument("--cases", nargs="*", help="only cases whose name contains one of these")
    parser.add_argument("--out-dir", default=os.path.join("benchmarks", "results"))
    parser.add_argument("--csrc-tree", default=os.environ.get("PERSISTENT_TOPK_CSRC_TREE"),
                        help="git rev-parse HEAD:csrc of the measured kernel (the device copy has no git history)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu", action="store_true", help="run the CPU path even if a GPU is present")
    args = parser.parse_args(argv)
    if args.reps < 30:
        parser.error("--reps must be >= 30 (SPEC §8: median of at least 30)")
    if args.cpu:
        run_cpu(args, "--cpu given")
    elif not torch.cuda.is_available():
        run_cpu(args, "no CUDA device")
    elif not has_cuda_kernels():
        run_cpu(args, "persistent_topk was built without CUDA kernels")
    else:
        run_gpu(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
