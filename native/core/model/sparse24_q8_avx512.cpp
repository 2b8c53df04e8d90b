// AVX-512 (BW + VNNI) 2:4 sparse GEMM with q8_0 values on int8 activations (sparse24.h,
// sparse24_q8_gemm_ref's numerics; compiled with the AVX-512 flags, called only when the CPU has
// them). The row loop is sparse24_q8_avx512_row.h's; this file's byte moves need no VBMI:
//   positions: the step's 16 index bytes, each 2-bit field spread to a byte (byte k = position of
//     kept value k) by shifting copies of the dword that holds it; plus the group's column base;
//   x: 128-bit lane L of the result holds kept values 16L .. 16L+15, whose columns are the 16-byte
//     chunks 2L and 2L+1: two qword permutes gather the even and the odd chunks, and one in-lane
//     byte shuffle each picks the kept columns.
// Bit-identical to sparse24_q8_gemm_ref.
#include "sparse24_q8_avx512_row.h"

namespace llmserve {
namespace {

struct Pick {
  __m512i place;  // dword q of lane L <- index byte 4L + q (zero-extended)
  __m512i base;   // byte p of a lane: the column of its group within the chunk, 4 * ((p % 8) / 2)
  __m512i three;  // 0x03 per byte
  __m512i even;   // qwords of the even 16-byte chunks of x (0, 2, 4, 6) across the two zmm
  __m512i odd;    // ... of the odd chunks (1, 3, 5, 7)

  Pick() {
    alignas(64) int8_t pl[64], ba[64];
    for (int i = 0; i < 64; ++i) {
      const int lane = i / 16, p = i % 16;
      pl[i] = p % 4 == 0 ? static_cast<int8_t>(4 * lane + p / 4) : static_cast<int8_t>(-128);
      ba[i] = static_cast<int8_t>(4 * ((p % 8) / 2));
    }
    place = _mm512_load_si512(pl);
    base = _mm512_load_si512(ba);
    three = _mm512_set1_epi8(3);
    even = _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13);
    odd = _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15);
  }

  // Byte p of lane L: the column of kept value 16L + p within its 16-byte chunk.
  __m512i positions(const uint8_t* ib, bool half) const {
    const __m128i b = half ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(ib))
                           : _mm_loadu_si128(reinterpret_cast<const __m128i*>(ib));
    const __m512i dq = _mm512_shuffle_epi8(_mm512_broadcast_i32x4(b), place);
    // Byte j of dword (B, 0, 0, 0) | << 6 | << 12 | << 18 holds B >> 2j in its low 2 bits.
    const __m512i spread = _mm512_ternarylogic_epi32(dq, _mm512_slli_epi32(dq, 6), _mm512_slli_epi32(dq, 12), 0xFE);
    const __m512i pos = _mm512_ternarylogic_epi32(spread, _mm512_slli_epi32(dq, 18), three, 0xA8);  // (a|b)&c
    return _mm512_add_epi8(pos, base);
  }

  __m512i gather(__m512i x0, __m512i x1, __m512i idx) const {
    const __m512i ev = _mm512_permutex2var_epi64(x0, even, x1), od = _mm512_permutex2var_epi64(x0, odd, x1);
    return _mm512_mask_shuffle_epi8(_mm512_shuffle_epi8(ev, idx), 0xFF00FF00FF00FF00ull, od, idx);
  }
};

}  // namespace

void sparse24_q8_gemm_avx512(const Sparse24Matrix& w, const uint8_t* act, size_t act_stride, int64_t n, int64_t r0,
                             int64_t r1, const float* bias, float* y, int64_t ldy) {
  static const Pick pick;
  q8_gemm_avx512(pick, w, act, act_stride, n, r0, r1, bias, y, ldy);
}

}  // namespace llmserve
