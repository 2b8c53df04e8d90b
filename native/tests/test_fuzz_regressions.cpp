// Regression tests for findings of the libFuzzer targets (native/fuzz, `npm run fuzz`). Each test
// names the target and the input that found it, and asserts the behaviour the fix guarantees.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "gguf/gguf.h"
#include "sampling/sampler.h"
#include "sampling_test_util.h"
#include "sched/engine.h"
#include "synth/synth.h"
#include "testing.h"

using namespace llmserve;
using namespace llmserve::sampling_test;

// fuzz_sampling: a large vocabulary (full-vocabulary path, > 2048 candidates) whose logits differ by
// a denormal (here 0 vs 1e-44) made the histogram scale 2047 / range overflow to +inf; the bucket
// of the top logit was then (0 * inf) = NaN cast to int: undefined behaviour, in practice an index
// of INT_MIN into the histogram. Fixed: such a range skips bucketing (the quickselect handles it).
TEST(fuzz_sampling_denormal_logit_range_full_vocab) {
  const int32_t n = 4096;
  std::vector<float> logits(n);
  for (int32_t i = 0; i < n; ++i) logits[i] = (i % 2) ? 1e-44f : 0.0f;
  for (float top_p : {0.5f, 0.999f}) {
    SamplingParams p = plain();
    p.top_p = top_p;
    for (uint64_t seed = 1; seed <= 8; ++seed) {
      p.seed = seed;
      Sampler s(p, n);
      const int32_t tok = s.sample(logits.data()).token;
      CHECK(tok >= 0 && tok < n);
      // All weights are exp(~0) = 1, ranked odd ids (the larger logit) first: top_p 0.5 keeps
      // exactly the 2048 odd ids.
      if (top_p == 0.5f) {
        CHECK_EQ(tok % 2, 1);
        CHECK_EQ(s.last_candidates().size(), size_t(2048));
      }
    }
  }
  // Sampling with no top_p (the draw itself searches the ranked candidates).
  SamplingParams p = plain();
  p.seed = 3;
  Sampler s(p, n);
  const int32_t tok = s.sample(logits.data()).token;
  CHECK(tok >= 0 && tok < n);
}

// fuzz_gguf: GgufValue::arr_int on a float array element (and as_int on a float scalar) cast the
// double straight to int64: undefined behaviour for 4.36e27, +-inf or NaN (x86 gives INT64_MIN).
// Fixed: they saturate, NaN -> 0.
TEST(fuzz_gguf_float_to_int_saturates) {
  std::vector<uint8_t> b;
  auto put = [&b](const void* p, size_t n) { b.insert(b.end(), (const uint8_t*)p, (const uint8_t*)p + n); };
  auto u32 = [&](uint32_t v) { put(&v, 4); };
  auto u64 = [&](uint64_t v) { put(&v, 8); };
  auto str = [&](const std::string& s) {
    u64(s.size());
    put(s.data(), s.size());
  };
  auto f64 = [&](double v) { put(&v, 8); };
  u32(0x46554747);
  u32(3);
  u64(0);
  u64(2);  // magic, version, 0 tensors, 2 kvs
  str("a");
  u32((uint32_t)GgufType::ARRAY);
  u32((uint32_t)GgufType::FLOAT64);
  u64(5);
  f64(4.36033e27);
  f64(-1e300);
  f64(std::numeric_limits<double>::quiet_NaN());
  f64(-2.5);
  f64(1e19);
  str("s");
  u32((uint32_t)GgufType::FLOAT64);
  f64(1e30);
  std::unique_ptr<GgufFile> f;
  Status st = GgufFile::parse(b.data(), b.size(), &f);
  CHECK(st.is_ok());
  if (!st) return;
  const GgufValue* a = f->find("a");
  CHECK(a != nullptr);
  if (a) {
    CHECK_EQ(a->arr_int(0), std::numeric_limits<int64_t>::max());
    CHECK_EQ(a->arr_int(1), std::numeric_limits<int64_t>::min());
    CHECK_EQ(a->arr_int(2), int64_t(0));
    CHECK_EQ(a->arr_int(3), int64_t(-2));
    CHECK_EQ(a->arr_int(4), std::numeric_limits<int64_t>::max());
  }
  const GgufValue* s = f->find("s");
  CHECK(s != nullptr);
  if (s) CHECK_EQ(s->as_int(), std::numeric_limits<int64_t>::max());
}

// fuzz_engine ("request never finished"): a sequence that fails with KvExhausted in the running
// phase of a step stayed in running_ (done) until the next step, so the admission phase of that
// step saw a full running_ (max_sequences) or a non-empty one and admitted nothing; the step then
// had no work, returned false, and the engine thread slept with a request still waiting: it hung
// until some unrelated submit/cancel woke the engine. Fixed: finished sequences leave running_
// before admission. Here: a pinned session holds 3 of 4 KV blocks, A (alone) outgrows the last
// block and fails; B, queued behind it (max_sequences 1), must still finish.
TEST(fuzz_engine_waiting_request_finishes_after_kv_exhausted) {
  char path[] = "/tmp/llmserve-test-fuzzreg-XXXXXX";
  const int fd = mkstemp(path);
  CHECK(fd >= 0);
  if (fd < 0) return;
  close(fd);
  SynthOptions so;
  so.dim = 64, so.layers = 1, so.heads = 2, so.kv_heads = 1, so.ffn = 64, so.context = 64;
  so.vocab_size = 300;
  Status st = synth_model(so, path);
  CHECK(st.is_ok());
  EngineOptions eo;
  eo.threads = 1, eo.n_ctx = 64, eo.kv_tokens = 64, eo.block_size = 16, eo.max_sequences = 1;
  std::unique_ptr<Engine> e;
  if (st) st = Engine::load(path, eo, {}, &e);
  unlink(path);
  CHECK(st.is_ok());
  if (!st) return;

  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  std::vector<Status> errors;
  auto submit = [&](int n_prompt, int64_t max_tokens, int64_t session, bool pin) {
    auto r = std::make_shared<GenerateRequest>();
    for (int i = 0; i < n_prompt; ++i) r->prompt.push_back(3 + (i * 7) % 290);
    r->sampling.temperature = 0;
    r->max_tokens = max_tokens;
    r->session = session;
    r->pin = pin;
    r->on_event = [&](GenEvent&& ev) {
      if (!ev.done) return;
      std::lock_guard<std::mutex> lk(mu);
      errors.push_back(ev.error);
      ++done;
      cv.notify_all();
    };
    int64_t id = 0;
    return e->submit(r, &id);
  };
  auto wait_for = [&](int n) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(20), [&] { return done >= n; });
  };
  CHECK(submit(40, 0, 1, true).is_ok());  // pinned: 3 blocks
  CHECK(wait_for(1));
  CHECK(submit(10, 20, 0, false).is_ok());  // A: needs a 2nd block at 16 tokens; none is free
  CHECK(submit(20, 1, 0, false).is_ok());   // B: waits behind A (max_sequences 1)
  CHECK(wait_for(3));                       // before the fix: B never finished
  std::lock_guard<std::mutex> lk(mu);
  CHECK_EQ(errors.size(), size_t(3));
  if (errors.size() == 3) {
    CHECK(errors[1].code == Code::KvExhausted);
    // B's prompt starts like the pinned one, so it reuses that block and runs (or fails cleanly).
    CHECK(errors[2].code == Code::Ok || errors[2].code == Code::KvExhausted);
  }
}
