"""The main job: ``python -m persistent_topk.bench`` measures the DSA suite as SPEC §8 says.

On a GPU, every case of dsa_suite.json runs with its own k, logits dtype and stride, and these are timed:
  us               top_k_per_row(logits, lengths, k, out=, plan=, workspace=), the plan made beforehand
  noplan_us        the same call without plan= (the op then plans itself)
  plan_us          make_plan(lengths, stride, k, workspace=) alone
  torch_us         the baseline, torch.topk(masked, k, sorted=False) on the logits masked to -inf past
                   each row's length (like the op's default output, unsorted); speedup = torch_us / us
  torch_sorted_us  the same with sorted=True, for reference
  page_table_us    (--modes ...,page-table only) top_k_page_table_transform(logits, lengths, page_table, 64, k,
                   out=, plan=, workspace=) through a random block table of pages of 64, the same plan
each one a CUDA-graph replay with the L2 flushed before every replay, median of --reps. The floor is
max(best of 3 medians of a trivial graph writing the rows x k output, (valid logits + output bytes) /
the measured read bandwidth); time over floor = us / floor_us, shown beside the fastest public
kernel's time over floor and the goal (dsa_targets.json, H200 ratios). The with-plan and no-plan
graphs (and the page-table one) are checked bit for bit against the CPU oracle before and after timing.
A full run writes benchmarks/results/latest.json and latest.png; a partial run (narrowed with --cases,
every case's dtype or k overridden with --dtype / --k, or --modes other than plan,noplan) writes
latest-partial.json and latest-partial.png instead, so that it never replaces the committed record; its
record says what made it partial ("partial"). The plot shows, per case on a log scale, this op (with a
plan), torch.topk and the floor.

--modes picks the op columns: plan (us and plan_us; always needed, every ratio is of it), noplan
(noplan_us), page-table (page_table_us). Default plan,noplan.
--decode-step runs examples/dsa_decode.py --bench --out <out-dir>/dsa_decode.json instead (a whole DSA
decode step; exit 2 when that script is not in this checkout).
A progress line ([ 7/21] case ...) goes to stderr when it is a terminal (--no-progress: never).

--sweep measures instead, for 1 and 64 rows and k = 512, 1024, 2048, the op with a plan over float32
rows of 2K..256K logits (as wide as the rows) beside the floor: sweep.json and sweep.png.

Without a GPU (or without the compiled kernels, or with --cpu) it runs the CPU subset instead: the CPU path
on the smallest cases, checked against torch.topk; its first line says so, and nothing is written then.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

import torch

from . import reference, suite
from ._backend import has_cuda_kernels
from .ops import top_k_page_table_transform, top_k_per_row
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
# --modes: what each mode times, as its record column. "plan" also brings plan_us (make_plan alone).
MODE_COLUMNS = {"plan": "us", "noplan": "noplan_us", "page-table": "page_table_us"}
MODES = tuple(MODE_COLUMNS)
# Today's columns: a run of other modes is a partial run.
DEFAULT_MODES = ("plan", "noplan")
# The page-table mode's block table: KV positions per page (DeepSeek's paged KV cache uses 64).
PAGE_SIZE = 64
# The record stems of a full run and of a partial one (other tools read these names).
FULL_STEM = "latest"
PARTIAL_STEM = "latest-partial"
# --decode-step: the whole-decode-step benchmark, relative to the repository root, and its record.
DECODE_SCRIPT = Path("examples") / "dsa_decode.py"
DECODE_RECORD = "dsa_decode.json"  # the script's own default name
# --decode-step's exit status when the script is not in this checkout.
EXIT_NO_DECODE_SCRIPT = 2


# ----------------------------------------------------------------------------------------------------
# Progress (stderr, plain text)
# ----------------------------------------------------------------------------------------------------
def format_progress(index: int, total: int, label: str, elapsed_s: Optional[float] = None) -> str:
    """'[ 7/21] label ...' (index counted from 1, right-aligned to the width of total), then the seconds
    since the run began when given."""
    line = f"[{index:>{len(str(total))}}/{total}] {label} ..."
    return line if elapsed_s is None else f"{line} {elapsed_s:.0f} s"


def progress_enabled(no_progress: bool, stream: TextIO) -> bool:
    """On unless --no-progress, and only where the stream is a terminal (never in logs or pipes)."""
    if no_progress:
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class Progress:
    """One rewritable line on a terminal: show() before each item, clear() before printing anything else
    (so that the results on stdout never interleave with it). Does nothing when disabled."""

    def __init__(self, total: int, enabled: bool, stream: Optional[TextIO] = None):
        self.total, self.enabled = total, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.index, self.width = 0, 0
        self.start = time.perf_counter()

    def show(self, label: str) -> None:
        self.index += 1
        if not self.enabled:
            return
        line = format_progress(self.index, self.total, label, time.perf_counter() - self.start)
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = max(self.width, len(line))

    def clear(self) -> None:
        if self.enabled and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


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


def random_page_table(rows: int, stride: int, page_size: int, gen: torch.Generator) -> torch.Tensor:
    """A [rows, ceil(stride / page_size)] int32 block table: every row's pages are distinct pages of one
    pool, in random order (as a paged KV cache hands them out)."""
    pages = -(-stride // page_size)
    return torch.randperm(rows * pages, generator=gen).to(torch.int32).view(rows, pages)


def op_times(name, logits, lengths, lengths_cpu, k, meter: Meter, modes: Sequence[str] = DEFAULT_MODES,
             page_table: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """Graph times of the op with a plan (always), without one (noplan), through the page table with the
    plan (page-table), and of make_plan alone; every op graph is checked against the oracle before and
    after all the timing."""
    rows, stride = logits.shape
    want = reference.reference_topk(logits.cpu(), lengths_cpu, k)[0]
    workspace = Workspace("cuda", rows, stride, k)
    plan = make_plan(lengths, stride, k, workspace=workspace)
    out = torch.empty((rows, k), dtype=torch.int32, device="cuda")
    graphs = {"us": capture_graph(lambda: top_k_per_row(logits, lengths, k, out=out, plan=plan, workspace=workspace))}
    checked = [(graphs["us"], out, want, f"{name} (with plan)")]
    if "noplan" in modes:
        out_noplan = torch.empty_like(out)
        graphs["noplan_us"] = capture_graph(
            lambda: top_k_per_row(logits, lengths, k, out=out_noplan, workspace=workspace))
        checked.append((graphs["noplan_us"], out_noplan, want, f"{name} (no plan)"))
    if "page-table" in modes:
        out_table = torch.empty_like(out)
        table = page_table.cuda()
        graphs["page_table_us"] = capture_graph(lambda: top_k_page_table_transform(
            logits, lengths, table, PAGE_SIZE, k, out=out_table, plan=plan, workspace=workspace))
        want_table = reference.page_table_transform(want.to(torch.int64), page_table, PAGE_SIZE).to(torch.int32)
        checked.append((graphs["page_table_us"], out_table, want_table, f"{name} (page table)"))
    # make_plan's graph is captured last: each make_plan call supersedes the plans made before it in the
    # workspace (a plan= call from Python then refuses them), while its replays rewrite the same plan (same
    # lengths) into the buffer the "us" graph reads; the checks after timing would catch any harm.
    graphs["plan_us"] = capture_graph(lambda: make_plan(lengths, stride, k, workspace=workspace))
    workspace.lock()  # the graphs point into it: it must not grow from now on
    for graph, dest, expected, what in checked:
        check_replay(graph, dest, expected, what)
    times = {key: meter.time_us(graph) for key, graph in graphs.items()}
    for graph, dest, expected, what in checked:
        assert_equal(dest, expected, f"{what}, last timed replay")
        check_replay(graph, dest, expected, f"{what}, after timing")
    return times


def op_columns(modes: Sequence[str]) -> List[str]:
    """The record's op time columns for these modes, in today's order (us, noplan_us, plan_us), then the
    page-table one."""
    columns = ["us"] + (["noplan_us"] if "noplan" in modes else []) + ["plan_us"]
    return columns + (["page_table_us"] if "page-table" in modes else [])


def gpu_case(case: Dict, data: Dict, targets: Dict, meter: Meter, gen: torch.Generator,
             modes: Sequence[str] = DEFAULT_MODES, table_gen: Optional[torch.Generator] = None) -> Dict:
    """One suite case: its times, speedup, floor and targets, as a latest.json entry."""
    name, rows, k, dtype = case["name"], case["rows"], suite.case_k(case, data), suite.case_dtype(case)
    lengths_np = suite.case_lengths(case)
    stride = suite.case_stride(case, lengths_np)
    lengths_cpu = torch.from_numpy(lengths_np)
    lengths = lengths_cpu.cuda()
    logits = torch.randn((rows, stride), generator=gen, device="cuda").to(dtype)

    page_table = None
    if "page-table" in modes:
        page_table = random_page_table(rows, stride, PAGE_SIZE, table_gen or torch.Generator().manual_seed(0))
    times = op_times(name, logits, lengths, lengths_cpu, k, meter, modes, page_table)
    times.update(torch_times(logits, lengths, k, meter))
    floor_us = meter.floor_us(rows, k, valid_logits_bytes(lengths_cpu, stride, logits.element_size()))
    target = targets.get(name, {})
    return {"name": name, "rows": rows, "stride": stride, "k": k, "dtype": suite.case_dtype_name(case),
            **{key: round(times[key], 2) for key in op_columns(modes) + ["torch_us", "torch_sorted_us"]},
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


# The table's time columns and their widths, in order (each shown when the results have it).
TIME_COLUMNS = {"us": 8, "noplan_us": 9, "plan_us": 7, "page_table_us": 13, "torch_us": 8, "torch_sorted_us": 15}


def print_table(results: List[Dict], title: str):
    def ratio(x):
        return "-" if x is None else f"{x:.2f}"

    marks = {True: "yes", False: "no", None: "-"}
    # (header, width, record key): the time columns present in the results, in the record's order.
    times = [(key, width, key) for key, width in TIME_COLUMNS.items() if key in results[0]]
    print(title)
    print(f"{'case':30s} " + "".join(f"{header:>{width}s} " for header, width, _ in times) +
          f"{'speedup':>7s} {'floor_us':>8s} {'x_floor':>7s} {'public_x_floor':>14s} {'goal_x_floor':>12s} "
          f"{'<=public':>8s}")
    for r in results:
        print(f"{r['name']:30s} " + "".join(f"{r[key]:{width}.2f} " for _, width, key in times) +
              f"{r['speedup']:7.2f} {r['floor_us']:8.2f} {r['time_over_floor']:7.2f} "
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


# The suite plot's series, per case: (record key, legend label), drawn left to right.
PLOT_SERIES = (("torch_us", "torch.topk (masked, sorted=False)"), ("us", "persistent_topk"), ("floor_us", "floor"))


def suite_figure(plt, results: List[Dict], device: str, what: str = "each case's own k and dtype"):
    """The suite plot: per case, torch.topk, this op (with a plan) and the floor, as bars on a log scale."""
    xs = list(range(len(results)))
    width = 0.28
    fig, ax = plt.subplots(figsize=(13, 5.5))
    for i, (key, label) in enumerate(PLOT_SERIES):
        ax.bar([x + (i - 1) * width for x in xs], [r[key] for r in results], width, label=label)
    ax.set_yscale("log")
    ax.set_ylabel("µs (CUDA-graph replay, L2 flushed, median)")
    ax.set_xticks(xs)
    ax.set_xticklabels([r["name"] for r in results], rotation=45, ha="right", fontsize=8)
    ax.set_title(f"DSA top-k suite ({what}) — {device}")
    top = max(max(r[key] for key, _ in PLOT_SERIES) for r in results)
    ax.set_ylim(top=top * LEGEND_HEADROOM)  # room above the bars for the legend
    ax.legend(loc="upper center", ncol=3)
    fig.tight_layout()
    return fig, ax


def plot_suite(results: List[Dict], path: Path, device: str, what: str = "each case's own k and dtype"):
    plt = pyplot()
    if plt is None:
        return
    fig, _ = suite_figure(plt, results, device, what)
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


def apply_overrides(cases: List[Dict], dtype: Optional[str] = None, k: Optional[int] = None) -> List[Dict]:
    """Copies of the cases with every case's dtype and/or k replaced (the suite file is untouched)."""
    change = {**({"dtype": dtype} if dtype is not None else {}), **({"k": k} if k is not None else {})}
    return [{**case, **change} for case in cases]


def partial_reasons(args, selected: int, total: int) -> Dict:
    """What makes this suite run partial (empty: a full run, which alone may write latest.*): fewer cases
    than the suite's, a --dtype or --k override, or modes other than the default."""
    reasons = {}
    if selected != total:
        reasons["cases"] = list(args.cases or [])
    if args.dtype is not None:
        reasons["dtype"] = args.dtype
    if args.k is not None:
        reasons["k"] = args.k
    if tuple(args.modes) != DEFAULT_MODES:
        reasons["modes"] = list(args.modes)
    return reasons


def record_stem(partial: Dict) -> str:
    """latest for a full run; latest-partial for any other, so that it never replaces the committed record."""
    return PARTIAL_STEM if partial else FULL_STEM


def describe_overrides(args) -> str:
    """The plot title's account of the cases' k and dtype."""
    if args.dtype is None and args.k is None:
        return "each case's own k and dtype"
    k = f"k={args.k}" if args.k is not None else "each case's own k"
    dtype = args.dtype if args.dtype is not None else "each case's own dtype"
    return f"{k}, {dtype}"


def case_line(r: Dict) -> str:
    """The line printed as each case finishes."""
    parts = ([f"no plan {r['noplan_us']:8.2f}"] if "noplan_us" in r else []) + [f"plan {r['plan_us']:6.2f}"] + \
        ([f"page table {r['page_table_us']:8.2f}"] if "page_table_us" in r else [])
    return (f"  {r['name']:30s} {r['us']:8.2f} us ({', '.join(parts)})  "
            f"torch {r['torch_us']:8.2f} us (sorted {r['torch_sorted_us']:8.2f})  floor {r['floor_us']:7.2f} us  "
            f"x{r['time_over_floor']:.2f}")


def run_suite(args, meter: Meter, device: str, out_dir: Path) -> int:
    data = suite.load_suite()
    targets = suite.load_targets()
    selected = select_cases(data["cases"], args.cases)
    if not selected:
        print(f"no suite case matches {args.cases}")
        return 1
    partial = partial_reasons(args, len(selected), len(data["cases"]))
    stem = record_stem(partial)
    if partial:
        print(f"partial run ({', '.join(f'{key}: {value}' for key, value in partial.items())}): writes {stem}.*")
    if args.dtype is not None or args.k is not None:
        targets = {}  # the targets are for each case's own k and dtype
    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    table_gen = torch.Generator().manual_seed(args.seed)  # the page-table mode's block tables
    results = []
    progress = Progress(len(selected), progress_enabled(args.no_progress, sys.stderr))
    try:
        for case in apply_overrides(selected, args.dtype, args.k):
            progress.show(case["name"])
            r = gpu_case(case, data, targets, meter, gen, args.modes, table_gen)
            progress.clear()
            results.append(r)
            print(case_line(r), flush=True)
    finally:
        progress.clear()
    record = {**record_header(device, args, meter), "baseline": BASELINE, "cases": results}
    if partial:
        record["partial"] = partial
    write_json(out_dir / f"{stem}.json", record)
    plot_suite(results, out_dir / f"{stem}.png", device, describe_overrides(args))
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
    progress = Progress(len(args.sweep_rows) * len(args.sweep_ks) * len(args.sweep_lengths),
                        progress_enabled(args.no_progress, sys.stderr))
    try:
        for rows in args.sweep_rows:
            for k in args.sweep_ks:
                for length in args.sweep_lengths:
                    progress.show(f"rows={rows} k={k} length={length}")
                    points.append(sweep_point(rows, k, length, meter, gen, pick))
                progress.clear()
                print(f"  rows={rows:3d} k={k:5d}: {len(args.sweep_lengths)} lengths measured", flush=True)
    finally:
        progress.clear()
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


def cpu_first_line(why: str, cases: int, sweep: bool) -> str:
    """The CPU subset's first line: what it is, why, and that nothing is timed or written."""
    return (f"CPU SUBSET ONLY ({why}): no GPU timing; checking the CPU path on the {cases} smallest suite "
            f"case{'s' if cases != 1 else ''} against torch.topk; nothing is written"
            f"{' (--sweep needs the CUDA kernels)' if sweep else ''}.")


def cpu_case(case: Dict, data: Dict, modes: Sequence[str], gen: torch.Generator) -> Dict[str, float]:
    """One case on the CPU: each mode's call (sorted, so that its values can be compared), checked against
    torch.topk (the page-table mode: the transform of the same call's raw indices); ms per mode."""
    rows, k, dtype = case["rows"], suite.case_k(case, data), suite.case_dtype(case)
    lengths = torch.from_numpy(suite.case_lengths(case))
    stride = suite.case_stride(case, lengths.numpy())
    logits = torch.randn((rows, stride), generator=gen).to(dtype)
    plan = make_plan(lengths, stride, k)
    table = random_page_table(rows, stride, PAGE_SIZE, gen)
    raw = torch.empty(rows, k, dtype=torch.int32)
    calls = {
        "plan": lambda values: top_k_per_row(logits, lengths, k, values=values, plan=plan, sorted=True),
        "noplan": lambda values: top_k_per_row(logits, lengths, k, values=values, sorted=True),
        "page-table": lambda values: top_k_page_table_transform(logits, lengths, table, PAGE_SIZE, k, values=values,
                                                                raw_indices=raw, plan=plan, sorted=True),
    }
    ms = {}
    for mode in modes:
        values = torch.empty(rows, k, dtype=dtype)
        calls[mode](values)  # warm-up
        start = time.perf_counter()
        out = calls[mode](values)
        ms[mode] = (time.perf_counter() - start) * 1e3
        for r in range(rows):
            n = min(int(lengths[r]), stride)
            want = torch.topk(logits[r, :n], min(k, n)).values
            assert torch.equal(values[r, : len(want)], want), f"{case['name']} ({mode}) row {r}"
        if mode == "page-table":
            mapped = reference.page_table_transform(raw.to(torch.int64), table, PAGE_SIZE).to(torch.int32)
            assert torch.equal(out, mapped), f"{case['name']} (page-table): slots are not the raw indices' pages"
    return ms


def run_cpu(args, why: str) -> int:
    data = suite.load_suite()
    small = sorted(select_cases(data["cases"], args.cases), key=total_length)[:CPU_CASES]
    print(cpu_first_line(why, len(small), args.sweep), flush=True)
    if not small:
        print(f"no suite case matches {args.cases}")
        return 1
    gen = torch.Generator().manual_seed(args.seed)
    progress = Progress(len(small), progress_enabled(args.no_progress, sys.stderr))
    try:
        for case in apply_overrides(small, args.dtype, args.k):
            progress.show(case["name"])
            ms = cpu_case(case, data, args.modes, gen)
            progress.clear()
            times = ", ".join(f"{ms[mode]:9.1f} ms {mode}" for mode in args.modes)
            print(f"  {case['name']:30s} k={suite.case_k(case, data):5d} {suite.case_dtype_name(case):8s} {times} "
                  "on the CPU, values equal torch.topk", flush=True)
    finally:
        progress.clear()
    return 0


def decode_script(roots: Optional[Sequence[Path]] = None) -> Optional[Path]:
    """examples/dsa_decode.py of the repository this module lives in (or of the working directory)."""
    for root in roots if roots is not None else (Path(__file__).resolve().parents[1], Path.cwd()):
        path = Path(root) / DECODE_SCRIPT
        if path.is_file():
            return path
    return None


def run_decode_step(args, roots: Optional[Sequence[Path]] = None) -> int:
    """The whole-decode-step benchmark of examples/dsa_decode.py, in its own process; its exit status."""
    script = decode_script(roots)
    if script is None:
        print(f"--decode-step: {DECODE_SCRIPT} is not in this checkout, so there is no decode-step benchmark "
              f"to run", file=sys.stderr)
        return EXIT_NO_DECODE_SCRIPT
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(script), "--bench", "--out", str((out_dir / DECODE_RECORD).resolve())]
    print(f"--decode-step: {shlex.join(command)}", flush=True)
    return subprocess.run(command).returncode


def parse_modes(values: Optional[List[str]]) -> Tuple[str, ...]:
    """--modes' words (comma- or space-separated), in MODES order, without repeats; ValueError if one is
    not a mode or plan is missing."""
    if values is None:
        return DEFAULT_MODES
    words = [w for value in values for w in value.split(",") if w]
    unknown = [w for w in words if w not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {', '.join(unknown)}: choose among {', '.join(MODES)}")
    if "plan" not in words:
        raise ValueError("plan is needed (us, speedup and time over floor are of the op with a plan); "
                         "add noplan and/or page-table beside it")
    return tuple(m for m in MODES if m in words)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m persistent_topk.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS,
                        help=f"timed replays per measurement (median; >= {MIN_REPS})")
    parser.add_argument("--cases", nargs="*", metavar="SUBSTR",
                        help="only cases whose name contains one of these (writes latest-partial.*)")
    parser.add_argument("--dtype", choices=sorted(suite.DTYPES),
                        help="every case's logits dtype instead of its own (writes latest-partial.*)")
    parser.add_argument("--k", type=positive_int, help="every case's k instead of its own (writes latest-partial.*)")
    parser.add_argument("--modes", nargs="+", metavar="MODE",
                        help=f"which op columns to time, comma- or space-separated among {', '.join(MODES)}: "
                             f"plan (us, plan_us; required), noplan (noplan_us), page-table (page_table_us: "
                             f"top_k_page_table_transform with the plan, random block table, pages of {PAGE_SIZE}). "
                             f"Default {','.join(DEFAULT_MODES)}; any other choice writes latest-partial.*")
    jobs = parser.add_mutually_exclusive_group()
    jobs.add_argument("--sweep", action="store_true",
                      help="run the length sweep instead of the suite (writes sweep.json and sweep.png)")
    jobs.add_argument("--decode-step", action="store_true",
                      help=f"run {DECODE_SCRIPT} --bench instead (a whole DSA decode step; writes "
                           f"{DECODE_RECORD} in --out-dir); exit {EXIT_NO_DECODE_SCRIPT} if that script is absent")
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
    parser.add_argument("--cpu", action="store_true", help="run the CPU subset even if a GPU is present")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress line on stderr (it is shown only when stderr is a terminal)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The parsed and checked command line; args.modes is a tuple of modes (parser.error exits with 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.reps < MIN_REPS:
        parser.error(f"--reps must be >= {MIN_REPS} (SPEC §8: median of at least {MIN_REPS})")
    suite_only = [flag for flag, given in (("--dtype", args.dtype is not None), ("--k", args.k is not None),
                                           ("--modes", args.modes is not None)) if given]
    if suite_only and (args.sweep or args.decode_step):
        parser.error(f"{', '.join(suite_only)} {'apply' if len(suite_only) > 1 else 'applies'} to the suite only, not to "
                     f"{'--sweep (see --sweep-ks)' if args.sweep else '--decode-step'}")
    try:
        args.modes = parse_modes(args.modes)
    except ValueError as error:
        parser.error(f"--modes: {error}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.decode_step:
        return run_decode_step(args)
    if args.cpu:
        return run_cpu(args, "--cpu given")
    if not torch.cuda.is_available():
        return run_cpu(args, "no CUDA device")
    if not has_cuda_kernels():
        return run_cpu(args, "persistent_topk was built without CUDA kernels")
    return run_gpu(args)


if __name__ == "__main__":
    sys.exit(main())
