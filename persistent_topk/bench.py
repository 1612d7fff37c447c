"""The main job: ``python -m persistent_topk.bench`` measures the DSA suite as SPEC §8 says.

On a GPU, every case of dsa_suite.json runs with its own k, logits dtype and stride, and these are timed:
  us               top_k_per_row(logits, lengths, k, out=, plan=, workspace=), the plan made beforehand
  noplan_us        the same call without plan= (the op then plans itself)
  plan_us          make_plan(lengths, stride, k, workspace=) alone
  torch_us         the baseline, torch.topk(masked, k, sorted=False) on the logits masked to -inf past
                   each row's length (like the op's default output, unsorted); speedup = torch_us / us
  torch_sorted_us  the same with sorted=True, for reference
each one a CUDA-graph replay with the L2 flushed before every replay, median of --reps. The floor is
max(best of 3 medians of a trivial graph writing the rows x k output, (valid logits + output bytes) /
the measured read bandwidth); time over floor = us / floor_us, shown beside the fastest public
kernel's time over floor and the goal (dsa_targets.json, H200 ratios). The with-plan and no-plan
graphs are both checked bit for bit against the CPU oracle before and after timing.
A full run writes benchmarks/results/latest.json and latest.png; a run narrowed with --cases writes
latest-partial.json and latest-partial.png instead, so that it never replaces the committed record.

--sweep measures instead, for 1 and 64 rows and k = 512, 1024, 2048, the op with a plan over float32
rows of 2K..256K logits (as wide as the rows) beside the floor: sweep.json and sweep.png.

Without a GPU (or without the compiled kernels, or with --cpu) it runs the CPU path on the smallest
cases, checks its values against torch.topk and says so; nothing is written then.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

from . import reference, suite
from ._backend import has_cuda_kernels
from .ops import top_k_per_row
from .plan import make_plan
from .workspace import Workspace

# L2 flush: writing this many bytes evicts an H100's 50 MB / H200's 60 MB L2 several times over.
FLUSH_BYTES = 256 << 20
# Streaming-read probe for the floor's bandwidth: large enough that launch cost is noise.
BANDWIDTH_PROBE_BYTES = 2 << 30
# SPEC §8: every time is the median of at least this many replays.
MIN_REPS = 30
# Default replays per timing: a stable median at a few ms per case.
DEFAULT_REPS = 50
# SPEC §8: the trivial kernel's floor is the best of this many medians (launch jitter only adds).
FLOOR_TRIES = 3
# Written over the output before a checking replay, so that a slot the kernel skips cannot pass.
POISON = -7
# The output indices are int32.
INDEX_BYTES = 4
# What speedup is measured against (SPEC §8): the op's default output is unsorted indices.
BASELINE = "torch.topk(masked, k, sorted=False)"
# The CPU path is slow; the smallest cases are enough to show it works.
CPU_CASES = 3
# Log-scale plots: the y axis reaches this factor above the tallest bar, so the legend covers none.
LEGEND_HEADROOM = 4
# Sweep: one decode row, and a batch of 64 rows (more than enough to occupy every SM).
SWEEP_ROWS = (1, 64)
# Sweep: the k of DeepSeek V4-Flash, V4-Pro and V3.2.
SWEEP_KS = (512, 1024, 2048)
# Sweep: 2K tokens up to V4's 262144 compressed slots at 1M tokens (and V3.2's 163840 on the way).
SWEEP_LENGTHS = (2048, 4096, 8192, 16384, 32768, 65536, 98304, 131072, 163840, 196608, 229376, 262144)
# Sweep: the CPU oracle on 64 x 256K logits takes long; this many random rows per point are checked.
SWEEP_CHECK_ROWS = 4


# ----------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------
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


@dataclass
class Meter:
    """What every timing shares: replays per median, the L2 flush buffer and the read bandwidth."""
    reps: int
    flush: torch.Tensor
    bandwidth: float  # bytes/s

    def time_us(self, graph) -> float:
        return time_graph_us(graph, self.reps, self.flush)

    def floor_us(self, rows: int, k: int, logits_bytes: int) -> float:
        """max(best of FLOOR_TRIES medians of a graph writing a rows x k int32 output,
        (logits_bytes + output bytes) / read bandwidth)."""
        out = torch.empty((rows, k), dtype=torch.int32, device="cuda")
        trivial = capture_graph(lambda: out.fill_(-1))
        trivial_us = min(self.time_us(trivial) for _ in range(FLOOR_TRIES))
        return max(trivial_us, (logits_bytes + rows * k * INDEX_BYTES) / self.bandwidth * 1e6)


def valid_logits_bytes(lengths_cpu: torch.Tensor, stride: int, element_size: int) -> int:
    return int(lengths_cpu.to(torch.int64).clamp(0, stride).sum()) * element_size


# ----------------------------------------------------------------------------------------------------
# Exactness
# ----------------------------------------------------------------------------------------------------
def assert_equal(out: torch.Tensor, want: torch.Tensor, what: str, rows: Optional[torch.Tensor] = None):
    """out (or its rows `rows`) must equal the oracle's indices want bit for bit."""
    got = out.cpu() if rows is None else out.cpu()[rows]
    if not torch.equal(got, want):
        raise AssertionError(f"{what}: the kernel disagrees with the CPU oracle")


def check_replay(graph, out: torch.Tensor, want: torch.Tensor, what: str, rows: Optional[torch.Tensor] = None):
    """Poison out, replay the graph once, and compare with the oracle."""
    out.fill_(POISON)
    graph.replay()
    assert_equal(out, want, what, rows)


# ----------------------------------------------------------------------------------------------------
# The suite
# ----------------------------------------------------------------------------------------------------
def torch_times(logits: torch.Tensor, lengths: torch.Tensor, k: int, meter: Meter) -> Dict[str, float]:
    """Graph times of torch.topk on the logits masked to -inf past each row's length, unsorted and sorted."""
    rows, stride = logits.shape
    columns = torch.arange(stride, device="cuda")
    masked = torch.where(columns[None, :] < lengths[:, None], logits, float("-inf"))  # keeps logits.dtype
    torch_k = min(k, stride)  # torch.topk cannot ask for more than the row has (short rows)
    values = torch.empty((rows, torch_k), dtype=logits.dtype, device="cuda")
    indices = torch.empty((rows, torch_k), dtype=torch.int64, device="cuda")
    times = {}
    for key, is_sorted in (("torch_us", False), ("torch_sorted_us", True)):
        graph = capture_graph(
            lambda s=is_sorted: torch.topk(masked, torch_k, dim=1, sorted=s, out=(values, indices)))
        times[key] = meter.time_us(graph)
    return times


def op_times(name, logits, lengths, lengths_cpu, k, meter: Meter) -> Dict[str, float]:
    """Graph times of the op with a plan, without one, and of make_plan alone; both op graphs are
    checked against the oracle before and after all the timing."""
    rows, stride = logits.shape
    want = reference.reference_topk(logits.cpu(), lengths_cpu, k)[0]
    workspace = Workspace("cuda", rows, stride, k)
    plan = make_plan(lengths, stride, k, workspace=workspace)
    out = torch.empty((rows, k), dtype=torch.int32, device="cuda")
    out_noplan = torch.empty_like(out)
    # make_plan's graph is captured last: each make_plan call supersedes the plans made before it in the
    # workspace (a plan= call from Python then refuses them), while its replays rewrite the same plan (same
    # lengths) into the buffer the "us" graph reads; the checks after timing would catch any harm.
    graphs = {
        "us": capture_graph(lambda: top_k_per_row(logits, lengths, k, out=out, plan=plan, workspace=workspace)),
        "noplan_us": capture_graph(lambda: top_k_per_row(logits, lengths, k, out=out_noplan, workspace=workspace)),
        "plan_us": capture_graph(lambda: make_plan(lengths, stride, k, workspace=workspace)),
    }
    workspace.lock()  # the graphs point into it: it must not grow from now on
    checked = ((graphs["us"], out, f"{name} (with plan)"), (graphs["noplan_us"], out_noplan, f"{name} (no plan)"))
    for graph, dest, what in checked:
        check_replay(graph, dest, want, what)
    times = {key: meter.time_us(graph) for key, graph in graphs.items()}
    for graph, dest, what in checked:
        assert_equal(dest, want, f"{what}, last timed replay")
        check_replay(graph, dest, want, f"{what}, after timing")
    return times


def gpu_case(case: Dict, data: Dict, targets: Dict, meter: Meter, gen: torch.Generator) -> Dict:
    """One suite case: its times, speedup, floor and targets, as a latest.json entry."""
    name, rows, k, dtype = case["name"], case["rows"], suite.case_k(case, data), suite.case_dtype(case)
    lengths_np = suite.case_lengths(case)
    stride = suite.case_stride(case, lengths_np)
    lengths_cpu = torch.from_numpy(lengths_np)
    lengths = lengths_cpu.cuda()
    logits = torch.randn((rows, stride), generator=gen, device="cuda").to(dtype)

    times = op_times(name, logits, lengths, lengths_cpu, k, meter)
    times.update(torch_times(logits, lengths, k, meter))
    floor_us = meter.floor_us(rows, k, valid_logits_bytes(lengths_cpu, stride, logits.element_size()))
    target = targets.get(name, {})
    return {"name": name, "rows": rows, "stride": stride, "k": k, "dtype": suite.case_dtype_name(case),
            **{key: round(times[key], 2) for key in ("us", "noplan_us", "plan_us", "torch_us", "torch_sorted_us")},
            "speedup": round(times["torch_us"] / times["us"], 2), "floor_us": round(floor_us, 2),
            "time_over_floor": round(times["us"] / floor_us, 2),
            "public_time_over_floor": target.get("fastest_public_time_over_floor"),
            "goal_time_over_floor": target.get("goal_time_over_floor")}


def geomean(xs: List[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def beats_public(r: Dict) -> Optional[bool]:
    """Whether the case's time over floor is at or below the fastest public kernel's (None: no public one)."""
    public = r["public_time_over_floor"]
    return None if public is None else r["time_over_floor"] <= public


def print_table(results: List[Dict], title: str):
    def ratio(x):
        return "-" if x is None else f"{x:.2f}"

    marks = {True: "yes", False: "no", None: "-"}
    print(title)
    print(f"{'case':30s} {'us':>8s} {'noplan_us':>9s} {'plan_us':>7s} {'torch_us':>8s} {'torch_sorted_us':>15s} "
          f"{'speedup':>7s} {'floor_us':>8s} {'x_floor':>7s} {'public_x_floor':>14s} {'goal_x_floor':>12s} "
          f"{'<=public':>8s}")
    for r in results:
        print(f"{r['name']:30s} {r['us']:8.2f} {r['noplan_us']:9.2f} {r['plan_us']:7.2f} {r['torch_us']:8.2f} "
              f"{r['torch_sorted_us']:15.2f} {r['speedup']:7.2f} {r['floor_us']:8.2f} {r['time_over_floor']:7.2f} "
              f"{ratio(r['public_time_over_floor']):>14s} {ratio(r['goal_time_over_floor']):>12s} "
              f"{marks[beats_public(r)]:>8s}")
    slowest = min(results, key=lambda r: r["speedup"])
    with_public = [r for r in results if beats_public(r) is not None]
    at_goal = [r for r in results if r["goal_time_over_floor"] is not None
               and r["time_over_floor"] <= r["goal_time_over_floor"]]
    print(f"geometric-mean speedup over {BASELINE}: {geomean([r['speedup'] for r in results]):.2f}x; "
          f"slowest case: {slowest['name']} ({slowest['speedup']:.2f}x)")
    print(f"geometric-mean time over floor: {geomean([r['time_over_floor'] for r in results]):.2f}; "
          f"{sum(beats_public(r) for r in with_public)}/{len(with_public)} cases at or below the fastest "
          f"public kernel's; {len(at_goal)}/{len(results)} at the goal")


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None (said once) when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot written")
        return None
    return plt


def plot_suite(results: List[Dict], path: Path, device: str):
    plt = pyplot()
    if plt is None:
        return
    xs = list(range(len(results)))
    width = 0.28
    fig, ax = plt.subplots(figsize=(13, 5.5))
    ax.bar([x - width for x in xs], [r["torch_us"] for r in results], width, label="torch.topk (masked, sorted=False)")
    ax.bar(xs, [r["us"] for r in results], width, label="persistent_topk")
    ax.bar([x + width for x in xs], [r["floor_us"] for r in results], width, label="floor")
    ax.set_yscale("log")
    ax.set_ylabel("µs (CUDA-graph replay, L2 flushed, median)")
    ax.set_xticks(xs)
    ax.set_xticklabels([r["name"] for r in results], rotation=45, ha="right", fontsize=8)
    ax.set_title(f"DSA top-k suite (each case's own k and dtype) — {device}")
    top = max(max(r["torch_us"], r["us"]) for r in results)
    ax.set_ylim(top=top * LEGEND_HEADROOM)  # room above the bars for the legend
    ax.legend(loc="upper center", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def record_header(device: str, args, meter: Meter) -> Dict:
    return {"device": device,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "csrc_tree": args.csrc_tree or "unknown",
            "read_bandwidth_tb_s": round(meter.bandwidth / 1e12, 3),
            "reps": args.reps}


def write_json(path: Path, record: Dict):
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


def select_cases(cases: List[Dict], substrings: Optional[List[str]]) -> List[Dict]:
    return [c for c in cases if not substrings or any(s in c["name"] for s in substrings)]


def run_suite(args, meter: Meter, device: str, out_dir: Path) -> int:
    data = suite.load_suite()
    targets = suite.load_targets()
    selected = select_cases(data["cases"], args.cases)
    if not selected:
        print(f"no suite case matches {args.cases}")
        return 1
    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    results = []
    for case in selected:
        r = gpu_case(case, data, targets, meter, gen)
        results.append(r)
        print(f"  {r['name']:30s} {r['us']:8.2f} us (no plan {r['noplan_us']:8.2f}, plan {r['plan_us']:6.2f})  "
              f"torch {r['torch_us']:8.2f} us (sorted {r['torch_sorted_us']:8.2f})  floor {r['floor_us']:7.2f} us  "
              f"x{r['time_over_floor']:.2f}", flush=True)
    # Only a run of every case may replace the committed record; a narrowed one goes beside it.
    stem = "latest" if len(results) == len(data["cases"]) else "latest-partial"
    record = {**record_header(device, args, meter), "baseline": BASELINE, "cases": results}
    write_json(out_dir / f"{stem}.json", record)
    plot_suite(results, out_dir / f"{stem}.png", device)
    print_table(results, f"\npersistent_topk on {device} (csrc tree {record['csrc_tree']})")
    return 0


# ----------------------------------------------------------------------------------------------------
# The length sweep
# ----------------------------------------------------------------------------------------------------
def sweep_point(rows: int, k: int, length: int, meter: Meter, gen: torch.Generator,
                pick: torch.Generator) -> Dict:
    """The op with a plan on rows x length float32 logits, every row full; a few rows checked."""
    logits = torch.randn((rows, length), generator=gen, device="cuda")
    lengths_cpu = torch.full((rows,), length, dtype=torch.int32)
    lengths = lengths_cpu.cuda()
    workspace = Workspace("cuda", rows, length, k)
    plan = make_plan(lengths, length, k, workspace=workspace)
    out = torch.empty((rows, k), dtype=torch.int32, device="cuda")
    graph = capture_graph(lambda: top_k_per_row(logits, lengths, k, out=out, plan=plan, workspace=workspace))
    workspace.lock()
    checked = torch.randperm(rows, generator=pick)[:SWEEP_CHECK_ROWS]
    want = reference.reference_topk(logits.cpu()[checked], lengths_cpu[checked], k)[0]
    what = f"sweep rows={rows} k={k} length={length}"
    check_replay(graph, out, want, what, checked)
    us = meter.time_us(graph)
    assert_equal(out, want, f"{what}, last timed replay", checked)
    floor_us = meter.floor_us(rows, k, rows * length * logits.element_size())
    return {"rows": rows, "k": k, "length": length, "us": round(us, 2), "floor_us": round(floor_us, 2)}


def sweep_axes(points: List[Dict]):
    """The rows, ks and lengths a sweep's points cover, each sorted."""
    return tuple(sorted({p[key] for p in points}) for key in ("rows", "k", "length"))


def print_sweep(points: List[Dict]):
    by_key = {(p["rows"], p["k"], p["length"]): p for p in points}
    all_rows, ks, lengths = sweep_axes(points)
    for rows in all_rows:
        print(f"\nrows={rows}: µs (time over floor)")
        print(f"{'length':>8s}" + "".join(f"{'k=' + str(k):>18s}" for k in ks))
        for length in lengths:
            cells = [by_key[(rows, k, length)] for k in ks]
            print(f"{length:8d}" + "".join(f"{p['us']:11.2f} ({p['us'] / p['floor_us']:4.2f})" for p in cells))


def plot_sweep(points: List[Dict], path: Path, device: str):
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(9, 6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    all_rows, ks, all_lengths = sweep_axes(points)
    series = [(rows, k) for rows in all_rows for k in ks]
    for i, (rows, k) in enumerate(series):
        line = [p for p in points if p["rows"] == rows and p["k"] == k]
        colour = colours[i % len(colours)]
        lengths = [p["length"] for p in line]
        ax.plot(lengths, [p["us"] for p in line], "o-", color=colour, label=f"rows={rows} k={k}")
        ax.plot(lengths, [p["floor_us"] for p in line], "--", color=colour,
                label="floor (dashed, same colour)" if i == 0 else None)
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_lengths)
    ax.set_xticklabels([f"{n // 1024}K" for n in all_lengths], rotation=45)
    ax.tick_params(axis="x", which="minor", bottom=False)
    ax.set_yscale("log")
    ax.set_xlabel("row length (logits per row; stride = length)")
    ax.set_ylabel("µs (CUDA-graph replay, L2 flushed, median)")
    ax.set_title(f"persistent_topk with a plan, float32, length sweep — {device}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def run_sweep(args, meter: Meter, device: str, out_dir: Path) -> int:
    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    pick = torch.Generator().manual_seed(args.seed)  # which rows the oracle checks
    points = []
    for rows in args.sweep_rows:
        for k in args.sweep_ks:
            points += [sweep_point(rows, k, length, meter, gen, pick) for length in args.sweep_lengths]
            print(f"  rows={rows:3d} k={k:5d}: {len(args.sweep_lengths)} lengths measured", flush=True)
    full = (tuple(args.sweep_rows), tuple(args.sweep_ks), tuple(args.sweep_lengths)) == \
        (SWEEP_ROWS, SWEEP_KS, SWEEP_LENGTHS)
    stem = "sweep" if full else "sweep-partial"
    write_json(out_dir / f"{stem}.json", {**record_header(device, args, meter), "points": points})
    plot_sweep(points, out_dir / f"{stem}.png", device)
    print_sweep(points)
    return 0


# ----------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------
def run_gpu(args) -> int:
    device = torch.cuda.get_device_name()
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    meter = Meter(args.reps, flush, read_bandwidth(flush, args.reps))
    print(f"{device}: streaming read bandwidth {meter.bandwidth / 1e12:.2f} TB/s; {args.reps} replays per timing")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return (run_sweep if args.sweep else run_suite)(args, meter, device, out_dir)


def total_length(case: Dict) -> int:
    return int(suite.case_lengths(case).astype("int64").sum())


def run_cpu(args, why: str) -> int:
    print(f"{why}: running the CPU path on the smallest suite cases instead (nothing is written"
          f"{'; --sweep needs the CUDA kernels' if args.sweep else ''}).")
    data = suite.load_suite()
    small = sorted(select_cases(data["cases"], args.cases), key=total_length)[:CPU_CASES]
    gen = torch.Generator().manual_seed(args.seed)
    for case in small:
        rows, k, dtype = case["rows"], suite.case_k(case, data), suite.case_dtype(case)
        lengths = torch.from_numpy(suite.case_lengths(case))
        stride = suite.case_stride(case, lengths.numpy())
        logits = torch.randn((rows, stride), generator=gen).to(dtype)
        values = torch.empty(rows, k, dtype=dtype)
        top_k_per_row(logits, lengths, k, values=values, sorted=True)  # warm-up
        start = time.perf_counter()
        top_k_per_row(logits, lengths, k, values=values, sorted=True)
        ms = (time.perf_counter() - start) * 1e3
        for r in range(rows):
            n = min(int(lengths[r]), stride)
            want = torch.topk(logits[r, :n], min(k, n)).values
            assert torch.equal(values[r, : len(want)], want), f"{case['name']} row {r}"
        print(f"  {case['name']:30s} k={k:5d} {suite.case_dtype_name(case):8s} {ms:9.1f} ms on the CPU, "
              "values equal torch.topk")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS,
                        help=f"timed replays per measurement (median; >= {MIN_REPS})")
    parser.add_argument("--cases", nargs="*", metavar="SUBSTR",
                        help="only cases whose name contains one of these (writes latest-partial.*)")
    parser.add_argument("--sweep", action="store_true",
                        help="run the length sweep instead of the suite (writes sweep.json and sweep.png)")
    parser.add_argument("--sweep-rows", nargs="+", type=int, default=list(SWEEP_ROWS),
                        help="the sweep's row counts (another choice than the default writes sweep-partial.*)")
    parser.add_argument("--sweep-ks", nargs="+", type=int, default=list(SWEEP_KS), help="the sweep's k values")
    parser.add_argument("--sweep-lengths", nargs="+", type=int, default=list(SWEEP_LENGTHS),
                        help="the sweep's row lengths")
    parser.add_argument("--out-dir", default=os.path.join("benchmarks", "results"),
                        help="where the JSON record and plot go (default benchmarks/results)")
    parser.add_argument("--csrc-tree", default=os.environ.get("PERSISTENT_TOPK_CSRC_TREE"),
                        help="git rev-parse HEAD:csrc of the measured kernel (the device copy has no git "
                             "history); default $PERSISTENT_TOPK_CSRC_TREE")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random logits")
    parser.add_argument("--cpu", action="store_true", help="run the CPU path even if a GPU is present")
    args = parser.parse_args(argv)
    if args.reps < MIN_REPS:
        parser.error(f"--reps must be >= {MIN_REPS} (SPEC §8: median of at least {MIN_REPS})")
    if args.cpu:
        return run_cpu(args, "--cpu given")
    if not torch.cuda.is_available():
        return run_cpu(args, "no CUDA device")
    if not has_cuda_kernels():
        return run_cpu(args, "persistent_topk was built without CUDA kernels")
    return run_gpu(args)


if __name__ == "__main__":
    sys.exit(main())
