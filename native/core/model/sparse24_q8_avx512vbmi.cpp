// AVX-512 VBMI variant of sparse24_q8_avx512.cpp (compiled with VBMI too; called only when the CPU
// has it, cpu_has_avx512vbmi): the same row loop (sparse24_q8_avx512_row.h) and arithmetic, with the
// two byte-level moves done by VBMI instructions:
//   positions: vpmultishiftqb pulls each kept value's 2-bit field into its own byte (qword j of
//     the result, kept values 8j .. 8j+7, reads index qword j / 4 at bit offsets 16 (j % 4) + 2b);
//     plus 4 * (k / 2), its group's first column within the step's 128;
//   x: one vpermt2b picks the 64 kept columns out of the step's 128 int8 activations.
// Bit-identical to sparse24_q8_gemm_ref.
#include "sparse24_q8_avx512_row.h"

namespace llmserve {
namespace {

struct Pick {
  __m512i qword_src;  // qword j <- index qword j / 4
  __m512i shifts;     // byte b of qword j: bit offset 16 (j % 4) + 2b
  __m512i base;       // byte k: 4 * (k / 2)
  __m512i three;

  Pick() {
    alignas(64) uint8_t sh[64], ba[64];
    for (int k = 0; k < 64; ++k) {
      sh[k] = static_cast<uint8_t>(16 * ((k / 8) % 4) + 2 * (k % 8));
      ba[k] = static_cast<uint8_t>(4 * (k / 2));
    }
    qword_src = _mm512_setr_epi64(0, 0, 0, 0, 1, 1, 1, 1);
    shifts = _mm512_load_si512(sh);
    base = _mm512_load_si512(ba);
    three = _mm512_set1_epi8(3);
  }

  __m512i positions(const uint8_t* ib, bool half) const {
    const __m128i b = half ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(ib))
                           : _mm_loadu_si128(reinterpret_cast<const __m128i*>(ib));
    const __m512i fields =
        _mm512_multishift_epi64_epi8(shifts, _mm512_permutexvar_epi64(qword_src, _mm512_castsi128_si512(b)));
    return _mm512_add_epi8(_mm512_and_si512(fields, three), base);
  }

  __m512i gather(__m512i x0, __m512i x1, __m512i idx) const { return _mm512_permutex2var_epi8(x0, idx, x1); }
};

}  // namespace

void sparse24_q8_gemm_avx512vbmi(const Sparse24Matrix& w, const uint8_t* act, size_t act_stride, int64_t n, int64_t r0,
                                 int64_t r1, const float* bias, float* y, int64_t ldy) {
  static const Pick pick;
  q8_gemm_avx512(pick, w, act, act_stride, n, r0, r1, bias, y, ldy);
}

}  // namespace llmserve
