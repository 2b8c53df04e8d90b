// attention/: calls that carry several consecutive tokens of one sequence (prefill) give each
// row exactly the bits of a call of its own, in the scalar reference and in every SIMD kernel this
// CPU runs (AVX2, AVX-512), for f16, f32 and q8_0 caches, under sliding windows and soft-capping;
// and attention_f32 (which forms those calls from a batch) gives a prefill chunk the same bits as
// the same tokens decoded one at a time. (Single-token calls against double precision:
// test_ops.cpp.)
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "attention/attention.h"
#include "attention_test_util.h"
#include "isa/isa.h"
#include "kv/kv_pool.h"
#include "quant/quant.h"
#include "testing.h"
#include "threadpool/thread_pool.h"

using namespace llmserve;

using namespace llmserve::attn_test;

TEST(attention_multi_token_rows_match_single_calls) {
  Rng rnd{7};
  AttnKernels kernels = {{"dispatched", attention_group}};
#if defined(LLMSERVE_X86)
  // The SIMD kernels keep the dispatched F16/F32 dot order (avx2::dot_order), so they are compared
  // only where the dispatched dots are that order (not under LLMSERVE_KERNELS=scalar).
  if (active_isa() >= Isa::Avx2) {
    kernels.push_back({"avx2", attention_group_avx2});
    if (cpu_supports(Isa::Avx512)) kernels.push_back({"avx512", attention_group_avx512});
  }
#endif
  int cases = 0;
  for (GgmlType kvt : {GgmlType::F16, GgmlType::F32, GgmlType::Q8_0}) {
    const GgmlType qt = type_traits(kvt).vec_dot_type;
    const std::vector<int64_t> hds =
        kvt == GgmlType::Q8_0 ? std::vector<int64_t>{64, 96, 128} : std::vector<int64_t>{8, 13, 40, 64, 128, 256};
    for (int64_t hd : hds) {
      // n_q 3 and 4: row groups the kernels split unevenly (3 + 3 + ..., 2 + 2, 4 + 4).
      for (int64_t n_q : {1, 2, 3, 4, 8}) {
        for (int64_t n_tok : {int64_t(1), int64_t(5), 64 / n_q}) {
          for (int64_t len0 : {1, 38}) {
            for (int64_t window : {0, 6, 33}) {
              const float softcap = window == 6 ? 0.75f : 0.0f;
              const int64_t n_pos = len0 + n_tok - 1;
              PagedKv kv(kvt, hd, n_pos, rnd);
              const size_t q_stride = (row_size(qt, hd) + 63) / 64 * 64;
              std::vector<uint8_t> q(static_cast<size_t>(n_tok * n_q) * q_stride);
              std::vector<float> qf(static_cast<size_t>(hd));
              for (int64_t r = 0; r < n_tok * n_q; ++r) {
                for (auto& x : qf) x = rnd();
                quantize_row(qt, qf.data(), q.data() + r * q_stride, hd);
              }
              // Outputs laid out as the model's: token stride wider than the group's heads.
              const int64_t out_tok = (n_q + 1) * hd;
              std::vector<float> work(attention_group_work_floats(n_tok * n_q, hd) + 16);
              float* w = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(work.data()) + 63) & ~uintptr_t(63));
              const float scale = 1.0f / std::sqrt(float(hd));
              const PagedCall call{kv, q.data(), q_stride, n_q, len0, window, scale, softcap, out_tok, w};
              const size_t n_out = static_cast<size_t>(n_tok * out_tok);
              std::vector<float> single(n_out, 0.0f), multi_ref(n_out, 0.0f);
              for (int64_t i = 0; i < n_tok; ++i) attention_group_ref(call(i, 1, single.data()));
              attention_group_ref(call(0, n_tok, multi_ref.data()));
              CHECK(same_bits(single.data(), multi_ref.data(), n_out));
              CHECK(kernels_match(kernels, call, n_tok, single, "decode"));
              ++cases;
            }
          }
        }
      }
    }
  }
  CHECK(cases == (3 + 6 + 6) * 5 * 3 * 2 * 3);  // (head sizes) x n_q x n_tok x len0 x window
}

TEST(attention_f32_prefill_runs_match_rows_alone) {
  // One batch: sequence A's prefill chunk (positions 3..22), then sequence B's chunk whose first
  // position (23) continues A's numbering, then a decode row of A's table at position 9. Through
  // attention_f32 every row must equal that row computed in a batch of its own: B's rows may not
  // join A's call (another block table), and the calls' token grouping changes no bit. GQA 4:1
  // (16 tokens per call) and 1:1, f16 and q8_0 caches, with and without a window.
  for (GgmlType kvt : {GgmlType::F16, GgmlType::Q8_0}) {
    for (int64_t n_gqa : {1, 4}) {
      for (int64_t window : {0, 5}) {
        AttnShape s;
        s.n_head_kv = 2, s.n_head = 2 * n_gqa, s.head_dim = 64, s.window = window;
        const int64_t hd = s.head_dim, nq = s.n_embd_q();
        std::unique_ptr<KvPool> kv;
        KvPoolOptions o;
        o.n_blocks = 16, o.block_size = 8, o.type = kvt;
        CHECK(KvPool::create(KvShape{1, s.n_head_kv, hd}, o, &kv).ok());
        const std::vector<int32_t> table_a = {5, 2, 9, 0}, table_b = {7, 1, 12, 3, 14};
        Rng rnd{31};
        std::vector<float> kr(static_cast<size_t>(s.n_head_kv * hd)), vr(kr.size());
        for (const auto* t : {&table_a, &table_b})
          for (int64_t p = 0; p < static_cast<int64_t>(t->size()) * 8; ++p) {
            for (auto& x : kr) x = rnd() * 2.0f;
            for (auto& x : vr) x = rnd();
            kv->store(0, t->data(), p, kr.data(), vr.data());
          }
        std::vector<int64_t> pos;
        std::vector<const int32_t*> blocks;
        for (int64_t p = 3; p <= 22; ++p) pos.push_back(p), blocks.push_back(table_a.data());
        for (int64_t p = 23; p <= 35; ++p) pos.push_back(p), blocks.push_back(table_b.data());
        pos.push_back(9), blocks.push_back(table_a.data());
        const int64_t m = static_cast<int64_t>(pos.size());
        std::vector<float> q(static_cast<size_t>(m * nq));
        for (auto& x : q) x = rnd();
        ThreadPool pool(2);
        std::vector<uint8_t> scratch(static_cast<size_t>(pool.size()) * attention_scratch_bytes(s, kvt) + 64);
        uint8_t* sc = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(scratch.data()) + 63) & ~uintptr_t(63));
        BatchLayout bl{m, pos.data(), blocks.data()};
        std::vector<float> batch(q.size()), alone(q.size());
        attention_f32(s, *kv, 0, q.data(), bl, 0, m, batch.data(), sc, pool);
        for (int64_t t = 0; t < m; ++t)
          attention_f32(s, *kv, 0, q.data() + t * nq, bl, t, 1, alone.data() + t * nq, sc, pool);
        CHECK(same_bits(batch.data(), alone.data(), batch.size()));
        // Rows with the prompt arithmetic (BatchLayout::tiled): A's positions below 16 and all of
        // B's. A's run switches arithmetic midway, so its calls must split there (the engine flags
        // whole sequences; attention_f32 does not rely on it). Each row again equals itself alone,
        // and the f16 cache's tiled rows differ from the decode arithmetic's (the flag is read).
        std::vector<uint8_t> tiled(static_cast<size_t>(m));
        for (int64_t t = 0; t < m; ++t) tiled[static_cast<size_t>(t)] = blocks[t] == table_b.data() || pos[t] < 16;
        tiled.back() = 0;
        BatchLayout tl{m, pos.data(), blocks.data(), tiled.data()};
        std::vector<float> tbatch(q.size()), talone(q.size());
        attention_f32(s, *kv, 0, q.data(), tl, 0, m, tbatch.data(), sc, pool);
        for (int64_t t = 0; t < m; ++t)
          attention_f32(s, *kv, 0, q.data() + t * nq, tl, t, 1, talone.data() + t * nq, sc, pool);
        CHECK(same_bits(tbatch.data(), talone.data(), tbatch.size()));
        if (kvt == GgmlType::F16) {
          CHECK(!same_bits(tbatch.data(), batch.data(), static_cast<size_t>(nq)));  // row 0: tiled
          CHECK(same_bits(tbatch.data() + (m - 1) * nq, batch.data() + (m - 1) * nq, static_cast<size_t>(nq)));
        } else {  // q8_0: tiled rows keep the decode arithmetic
          CHECK(same_bits(tbatch.data(), batch.data(), tbatch.size()));
        }
      }
    }
  }
}
