"""One DeepSeek sparse-attention (DSA) decode step, as an engine runs it, with persistent_topk in the middle.

    python examples/dsa_decode.py [--preset v32|v4flash|all] [--batch B] [--next-n N] [--steps S]
                                  [--layers L] [--bench] [--pdl] [--device cuda|cpu] [--out PATH]

Per decode step the engine has, for B requests with multi-token prediction (next_n rows each):
  seq_lens [B] int32        tokens in each request's context (its draft tokens included),
  block_table [B, P] int32  the request's logical KV page -> physical page of the paged KV cache.
Row r (request r // next_n, draft token r % next_n) sees seq_lens[b] - next_n + (r % next_n) + 1 tokens.
  DeepSeek-V3.2:     a row is that many raw tokens (logits width 163,840; pages of 64 tokens; k = 2048;
                     61 indexer layers): top_k_per_row_decode(..., page_table=block_table, page_size=64).
  DeepSeek-V4-Flash: a row is that many tokens // 4 compressed KV slots (width 262,144 = 1M tokens; a page
                     of 256 tokens holds 64 slots; k = 512; 21 indexer layers). The row lengths are no longer
                     the decode formula of seq_lens, so they are computed on the device (plain torch ops,
                     graph-capturable) and passed to top_k_page_table_transform(..., row_to_table=r // next_n).

What the step does (one CUDA graph for the whole step, every layer, replayed with new seq_lens):
  metadata  row lengths from seq_lens (device ops), and make_plan(...) ONCE: persistent_topk's plan sits next
            to where the engine builds its attention metadata; every layer reuses it (one launch per top-k).
  per layer (a) the lightning indexer: logits[r, j] = sum_h w[r, h] * relu(q[r, h] . K[j]) against the paged
                key cache (a batched matmul over the cache gathered through the block table). Exact zeros
                are everywhere (relu), so ties at the k-th value are real; past each row's length the
                logits buffer holds garbage (NaN, inf, huge), as an indexer kernel leaves it;
            (b) top-k with the plan, fused with the page-table transform: the output is KV-cache slots
                (physical page * page_size + offset), -1 past min(k, length);
            (c) the consumer: gathers the selected KV entries from the paged cache (slot -1 masked) and
                attends over them (a toy sparse attention standing in for the real MLA kernel).
The selected slots of sampled layers are checked bit for bit against the CPU oracle
(persistent_topk.reference) after every replay, the consumer's output to float tolerance.

What an engine would lift from it:
  * Workspace(device, max_rows, max_stride, k) sized once for the largest step, and .lock() after capture;
  * make_plan(...) once per step from the same device lengths the attention metadata uses, inside the graph;
  * per layer one top-k call with out=, plan=, workspace= and the page table, writing slots directly;
  * for compressed-slot models (V4), row lengths computed on the device and row_to_table instead of next_n;
  * one logits buffer [rows, width] reused by every layer (the op never reads past a row's length, so it
    needs no masking, and the stale columns of the previous layer are harmless).

--bench (CUDA) times the top-k part of a step alone, each variant a CUDA graph over all layers' logits,
median of --reps: plan once + one call per layer; one call per layer that plans itself (no plan=);
torch.topk on the logits masked to -inf past each row's length, then the page-table mapping in torch.
The L2 is flushed before every replay (a step), not between layers: with one logits buffer, later layers
may find part of it in L2, as they would right after the indexer wrote it. It writes
benchmarks/results/dsa_decode.json (or --out): per preset, one row per step.

On the CPU (--device cpu, the default without CUDA) a tiny configuration (small widths, a few layers,
batch 2) runs the same step code without graphs, against the same oracle; --bench there runs the three
top-k variants once per step and checks them, untimed, and writes nothing.

Simplifications, each harmless for top-k: one key cache shared by all layers (a model has one per layer);
each step draws a fresh block table and fresh queries, so the selected slots change every step.
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    import persistent_topk as pt
except ImportError:  # run from a checkout that is not installed: use the package beside examples/
    sys.path.insert(0, str(ROOT))
    import persistent_topk as pt
from persistent_topk import bench, reference

# ----------------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------------
# A KV page holds 64 units in both presets: 64 raw tokens (V3.2) or 64 compressed slots = 256 tokens (V4).
PAGE_UNITS = 64
# Lightning-indexer heads: small (V3.2 has 64 of 128 dims) so the indexer stays cheap beside top-k.
INDEXER_HEADS = 4
# Indexer head dim; the last dimension carries a per-request bias (keys hold 1 there), see BIAS_SIGMAS.
INDEXER_DIM = 32
# Biases of q . k in units of its standard deviation: 0 leaves ~94% of the logits nonzero, 2 about 9%,
# 4 about 0.01%, so rows of the last kind have fewer than k nonzero logits and tie at exactly 0.
BIAS_SIGMAS = (0.0, 2.0, 4.0)
# Physical page 0 is the null page unallocated block-table entries point at (as vLLM's block tables do).
NULL_PAGE = 0
# What the indexer leaves past a row's length: NaN ranks above everything, so a read past it would show.
GARBAGE = (float("nan"), float("inf"), 3.0e38, float("-inf"), -3.0e38)
# Steps replayed by default: all rows at the maximum, all short (<= k), then mixed batches.
DEFAULT_STEPS = 4
# A typical decode batch on the GPU; the CPU's tiny configuration uses 2 requests.
DEFAULT_CUDA_BATCH = 32
CPU_BATCH = 2
# Indexer layers on the CPU (enough to show one plan serving several layers).
CPU_LAYERS = 3
# Layers checked against the oracle per replay, evenly spaced (first, middle, last by default).
DEFAULT_VERIFY_LAYERS = 3
# The oracle materialises several int64 [rows, width] tensors; this many rows at a time bounds its memory.
ORACLE_CHUNK_ROWS = 32
# The consumer's softmax and sums run in a different order on the GPU: compared to this tolerance.
CONSUMER_RTOL = 1e-3
CONSUMER_ATOL = 1e-4
# SPEC §8: every time is a median of at least this many graph replays.
DEFAULT_REPS = bench.MIN_REPS
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "dsa_decode.json"
SEED = 0


@dataclass(frozen=True)
class Preset:
    name: str
    model: str
    layers: int          # indexer layers per decode step
    k: int               # tokens / slots each query row attends to
    width: int           # logits columns per row: the model's maximum context, in units
    tokens_per_unit: int  # 1: a unit is a raw token; 4: a compressed KV slot
    cpu_width: int       # the tiny CPU configuration's width (a multiple of PAGE_UNITS)


PRESETS = {
    "v32": Preset("v32", "DeepSeek-V3.2", layers=61, k=2048, width=163_840, tokens_per_unit=1, cpu_width=8192),
    "v4flash": Preset("v4flash", "DeepSeek-V4-Flash", layers=21, k=512, width=262_144, tokens_per_unit=4,
                      cpu_width=4096),
}


# ----------------------------------------------------------------------------------------------------
# Inputs of one step (drawn on the CPU, copied into the graph's static buffers)
# ----------------------------------------------------------------------------------------------------
def draw_seq_lens(step: int, batch: int, preset: Preset, width: int, gen: torch.Generator) -> torch.Tensor:
    """seq_lens [batch] int32 in tokens: step 0 every request at the maximum, step 1 every row short
    (<= k units), later steps a mix of short, medium, long and maximal requests (request 0 maximal,
    request 1 short)."""
    k, tpu = preset.k, preset.tokens_per_unit
    max_units = width

    def units(lo, hi):  # uniform in [lo, hi], hi clamped to the width
        hi = max(min(hi, max_units), lo)
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    kinds = {0: ["max"] * batch, 1: ["short"] * batch}.get(step)
    if kinds is None:
        options = ["short", "medium", "long", "max"]
        kinds = [options[int(i)] for i in torch.randint(0, len(options), (batch,), generator=gen)]
        kinds[0] = "max"
        if batch > 1:
            kinds[1] = "short"
    seq = []
    for kind in kinds:
        u = {"short": lambda: units(1, k),
             "medium": lambda: units(k + 1, max(k + 2, max_units // 8)),
             "long": lambda: units(max_units // 8, max_units),
             "max": lambda: max_units}[kind]()
        tokens = u * tpu + (int(torch.randint(0, tpu, (1,), generator=gen)) if u < max_units else 0)
        seq.append(max(1, min(tokens, max_units * tpu)))
    return torch.tensor(seq, dtype=torch.int32)


def row_lengths_cpu(seq_lens: torch.Tensor, next_n: int, preset: Preset, width: int) -> torch.Tensor:
    """The oracle's row lengths [batch * next_n] int32, computed independently of the device code."""
    tokens = reference.decode_lengths(seq_lens, next_n)  # int64, clamped at 0
    return (tokens // preset.tokens_per_unit).clamp(max=width).to(torch.int32)


def draw_block_table(seq_lens: torch.Tensor, preset: Preset, pages_per_request: int, pool_pages: int,
                     gen: torch.Generator) -> torch.Tensor:
    """block_table [batch, pages_per_request] int32: each request's pages, a fresh random choice of the
    pool every step; entries past the request's last page point at NULL_PAGE."""
    batch = seq_lens.numel()
    table = torch.full((batch, pages_per_request), NULL_PAGE, dtype=torch.int32)
    perm = torch.randperm(pool_pages - 1, generator=gen).to(torch.int32) + 1  # every page but the null one
    for b in range(batch):
        units = int(seq_lens[b]) // preset.tokens_per_unit
        need = min(-(-units // PAGE_UNITS), pages_per_request)
        table[b, :need] = perm[b * pages_per_request: b * pages_per_request + need]
    return table


def draw_queries(layers: int, batch: int, next_n: int, gen: torch.Generator):
    """Per layer: indexer queries q [L, batch, next_n * heads, dim] (the last dim a negative bias, one of
    BIAS_SIGMAS per request) and head weights w [L, batch, next_n, heads] (mixed signs, so -0.0 occurs)."""
    q = torch.randn((layers, batch, next_n * INDEXER_HEADS, INDEXER_DIM), generator=gen)
    sigma = math.sqrt(INDEXER_DIM - 1)  # std of q . k over the random dims
    pick = torch.randint(0, len(BIAS_SIGMAS), (batch,), generator=gen)
    bias = -torch.tensor(BIAS_SIGMAS)[pick] * sigma
    q[..., -1] = bias[None, :, None]
    w = torch.randn((layers, batch, next_n, INDEXER_HEADS), generator=gen)
    return q, w


# ----------------------------------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------------------------------
def supports_pdl(fn: Callable) -> bool:
    return "pdl" in inspect.signature(fn).parameters


@dataclass
class StepState:
    """Every tensor the step reads or writes: the graph's static buffers."""
    preset: Preset
    device: torch.device
    batch: int
    next_n: int
    layers: int
    width: int
    logits_dtype: torch.dtype
    kv_dtype: torch.dtype
    logits_buffers: int
    verify_layers: List[int]
    pdl: bool
    # filled by allocate()
    rows: int = 0
    pages_per_request: int = 0
    pool_pages: int = 0
    tensors: Dict[str, torch.Tensor] = field(default_factory=dict)
    workspace: Optional[object] = None        # the step's Workspace (CUDA); None on the CPU
    plan: Optional[object] = None             # the plan the last step made
    snapshot_of: Dict[int, torch.Tensor] = field(default_factory=dict)  # checked layer -> its logits, copied

    @property
    def k(self) -> int:
        return self.preset.k

    def allocate(self, gen: torch.Generator, seed: int):
        d, t = self.device, self.tensors
        self.rows = self.batch * self.next_n
        assert self.width % PAGE_UNITS == 0, "width must be a whole number of pages"
        self.pages_per_request = self.width // PAGE_UNITS
        self.pool_pages = 1 + self.batch * self.pages_per_request  # + the null page
        r = torch.arange(self.rows)
        # static per-shape helpers
        t["row_request"] = (r // self.next_n).to(d)                      # int64, for indexing
        t["row_request_i32"] = (r // self.next_n).to(torch.int32).to(d)  # row_to_table
        t["row_draft"] = (r % self.next_n).to(d)
        t["columns"] = torch.arange(self.width, device=d)
        t["garbage"] = torch.tensor(GARBAGE, dtype=self.logits_dtype).repeat(
            -(-self.width // len(GARBAGE)))[: self.width].to(d)
        # the paged key cache: random keys, the last dim 1 (it meets the query's bias); drawn where it lives
        # (on a GPU it is ~0.5 GB at batch 32)
        kv_gen = gen if d.type == "cpu" else torch.Generator(device=d).manual_seed(seed)
        kv = torch.randn((self.pool_pages, PAGE_UNITS, INDEXER_DIM), generator=kv_gen, device=d)
        kv[..., -1] = 1.0
        t["kv_cache"] = kv.to(self.kv_dtype)
        del kv
        # static inputs, rewritten before every replay
        t["seq_lens"] = torch.zeros(self.batch, dtype=torch.int32, device=d)
        t["block_table"] = torch.zeros((self.batch, self.pages_per_request), dtype=torch.int32, device=d)
        t["q"] = torch.zeros((self.layers, self.batch, self.next_n * INDEXER_HEADS, INDEXER_DIM),
                             dtype=self.kv_dtype, device=d)
        t["w"] = torch.zeros((self.layers, self.batch, self.next_n, INDEXER_HEADS), device=d)
        # outputs
        t["lengths"] = torch.zeros(self.rows, dtype=torch.int32, device=d)
        t["logits"] = torch.empty((self.logits_buffers, self.rows, self.width), dtype=self.logits_dtype, device=d)
        t["indices"] = torch.empty((self.layers, self.rows, self.k), dtype=torch.int32, device=d)
        t["attended"] = torch.empty((self.layers, self.rows, INDEXER_DIM), device=d)
        # logits of checked layers whose buffer a later layer reuses are copied aside inside the step
        for layer in self.verify_layers:
            if layer + self.logits_buffers < self.layers:
                self.snapshot_of[layer] = torch.empty((self.rows, self.width), dtype=self.logits_dtype, device=d)
        if d.type == "cuda":
            self.workspace = pt.Workspace(d, self.rows, self.width, self.k)

    def load(self, seq_lens, block_table, q, w):
        """Copy one step's inputs into the static buffers (what the engine's input preparation does)."""
        t = self.tensors
        t["seq_lens"].copy_(seq_lens)
        t["block_table"].copy_(block_table)
        t["q"].copy_(q)
        t["w"].copy_(w)

    def logits_of(self, layer: int) -> torch.Tensor:
        """The logits layer `layer` selected from, after a step."""
        return self.snapshot_of.get(layer, self.tensors["logits"][layer % self.logits_buffers])

    # -- the pieces of the step ------------------------------------------------------------------------
    def compute_lengths(self):
        """Row lengths on the device, graph-capturable: tokens seen by the row, // 4 for compressed slots."""
        t = self.tensors
        tokens = t["seq_lens"].index_select(0, t["row_request"]).long() - self.next_n + 1 + t["row_draft"]
        units = torch.div(tokens.clamp(min=0), self.preset.tokens_per_unit, rounding_mode="floor")
        t["lengths"].copy_(units.clamp(max=self.width))

    def make_plan(self, workspace):
        """The step's plan, from the same device lengths the top-k calls read."""
        t = self.tensors
        kwargs = {"pdl": True} if self.pdl and supports_pdl(pt.make_plan) else {}
        if self.preset.tokens_per_unit == 1:
            return pt.make_plan(t["seq_lens"], self.width, self.k, workspace=workspace, next_n=self.next_n, **kwargs)
        return pt.make_plan(t["lengths"], self.width, self.k, workspace=workspace, **kwargs)

    def top_k(self, logits, out, plan, workspace):
        """(b): top-k of one layer's logits, written as KV-cache slots through the block table."""
        t = self.tensors
        if self.preset.tokens_per_unit == 1:  # V3.2: raw tokens, the decode formula of seq_lens
            op = pt.top_k_per_row_decode
            args = (logits, t["seq_lens"], self.next_n, self.k)
            kwargs = dict(page_table=t["block_table"], page_size=PAGE_UNITS)
        else:                                  # V4: compressed slots, lengths computed on the device
            op = pt.top_k_page_table_transform
            args = (logits, t["lengths"], t["block_table"], PAGE_UNITS, self.k)
            kwargs = dict(row_to_table=t["row_request_i32"])
        if self.pdl and supports_pdl(op):
            kwargs["pdl"] = True
        return op(*args, out=out, plan=plan, workspace=workspace, **kwargs)

    def gather_keys(self) -> torch.Tensor:
        """Each request's keys [batch, width, dim], read from the paged cache through the block table."""
        t = self.tensors
        pages = t["kv_cache"].index_select(0, t["block_table"].reshape(-1).long())
        return pages.view(self.batch, self.width, INDEXER_DIM)

    def indexer(self, layer: int, keys: torch.Tensor, valid: torch.Tensor, out: torch.Tensor):
        """(a): out[r, j] = sum_h w[r, h] * relu(q[r, h] . keys[j]) for j < length, garbage past it."""
        t = self.tensors
        scores = torch.bmm(t["q"][layer], keys.transpose(1, 2))                       # [B, nn*H, W]
        scores = scores.float().relu_().view(self.batch, self.next_n, INDEXER_HEADS, self.width)
        logits = (scores * t["w"][layer][..., None]).sum(dim=2).view(self.rows, self.width)
        torch.where(valid, logits.to(self.logits_dtype), t["garbage"], out=out)

    def consumer_query(self, layer: int, q: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The query the consumer attends with: head 0 of the row's indexer query, [rows, dim] float32."""
        q = self.tensors["q"][layer] if q is None else q
        return q.view(self.batch, self.next_n, INDEXER_HEADS, INDEXER_DIM)[:, :, 0].reshape(
            self.rows, INDEXER_DIM).float()

    def consume(self, layer: int, indices: torch.Tensor, out: torch.Tensor):
        """(c): gather the selected slots' entries from the paged cache and attend over them."""
        cache = self.tensors["kv_cache"].view(-1, INDEXER_DIM)
        selected = cache.index_select(0, indices.reshape(-1).clamp(min=0).long()).view(
            self.rows, self.k, INDEXER_DIM)
        out.copy_(attend(indices, selected, self.consumer_query(layer)))

    def step(self):
        """One decode step: metadata (lengths, plan), then every layer's indexer, top-k and consumer."""
        t = self.tensors
        self.compute_lengths()
        valid = t["columns"][None, :] < t["lengths"][:, None]
        keys = self.gather_keys()
        self.plan = self.make_plan(self.workspace)
        for layer in range(self.layers):
            buffer = t["logits"][layer % self.logits_buffers]
            self.indexer(layer, keys, valid, buffer)
            if layer in self.snapshot_of:
                self.snapshot_of[layer].copy_(buffer)
            self.top_k(buffer, t["indices"][layer], self.plan, self.workspace)
            self.consume(layer, t["indices"][layer], t["attended"][layer])


def attend(indices: torch.Tensor, selected: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Toy sparse attention [rows, dim]: softmax(query . key / sqrt(dim)) over the selected keys, slots -1
    masked out; a row that selected nothing attends to nothing (zeros)."""
    selected = selected.float()
    mask = indices >= 0
    # elementwise products and sums, not bmm: exact fp32 on the GPU whatever its TF32 setting
    scores = (selected * query[:, None, :]).sum(dim=-1) / math.sqrt(INDEXER_DIM)
    scores = scores.masked_fill(~mask, float("-inf"))
    peak = scores.amax(dim=-1, keepdim=True).nan_to_num(neginf=0.0)
    weights = torch.exp(scores - peak) * mask
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return (weights[:, :, None] * selected).sum(dim=1)


# ----------------------------------------------------------------------------------------------------
# Verification against the CPU oracle
# ----------------------------------------------------------------------------------------------------
def oracle_slots(logits: torch.Tensor, lengths: torch.Tensor, k: int, table: torch.Tensor,
                 table_rows: torch.Tensor) -> torch.Tensor:
    """reference_topk with the page-table transform, ORACLE_CHUNK_ROWS rows at a time (rows are independent)."""
    parts = []
    for lo in range(0, logits.shape[0], ORACLE_CHUNK_ROWS):
        hi = lo + ORACLE_CHUNK_ROWS
        parts.append(reference.reference_topk(logits[lo:hi], lengths[lo:hi], k, page_table=table,
                                              page_size=PAGE_UNITS, table_rows=table_rows[lo:hi])[0])
    return torch.cat(parts)


def describe_mismatch(got: torch.Tensor, want: torch.Tensor) -> str:
    bad = (got != want).any(dim=1).nonzero().flatten()
    r = int(bad[0])
    cols = (got[r] != want[r]).nonzero().flatten()[:6].tolist()
    return (f"{len(bad)} rows differ; row {r} at columns {cols}: got {got[r, cols].tolist()}, "
            f"want {want[r, cols].tolist()}")


def verify(state: StepState, seq_lens: torch.Tensor, table: torch.Tensor, q: torch.Tensor) -> Dict:
    """Check the step just run: device lengths, the sampled layers' slots bit for bit, their consumer
    output to tolerance. Raises AssertionError on any difference."""
    t, what = state.tensors, f"{state.preset.name}"
    lengths = row_lengths_cpu(seq_lens, state.next_n, state.preset, state.width)
    if not torch.equal(t["lengths"].cpu(), lengths):
        raise AssertionError(f"{what}: device row lengths differ from the CPU formula")
    table_rows = torch.arange(state.rows) // state.next_n
    ties = 0
    for layer in state.verify_layers:
        logits = state.logits_of(layer).cpu()
        want = oracle_slots(logits, lengths, state.k, table, table_rows)
        got = t["indices"][layer].cpu()
        if not torch.equal(got, want):
            raise AssertionError(f"{what} layer {layer}: slots differ from the oracle: {describe_mismatch(got, want)}")
        # consumer: gather the oracle's slots (on the device, where the cache lives) and attend on the CPU
        cache = t["kv_cache"].view(-1, INDEXER_DIM)
        selected = cache.index_select(0, want.reshape(-1).clamp(min=0).long().to(state.device)).cpu()
        expected = attend(want, selected.view(state.rows, state.k, INDEXER_DIM),
                          state.consumer_query(layer, q[layer]))
        torch.testing.assert_close(t["attended"][layer].cpu(), expected, rtol=CONSUMER_RTOL, atol=CONSUMER_ATOL,
                                   msg=lambda m: f"{what} layer {layer}: consumer output differs: {m}")
        ties += count_threshold_ties(logits, lengths, state.k)
    return {"lengths": lengths, "tie_rows": ties}


def count_threshold_ties(logits: torch.Tensor, lengths: torch.Tensor, k: int) -> int:
    """Rows whose k-th largest valid logit (SPEC §3's order: bit order, -0.0 below +0.0) also occurs
    outside the selection: real ties at the threshold, broken by the lowest-index rule."""
    keys = reference.order_keys(logits)
    ties = 0
    for r in range(logits.shape[0]):
        n = int(lengths[r])
        if n <= k:
            continue
        top = torch.topk(keys[r, :n], k).values
        ties += int((keys[r, :n] == top[-1]).sum() > (top == top[-1]).sum())
    return ties


# ----------------------------------------------------------------------------------------------------
# Timing (CUDA): the top-k part of a step alone, as CUDA graphs
# ----------------------------------------------------------------------------------------------------
class TopKVariants:
    """The top-k part of a step three ways, over the step's logits buffers, lengths and block table:
      plan_once       make_plan + one call per layer with plan= (what the step graph does);
      plan_per_layer  one call per layer without plan= (each call plans itself);
      torch           per layer torch.topk(masked, k, sorted=False) on the logits masked to -inf past each
                      row's length, then the page-table mapping in torch.
    On CUDA each is one CUDA graph (captured here) and time() gives its median µs with the L2 flushed
    before every replay; on the CPU run() calls them eagerly, so that the same code is checked there."""

    NAMES = ("plan_once", "plan_per_layer", "torch")

    def __init__(self, state: StepState, reps: int):
        self.state, self.reps = state, reps
        t, s = state.tensors, state
        on_cuda = s.device.type == "cuda"
        self.out = {name: torch.empty((s.rows, s.k), dtype=torch.int32, device=s.device) for name in self.NAMES}
        # each graph its own workspace: make_plan in one must not overwrite the plan another reads
        ws_once = pt.Workspace(s.device, s.rows, s.width, s.k) if on_cuda else None
        ws_self = pt.Workspace(s.device, s.rows, s.width, s.k) if on_cuda else None

        def plan_once():
            plan = s.make_plan(ws_once)
            for layer in range(s.layers):
                s.top_k(t["logits"][layer % s.logits_buffers], self.out["plan_once"], plan, ws_once)

        def plan_per_layer():
            for layer in range(s.layers):
                s.top_k(t["logits"][layer % s.logits_buffers], self.out["plan_per_layer"], None, ws_self)

        torch_k = min(s.k, s.width)  # torch.topk cannot select more columns than the logits have
        table_flat = t["block_table"].view(-1)
        values = torch.empty((s.rows, torch_k), dtype=s.logits_dtype, device=s.device)
        picked = torch.empty((s.rows, torch_k), dtype=torch.int64, device=s.device)

        def torch_topk():
            lengths = t["lengths"][:, None]
            valid = t["columns"][None, :] < lengths
            for layer in range(s.layers):
                masked = torch.where(valid, t["logits"][layer % s.logits_buffers], float("-inf"))
                torch.topk(masked, torch_k, dim=1, sorted=False, out=(values, picked))
                entry = t["row_request"][:, None] * s.pages_per_request + picked // PAGE_UNITS
                page = table_flat.index_select(0, entry.view(-1)).view(s.rows, torch_k)
                slots = torch.where(picked < lengths, page.long() * PAGE_UNITS + picked % PAGE_UNITS, -1)
                self.out["torch"][:, :torch_k].copy_(slots)
                if torch_k < s.k:
                    self.out["torch"][:, torch_k:].fill_(-1)

        self.fns = {"plan_once": plan_once, "plan_per_layer": plan_per_layer, "torch": torch_topk}
        self.graphs = None
        if on_cuda:
            self.flush = torch.empty(bench.FLUSH_BYTES, dtype=torch.uint8, device=s.device)
            self.graphs = {name: bench.capture_graph(fn) for name, fn in self.fns.items()}
            ws_once.lock()
            ws_self.lock()

    def run(self):
        """CPU: each variant once, eagerly, then checked."""
        for fn in self.fns.values():
            fn()
        self.check()

    def time(self) -> Dict[str, float]:
        """CUDA: median µs of each graph (one step's top-k, every layer), then checked."""
        times = {name: bench.time_graph_us(g, self.reps, self.flush) for name, g in self.graphs.items()}
        self.check()
        return times

    def check(self):
        """The persistent_topk variants wrote the step's last layer (checked against the oracle) bit for bit;
        torch's baseline pads the same number of slots with -1 in every row."""
        s = self.state
        last = s.tensors["indices"][s.layers - 1]
        for name in ("plan_once", "plan_per_layer"):
            if not torch.equal(self.out[name], last):
                raise AssertionError(f"{s.preset.name}: the {name} variant's slots differ from the step's")
        if not torch.equal((self.out["torch"] < 0).sum(1), (last < 0).sum(1)):
            raise AssertionError(f"{s.preset.name}: the torch.topk baseline pads different rows with -1")


# ----------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------
@dataclass
class StepRecord:
    preset: str
    step: int
    rows: int
    len_min: int
    len_median: int
    len_max: int
    checked_layers: int
    tie_rows: int
    exact: bool
    plan_status: str
    step_ms: float
    plan_once_us: Optional[float] = None
    plan_per_layer_us: Optional[float] = None
    torch_us: Optional[float] = None


def verify_layer_list(layers: int, count: int) -> List[int]:
    count = max(1, min(count, layers))
    if count == 1:
        return [layers - 1]
    return sorted({round(i * (layers - 1) / (count - 1)) for i in range(count)})


def run_preset(preset: Preset, args, device: torch.device) -> List[StepRecord]:
    on_cuda = device.type == "cuda"
    layers = args.layers or (preset.layers if on_cuda else CPU_LAYERS)
    width = args.width or (preset.width if on_cuda else preset.cpu_width)
    batch = args.batch or (DEFAULT_CUDA_BATCH if on_cuda else CPU_BATCH)
    kv_dtype = getattr(torch, args.kv_dtype or ("bfloat16" if on_cuda else "float32"))
    state = StepState(preset, device, batch, args.next_n, layers, width, getattr(torch, args.logits_dtype),
                      kv_dtype, max(1, min(args.logits_buffers, layers)), verify_layer_list(layers, args.verify_layers),
                      args.pdl)
    gen = torch.Generator().manual_seed(args.seed)
    state.allocate(gen, args.seed)
    print(f"\n{preset.model} ({preset.name}): batch {batch} x next_n {args.next_n} = {state.rows} rows, width {width}, "
          f"k {preset.k}, {layers} layers, pages of {PAGE_UNITS} "
          f"{'tokens' if preset.tokens_per_unit == 1 else 'slots'}, {state.logits_buffers} logits buffer(s), "
          f"checking layers {state.verify_layers} on {device}")

    def inputs(step):
        seq_lens = draw_seq_lens(step, batch, preset, width, gen)
        table = draw_block_table(seq_lens, preset, state.pages_per_request, state.pool_pages, gen)
        q, w = draw_queries(layers, batch, args.next_n, gen)
        return seq_lens, table, q.to(kv_dtype), w

    graph, variants = None, None
    current = inputs(0)
    state.load(*current)
    if on_cuda:
        graph = bench.capture_graph(state.step)  # warm-up call, then the whole step in one graph
        state.workspace.lock()
    if args.bench:
        variants = TopKVariants(state, args.reps)
    records = []
    for step in range(args.steps):
        if step > 0:
            current = inputs(step)
            state.load(*current)
        seq_lens, table, q, _ = current
        if on_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            torch.cuda.synchronize()
            step_ms = start.elapsed_time(end)
        else:
            begin = time.perf_counter()
            state.step()
            step_ms = (time.perf_counter() - begin) * 1e3
        status = state.plan.status()
        checked = verify(state, seq_lens, table, q)
        lengths = checked["lengths"].tolist()
        record = StepRecord(preset.name, step, state.rows, min(lengths), int(statistics.median(lengths)),
                            max(lengths), len(state.verify_layers), checked["tie_rows"], True,
                            "FRESH" if status == 0 else "STALE", round(step_ms, 3))
        if variants is not None and not on_cuda:
            variants.run()
        elif variants is not None:
            times = variants.time()
            record.plan_once_us = round(times["plan_once"], 2)
            record.plan_per_layer_us = round(times["plan_per_layer"], 2)
            record.torch_us = round(times["torch"], 2)
        records.append(record)
        print(f"  step {step}: rows {record.len_min}..{record.len_max} (median {record.len_median}), "
              f"{record.checked_layers} layers exact, {record.tie_rows} rows tied at the threshold, "
              f"plan {record.plan_status}, step {record.step_ms:.2f} ms"
              + (f"; top-k per step {record.plan_once_us:.1f} us (plan once), {record.plan_per_layer_us:.1f} us "
                 f"(plan per layer), {record.torch_us:.1f} us (torch.topk)" if record.torch_us is not None else ""),
              flush=True)
    return records


def print_table(records: List[StepRecord], timed: bool):
    def us(x):
        return f"{x:10.1f}" if x is not None else f"{'-':>10s}"

    head = (f"{'preset':8s} {'step':>4s} {'rows':>5s} {'len min':>8s} {'len med':>8s} {'len max':>8s} "
            f"{'layers':>6s} {'ties':>5s} {'exact':>5s} {'plan':>5s} {'step ms':>8s}")
    if timed:
        head += f" {'once us':>10s} {'perlay us':>10s} {'torch us':>10s} {'vs torch':>8s}"
    print("\nlayers: layers checked per step against the CPU oracle; ties: rows of those layers whose k-th value "
          "ties past the selection" + ("; times: the top-k of one whole step (all layers), us" if timed else ""))
    print(head)
    for r in records:
        line = (f"{r.preset:8s} {r.step:4d} {r.rows:5d} {r.len_min:8d} {r.len_median:8d} {r.len_max:8d} "
                f"{r.checked_layers:6d} {r.tie_rows:5d} {'yes' if r.exact else 'NO':>5s} {r.plan_status:>5s} "
                f"{r.step_ms:8.2f}")
        if timed:
            speedup = f"{r.torch_us / r.plan_once_us:7.2f}x" if r.plan_once_us else f"{'-':>8s}"
            line += f" {us(r.plan_once_us)} {us(r.plan_per_layer_us)} {us(r.torch_us)} {speedup}"
        print(line)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["v32", "v4flash", "all"], default="all",
                        help="DeepSeek-V3.2, DeepSeek-V4-Flash, or both (default)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None,
                        help="default: cuda when a GPU and the compiled kernels are present, else cpu")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"requests per step (default {DEFAULT_CUDA_BATCH} on CUDA, {CPU_BATCH} on the CPU)")
    parser.add_argument("--next-n", type=int, default=1, help="rows per request (multi-token prediction, 1..8)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="decode steps (graph replays)")
    parser.add_argument("--layers", type=int, default=None,
                        help=f"indexer layers per step (default: the model's on CUDA, {CPU_LAYERS} on the CPU)")
    parser.add_argument("--width", type=int, default=None,
                        help="logits width in units, a multiple of 64 (default: the model's on CUDA, tiny on the CPU)")
    parser.add_argument("--logits-buffers", type=int, default=1,
                        help="logits buffers materialised, layer l uses buffer l %% N (default 1, as an engine)")
    parser.add_argument("--verify-layers", type=int, default=DEFAULT_VERIFY_LAYERS,
                        help="layers checked against the CPU oracle per step, evenly spaced (>= 1)")
    parser.add_argument("--logits-dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--kv-dtype", choices=["float32", "bfloat16"], default=None,
                        help="indexer key cache and queries (default bfloat16 on CUDA, float32 on the CPU)")
    parser.add_argument("--bench", action="store_true", help="time the top-k part (CUDA) and write --out")
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, help=f"replays per median (>= {bench.MIN_REPS})")
    parser.add_argument("--pdl", action="store_true", help="programmatic dependent launch, if the ops support it")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where --bench writes its JSON")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    if args.next_n < 1 or args.steps < 1 or (args.batch is not None and args.batch < 1):
        parser.error("--next-n, --steps and --batch must be >= 1")
    if args.layers is not None and args.layers < 1:
        parser.error("--layers must be >= 1")
    if args.width is not None and (args.width < PAGE_UNITS or args.width % PAGE_UNITS):
        parser.error(f"--width must be a positive multiple of {PAGE_UNITS}")
    if args.reps < bench.MIN_REPS:
        parser.error(f"--reps must be >= {bench.MIN_REPS}")
    return args


def main(argv=None) -> Dict:
    """Run the example; returns {"device", "verified", "records": [StepRecord as dict], "json": path or None}.
    Raises AssertionError if any checked output differs from the oracle."""
    args = parse_args(argv)
    cuda_ready = torch.cuda.is_available() and pt.has_cuda_kernels()
    device = torch.device(args.device or ("cuda" if cuda_ready else "cpu"))
    if device.type == "cuda" and not cuda_ready:
        raise SystemExit("--device cuda: " + ("no CUDA device" if not torch.cuda.is_available()
                                              else "persistent_topk was built without CUDA kernels"))
    if args.pdl:
        ops = (pt.top_k_per_row_decode, pt.top_k_page_table_transform)
        if all(supports_pdl(op) for op in ops):
            print("PDL: on")
        else:
            print("PDL: not available in this build")
            args.pdl = False
    timed = args.bench and device.type == "cuda"
    if args.bench and not timed:
        print("--bench: timing needs CUDA graphs; on the CPU the three top-k variants run once per step, "
              "checked, untimed")
    names = list(PRESETS) if args.preset == "all" else [args.preset]
    records = []
    for name in names:
        records += run_preset(PRESETS[name], args, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print_table(records, timed)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {"device": device_name, "verified": all(r.exact for r in records),
              "records": [asdict(r) for r in records], "json": None}
    if timed:
        record = {"device": device_name,
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  # git rev-parse HEAD:csrc of the kernel measured (a device copy has no git history)
                  "csrc_tree": os.environ.get("PERSISTENT_TOPK_CSRC_TREE"),
                  "what": "per decode step, the top-k of every indexer layer as one CUDA graph, L2 flushed, "
                          f"median of {args.reps}: plan once + a call per layer; a call per layer planning "
                          "itself; torch.topk on masked logits + page-table map in torch",
                  "pdl": args.pdl, "batch": args.batch or DEFAULT_CUDA_BATCH, "next_n": args.next_n,
                  "logits_buffers": args.logits_buffers, "logits_dtype": args.logits_dtype,
                  "presets": {name: {"model": PRESETS[name].model, "k": PRESETS[name].k,
                                     "layers": args.layers or PRESETS[name].layers,
                                     "width": args.width or PRESETS[name].width, "page_units": PAGE_UNITS,
                                     "steps": [asdict(r) for r in records if r.preset == name]}
                              for name in names}}
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {path}")
        result["json"] = str(path)
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["verified"] else 1)
