// The tuning policy: every knob of the library in one struct, each with its reason, derived from the
// others and static_asserted where it depends on them. Nothing here is a launch argument: the host
// chooses only the launch's shape (launch.cuh) and the plan kernel only each row's team (plan.cuh),
// both from these constants. The block primitives (block_select.cuh, team.cuh) take what they need as
// template arguments and know nothing of this struct.
#pragma once

namespace persistent_topk {

// The CTA of a register-rows launch (register_rows_kernel): kThreads threads of kKeysPerThread keys
// each hold a row of up to kMaxStride columns, kMinBlocksPerSM of them per SM within 64 registers a
// thread (65,536 per SM). Digits of log2(4 kThreads) bits: the histogram is zeroed and searched one
// 16-byte word (four bins) per thread.
template <int kThreads_, int kKeysPerThread_, int kMinBlocksPerSM_>
struct RegisterRowsCta {
  static constexpr int kThreads = kThreads_;
  static constexpr int kKeysPerThread = kKeysPerThread_;
  static constexpr int kMinBlocksPerSM = kMinBlocksPerSM_;
  static constexpr int kMaxStride = kThreads * kKeysPerThread;
  static constexpr int kDigitBits = kThreads == 512 ? 11 : kThreads == 1024 ? 12 : -1;
  static_assert(kDigitBits > 0, "a CTA of 512 or 1024 threads");
  static_assert(kThreads * kMinBlocksPerSM * 64 <= 65536, "64 registers a thread");
};

struct Policy {
  // ---- The persistent kernel's CTA ----
  // Two CTAs of 16 warps per SM: one streams its next row from HBM while the other runs its passes
  // out of shared memory (measured against one 32-warp CTA per SM: 1.3-1.5x faster on batches of
  // many rows, equal on small ones; docs/perf-notes.md).
  static constexpr int kThreads = 512;
  static constexpr int kMinBlocksPerSM = 2;
  // Keys a CTA holds in shared memory: 24K x 4 B = 96 KB; with ~17 KB of histogram, team mailbox and
  // state two CTAs fit in Hopper's 228 KB per SM. Holds a solo row or a team row's slice, and behind
  // it the keys that survive the first digit (compacted).
  static constexpr int kSmemKeys = 24576;

  // ---- The radix search (block_select.cuh) ----
  // 11-bit digits: three passes cover a 32-bit key (11 + 11 + 10) and one pass usually leaves a
  // threshold bin small enough that the second finishes; 2048 bins cost 8 KB of shared memory, one
  // 16-byte word of them per thread.
  static constexpr int kDigitBits = 11;
  static_assert((1 << kDigitBits) == 4 * kThreads, "the histogram is zeroed and searched four bins per thread");

  // ---- Register path (topk_small.cuh) ----
  // Keys each thread holds: rows of k < n <= kThreads x this are selected from registers, longer solo
  // rows from shared memory (16 keys spilled and took twice as long on 4K rows).
  static constexpr int kRegisterKeysPerThread = 8;
  // Which logits take the register path in the persistent kernel: 4-byte ones. With it, the 16-bit
  // kernels spill 4 bytes (the path's own code compiles within 64 registers, but ptxas then spills in
  // the rest of the kernel), so 16-bit rows stay on the shared-memory path there (register_rows_kernel,
  // below, takes every dtype).
  template <typename T>
  __host__ __device__ static constexpr bool register_path() {
    return sizeof(T) == 4;
  }
  static constexpr int kRegisterMaxKeys = kThreads * kRegisterKeysPerThread;
  // Launches whose stride fits registers (every row of every dtype is short or a register row) run
  // a kernel of their own (register_rows_kernel, one instance per RegisterRowsCta below): a CTA loads
  // its row's whole stride while thread 0 reads the row's length, one round trip before the selection
  // instead of two, with none of the work queue's code around it (b256-4k 12.0 -> 11.0 us, b1-4k 8.4
  // -> 8.0). Every launch of a stride up to 4,096 does; launches of few rows (LaunchShape::few_rows)
  // up to 16,384 as well, where a CTA of registers beats the teams of clusters those rows took (8 rows
  // of 8,192: 14.7 -> 10.9 us, of 12,288: 13.2 -> 12.4, decode-uniform-b8-16k 14.7 -> 12.9), and up
  // to 8,192 a wave of rows (kWaveRegisterRowsMaxStride). Not for more rows than that: there a
  // 512-thread CTA per row in shared memory is faster (2,048 rows of 7K at a stride of 8,192: 68 vs 79
  // us), since every pass of the register path runs over all 16 keys of every thread and a CTA of
  // registers cannot load its next row during the current one. The CTA is the narrowest of the
  // three that holds the stride, so that rows as long as it keep every thread busy (16 keys per thread
  // on 4K rows: 10-20% slower, half the threads idle; 8K rows on 1024 threads: 8 rows 12.0 us against
  // 10.9 on 512).
  using RegisterRowsNarrow = RegisterRowsCta<kThreads, kRegisterKeysPerThread, kMinBlocksPerSM>;  // <= 4,096
  using RegisterRowsMedium = RegisterRowsCta<512, 16, 2>;                                       // <= 8,192
  using RegisterRowsWide = RegisterRowsCta<1024, 16, 1>;                                        // <= 16,384
  static constexpr long long kRegisterRowsMaxStride = RegisterRowsNarrow::kMaxStride;
  static constexpr long long kFewRegisterRowsMaxStride = RegisterRowsWide::kMaxStride;
  // Launches of a stride up to this take the 512 x 16 CTA for as many rows as it holds at once (one
  // wave: two CTAs per SM) too, not only few rows: faster than a 512-thread CTA per row in shared memory
  // on every shape measured, mixed lengths included (128 rows of 1K..8K 12.3 -> 11.0 us, 256 of 8K 16.5
  // -> 14.4, 256 of 2K..6K 13.4 -> 13.1). Not the 1024 x 16 CTA: a register row loads and passes over
  // the whole stride, and 128 rows of 1K..16K in a buffer of 16K took 16.4 us against 15.6.
  static constexpr long long kWaveRegisterRowsMaxStride = RegisterRowsMedium::kMaxStride;
  // Which of the three CTAs a register-rows launch of this stride runs (0 narrow, 1 medium, 2 wide).
  __host__ __device__ static constexpr int register_rows_cta(long long stride) {
    return stride <= RegisterRowsNarrow::kMaxStride ? 0 : stride <= RegisterRowsMedium::kMaxStride ? 1 : 2;
  }

  // ---- Rows in shared memory (topk_medium.cuh) ----
  // 16-byte loads in flight per thread before the first is used (16-bit rows, which are loaded
  // through registers). One (8 logits) keeps the kernel within 64 registers (two or four spilled).
  static constexpr int kLoadsInFlight = 1;
  // Slices longer than this (a solo row is a slice; decided per team, so that a team's CTAs run the
  // same passes) compact the keys that survive the first digit before the later passes. On shorter
  // ones the list would hold much of the slice (k = 2048 of 4K keys) and the compaction pass costs
  // more than it saves (docs/perf-notes.md).
  static constexpr int kCompactMinKeys = 6144;
  // sorted=True sorts the selection in the keys buffer as 64-bit words, padded to a power of two.
  static constexpr int kMaxSortedK = 8192;
  static_assert(kMaxSortedK * 2 <= kSmemKeys, "the sorted selection fits the keys buffer");

  // ---- The path choice (plan.cuh, dispatch.cuh) ----
  // Rows up to this long may be selected by one CTA alone: 16K leaves 8K words of its shared memory
  // behind the row for its compacted keys (about k plus one histogram bin).
  static constexpr int kSoloMaxKeys = 16384;
  // Rows up to this long are never split: a team's exchanges cost more than the slices save.
  static constexpr int kTeamMinLength = 4096;
  // A team row is cut into slices of at most this many keys where its cluster allows: 4K words stay
  // free behind each slice for the keys that survive the first digit (compaction); a slice that fills
  // shared memory has no room, and every later pass runs over all its keys (one row of 196,608 took
  // 20.9 us on teams of 8, one of 229,376 15.8 us on teams of 16). 12K against 20K: v4pro and
  // engine-mtp2 4% faster, b1-128k 3%, in two sessions' runs; the rest within noise (wider teams,
  // shorter slices: the row's passes are shorter than the extra exchanges cost).
  static constexpr int kTeamSliceKeys = 12288;
  // The plan doubles every team while the grid still holds all of them at once (up to this many
  // doublings): a row's latency falls with its slices.
  static constexpr int kMaxWidenings = 4;
  static_assert(kSoloMaxKeys <= kSmemKeys && kTeamMinLength <= kSoloMaxKeys, "a solo row fits the keys buffer");
  static_assert(kTeamSliceKeys <= kSmemKeys, "a team's slices fit the keys buffer");

  // ---- Rows streamed from global memory (topk_radix_large.cuh, StreamingRowAgent) ----
  // A row one CTA selects alone is streamed when it is longer than this (in shared memory it would
  // leave no room to compact); such rows are solo in batches of many rows (launch.cuh), where a team
  // per row would not run at once anyway.
  static constexpr int kStreamMinKeys = kSoloMaxKeys;
  __host__ __device__ static constexpr bool streams(int n, int team_size) { return team_size == 1 && n > kStreamMinKeys; }
  // Batches of many rows (at least half the grid's CTAs) are plain launches, every long row streamed,
  // when their stride allows rows longer than this; below it, teams of two or three hold every row in
  // shared memory and halve the longest one (mixed-b256-2k..32k: 25 us on teams, 33 us streamed).
  static constexpr int kStreamMinStride = 49152;
  // 16-byte copies each lane keeps in flight while streaming a row (in index order per warp): 3 x 16 B x
  // 512 threads = 24 KB of the keys buffer (6 and 8 were slower: more bytes in flight than HBM serves);
  // the other 18K words hold the list (9K keys with their columns, 576 per warp).
  static constexpr int kStreamRingSlots = 3;
  static_assert(kStreamRingSlots * kThreads * 4 * 2 <= kSmemKeys, "the ring leaves half the keys buffer to the list");

  // ---- Clusters (launch.cuh, team.cuh) ----
  // CTAs per thread-block cluster, chosen per launch from the shape; the plan sizes each team row's
  // team within it (a cluster or a half, quarter... of one). 8 is the portable cluster size; Hopper
  // also runs non-portable clusters of up to 16 (16 x kSoloMaxKeys = 256K columns).
  static constexpr int kMinClusterSize = 2;
  static constexpr int kPortableClusterSize = 8;
  static constexpr int kMaxClusterSize = 16;
  // The cluster sizes a launch takes: a cluster splits into teams by halving (plan.cuh), so sizes of
  // the form 2^a and 3 x 2^a give rows of every length a team near their size (12 is left out: 16
  // gives a row of 262,144 room to compact).
  static constexpr int kClusterSizes[] = {2, 3, 4, 6, 8, 16};
  static_assert(kClusterSizes[0] == kMinClusterSize && kClusterSizes[5] == kMaxClusterSize,
                "the launch's cluster sizes span [kMinClusterSize, kMaxClusterSize]");
  // Slices start at multiples of this many columns, so each starts 16-byte aligned whenever the row
  // does (16 covers 4-byte and 2-byte logits).
  static constexpr int kSliceAlign = 16;

  // ---- The plan kernel (plan.cuh) ----
  // One CTA: the plan of up to a few thousand rows is a handful of passes over their lengths.
  static constexpr int kPlanThreads = 1024;
  // Each lane keeps its first few rows' lengths in registers between the plan's passes (a batch of up
  // to 4 x 1024 rows then reads each length from memory once).
  static constexpr int kPlanCachedLengths = 4;
};

}  // namespace persistent_topk
