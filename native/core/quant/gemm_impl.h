// Internal to native/core/quant (and its tests/benchmarks): layouts of the prepared activations
// and of the packed 16-row weight groups that the GEMM kernels read, and the packers.
//
// Prepared activation rows (gemm_prepare_act), per token, 64-byte multiple:
//   vec_dot Q8_0 (Q4_0, Q8_0 weights), nb = n_in / 32 blocks:
//     int8 qs[nb][32] | f32 d[nb] | i32 c4[nb] = -8 * sum(qs of block) |
//     i32 c128[nb] = -128 * sum(qs of block)            (44 bytes per block)
//     (vpdpbusd multiplies unsigned by signed bytes: started from c4 / c128 it yields the exact
//     block sums sum((q - 8) x) of Q4_0 nibbles q and sum(w x) of Q8_0 bytes stored as w + 128)
//     (Q5_0 starts from 2 * c4 = -16 * sum(qs) for its 5-bit values q - 16; IQ4_NL from c128 for
//     its grid values stored + 128)
//   vec_dot Q8_1 (Q4_1, Q5_1 weights): int8 qs[nb][32] | f32 d[nb] | f32 s[nb] (40 bytes per
//     block; s = the block's f16 s = d * sum(qs) as f32)
//   vec_dot Q8_K (Q2_K..Q6_K, IQ4_XS): BlockQ8_K[nb] exactly as quantize_row(Q8_K) writes it |
//     i16 s32[nb][8] (at byte 292 * nb): s32[i][j] = bsums[2j] + bsums[2j+1] of block i, the sum
//     of sub-block j's 32 values (|s32| <= 4096). Q4_K / Q5_K kernels multiply pairs of them by a
//     row's pairs of sub-block mins (one madd / vpdpwssd per two mins instead of one per min).
//   vec_dot F16 / BF16 / F32: f32[n_in], the values after rounding to the vec_dot type.
//
// Packed groups of 16 rows (row i of the group in lane i; missing rows of the last group are
// zero), one record per block, records back to back (group bytes = nb * record bytes):
//   Q4_0 (288 B / 32 elements):  u16 d[16] | u8 qs[4][16][4]: qs[j][i] = row i's qs bytes 4j..4j+3
//                                (low nibbles: elements 4j.., high nibbles: elements 16+4j..)
//   Q8_0 (544 B / 32):           u16 d[16] | u8 qs[8][16][4] = row i's qs[4j..4j+3] XOR 0x80
//   Q4_K (2368 B / 256):         u16 d[16] | u16 dmin[16] | u8 sc[8][16] | u8 m[8][16] |
//                                u8 qs[32][16][4] (qs bytes 4g..4g+3 of row i)
//   Q6_K (3360 B / 256):         u16 d[16] | i8 sc[8][16][2] (scales 2k, 2k+1 of row i) |
//                                u8 ql[32][16][4] | u8 qh[16][16][4]
//   IQ4_NL (288 B / 32):         Q4_0's record (the nibbles index the grid instead of q + 8)
//   Q4_1 (320 B / 32):           u16 d[16] | u16 m[16] | u8 qs[4][16][4] (as Q4_0)
//   Q5_0 (352 B / 32):           u16 d[16] | u8 qs[4][16][4] (as Q4_0) | u32 h[16]
//   Q5_1 (384 B / 32):           u16 d[16] | u16 m[16] | u8 qs[4][16][4] | u32 h[16]
//                                h: the 32 fifth bits of row i transposed so that a shift and a mask
//                                give them per byte: bit b of byte k of h = fifth bit of element 4b + k,
//                                so qs group j's low nibbles take bit j of each byte, its high nibbles
//                                (elements 16 + 4j + k) bit 4 + j
//   Q5_K (2880 B / 256):         Q4_K's record | u8 qh[8][16][4] (qh bytes 4c..4c+3 of row i; the
//                                fifth bit of sub-block j's element 4c + k is bit j of byte k)
//   Q2_K (1344 B / 256):         u16 d[16] | u16 dmin[16] | u8 sm[8][16][2] (scales[2k], scales[2k+1]
//                                of row i: scale in the low nibble, min in the high) | u8 qs[16][16][4]
//   Q3_K (1824 B / 256):         u16 d[16] | i8 sc[8][16][2] (scales 2k, 2k+1 minus 32) |
//                                u8 qs[16][16][4] | u8 hmask[8][16][4]
//                                (Q2_K/Q3_K group g (16 elements) = 2-bit fields at shift 2*((g%8)/2) of
//                                qs groups 8*(g/8) + 4*(g%2) + 0..3; Q3_K's third bit: bit g/2 of hmask
//                                groups 4*(g%2) + 0..3)
//   IQ4_XS (2208 B / 256):       u16 d[16] | i8 sc[8][16] (ls - 32) | u8 qs[32][16][4] (sub-block ib:
//                                groups 4ib..4ib+3, low nibbles elements 32ib + 4c + k, high +16)
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "quant/gemm.h"
#include "quant/quant_impl.h"

namespace llmserve::quant {

constexpr size_t kGemmActAlign = 64;

constexpr size_t kPackQ4_0 = 288;
constexpr size_t kPackQ8_0 = 544;
constexpr size_t kPackQ4_K = 2368;
constexpr size_t kPackQ6_K = 3360;
constexpr size_t kPackIQ4_NL = 288;
constexpr size_t kPackQ4_1 = 320;
constexpr size_t kPackQ5_0 = 352;
constexpr size_t kPackQ5_1 = 384;
constexpr size_t kPackQ5_K = 2880;
constexpr size_t kPackQ2_K = 1344;
constexpr size_t kPackQ3_K = 1824;
constexpr size_t kPackIQ4_XS = 2208;

// Bytes per block of a prepared Q8_0 / Q8_1 / Q8_K activation row (before the 64-byte padding).
constexpr size_t kActQ8_0Block = 44;
constexpr size_t kActQ8_1Block = 40;
constexpr size_t kQ8KBlock = sizeof(BlockQ8_K);      // the records come first
constexpr size_t kActQ8_KBlock = kQ8KBlock + 2 * 8;  // then the 32-element sums s32[nb][8]

// Bytes of one packed record (one block of 16 rows); 0 if the type is not packable.
// Row r of a 16-row Q4_K record (d, dmin, the 16 unpacked 6-bit scales/mins, qs by 4-byte
// groups); Q5_K's record starts with the same bytes (its qh groups follow at 2368).
template <class Block>
inline void pack_q4_K_layout_row(const Block* src, int r, uint8_t* out) {
  std::memcpy(out + 2 * r, &src->d, 2);
  std::memcpy(out + 32 + 2 * r, &src->dmin, 2);
  uint8_t sm[16];
  unpack_q4_K_scales(src->scales, sm);
  for (int j = 0; j < 8; ++j) {
    out[64 + 16 * j + r] = sm[j];
    out[192 + 16 * j + r] = sm[8 + j];
  }
  for (int g = 0; g < 32; ++g) std::memcpy(out + 320 + 64 * g + 4 * r, src->qs + 4 * g, 4);
}

size_t gemm_pack_record_bytes(GgmlType t);
// Blocks per row for n_in (n_in / block size).
int64_t gemm_blocks(GgmlType t, int64_t n_in);
// Packs rows [0, n_rows) (n_rows <= 16) starting at w into one group (nb records). Scalar; the
// dispatched gemm_pack_group (SIMD transposes) writes the same bytes.
void gemm_pack_group_ref(GgmlType t, const uint8_t* w, size_t row_bytes, int n_rows, int64_t nb, uint8_t* out);
void gemm_pack_group(GgmlType t, const uint8_t* w, size_t row_bytes, int n_rows, int64_t nb, uint8_t* out);
// The scalar packers of the types added after the first four (gemm_ref_legacy.cpp,
// gemm_ref_kquants.cpp); false if t is not one of theirs.
bool gemm_pack_group_legacy_ref(GgmlType t, const uint8_t* w, size_t row_bytes, int n_rows, int64_t nb, uint8_t* out);
bool gemm_pack_group_kquants_ref(GgmlType t, const uint8_t* w, size_t row_bytes, int n_rows, int64_t nb, uint8_t* out);
// SIMD on-the-fly packers of those types for full 16-row groups (gemm_pack_avx2.cpp: Q4_1, Q5_0,
// Q5_1, IQ4_NL; gemm_pack_avx512.cpp: all eight), writing gemm_pack_group_ref's bytes; false
// (nothing written) for other types or partial groups. pf_*: the Prefetcher of the next group.
// Only defined on x86; call only from files built for that ISA.
bool pack_group_more_avx2(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out,
                          const uint8_t* pf_next, size_t pf_bytes, int64_t pf_nb);
bool pack_group_more_avx512(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out,
                            const uint8_t* pf_next, size_t pf_bytes, int64_t pf_nb);
// Q5_0/Q5_1's transposed fifth bits (see the layout above) from the block's little-endian qh:
// bit e of qh -> bit 8 * (e % 4) + e / 4. Byte m of qh (elements 8m + i) contributes
// kQ5Spread[byte] << 2m, where kQ5Spread puts bit i at 8 * (i % 4) + i / 4.
struct Q5SpreadTable {
  uint32_t v[256];
  constexpr Q5SpreadTable() : v{} {
    for (uint32_t b = 0; b < 256; ++b)
      for (int i = 0; i < 8; ++i)
        if (b >> i & 1) v[b] |= 1u << (8 * (i % 4) + i / 4);
  }
};
inline constexpr Q5SpreadTable kQ5Spread{};
static inline uint32_t transpose_q5_high_bits(uint32_t qh) {
  return kQ5Spread.v[qh & 0xFF] | kQ5Spread.v[(qh >> 8) & 0xFF] << 2 | kQ5Spread.v[(qh >> 16) & 0xFF] << 4 |
         kQ5Spread.v[qh >> 24] << 6;
}
// x: [n] f32 -> Q8_1 prepared row (gemm_ref_legacy.cpp).
void gemm_prepare_q8_1(const float* x, int64_t n, uint8_t* out);
// Scalar GEMMs of those types.
void install_ref_gemm_legacy(KernelTable& t);
void install_ref_gemm_kquants(KernelTable& t);

// Grow-only per-thread buffers (64-byte aligned): slot 0 for on-the-fly packing (gemm_sweep),
// slot 1 for the AVX2 kernels' unpacked weights (gemm_avx2_driver.h), which use both at once.
uint8_t* gemm_thread_buffer(size_t bytes, int slot = 0);

// Unaligned little-endian loads from packed records and activation rows.
static inline int32_t ld32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
static inline float ldf(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}
static inline uint16_t ld16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// Prefetch into L2 of [p, p + bytes). asm volatile: GCC deletes a loop of __builtin_prefetch as
// side-effect free once it is inlined.
static inline void prefetch_l2(const uint8_t* p, size_t bytes) {
  const uint8_t* e = p + bytes;
  for (p = reinterpret_cast<const uint8_t*>(reinterpret_cast<uintptr_t>(p) & ~uintptr_t(63)); p < e; p += 64)
    __asm__ volatile("prefetcht1 %0" : : "m"(*p));
}

// Packing reads 16 rows as interleaved streams (and the K-quant kernels jump around inside their
// records), which the hardware prefetchers follow poorly from DRAM; measured on Zen 4 a 1-token
// pass ran at ~7 GB/s instead of ~16 per thread. So while block b of one group is worked on, the
// b-th slice of the next group's bytes (raw rows or packed records, one contiguous region) is
// prefetched into L2.
// (Header helpers have internal linkage: files compiled for different ISAs include them, and one
// shared out-of-line copy could carry instructions the running CPU lacks.)
namespace {
struct Prefetcher {
  const uint8_t* next = nullptr;  // the next group's first byte, or null
  size_t bytes = 0;               // its size
  int64_t nb = 1;                 // blocks it is spread over
  size_t step = 0;                // bytes per block, rounded up (no division per block)
  Prefetcher() = default;
  Prefetcher(const uint8_t* n, size_t b, int64_t blocks)
      : next(n), bytes(b), nb(blocks), step((b + static_cast<size_t>(blocks) - 1) / static_cast<size_t>(blocks)) {}
  void operator()(int64_t b) const {
    if (!next) return;
    const size_t lo = step * static_cast<size_t>(b);
    if (lo < bytes) prefetch_l2(next + lo, std::min(step, bytes - lo));
  }
  // Slice j < P of block b's bytes: a kernel with big records calls this once per part of a
  // record it reads, so its prefetches go out spread over the record, not in a burst at its start
  // (37 lines for Q4_K; the burst stalled the loads behind it).
  template <int P>
  void part(int64_t b, int j) const {
    if (!next) return;
    const auto [lo, hi] = slice<P>(b, j);
    if (lo < hi) prefetch_l2(next + lo, hi - lo);
  }
  // Offsets [lo, hi) of that slice: whole lines from block b's start (P slices of ceil(step / P)
  // rounded up to 64 bytes), clipped to the block and to `bytes`; together exactly what
  // operator()(b) fetches.
  template <int P>
  std::pair<size_t, size_t> slice(int64_t b, int j) const {
    const size_t sub = (step + P * 64 - 1) / (P * 64) * 64;
    const size_t end = std::min(step * static_cast<size_t>(b + 1), bytes);
    const size_t lo = std::min(step * static_cast<size_t>(b) + sub * static_cast<size_t>(j), end);
    return {lo, std::min(lo + sub, end)};
  }
};

// How the few-token sweep (1-64 tokens, memory-bound: each weight byte serves few tokens)
// prefetches packed groups. kpf runs for 3-64 tokens, and for 1-2 tokens when the record is at
// least min_record bytes (the AVX-512 Q4_0/Q8_0 kernels read a group once in address order, which
// the hardware prefetcher follows alone).
//  - ahead == 0: kpf fetches the next group, spread over this group's blocks. For the AVX2
//    kernels, which read each group twice (once per 8-row half): the second pass hits the cache
//    and memory would idle during it without this.
//  - ahead > 0: kpf fetches `ahead` bytes past each block this group reads (the packed groups of a
//    matrix are one contiguous stream, so this runs into the next group and past the range's
//    end, where a prefetch is harmless). For kernels that read a group once in order: the
//    next-group distance (37-129 KiB on 4096-14336-wide rows) outran the caches, and the
//    Llama-3-8B-shape Q4_K_M decode read ~40 GB/s; 4 KiB ahead it reads ~50 (bench/README.md).
//  - one_pass_tokens: calls of at most this many tokens read a full group once, in order (the
//    AVX2 kernels' run_both): they take one_pass_ahead whatever `ahead` says.
inline constexpr size_t kPrefetchAhead = 4096;  // see SweepPrefetch
// A kernel K may prefetch K::kPrefetchLead bytes farther than kPrefetchAhead (the Q4_K kernels: one
// record; bench/README.md "The Q4_K GEMV at one and few tokens").
template <class K>
constexpr size_t kernel_prefetch_ahead() {
  if constexpr (requires { K::kPrefetchLead; }) return kPrefetchAhead + K::kPrefetchLead;
  return kPrefetchAhead;
}
struct SweepPrefetch {
  size_t min_record;
  size_t ahead;
  int64_t one_pass_tokens = 0;
  size_t one_pass_ahead = kPrefetchAhead;
};

// The SIMD GEMM drivers' sweep over rows [r0, r1) (16-row groups) and all tokens. Few tokens
// (<= 64): group by group, each packed on the fly into L1 unless a.packed. Many tokens: batches of
// groups (~batch_bytes packed) are swept by blocks of tokens (~act_bytes of activations, a
// multiple of token_multiple), so both stay in L2 while they are reused. pack(t, w, rb, nr, nb,
// out, pf) packs one group; group(g, nb, a, r, nr, t_begin, t_end, kpf) runs one packed group
// against a token range (kpf: the packed groups' prefetch of the few-token case, see
// SweepPrefetch, or none). The order of the calls does not change any output (each is one
// micro-kernel run over its full K).
template <class Pack, class Group>
void gemm_sweep(const GemmArgs& a, size_t record, size_t batch_bytes, size_t act_bytes, int64_t token_multiple,
                SweepPrefetch spf, Pack pack, Group group) {
  const int64_t nb = gemm_blocks(a.type, a.n_in);
  const size_t group_bytes = record * static_cast<size_t>(nb);
  const int64_t n_groups = (a.r1 - a.r0 + kGemmGroupRows - 1) / kGemmGroupRows;
  int64_t batch = 1, tb = a.n;
  if (a.n > 64) {
    batch = std::max<int64_t>(1, static_cast<int64_t>(batch_bytes / group_bytes));
    tb = std::max<int64_t>(16, static_cast<int64_t>(act_bytes / a.act_stride) / token_multiple * token_multiple);
  }
  batch = std::min(batch, n_groups);
  uint8_t* buf = a.packed ? nullptr : gemm_thread_buffer(group_bytes * static_cast<size_t>(batch));
  for (int64_t b0 = 0; b0 < n_groups; b0 += batch) {
    const int64_t b1 = std::min(n_groups, b0 + batch);
    if (!a.packed) {
      for (int64_t gi = b0; gi < b1; ++gi) {
        const int64_t r = a.r0 + gi * kGemmGroupRows;
        const int nr = static_cast<int>(std::min<int64_t>(kGemmGroupRows, a.r1 - r));
        Prefetcher pf;
        if (r + 2 * kGemmGroupRows <= a.r1)
          pf = Prefetcher(a.w + (r + kGemmGroupRows) * a.row_bytes, kGemmGroupRows * a.row_bytes, nb);
        pack(a.type, a.w + r * a.row_bytes, a.row_bytes, nr, nb, buf + (gi - b0) * group_bytes, pf);
      }
    }
    for (int64_t t_begin = 0; t_begin < a.n; t_begin += tb) {
      const int64_t t_end = std::min(a.n, t_begin + tb);
      for (int64_t gi = b0; gi < b1; ++gi) {
        const int64_t r = a.r0 + gi * kGemmGroupRows;
        const int nr = static_cast<int>(std::min<int64_t>(kGemmGroupRows, a.r1 - r));
        const uint8_t* g;
        Prefetcher kpf;
        if (a.packed) {
          g = a.packed + static_cast<size_t>(r / kGemmGroupRows) * group_bytes;
          if ((a.n <= 2 && record >= spf.min_record) || (a.n >= 3 && a.n <= 64)) {
            const size_t ahead = a.n <= spf.one_pass_tokens && nr == kGemmGroupRows ? spf.one_pass_ahead : spf.ahead;
            if (ahead) kpf = Prefetcher(g + ahead, group_bytes, nb);
            else if (r + 2 * kGemmGroupRows <= a.r1) kpf = Prefetcher(g + group_bytes, group_bytes, nb);
          }
        } else {
          g = buf + (gi - b0) * group_bytes;
        }
        group(g, nb, a, r, nr, t_begin, t_end, kpf);
      }
    }
  }
}
}  // namespace

}  // namespace llmserve::quant
