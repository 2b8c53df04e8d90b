// Shared by the attention tests: bit comparison, a small deterministic generator and a paged
// K/V layer with a shuffled block table.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "quant/quant.h"

namespace llmserve::attn_test {

inline bool same_bits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * 4) == 0; }

struct Rng {
  uint32_t s;
  float operator()() {
    s = s * 1664525u + 1013904223u;
    return static_cast<float>((s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
  }
};

// Paged K/V of one layer: n_pos positions, n_kv KV heads of hd, in blocks of bs slots through a
// shuffled block table.
struct PagedKv {
  GgmlType type;
  int64_t hd, n_kv = 2, bs = 5;
  size_t row = 0;
  std::vector<uint8_t> k, v;
  std::vector<int32_t> table;
  PagedKv(GgmlType t, int64_t hd_, int64_t n_pos, Rng& rnd) : type(t), hd(hd_) {
    row = row_size(t, n_kv * hd);
    const int64_t nb = (n_pos + bs - 1) / bs;
    table.resize(static_cast<size_t>(nb));
    for (int64_t b = 0; b < nb; ++b) table[b] = static_cast<int32_t>((b * 7 + 2) % nb);
    if (nb % 7 == 0)
      for (int64_t b = 0; b < nb; ++b) table[b] = static_cast<int32_t>(nb - 1 - b);
    k.assign(static_cast<size_t>(nb * bs) * row, 0);
    v.assign(k.size(), 0);
    std::vector<float> f(static_cast<size_t>(n_kv * hd));
    for (int64_t j = 0; j < n_pos; ++j) {
      const size_t dst = (static_cast<size_t>(table[j / bs]) * bs + j % bs) * row;
      for (auto& x : f) x = rnd() * 3.0f;
      quantize_row(t, f.data(), k.data() + dst, n_kv * hd);
      for (auto& x : f) x = rnd();
      quantize_row(t, f.data(), v.data() + dst, n_kv * hd);
    }
  }
};

}  // namespace llmserve::attn_test
