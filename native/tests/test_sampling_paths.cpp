// Tests for native/core/sampling across its code paths: small top_k heap scan, nth_element
// top_k, and the full vocabulary with histogram-guided ranked search, each against a naive
// reference of the chain (full copy, full sort, every step in double precision).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <vector>

#include "sampling/sampler.h"
#include "sampling_test_util.h"
#include "testing.h"

using namespace llmserve;
using namespace llmserve::sampling_test;

namespace {

// Naive reference of the chain: full copy, full sort, every step spelled out.
std::vector<TokenLogprob> reference_chain(const SamplingParams& p, const std::vector<float>& raw,
                                          const std::vector<int32_t>& history) {
  const int32_t n = static_cast<int32_t>(raw.size());
  std::vector<double> l(raw.begin(), raw.end());
  bool pen_on =
      p.repeat_last_n != 0 && (p.repeat_penalty != 1.0f || p.frequency_penalty != 0 || p.presence_penalty != 0);
  if (pen_on) {
    size_t w = p.repeat_last_n < 0 ? history.size() : std::min(history.size(), size_t(p.repeat_last_n));
    std::vector<int> count(n, 0);
    for (size_t i = history.size() - w; i < history.size(); ++i) count[history[i]]++;
    for (int32_t t = 0; t < n; ++t) {
      if (!count[t]) continue;
      l[t] = l[t] > 0 ? l[t] / p.repeat_penalty : l[t] * p.repeat_penalty;
      l[t] -= count[t] * p.frequency_penalty + p.presence_penalty;
    }
  }
  std::vector<int32_t> ids(n);
  for (int32_t i = 0; i < n; ++i) ids[i] = i;
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    float la = float(l[a]), lb = float(l[b]);
    return la > lb || (la == lb && a < b);
  });
  if (p.top_k > 0 && p.top_k < n) ids.resize(p.top_k);
  double m = l[ids[0]];
  double z = 0;
  for (int32_t t : ids) z += std::exp(l[t] - m);
  if (p.top_p < 1.0f) {
    double cum = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      cum += std::exp(l[ids[i]] - m) / z;
      if (cum >= p.top_p) {
        ids.resize(i + 1);
        break;
      }
    }
  }
  if (p.min_p > 0) {
    std::vector<int32_t> kept;
    for (int32_t t : ids)
      if (std::exp(l[t] - m) >= p.min_p) kept.push_back(t);
    ids = kept;
  }
  double zt = 0;
  for (int32_t t : ids) zt += std::exp((l[t] - m) / p.temperature);
  std::vector<TokenLogprob> out;
  for (int32_t t : ids) out.push_back({t, float(std::exp((l[t] - m) / p.temperature) / zt)});
  return out;
}

// Runs the sampler and reference_chain on the same random case; the kept set, its order and
// probabilities, and the first draw (replayed from the same seed) must agree.
int check_against_reference(int32_t V, float quantum, std::initializer_list<int32_t> top_ks,
                            std::initializer_list<float> top_ps, std::initializer_list<float> min_ps,
                            uint64_t data_seed) {
  Rng gen(data_seed);
  int cases = 0, mismatches = 0;
  for (int32_t top_k : top_ks) {
    for (float top_p : top_ps) {
      for (float min_p : min_ps) {
        SamplingParams p;
        p.top_k = top_k;
        p.top_p = top_p;
        p.min_p = min_p;
        p.temperature = (cases % 4 == 0) ? 1.0f : 0.7f;
        p.repeat_penalty = 1.3f;
        p.frequency_penalty = 0.2f;
        p.presence_penalty = (cases % 2) ? -0.4f : 0.3f;
        p.repeat_last_n = (cases % 3) ? 16 : -1;
        p.seed = 1000 + cases;
        Sampler s(p, V);
        std::vector<int32_t> history;
        std::vector<float> logits = random_logits(gen, V, 2.0);
        if (quantum > 0)  // many exact ties: ranking falls back to token ids
          for (auto& x : logits) x = std::round(x / quantum) * quantum;
        for (int i = 0; i < 40; ++i) {
          // repeat some strong tokens so penalties move the top set
          int32_t t = (i % 4 == 0) ? int32_t(gen.next() % V) : int32_t(gen.next() % 5) * 13;
          if (i % 5 == 0) logits[t] += 3.0f;
          s.accept(t);
          history.push_back(t);
        }
        int32_t tok = s.sample(logits.data()).token;
        auto want = reference_chain(p, logits, history);
        const auto& got = s.last_candidates();
        bool ok = got.size() == want.size();
        for (size_t i = 0; ok && i < got.size(); ++i)
          ok = got[i].token == want[i].token && std::fabs(got[i].logprob - want[i].logprob) < 1e-5;
        // the draw: first i whose cumulative probability exceeds u (same seed -> same u)
        const double u = Rng(p.seed).uniform();
        double cum = 0;
        int32_t want_tok = want.back().token;
        for (auto& c : want) {
          cum += c.logprob;
          if (u < cum) {
            want_tok = c.token;
            break;
          }
        }
        ok = ok && tok == want_tok;
        if (!ok) {
          ++mismatches;
          std::fprintf(stderr,
                       "  reference mismatch: V=%d top_k=%d top_p=%g min_p=%g: %zu vs %zu "
                       "kept, token %d vs %d\n",
                       V, top_k, double(top_p), double(min_p), got.size(), want.size(), tok, want_tok);
        }
        ++cases;
      }
    }
  }
  CHECK_EQ(mismatches, 0);
  return cases;
}

}  // namespace

TEST(sampling_matches_reference_on_every_path) {
  // V = 2000: heap top_k (<= 256), nth_element top_k, full path; sorted walks.
  CHECK_EQ(check_against_reference(2000, 0.0f, {0, 1, 7, 40, 256, 257, 600, 1999, 2000, 5000}, {1.0f, 0.9f, 0.3f},
                                   {0.0f, 0.05f, 0.5f}, 2024),
           90);
}

TEST(sampling_matches_reference_large_vocab) {
  // V = 30000: top_p and the draw search thousands of unsorted candidates (logit histogram,
  // then quickselect), with and without many exact ties.
  for (float quantum : {0.0f, 0.25f})
    CHECK_EQ(check_against_reference(30000, quantum, {0, 20000}, {1.0f, 0.99f, 0.8f}, {0.0f, 0.001f}, 77), 12);
}

TEST(sampling_paths_draw_identically) {
  // When top_k never binds (min_p keeps < 40 tokens), the heap, nth_element and full paths rank
  // candidates identically, so the same seed draws the same tokens.
  const int32_t V = 5000;
  Rng gen(31);
  std::vector<std::vector<float>> steps;
  for (int i = 0; i < 100; ++i) {
    auto l = random_logits(gen, V, 1.0);
    for (int j = 0; j < 10; ++j) l[(i * 37 + j * 101) % V] += 6.0f + 0.1f * j;
    steps.push_back(l);
  }
  auto run = [&](int32_t top_k) {
    SamplingParams p = plain();
    p.top_k = top_k;
    p.min_p = 0.05f;
    p.seed = 3;
    p.repeat_penalty = 1.2f;
    Sampler s(p, V);
    std::vector<int32_t> out;
    for (auto& l : steps) {
      int32_t t = s.sample(l.data()).token;
      CHECK(s.last_candidates().size() < 40);
      s.accept(t);
      out.push_back(t);
    }
    return out;
  };
  auto heap = run(40), nth = run(1000), full = run(0);
  CHECK(heap == nth);
  CHECK(heap == full);
}

TEST(sampling_empirical_large_vocab_full_path) {
  // Full-vocabulary path (top_k off): 92% of the mass sits on 49998 equal logits, so most draws
  // end in the histogram's single-logit bucket. Frequencies of the two top tokens.
  const int32_t V = 50000;
  std::vector<float> logits(V, 0.0f);
  logits[123] = 8.0f;
  logits[40000] = 7.0f;
  SamplingParams p = plain();
  p.seed = 5;
  Sampler s(p, V);
  const double z = std::exp(8.0) + std::exp(7.0) + (V - 2);
  const int n = 5000;  // sigma ~0.003 for p ~0.055
  int a = 0, b = 0;
  for (int i = 0; i < n; ++i) {
    int32_t t = s.sample(logits.data()).token;
    a += t == 123;
    b += t == 40000;
  }
  CHECK_NEAR(double(a) / n, std::exp(8.0) / z, 0.015);
  CHECK_NEAR(double(b) / n, std::exp(7.0) / z, 0.015);
  CHECK_NEAR(prob_of(s, 123), std::exp(8.0) / z, 1e-5);
}
