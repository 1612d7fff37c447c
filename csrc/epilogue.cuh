// The end of every row: the selection writes bare column indices (IndexSink); one CTA then finishes
// the row as the caller asked (RowOutput, finish_row): sorted=True's order, the index transform
// (page table or ragged offsets, IndexTransform), the raw indices beside it, values, and the -1
// padding. Output modes are data here, not template copies: they touch only the write-out, which
// reads at most k indices per row.
#pragma once
#include <cstdint>

#include "block_select.cuh"
#include "keys.cuh"

namespace persistent_topk {

// One row's index transform, resolved from IndexTransform when the row is finished.
struct RowIndexMap {
  enum Kind : int { kBare = 0, kPaged = 1, kShifted = 2 };
  int kind;
  const int32_t* pages;  // paged: the row's table row
  int entries;           // paged: entries in it (0 when the row's table row is outside the table)
  int first_entry;       // paged: the table entry of the row's index 0
  int page_size;         // paged
  int32_t shift;         // shifted: added to every index

  // SPEC §2: page_table[t, s + idx / page_size] * page_size + idx % page_size, or idx + offset, in
  // 32-bit wrapping arithmetic (the caller's int32 slots). An index whose entry lies outside the table
  // maps to -1, so no page-table read is ever out of bounds.
  __device__ __forceinline__ int32_t operator()(int32_t index) const {
    if (kind == kShifted) return static_cast<int32_t>(static_cast<uint32_t>(index) + static_cast<uint32_t>(shift));
    if (kind == kBare) return index;
    const int64_t entry = static_cast<int64_t>(first_entry) + index / page_size;
    if (entry < 0 || entry >= entries) return -1;
    return static_cast<int32_t>(static_cast<uint32_t>(__ldg(pages + entry)) * static_cast<uint32_t>(page_size) +
                                static_cast<uint32_t>(index % page_size));
  }
};

// A row's index transform applied as the selection writes each index (the write-out itself, no second
// pass): where neither sorted=True nor values need the bare indices back from out. Lives in shared
// memory, set by the thread that picks the row, so the emission loops carry one pointer to it.
struct FusedIndexWrite {
  RowIndexMap map;
  int32_t* raw;  // the row's raw indices, or null
};

// Out of line: the transform's page-table read and division stay out of the emission loops' code.
__device__ __noinline__ void fused_put(const FusedIndexWrite& fused, int32_t* out, uint32_t position, int32_t index) {
  out[position] = fused.map(index);
  if (fused.raw != nullptr) fused.raw[position] = index;
}

// fused_put() for the indices at positions first + q * step (q < 4) below limit: every page-table
// read is issued before the first store, so their round trips overlap. (Four indices by value: an
// array argument of an out-of-line call would live in local memory.)
__device__ __noinline__ void fused_put4(const FusedIndexWrite& fused, int32_t* out, uint32_t first, uint32_t step,
                                        uint32_t limit, int4 indices) {
  const int32_t index[4] = {indices.x, indices.y, indices.z, indices.w};
  int32_t mapped[4];
#pragma unroll
  for (int q = 0; q < 4; ++q) mapped[q] = first + q * step < limit ? fused.map(index[q]) : 0;
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const uint32_t position = first + q * step;
    if (position < limit) {
      out[position] = mapped[q];
      if (fused.raw != nullptr) fused.raw[position] = index[q];
    }
  }
}

// Where a selection's indices go while it runs: the row's out, in index order, bare columns or (fused)
// transformed ones. One store per index keeps every emission loop small (the kernel runs cold out of a
// flushed L2, so code size is latency) and its registers few.
struct IndexSink {
  int32_t* out;
  const FusedIndexWrite* fused;  // null: bare columns
  // Unsigned positions: one wide multiply-add per address, no sign extension.
  __device__ __forceinline__ void put(uint32_t position, int32_t index, uint32_t /*key*/) const {
    if (fused == nullptr) {
      out[position] = index;
    } else {
      fused_put(*fused, out, position, index);
    }
  }
  // put() of the four indices at first + q * step (q < 4), each below limit.
  __device__ __forceinline__ void put4(uint32_t first, uint32_t step, uint32_t limit, int4 indices) const {
    if (fused == nullptr) {
      const int32_t index[4] = {indices.x, indices.y, indices.z, indices.w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        if (first + q * step < limit) out[first + q * step] = index[q];
      }
    } else {
      fused_put4(*fused, out, first, step, limit, indices);
    }
  }
};

// How every row's indices are written (SPEC §2), shared by the launch: bare, through a page table, or
// shifted by per-row offsets (the ragged layout). No kernel of this library writes the tables, so
// they are read through the read-only path.
struct IndexTransform {
  const int32_t* page_table;         // [page_table_rows, page_table_width], or null
  int64_t page_table_pitch;          // elements between table rows
  int page_table_rows;
  int page_table_width;              // entries per table row: the table-coverage rule's bound
  int page_size;
  const int32_t* row_to_table;       // table row of each logits row, or null: r / rows_per_table
  int rows_per_table;                // decode: next_n rows share their request's table row
  const int32_t* page_table_starts;  // table entry of each row's index 0, or null: 0
  const int32_t* offsets;            // ragged: added to each row's indices, or null

  __device__ __forceinline__ bool any() const { return page_table != nullptr || offsets != nullptr; }

  __device__ __forceinline__ RowIndexMap of_row(int r) const {
    RowIndexMap map{};
    if (page_table != nullptr) {
      const int table_row = row_to_table != nullptr ? __ldg(row_to_table + r) : r / rows_per_table;
      const bool covered = table_row >= 0 && table_row < page_table_rows;
      map.kind = RowIndexMap::kPaged;
      map.pages = page_table + (covered ? static_cast<int64_t>(table_row) * page_table_pitch : 0);
      map.entries = covered ? page_table_width : 0;
      map.first_entry = page_table_starts != nullptr ? __ldg(page_table_starts + r) : 0;
      map.page_size = page_size;
    } else if (offsets != nullptr) {
      map.kind = RowIndexMap::kShifted;
      map.shift = __ldg(offsets + r);
    } else {
      map.kind = RowIndexMap::kBare;
    }
    return map;
  }
};

// A row's output as the caller asked for it.
template <typename T>
struct RowOutput {
  int32_t* out;       // [k] this row's indices (bare while the selection runs)
  int32_t* raw;       // [k] the bare indices as well, or null
  T* values;          // [k] or null
  const T* row;       // the row's first valid logit, for values and sorting
  RowIndexMap map;
  bool by_value;      // sorted=True
  bool written;       // out (and raw) already hold the final indices: the transform was fused

  // Whether the indices in out need a second look (else only padding is left to write).
  __device__ __forceinline__ bool needs_finish() const {
    return !written && (by_value || values != nullptr || raw != nullptr || map.kind != RowIndexMap::kBare);
  }
  __device__ __forceinline__ void write(int position, int32_t index) const {
    out[position] = map(index);
    if (raw != nullptr) raw[position] = index;
    if (values != nullptr) copy_logit(values + position, row + index);
  }
  __device__ __forceinline__ void pad(int position) const {
    out[position] = -1;
    if (raw != nullptr) raw[position] = -1;
    if (values != nullptr) values[position] = KeyTraits<T>::minus_inf();  // a bit pattern, no conversion
  }
};

// The row's m indices are in out[0, m), ascending (written by this CTA or, for a team row, by every
// CTA of the team before a cluster barrier), bare unless the transform was fused: finish it. sorted=True re-keys them from the logits,
// packed as (~key, index) so one ascending sort orders by value descending and ties by index
// ascending (`scratch` holds next_pow2(m) words); the transform, raw indices and values follow; then
// positions [m, k) get -1 and -inf, the only place -1 padding is ever written. Out of line: once per
// row, one copy.
template <int kThreads, typename T>
__device__ __noinline__ void finish_row(int m, int k, RowOutput<T> output, uint64_t* scratch) {
  if (output.by_value) {
    int count = 1;
    while (count < m) count <<= 1;
    for (int j = threadIdx.x; j < count; j += kThreads) {
      uint64_t word = ~0ull;
      if (j < m) {
        // Other CTAs of a team wrote parts of out: read through L2, never a stale L1 line.
        const uint32_t index = static_cast<uint32_t>(__ldcg(output.out + j));
        word = (static_cast<uint64_t>(~to_key(output.row[index])) << 32) | index;
      }
      scratch[j] = word;
    }
    __syncthreads();
    block_bitonic_sort<kThreads>(scratch, count);
    for (int j = threadIdx.x; j < m; j += kThreads) output.write(j, static_cast<int32_t>(scratch[j] & 0xFFFFFFFFu));
  } else if (output.needs_finish()) {
    // Each thread rewrites the positions it read: no barrier between the read and the write.
    for (int j = threadIdx.x; j < m; j += kThreads) output.write(j, __ldcg(output.out + j));
  }
  for (int j = m + static_cast<int>(threadIdx.x); j < k; j += kThreads) output.pad(j);
  __syncthreads();  // scratch is the keys buffer of the next row
}

}  // namespace persistent_topk
