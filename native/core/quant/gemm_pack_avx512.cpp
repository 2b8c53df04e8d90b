// AVX-512 on-the-fly packers of the types added after Q4_0/Q8_0/Q4_K/Q6_K, for full 16-row
// groups: the same bytes as gemm_pack_group_ref (gemm_ref_legacy.cpp, gemm_ref_kquants.cpp; checked
// by test_gemm_types.cpp), with the in-register 16 x 16 byte transposes and 32-bit row gathers of
// gemm_avx512.cpp for the quant bytes and scales; the few fields that need per-row bit shuffling
// (Q5 fifth bits, 6-bit scales) are done per row. Without them a raw (repack: false) matmul of these
// types spends most of its time packing.
#include "quant/gemm_avx512_util.h"

namespace llmserve::quant {
namespace {

// The 16 rows' u16 at byte offset o (low half of the gathered words) -> out[0..31].
inline void store_d16(const uint8_t* blk, size_t rb, size_t o, uint8_t* out) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi32_epi16(gather_rows32(blk + o, rb)));
}
// The 16 rows' two u16 at offsets o, o + 2 -> out[0..31], out[32..63].
inline void store_d16x2(const uint8_t* blk, size_t rb, size_t o, uint8_t* out) {
  const __m512i dd = gather_rows32(blk + o, rb);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi32_epi16(dd));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32), _mm512_cvtepi32_epi16(_mm512_srli_epi32(dd, 16)));
}
// Q5's transposed fifth bits of the 16 rows (qh at offset o) -> out[0..63].
inline void store_q5_h(const uint8_t* blk, size_t rb, size_t o, uint8_t* out) {
  alignas(64) uint32_t h[16];
  _mm512_store_si512(h, gather_rows32(blk + o, rb));
  for (int r = 0; r < 16; ++r) h[r] = transpose_q5_high_bits(h[r]);
  std::memcpy(out, h, 64);
}
const __m512i kZero = _mm512_setzero_si512();

// One type's packing loop: per block, fn(blk, record).
template <class Fn>
void each_block(const uint8_t* w, size_t bs, int64_t nb, uint8_t* out, size_t rec, const Prefetcher& pf, Fn fn) {
  for (int64_t b = 0; b < nb; ++b, out += rec) {
    pf(b);
    fn(w + b * bs, out);
  }
}

}  // namespace

bool pack_group_more_avx512(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out,
                            const uint8_t* pf_next, size_t pf_bytes, int64_t pf_nb) {
  if (nr != kGemmGroupRows || rb * kGemmGroupRows >= (size_t(1) << 31)) return false;
  const Prefetcher pf(pf_next, pf_bytes, pf_nb);
  switch (t) {
    case GgmlType::IQ4_NL:  // Q4_0's layout
      each_block(w, sizeof(BlockIQ4_NL), nb, out, kPackIQ4_NL, pf, [rb](const uint8_t* blk, uint8_t* o) {
        store_d16(blk, rb, 0, o);
        transpose_16x16(blk + 2, rb, o + 32, kZero);
      });
      return true;
    case GgmlType::Q4_1:
      each_block(w, sizeof(BlockQ4_1), nb, out, kPackQ4_1, pf, [rb](const uint8_t* blk, uint8_t* o) {
        store_d16x2(blk, rb, 0, o);
        transpose_16x16(blk + 4, rb, o + 64, kZero);
      });
      return true;
    case GgmlType::Q5_0:
      each_block(w, sizeof(BlockQ5_0), nb, out, kPackQ5_0, pf, [rb](const uint8_t* blk, uint8_t* o) {
        store_d16(blk, rb, 0, o);
        transpose_16x16(blk + 6, rb, o + 32, kZero);
        store_q5_h(blk, rb, 2, o + 288);
      });
      return true;
    case GgmlType::Q5_1:
      each_block(w, sizeof(BlockQ5_1), nb, out, kPackQ5_1, pf, [rb](const uint8_t* blk, uint8_t* o) {
        store_d16x2(blk, rb, 0, o);
        transpose_16x16(blk + 8, rb, o + 64, kZero);
        store_q5_h(blk, rb, 4, o + 320);
      });
      return true;
    case GgmlType::Q5_K:
      each_block(w, sizeof(BlockQ5_K), nb, out, kPackQ5_K, pf, [rb](const uint8_t* blk, uint8_t* o) {
        store_d16x2(blk, rb, 0, o);
        for (int r = 0; r < 16; ++r) {
          alignas(16) uint8_t sm[16];
          unpack_q4_K_scales(blk + r * rb + 4, sm);
          for (int j = 0; j < 8; ++j) {
            o[64 + 16 * j + r] = sm[j];
            o[192 + 16 * j + r] = sm[8 + j];
          }
        }
        for (int c = 0; c < 8; ++c) transpose_16x16(blk + 48 + 16 * c, rb, o + 320 + 256 * c, kZero);
        for (int c = 0; c < 2; ++c) transpose_16x16(blk + 16 + 16 * c, rb, o + 2368 + 256 * c, kZero);
      });
      return true;
    case GgmlType::Q2_K:
      each_block(w, sizeof(BlockQ2_K), nb, out, kPackQ2_K, pf, [rb](const uint8_t* blk, uint8_t* o) {
        store_d16x2(blk, rb, 80, o);
        for (int r = 0; r < 16; ++r)
          for (int k = 0; k < 8; ++k) std::memcpy(o + 64 + 32 * k + 2 * r, blk + r * rb + 2 * k, 2);
        for (int c = 0; c < 4; ++c) transpose_16x16(blk + 16 + 16 * c, rb, o + 320 + 256 * c, kZero);
      });
      return true;
    case GgmlType::Q3_K:
      each_block(w, sizeof(BlockQ3_K), nb, out, kPackQ3_K, pf, [rb](const uint8_t* blk, uint8_t* o) {
        // d sits at offset 108 of 110: gather the word at 106 and keep its high half.
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(gather_rows32(blk + 106, rb), 16)));
        for (int r = 0; r < 16; ++r) {
          int8_t sc[16];
          unpack_q3_K_scales(blk + r * rb + 96, sc);
          for (int k = 0; k < 8; ++k) std::memcpy(o + 32 + 32 * k + 2 * r, sc + 2 * k, 2);
        }
        for (int c = 0; c < 4; ++c) transpose_16x16(blk + 32 + 16 * c, rb, o + 288 + 256 * c, kZero);
        for (int c = 0; c < 2; ++c) transpose_16x16(blk + 16 * c, rb, o + 1312 + 256 * c, kZero);
      });
      return true;
    case GgmlType::IQ4_XS:
      each_block(w, sizeof(BlockIQ4_XS), nb, out, kPackIQ4_XS, pf, [rb](const uint8_t* blk, uint8_t* o) {
        store_d16(blk, rb, 0, o);
        for (int r = 0; r < 16; ++r) {
          const BlockIQ4_XS* b = reinterpret_cast<const BlockIQ4_XS*>(blk + r * rb);
          for (int ib = 0; ib < 8; ++ib) {
            const int lo = (b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF, hi = (b->scales_h >> (2 * ib)) & 3;
            o[32 + 16 * ib + r] = static_cast<uint8_t>(static_cast<int8_t>((lo | (hi << 4)) - 32));
          }
        }
        for (int c = 0; c < 8; ++c) transpose_16x16(blk + 8 + 16 * c, rb, o + 160 + 256 * c, kZero);
      });
      return true;
    default: return false;
  }
}

}  // namespace llmserve::quant
