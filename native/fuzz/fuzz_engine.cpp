// libFuzzer target: the engine's request validation and what runs behind it. One Engine is loaded
// once (a tiny synthesized Q8_0 llama written to a temp file); every input is a short script of
// actions decoded from the bytes: generate requests (prompt ids in and out of the vocabulary,
// too-long prompts, any sampling parameters, maxTokens, stop ids, logprobs, priorities, sessions,
// pins), evaluate requests, cancels and session ends. Invariants: submit() either returns a Status
// or the request ends with exactly one done event; events carry tokens in [0, n_vocab) and
// logprobs parallel to tokens; evaluate returns n_vocab (x tokens) logits; nothing hangs (30 s).
// One input in 64 also runs Engine::load's option validation with fuzzed options.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "sched/engine.h"
#include "synth/synth.h"

using namespace llmserve;

namespace {

std::string g_path;
std::unique_ptr<Engine> g_engine;
constexpr int64_t kCtx = 64;

struct Waiter {
  std::mutex mu;
  std::condition_variable cv;
  int pending = 0;
  void add() {
    std::lock_guard<std::mutex> lk(mu);
    ++pending;
  }
  void done() {
    std::lock_guard<std::mutex> lk(mu);
    --pending;
    cv.notify_all();
  }
  void wait_all() {
    std::unique_lock<std::mutex> lk(mu);
    if (!cv.wait_for(lk, std::chrono::seconds(30), [&] { return pending == 0; })) {
      // Engine state for the diagnosis: the hang may depend on what earlier inputs left behind
      // (sessions, pinned KV), so a lone rerun of the input need not reproduce it.
      const EngineStats st = g_engine->stats();
      std::fprintf(stderr,
                   "fuzz_engine: %d request(s) never finished; engine: running %lld waiting %lld "
                   "sessions %lld blocks used/cached/free %lld/%lld/%lld of %lld, steps %lld, "
                   "preemptions %lld, errors %lld\n",
                   pending, (long long)st.running, (long long)st.waiting, (long long)st.sessions,
                   (long long)st.blocks_used, (long long)st.blocks_cached, (long long)st.blocks_free,
                   (long long)st.blocks_total, (long long)st.steps, (long long)st.preemptions, (long long)st.errors);
      std::abort();
    }
  }
};

// Mostly short (cheap to run); sometimes around the context limit, where the length checks are.
int length(FuzzedDataProvider& in) {
  return in.ConsumeBool() ? in.ConsumeIntegralInRange<int>(0, 6)
                          : in.ConsumeIntegralInRange<int>(static_cast<int>(kCtx) - 3, static_cast<int>(kCtx) + 2);
}

int32_t token(FuzzedDataProvider& in, int32_t n_vocab) {
  switch (in.ConsumeIntegralInRange<int>(0, 7)) {
    case 0: return in.ConsumeIntegral<int32_t>();
    case 1: return n_vocab;  // one past the end
    case 2: return -1;
    default: return in.ConsumeIntegralInRange<int32_t>(0, n_vocab - 1);
  }
}

void remove_model() {
  g_engine.reset();
  if (!g_path.empty()) unlink(g_path.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/llmserve-fuzz-engine-XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd < 0) std::abort();
  close(fd);
  g_path = std::string(tmpl);
  SynthOptions so;
  so.dim = 64, so.layers = 1, so.heads = 2, so.kv_heads = 1, so.ffn = 64, so.context = kCtx;
  so.vocab_size = 300;
  so.type = GgmlType::Q8_0;
  Status st = synth_model(so, g_path);
  if (!st) {
    std::fprintf(stderr, "fuzz_engine: synth failed: %s\n", st.message.c_str());
    std::abort();
  }
  EngineOptions eo;
  eo.threads = 1;
  eo.n_ctx = kCtx;
  eo.kv_tokens = 96;  // small: preemption and KV exhaustion are reachable
  eo.max_batch_tokens = 32;
  eo.prefill_chunk = 8;
  eo.max_sequences = 4;
  eo.max_queue = 16;
  st = Engine::load(g_path, eo, {}, &g_engine);
  if (!st) {
    std::fprintf(stderr, "fuzz_engine: load failed: %s\n", st.message.c_str());
    std::abort();
  }
  std::atexit(remove_model);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  Engine& e = *g_engine;
  const int32_t n_vocab = static_cast<int32_t>(e.config().n_vocab);

  if (in.ConsumeIntegralInRange<int>(0, 63) == 0) {
    // Option validation of Engine::load (sizes kept loadable: this is about the checks, not RAM).
    EngineOptions o;
    o.threads = in.ConsumeIntegralInRange<int>(-1, 3);
    o.n_ctx = in.ConsumeIntegralInRange<int64_t>(-2, 256);
    o.kv_tokens = in.ConsumeIntegralInRange<int64_t>(-2, 512);
    o.block_size = in.ConsumeIntegralInRange<int32_t>(-1, 64);
    o.kv_type = in.PickValueInArray({GgmlType::F16, GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_0});
    o.max_batch_tokens = in.ConsumeIntegralInRange<int64_t>(-1, 64);
    o.prefill_chunk = in.ConsumeIntegralInRange<int64_t>(-1, 64);
    o.max_sequences = in.ConsumeIntegralInRange<int64_t>(-1, 8);
    o.max_queue = in.ConsumeIntegralInRange<int64_t>(-1, 8);
    o.repack = in.ConsumeBool();
    std::unique_ptr<Engine> other;
    (void)Engine::load(g_path, o, {}, &other);
    return 0;
  }

  Waiter w;
  std::vector<int64_t> ids;
  const int n_actions = in.ConsumeIntegralInRange<int>(1, 4);
  for (int a = 0; a < n_actions && in.remaining_bytes() > 0; ++a) {
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
      case 0: {  // evaluate
        auto r = std::make_shared<EvalRequest>();
        const int n = length(in);
        for (int i = 0; i < n; ++i) r->tokens.push_back(token(in, n_vocab));
        // Any first logits row (out-of-range ones must be refused) and pass size.
        r->logits_from = in.ConsumeIntegralInRange<int64_t>(-1, n);
        r->n_batch = in.ConsumeIntegralInRange<int64_t>(-1, n + 1);
        const size_t want =
            static_cast<size_t>(n_vocab) * static_cast<size_t>(std::max<int64_t>(0, n - r->logits_from));
        r->on_done = [&w, want](Status s, std::vector<float>&& logits) {
          if (s && logits.size() != want) std::abort();
          w.done();
        };
        w.add();
        if (!e.submit_eval(r)) w.done();
        break;
      }
      case 1:  // cancel something submitted earlier in this input
        if (!ids.empty()) e.cancel(ids[in.ConsumeIntegralInRange<size_t>(0, ids.size() - 1)]);
        break;
      case 2: e.end_session(in.ConsumeIntegralInRange<int64_t>(0, 3)); break;
      default: {  // generate
        auto r = std::make_shared<GenerateRequest>();
        const int n = length(in);
        for (int i = 0; i < n; ++i) r->prompt.push_back(token(in, n_vocab));
        r->sampling = fuzz::sampling_params(in);
        r->max_tokens = in.ConsumeIntegralInRange<int64_t>(-1, 3);
        const int n_stop = in.ConsumeIntegralInRange<int>(0, 3);
        for (int i = 0; i < n_stop; ++i) r->stop_tokens.push_back(token(in, n_vocab));
        r->want_logprobs = in.ConsumeBool();
        r->priority = in.ConsumeIntegralInRange<int32_t>(-2, 2);
        r->session = in.ConsumeIntegralInRange<int64_t>(0, 3);
        r->pin = in.ConsumeBool();
        const bool logprobs = r->want_logprobs;
        auto ended = std::make_shared<bool>(false);
        r->on_event = [&w, n_vocab, logprobs, ended](GenEvent&& ev) {
          if (*ended) std::abort();  // an event after the final one
          for (int32_t t : ev.tokens)
            if (t < 0 || t >= n_vocab) std::abort();
          if (logprobs && ev.error && ev.logprobs.size() != ev.tokens.size()) std::abort();
          if (ev.done) {
            *ended = true;
            w.done();
          }
        };
        w.add();
        int64_t id = 0;
        if (e.submit(r, &id)) ids.push_back(id);
        else w.done();
        break;
      }
    }
  }
  w.wait_all();
  // Sessions (pinned ones included) would otherwise carry KV into the next input.
  for (int64_t s = 1; s <= 3; ++s) e.end_session(s);
  return 0;
}
