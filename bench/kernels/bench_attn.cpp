// One attention_group call (native/core/attention) as a layer's KV head runs it: the query heads
// of one GQA group against `len` cached positions, one token (decode) or a run of consecutive
// tokens (a prefill chunk), f16 or q8_0 cache, one thread. The kernel the CPU dispatches to is
// timed against the scalar reference once (bit-identical check), then alone.
//
//   llmserve_bench_kernels --attn [--shapes 64x8,128x4,128x2] [--lens 512,4096,16384]
//                                 [--tokens 1,16] [--types f16] [--min-time 0.3]
//
// A shape is head_dim x query heads per KV head (TinyLlama 64x8, Llama-3-8B 128x4, Qwen3-0.6B
// 128x2). Per configuration: median us per call, and GFLOP/s counting 2 flops per score element
// and 2 per accumulated V element (the work of the exact arithmetic, not of any shortcut).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "bench_util.h"
#include "isa/isa.h"
#include "quant/quant.h"

using namespace llmserve;

namespace {

struct AttnCase {
  int64_t hd, nq, len, ntok;
  GgmlType type;
};

// Runs one configuration; returns false (after printing why) when the kernel and the reference
// disagree.
bool run_case(const AttnCase& c, double min_time) {
  const int64_t block = 256, n_pos = c.len + c.ntok - 1, n_blocks = (n_pos + block - 1) / block;
  const size_t row = row_size(c.type, c.hd), q_row = (row_size(type_traits(c.type).vec_dot_type, c.hd) + 63) / 64 * 64;
  std::vector<uint8_t> k(row * static_cast<size_t>(n_blocks * block)), v(k.size());
  std::vector<int32_t> blocks(static_cast<size_t>(n_blocks));
  // Blocks in reverse order, as a pool that handed them out over time might.
  for (int64_t b = 0; b < n_blocks; ++b) blocks[static_cast<size_t>(b)] = static_cast<int32_t>(n_blocks - 1 - b);
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(c.hd));
  for (int64_t j = 0; j < n_blocks * block; ++j) {
    for (auto& e : x) e = g(rng);
    quantize_row(c.type, x.data(), k.data() + static_cast<size_t>(j) * row, c.hd);
    for (auto& e : x) e = g(rng);
    quantize_row(c.type, x.data(), v.data() + static_cast<size_t>(j) * row, c.hd);
  }
  const int64_t rows = c.ntok * c.nq;
  std::vector<uint8_t> q(q_row * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& e : x) e = g(rng) * 0.3f;
    quantize_row(type_traits(c.type).vec_dot_type, x.data(), q.data() + static_cast<size_t>(r) * q_row, c.hd);
  }
  std::vector<float> out(static_cast<size_t>(rows * c.hd)), ref(out.size());
  std::vector<float> work(attention_group_work_floats(rows, c.hd) + 16);
  AttnGroup a;
  a.k = k.data();
  a.v = v.data();
  a.blocks = blocks.data();
  a.block_size = block;
  a.row_stride = row;
  a.block_stride = row * static_cast<size_t>(block);
  a.kv_type = c.type;
  a.q = q.data();
  a.q_stride = q_row;
  a.n_q = c.nq;
  a.begin = 0;
  a.len = c.len;
  a.hd = c.hd;
  a.scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  a.softcap = 0.0f;
  a.out_stride = c.hd;
  a.n_tok = c.ntok;
  a.out_tok_stride = c.nq * c.hd;
  // 64-byte aligned scratch, as attention_f32 hands out.
  a.work = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(work.data()) + 63) / 64 * 64);
  a.out = ref.data();
  attention_group_ref(a);
  a.out = out.data();
  attention_group(a);
  if (std::memcmp(out.data(), ref.data(), out.size() * 4) != 0) {
    std::printf("hd %lld nq %lld len %lld tokens %lld: the dispatched kernel differs from the reference\n",
                static_cast<long long>(c.hd), static_cast<long long>(c.nq), static_cast<long long>(c.len),
                static_cast<long long>(c.ntok));
    return false;
  }
  const double ms = bench::median_ms([&](int) { attention_group(a); }, 1, min_time);
  double elems = 0;  // (positions attended) x head_dim, per row
  for (int64_t i = 0; i < c.ntok; ++i) elems += static_cast<double>(c.len + i) * c.hd * c.nq;
  const double gflops = elems * 4 / (ms * 1e6);
  std::printf("%-6s hd %4lld  heads/kv %2lld  len %6lld  tokens %3lld  %10.1f us  %7.2f GFLOP/s\n",
              type_traits(c.type).name, static_cast<long long>(c.hd), static_cast<long long>(c.nq),
              static_cast<long long>(c.len), static_cast<long long>(c.ntok), ms * 1e3, gflops);
  // The same rows with the prompt arithmetic (attention_prompt: f32 q and accumulator, what a
  // prompt of kPromptTileMinTokens or more tokens runs), checked and timed the same way.
  if (c.ntok > 1 && prompt_tiled_kv(c.type)) {
    const size_t q32_row = (static_cast<size_t>(c.hd) * 4 + 63) / 64 * 64;
    std::vector<uint8_t> q32(q32_row * static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r)
      dequantize_row(type_traits(c.type).vec_dot_type, q.data() + static_cast<size_t>(r) * q_row,
                     reinterpret_cast<float*>(q32.data() + static_cast<size_t>(r) * q32_row), c.hd);
    std::vector<float> work2(attention_prompt_work_floats(rows, c.hd) + 16);
    AttnGroup p = a;
    p.q = q32.data();
    p.q_stride = q32_row;
    p.work = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(work2.data()) + 63) / 64 * 64);
    p.out = ref.data();
    attention_prompt_ref(p);
    p.out = out.data();
    attention_prompt(p);
    if (std::memcmp(out.data(), ref.data(), out.size() * 4) != 0) {
      std::printf("prompt arithmetic: the dispatched kernel differs from the reference\n");
      return false;
    }
    const double pms = bench::median_ms([&](int) { attention_prompt(p); }, 1, min_time);
    std::printf("%-6s hd %4lld  heads/kv %2lld  len %6lld  tokens %3lld  %10.1f us  %7.2f GFLOP/s  prompt (%.2fx)\n",
                type_traits(c.type).name, static_cast<long long>(c.hd), static_cast<long long>(c.nq),
                static_cast<long long>(c.len), static_cast<long long>(c.ntok), pms * 1e3, elems * 4 / (pms * 1e6),
                ms / pms);
  }
  return true;
}

}  // namespace

int run_attn_bench(int argc, char** argv) {
  std::vector<std::pair<int64_t, int64_t>> shapes = {{64, 8}, {128, 4}, {128, 2}};
  std::vector<int64_t> lens = {512, 4096, 16384}, tokens = {1, 16};
  std::vector<GgmlType> types = {GgmlType::F16};
  double min_time = 0.3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const std::string val = i + 1 < argc ? argv[i + 1] : "";
    bool ok = true;
    if (a == "--attn") continue;
    if (a == "--shapes") {
      shapes.clear();
      for (auto& s : bench::split_list(val)) {
        int64_t hd, nq;
        if (!bench::parse_shape(s, &hd, &nq)) ok = false;
        else shapes.push_back({hd, nq});
      }
      ok = ok && !shapes.empty();
    } else if (a == "--lens") {
      ok = bench::parse_counts(val, &lens);
    } else if (a == "--tokens") {
      ok = bench::parse_counts(val, &tokens);
    } else if (a == "--types") {
      types.clear();
      for (auto& s : bench::split_list(val)) {
        if (s == "f16") types.push_back(GgmlType::F16);
        else if (s == "q8_0") types.push_back(GgmlType::Q8_0);
        else if (s == "f32") types.push_back(GgmlType::F32);
        else ok = false;
      }
    } else if (a == "--min-time") {
      min_time = std::atof(val.c_str());
      ok = min_time > 0;
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr,
                   "usage: llmserve_bench_kernels --attn [--shapes 64x8,128x4] [--lens 512,4096] [--tokens 1,16] "
                   "[--types f16,q8_0,f32] [--min-time 0.3]\n");
      return 2;
    }
    ++i;
  }
  std::printf("attention_group, 1 thread, %s, kernels: %s\n", bench::cpu_name().c_str(), isa_name(active_isa()));
  for (auto t : types)
    for (auto [hd, nq] : shapes)
      for (auto len : lens)
        for (auto n : tokens) {
          if (n * nq > kMaxAttnGroup) continue;
          if (!run_case({hd, nq, len, n, t}, min_time)) return 1;
        }
  return 0;
}
