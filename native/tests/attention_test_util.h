// Shared by the attention tests: bit comparison, a small deterministic generator and a paged
// K/V layer with a shuffled block table.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "attention/attention.h"
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

// Kernels under test, by name.
using AttnKernels = std::vector<std::pair<const char*, void (*)(const AttnGroup&)>>;

// The call of `count` tokens from tok0 against kv's second KV head: query rows [token][head] in q
// (q_stride apart, row (tok0 + i) * n_q + h for token i, head h), token tok0 + i attending
// positions up to len0 + tok0 + i - 1 (under the window), outputs at out + (tok0 + i) * out_tok.
struct PagedCall {
  const PagedKv& kv;
  const uint8_t* q;
  size_t q_stride;
  int64_t n_q, len0, window;
  float scale, softcap;  // scale 1 / sqrt(hd); divided by softcap here when it is set
  int64_t out_tok;
  float* work;
  AttnGroup operator()(int64_t tok0, int64_t count, float* out) const {
    AttnGroup a{};
    a.k = kv.k.data() + row_size(kv.type, kv.hd);
    a.v = kv.v.data() + row_size(kv.type, kv.hd);
    a.blocks = kv.table.data();
    a.block_size = kv.bs;
    a.row_stride = kv.row;
    a.block_stride = static_cast<size_t>(kv.bs) * kv.row;
    a.kv_type = kv.type;
    a.q = q + tok0 * n_q * q_stride;
    a.q_stride = q_stride;
    a.n_q = n_q;
    a.len = len0 + tok0;
    a.begin = 0;
    a.window = window;
    a.hd = kv.hd;
    a.scale = softcap != 0.0f ? scale / softcap : scale;
    a.softcap = softcap;
    a.out = out + tok0 * out_tok;
    a.out_stride = kv.hd;
    a.n_tok = count;
    a.out_tok_stride = out_tok;
    a.work = work;
    return a;
  }
};

// Every kernel gives each of the n_tok rows the bits of `want` (the reference, one token per call),
// called one token at a time and all at once; false (after naming the case) otherwise.
inline bool kernels_match(const AttnKernels& kernels, const PagedCall& call, int64_t n_tok,
                          const std::vector<float>& want, const char* what) {
  bool all = true;
  for (const auto& [name, fn] : kernels) {
    std::vector<float> one(want.size(), 0.0f), multi(want.size(), 0.0f);
    for (int64_t i = 0; i < n_tok; ++i) fn(call(i, 1, one.data()));
    fn(call(0, n_tok, multi.data()));
    const bool ok =
        same_bits(one.data(), want.data(), want.size()) && same_bits(multi.data(), want.data(), want.size());
    if (!ok)
      std::fprintf(stderr, "  %s %s %s hd=%lld n_q=%lld n_tok=%lld len0=%lld window=%lld: bits differ\n", what, name,
                   type_traits(call.kv.type).name, (long long)call.kv.hd, (long long)call.n_q, (long long)n_tok,
                   (long long)call.len0, (long long)call.window);
    all = all && ok;
  }
  return all;
}

}  // namespace llmserve::attn_test
