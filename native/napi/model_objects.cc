// The JavaScript objects NativeModel hands out: a generation event, info() and stats() (one
// place for their field names, which lib/native.ts declares).
#include "model_objects.h"

#include "errors.h"
#include "gguf/gguf.h"
#include "quant/quant.h"

namespace llmserve::napi {

Napi::Object event_to_js(Napi::Env env, GenEvent& ev) {
  auto o = Napi::Object::New(env);
  if (!ev.tokens.empty()) {
    auto a = Napi::Array::New(env, ev.tokens.size());
    for (uint32_t k = 0; k < ev.tokens.size(); ++k) a.Set(k, ev.tokens[k]);
    o.Set("tokens", a);
  }
  if (!ev.logprobs.empty()) {
    auto a = Napi::Array::New(env, ev.logprobs.size());
    for (uint32_t k = 0; k < ev.logprobs.size(); ++k) {
      auto& r = ev.logprobs[k];
      auto lp = Napi::Object::New(env);
      lp.Set("token", r.token);
      lp.Set("logprob", r.logprob);
      auto top = Napi::Array::New(env, r.top.size());
      for (uint32_t j = 0; j < r.top.size(); ++j) {
        auto t = Napi::Object::New(env);
        t.Set("token", r.top[j].token);
        t.Set("logprob", r.top[j].logprob);
        top.Set(j, t);
      }
      lp.Set("top", top);
      a.Set(k, lp);
    }
    o.Set("logprobs", a);
  }
  if (ev.reused_tokens >= 0) o.Set("reusedTokens", Napi::Number::New(env, (double)ev.reused_tokens));
  if (ev.done) {
    o.Set("done", true);
    if (!ev.error.is_ok()) {
      auto e = Napi::Object::New(env);
      e.Set("code", code_name(ev.error.code));
      e.Set("message", ev.error.message);
      o.Set("error", e);
    } else {
      o.Set("finishReason", finish_reason_name(ev.finish));
    }
    auto t = Napi::Object::New(env);
    t.Set("promptMs", ev.timings.prompt_ms);
    t.Set("generateMs", ev.timings.generate_ms);
    t.Set("promptTokens", Napi::Number::New(env, (double)ev.timings.prompt_tokens));
    t.Set("generatedTokens", Napi::Number::New(env, (double)ev.timings.generated_tokens));
    t.Set("reusedTokens", Napi::Number::New(env, (double)ev.timings.reused_tokens));
    o.Set("timings", t);
  }
  return o;
}

Napi::Object info_to_js(Napi::Env env, Engine& engine) {
  Engine* e = &engine;
  const ModelConfig& c = e->config();
  auto o = Napi::Object::New(env);
  o.Set("arch", c.arch);
  o.Set("nVocab", Napi::Number::New(env, (double)c.n_vocab));
  o.Set("nEmbd", Napi::Number::New(env, (double)c.n_embd));
  o.Set("nLayer", Napi::Number::New(env, (double)c.n_layer));
  o.Set("nHead", Napi::Number::New(env, (double)c.n_head));
  o.Set("nHeadKv", Napi::Number::New(env, (double)c.n_head_kv));
  o.Set("nFf", Napi::Number::New(env, (double)c.n_ff));
  o.Set("headDim", Napi::Number::New(env, (double)c.head_dim));
  o.Set("nCtxTrain", Napi::Number::New(env, (double)c.n_ctx_train));
  o.Set("contextSize", Napi::Number::New(env, (double)e->options().n_ctx));
  o.Set("ropeFreqBase", c.rope_freq_base);
  o.Set("rmsEps", c.rms_eps);
  o.Set("tiedOutput", c.tied_output);
  o.Set("threads", e->options().threads);
  o.Set("kvCacheTokens", Napi::Number::New(env, (double)e->options().kv_tokens));
  o.Set("kvBlockSize", e->options().block_size);
  o.Set("promptTiledMinTokens", Napi::Number::New(env, (double)kPromptTiledMinTokens));
  o.Set("maxBatchTokens", Napi::Number::New(env, (double)e->options().max_batch_tokens));
  o.Set("prefillChunk", Napi::Number::New(env, (double)e->options().prefill_chunk));
  o.Set("targetStepMs", e->options().target_step_ms);
  o.Set("batching", e->options().fixed_batching ? "fixed" : e->options().static_batching ? "static" : "continuous");
  o.Set("fixedBucket", Napi::Number::New(env, (double)e->options().fixed_bucket));
  o.Set("maxSequences", Napi::Number::New(env, (double)e->options().max_sequences));
  o.Set("kernels", kernel_isa());
  o.Set("kvType", type_traits(e->kv_type()).name);
  o.Set("kvBytes", Napi::Number::New(env, (double)e->kv_bytes()));
  o.Set("repackedBytes", Napi::Number::New(env, (double)e->repacked_bytes()));
  o.Set("csrMatrices", Napi::Number::New(env, (double)e->executor().csr_sparse_matrices()));
  o.Set("csrDenseMatrices", Napi::Number::New(env, (double)e->executor().csr_dense_matrices()));
  auto wt = Napi::Object::New(env);
  if (const GgufFile* file = e->executor().file()) {
    for (auto& t : file->tensors()) {
      std::string n = type_traits(t.type).name;
      wt.Set(n, Napi::Number::New(env, (wt.Has(n) ? wt.Get(n).As<Napi::Number>().DoubleValue() : 0) + 1));
    }
  }
  o.Set("weightTypes", wt);
  return o;
}

Napi::Object stats_to_js(Napi::Env env, const EngineStats& s) {
  auto o = Napi::Object::New(env);
  auto set = [&](const char* k, int64_t v) { o.Set(k, Napi::Number::New(env, (double)v)); };
  set("steps", s.steps);
  set("batchTokens", s.batch_tokens);
  set("batchSequences", s.batch_seqs);
  set("maxBatchTokensSeen", s.max_batch_tokens_seen);
  set("maxBatchSequencesSeen", s.max_batch_seqs_seen);
  set("promptTokens", s.prompt_tokens);
  set("prefillTokens", s.prefill_tokens);
  set("reusedTokens", s.reused_tokens);
  set("generatedTokens", s.generated_tokens);
  set("requests", s.requests);
  set("finished", s.finished);
  set("aborted", s.aborted);
  set("errors", s.errors);
  set("preemptions", s.preemptions);
  set("sessionEvictions", s.session_evictions);
  set("prefixLookups", s.prefix_lookups);
  set("prefixHits", s.prefix_hits);
  set("evalSequences", s.eval_sequences);
  set("evalPasses", s.eval_passes);
  set("dynamicSteps", s.dynamic_steps);
  o.Set("stepMsBase", s.step_ms_base);
  o.Set("stepMsPerToken", s.step_ms_per_token);
  o.Set("stepMsPerRow", s.step_ms_per_row);
  set("running", s.running);
  set("waiting", s.waiting);
  set("sessions", s.sessions);
  set("blocksTotal", s.blocks_total);
  set("blocksUsed", s.blocks_used);
  set("blocksCached", s.blocks_cached);
  set("blocksFree", s.blocks_free);
  set("blockSize", s.block_size);
  set("kvTokensHeld", s.kv_tokens_held);
  set("localBlocksTotal", s.local_blocks_total);
  set("localBlocksUsed", s.local_blocks_used);
  set("localBlocksCached", s.local_blocks_cached);
  set("localBlocksFree", s.local_blocks_free);
  set("kvBytesGlobal", s.kv_bytes_global);
  set("kvBytesLocal", s.kv_bytes_local);
  set("prefixWindowMisses", s.prefix_window_misses);
  set("joinedRunning", s.joined_running);
  set("paddedTokens", s.padded_tokens);
  set("padSkippedTokens", s.pad_skipped_tokens);
  set("adapters", s.adapters);
  set("adapterBytes", s.adapter_bytes);
  return o;
}

}  // namespace llmserve::napi
