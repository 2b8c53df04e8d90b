// AVX2 on-the-fly packers of Q4_1, Q5_0, Q5_1 and IQ4_NL for full 16-row groups: the same bytes as
// gemm_pack_group_ref (checked by test_gemm_types.cpp), with gemm_avx2.cpp's 16 x 16 byte
// transposes for the quant bytes; scales and Q5's fifth bits per row. (The K-quant types use the
// scalar packer on AVX2, as Q4_K and Q6_K do.)
#include "quant/gemm_avx2_util.h"

namespace llmserve::quant {

bool pack_group_more_avx2(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out,
                          const uint8_t* pf_next, size_t pf_bytes, int64_t pf_nb) {
  if (nr != kGemmGroupRows) return false;
  size_t bs, rec, oq, oh = 0, om = 0, src_qh = 0, src_qs;
  switch (t) {  // block bytes, record bytes, qs / h / m offsets in the record, qh / qs in the block
    case GgmlType::IQ4_NL: bs = sizeof(BlockIQ4_NL), rec = kPackIQ4_NL, oq = 32, src_qs = 2; break;
    case GgmlType::Q4_1: bs = sizeof(BlockQ4_1), rec = kPackQ4_1, oq = 64, om = 32, src_qs = 4; break;
    case GgmlType::Q5_0: bs = sizeof(BlockQ5_0), rec = kPackQ5_0, oq = 32, oh = 288, src_qh = 2, src_qs = 6; break;
    case GgmlType::Q5_1:
      bs = sizeof(BlockQ5_1), rec = kPackQ5_1, oq = 64, om = 32, oh = 320, src_qh = 4, src_qs = 8;
      break;
    default: return false;
  }
  const Prefetcher pf(pf_next, pf_bytes, pf_nb);
  for (int64_t b = 0; b < nb; ++b, out += rec) {
    pf(b);
    const uint8_t* blk = w + b * bs;
    for (int r = 0; r < 16; ++r) {
      const uint8_t* row = blk + r * rb;
      std::memcpy(out + 2 * r, row, 2);
      if (om) std::memcpy(out + om + 2 * r, row + 2, 2);
      if (oh) {
        uint32_t qh;
        std::memcpy(&qh, row + src_qh, 4);
        const uint32_t h = transpose_q5_high_bits(qh);
        std::memcpy(out + oh + 4 * r, &h, 4);
      }
    }
    transpose_16x16(blk + src_qs, rb, out + oq, _mm256_setzero_si256());
  }
  return true;
}

}  // namespace llmserve::quant
