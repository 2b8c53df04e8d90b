// Test-only helpers for prepared GEMM activation rows (layout: quant/gemm_impl.h), written from
// the quantized values independently of gemm_prepare_act.
#pragma once
#include <cstdint>
#include <cstring>

#include "quant/quant_impl.h"

namespace gemm_test {

// The i16 s32[nb][8] that follow nb BlockQ8_K records in a prepared row: each sub-block's sum of
// its 32 values, summed from qs (not from bsums).
inline void put_q8_K_sums32(const uint8_t* blocks, int64_t nb, uint8_t* out) {
  const auto* b = reinterpret_cast<const llmserve::quant::BlockQ8_K*>(blocks);
  for (int64_t i = 0; i < nb; ++i)
    for (int j = 0; j < 8; ++j) {
      int16_t s = 0;
      for (int l = 0; l < 32; ++l) s = static_cast<int16_t>(s + b[i].qs[32 * j + l]);
      std::memcpy(out + 16 * i + 2 * j, &s, 2);
    }
}

}  // namespace gemm_test
