// NativeModel: one Engine per loaded model. Load, evaluate and dispose run off the JS thread;
// generate() queues a request whose events come back through a per-request thread-safe function.
#include <napi.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>

#include "errors.h"
#include "eval/pooling.h"
#include "eval_promise.h"
#include "gguf/gguf.h"
#include "grammar/gbnf.h"
#include "model_objects.h"
#include "sched/engine.h"
#include "wrap_common.h"

namespace llmserve::napi {
namespace {
namespace L = limits;

std::vector<int32_t> to_tokens(Napi::Env env, Napi::Value v) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw_invalid(env, false, "Expected an Int32Array of token ids for tokens but received " + js_describe(v));
  auto a = v.As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());  // copy at the boundary
}

// The model's LoRA adapters by name (JS thread only). Ids are handed out once each (the engine never
// reuses one: its prefix cache and sessions name adapters by id), so loading a name again after an
// unload gives it a new id.
struct AdapterTable {
  struct Entry {
    uint64_t id = 0;
    std::string path;
    double scale = 1;
  };
  std::map<std::string, Entry> loaded;
  std::set<std::string> loading;
  uint64_t next_id = 1;

  // `"a", "b"` or `none` for messages.
  std::string names() const {
    std::string s;
    for (auto& [n, e] : loaded) s += (s.empty() ? "\"" : ", \"") + n + "\"";
    return s.empty() ? "none" : s;
  }
};

// The adapter name argument: a non-empty string of at most 256 bytes. TypeError / RangeError.
std::string adapter_name(Napi::Env env, Napi::Value v) {
  if (!v.IsString()) throw_invalid(env, false, "Expected a string for the adapter name but received " + js_describe(v));
  std::string n = v.As<Napi::String>().Utf8Value();
  if (n.empty() || n.size() > 256)
    throw_invalid(env, true, "Expected an adapter name of 1 to 256 bytes but received " + js_describe(v));
  return n;
}

class AdapterLoadWorker : public StatusWorker<Napi::AsyncWorker> {
 public:
  AdapterLoadWorker(Napi::Env env, std::shared_ptr<Engine> e, std::shared_ptr<AdapterTable> table, std::string name,
                    uint64_t id, std::string path, double scale)
      : StatusWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        engine_(std::move(e)),
        table_(std::move(table)),
        name_(std::move(name)),
        id_(id),
        path_(std::move(path)),
        scale_(scale) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    Status s = engine_->load_adapter(id_, path_, (float)scale_);
    if (!s) fail(s);
  }
  void OnOK() override {
    table_->loading.erase(name_);
    table_->loaded[name_] = AdapterTable::Entry{id_, path_, scale_};
    settle(Code::Internal, "adapter '" + path_ + "'", [&] {
      Napi::Env env = Env();
      auto r = Napi::Object::New(env);
      r.Set("name", name_);
      r.Set("id", Napi::Number::New(env, (double)id_));
      r.Set("path", path_);
      r.Set("scale", scale_);
      deferred_.Resolve(r);
    });
    engine_.reset();
  }
  void reject(Napi::Value err) override {
    table_->loading.erase(name_);
    engine_.reset();
    deferred_.Reject(err);
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Engine> engine_;
  std::shared_ptr<AdapterTable> table_;
  std::string name_;
  uint64_t id_;
  std::string path_;
  double scale_;
};

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::FunctionReference* ctor;
  static void Init(Napi::Env env) {
    Napi::Function f = DefineClass(
        env, "NativeModel",
        {InstanceMethod("info", &ModelWrap::Info), InstanceMethod("generate", &ModelWrap::Generate),
         InstanceMethod("cancel", &ModelWrap::Cancel), InstanceMethod("evaluate", &ModelWrap::Evaluate),
         InstanceMethod("embed", &ModelWrap::Embed), InstanceMethod("stats", &ModelWrap::Stats),
         InstanceMethod("endSession", &ModelWrap::EndSession), InstanceMethod("loadAdapter", &ModelWrap::LoadAdapter),
         InstanceMethod("unloadAdapter", &ModelWrap::UnloadAdapter), InstanceMethod("adapters", &ModelWrap::Adapters),
         InstanceMethod("dispose", &ModelWrap::Dispose),
         InstanceMethod("setGrammarVocab", &ModelWrap::SetGrammarVocab)});
    ctor = new Napi::FunctionReference(Napi::Persistent(f));
  }
  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {}
  ~ModelWrap() override {
    if (engine_) engine_->shutdown();  // not disposed by the user: stop the thread before unmapping
  }
  void adopt(std::shared_ptr<Engine> e) { engine_ = std::move(e); }
  // Null once disposed.
  const std::shared_ptr<Engine>& engine() const { return engine_; }

 private:
  Engine* live(Napi::Env env) {
    if (!engine_) throw make_js_error(env, Code::Disposed, "The model has been disposed; load it again.");
    return engine_.get();
  }

  Napi::Value Info(const Napi::CallbackInfo& info) { return info_to_js(info.Env(), *live(info.Env())); }

  Napi::Value Generate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine* e = live(env);
    if (info.Length() < 3 || !info[1].IsObject() || !info[2].IsFunction())
      throw_invalid(env, false, "generate(tokens, params, onEvent): expected an Int32Array, an object and a function");
    auto req = std::make_shared<GenerateRequest>();
    req->prompt = to_tokens(env, info[0]);
    Napi::Object p = info[1].As<Napi::Object>();
    // Every field is required (lib/generate.ts resolveOptions fills them from lib/defaults.ts).
    req->max_tokens = get_number<int64_t, L::kMaxTokens>(p);
    SamplingParams& s = req->sampling;
    s.temperature = get_number<float, L::kTemperature>(p);
    s.top_k = get_number<int32_t, L::kTopK>(p);
    s.top_p = get_number<float, L::kTopP>(p);
    s.min_p = get_number<float, L::kMinP>(p);
    s.repeat_penalty = get_number<float, L::kRepeatPenalty>(p);
    s.repeat_last_n = get_number<int32_t, L::kRepeatLastN>(p);
    s.frequency_penalty = get_number<float, L::kFrequencyPenalty>(p);
    s.presence_penalty = get_number<float, L::kPresencePenalty>(p);
    s.seed = get_number<uint64_t, L::kSeed>(p);
    s.n_logprobs = get_number<int32_t, L::kLogprobs>(p);
    req->want_logprobs = get_bool(p, "wantLogprobs");
    req->priority = get_number<int32_t, L::kPriority>(p);
    req->session = get_number<int64_t, L::kSession>(p);
    req->pin = get_bool(p, "pin");
    req->adapter = get_number<uint64_t, L::kAdapter>(p);
    Napi::Value st = p.Get("stopTokens");
    if (!st.IsArray())
      throw_invalid(env, false, "Expected an array of token ids for stopTokens but received " + js_describe(st));
    auto a = st.As<Napi::Array>();
    const uint32_t n = check_number<uint32_t, L::kStopTokensLength>(env, Napi::Number::New(env, a.Length()));
    req->stop_tokens.reserve(n);
    for (uint32_t k = 0; k < n; ++k) {
      const std::string name = "stopTokens[" + std::to_string(k) + "]";
      req->stop_tokens.push_back(check_number<int32_t, L::kStopToken>(env, a.Get(k), name.c_str()));
    }
    // logitBias: [[token, bias], ...]
    Napi::Value lb = p.Get("logitBias");
    if (!lb.IsArray())
      throw_invalid(env, false,
                    "Expected an array of [token, bias] pairs for logitBias but received " + js_describe(lb));
    auto lba = lb.As<Napi::Array>();
    const uint32_t nb = check_number<uint32_t, L::kLogitBiasLength>(env, Napi::Number::New(env, lba.Length()));
    s.logit_bias.reserve(nb);
    for (uint32_t k = 0; k < nb; ++k) {
      const std::string name = "logitBias[" + std::to_string(k) + "]";
      Napi::Value pair = lba.Get(k);
      if (!pair.IsArray() || pair.As<Napi::Array>().Length() != 2)
        throw_invalid(env, false, "Expected a [token, bias] pair for " + name + " but received " + js_describe(pair));
      auto pa = pair.As<Napi::Array>();
      const std::string tname = name + "[0]", bname = name + "[1]";
      s.logit_bias.emplace_back(check_number<int32_t, L::kLogitBiasToken>(env, pa.Get(0u), tname.c_str()),
                                check_number<float, L::kLogitBias>(env, pa.Get(1u), bname.c_str()));
    }
    // grammar: GBNF text ("" = unconstrained). Parsing is linear in the text, whose size the
    // parser bounds (GbnfLimits), so it stays well under a millisecond for schema-sized grammars.
    Napi::Value gv = p.Get("grammar");
    if (!gv.IsString())
      throw_invalid(env, false, "Expected a string (GBNF) for grammar but received " + js_describe(gv));
    const std::string gtext = gv.As<Napi::String>().Utf8Value();
    if (!gtext.empty()) {
      Status gs = parse_gbnf(gtext, GbnfLimits{}, &req->grammar);
      if (!gs) throw make_js_error(env, gs);
    }
    auto tsfn = Napi::ThreadSafeFunction::New(env, info[2].As<Napi::Function>(), "llmserve.generate", 0, 1);
    req->on_event = [tsfn](GenEvent&& ev) mutable {
      bool last = ev.done;
      auto* heap = new GenEvent(std::move(ev));
      napi_status st = tsfn.NonBlockingCall(heap, [](Napi::Env env, Napi::Function cb, GenEvent* data) {
        std::unique_ptr<GenEvent> owned(data);
        if (env != nullptr && cb != nullptr) cb.Call({event_to_js(env, *owned)});
      });
      if (st != napi_ok) delete heap;
      if (last) tsfn.Release();
    };
    int64_t id = 0;
    Status sts = e->submit(req, &id);
    if (!sts) {
      tsfn.Release();
      throw make_js_error(env, sts);
    }
    return Napi::Number::New(env, (double)id);
  }

  // setGrammarVocab(bytes: Uint8Array, offsets: Int32Array [n_vocab + 1]): token i's bytes are
  // bytes[offsets[i], offsets[i + 1]). Copies them; the trie is built on the engine thread later.
  Napi::Value SetGrammarVocab(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine* e = live(env);
    if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsTypedArray() ||
        info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
        info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw_invalid(env, false, "setGrammarVocab(bytes, offsets): expected a Uint8Array and an Int32Array");
    auto bytes = info[0].As<Napi::Uint8Array>();
    auto offs = info[1].As<Napi::Int32Array>();
    if (offs.ElementLength() < 1) throw_invalid(env, false, "setGrammarVocab: offsets must have n_vocab + 1 entries");
    std::vector<std::string> pieces(offs.ElementLength() - 1);
    for (size_t i = 0; i < pieces.size(); ++i) {
      const int32_t a = offs[i], b = offs[i + 1];
      if (a < 0 || b < a || (size_t)b > bytes.ElementLength())
        throw_invalid(env, false, "setGrammarVocab: offsets must be non-decreasing and within the bytes");
      pieces[i].assign(reinterpret_cast<const char*>(bytes.Data()) + a, (size_t)(b - a));
    }
    Status s = e->set_grammar_vocab(std::move(pieces));
    if (!s) throw make_js_error(env, s);
    return env.Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) { return stats_to_js(info.Env(), live(info.Env())->stats()); }

  // loadAdapter(name, path, scale) -> Promise<{name, id, path, scale}>: reads and checks the
  // adapter on a libuv worker. A name already loaded (or loading) is ERR_INVALID_ARGUMENT.
  Napi::Value LoadAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    live(env);
    const std::string name = adapter_name(env, info[0]);
    std::string path = path_arg(env, info[1], "the adapter path");
    const double scale = check_number<double, L::kAdapterScale>(env, info[2]);
    if (adapters_->loaded.count(name) || adapters_->loading.count(name))
      throw make_js_error(env, Code::InvalidArgument,
                          "An adapter named \"" + name + "\" is already loaded; unload it first or pick another name.");
    const uint64_t id = adapters_->next_id++;
    adapters_->loading.insert(name);
    auto* w = new AdapterLoadWorker(env, engine_, adapters_, name, id, std::move(path), scale);
    auto p = w->promise();
    w->Queue();
    return p;
  }

  // unloadAdapter(name): new requests can no longer use it; those already queued or running keep
  // it until they end. An unknown name is ERR_ADAPTER_NOT_FOUND listing the loaded ones.
  Napi::Value UnloadAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine* e = live(env);
    const std::string name = adapter_name(env, info[0]);
    auto it = adapters_->loaded.find(name);
    if (it == adapters_->loaded.end())
      throw make_js_error(env, Code::AdapterNotFound,
                          "No adapter named \"" + name + "\" is loaded (loaded: " + adapters_->names() + ").");
    const uint64_t id = it->second.id;
    adapters_->loaded.erase(it);
    Status s = e->unload_adapter(id);
    if (!s) throw make_js_error(env, s);
    return env.Undefined();
  }

  // adapters() -> [{name, id, path, scale}] in load order.
  Napi::Value Adapters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    live(env);
    std::vector<std::pair<std::string, AdapterTable::Entry>> all(adapters_->loaded.begin(), adapters_->loaded.end());
    std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.second.id < b.second.id; });
    auto a = Napi::Array::New(env, all.size());
    for (uint32_t k = 0; k < all.size(); ++k) {
      auto o = Napi::Object::New(env);
      o.Set("name", all[k].first);
      o.Set("id", Napi::Number::New(env, (double)all[k].second.id));
      o.Set("path", all[k].second.path);
      o.Set("scale", all[k].second.scale);
      a.Set(k, o);
    }
    return a;
  }

  Napi::Value EndSession(const Napi::CallbackInfo& info) {
    const int64_t session = check_number<int64_t, L::kRequestId>(info.Env(), info[0], "session");
    if (engine_) engine_->end_session(session);
    return info.Env().Undefined();
  }

  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    const int64_t id = check_number<int64_t, L::kRequestId>(info.Env(), info[0]);
    if (engine_) engine_->cancel(id);
    return info.Env().Undefined();
  }

  Napi::Value Evaluate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine* e = live(env);
    auto req = std::make_shared<EvalRequest>();
    req->tokens = to_tokens(env, info[0]);
    if (!info[1].IsBoolean())
      throw_invalid(env, false, "Expected true or false for logitsAll but received " + js_describe(info[1]));
    // Every row, or the last token's (an empty token list is refused by submit_eval).
    req->logits_from = info[1].As<Napi::Boolean>().Value() ? 0 : std::max<int64_t>(0, (int64_t)req->tokens.size() - 1);
    // Optional: the engine id of a loaded LoRA adapter (lib/adapters.ts resolves names to ids).
    if (info.Length() > 2 && !info[2].IsUndefined()) req->adapter = check_number<uint64_t, L::kAdapter>(env, info[2]);
    return eval_promise(env, e, req, nullptr);
  }

  // embed(seqs: Int32Array[], pooling: 0 mean | 1 last | 2 cls, normalize: boolean):
  // Promise<Float32Array[]>, [n_embd] each. Queued together, so the engine packs them into shared
  // passes; the engine thread computes the rows each pooling needs and pools them (eval/pooling.h).
  Napi::Value Embed(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine* e = live(env);
    if (!info[0].IsArray())
      throw_invalid(env, false, "Expected an array of Int32Array token lists but received " + js_describe(info[0]));
    if (!info[1].IsNumber() || info[1].As<Napi::Number>().Int32Value() < 0 ||
        info[1].As<Napi::Number>().Int32Value() > 2)
      throw_invalid(env, false, "Expected pooling 0 (mean), 1 (last) or 2 (cls) but received " + js_describe(info[1]));
    if (!info[2].IsBoolean())
      throw_invalid(env, false, "Expected true or false for normalize but received " + js_describe(info[2]));
    const auto pooling = static_cast<Pooling>(info[1].As<Napi::Number>().Int32Value());
    const bool normalize = info[2].As<Napi::Boolean>().Value();
    auto list = info[0].As<Napi::Array>();
    std::vector<std::shared_ptr<EvalRequest>> reqs;
    for (uint32_t i = 0; i < list.Length(); ++i) {
      auto req = std::make_shared<EvalRequest>();
      req->tokens = to_tokens(env, list.Get(i));
      req->hidden = true;
      req->logits_from = std::max<int64_t>(0, pooling_first_row(pooling, (int64_t)req->tokens.size()));
      reqs.push_back(std::move(req));
    }
    const int64_t n_embd = e->config().n_embd;
    return eval_batch_promise(env, e, std::move(reqs), [pooling, normalize, n_embd](std::vector<float>& rows) {
      std::vector<float> out;
      Status s = pool_hidden(pooling, rows.data(), (int64_t)(rows.size() / n_embd), n_embd, normalize, &out);
      rows = std::move(out);
      return s;
    });
  }

  class DisposeWorker : public Napi::AsyncWorker {
   public:
    DisposeWorker(Napi::Env env, std::shared_ptr<Engine> e)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), engine_(std::move(e)) {}
    Napi::Promise promise() { return deferred_.Promise(); }
    void Execute() override {
      engine_->shutdown();
      engine_.reset();
    }
    void OnOK() override { deferred_.Resolve(Env().Undefined()); }

   private:
    Napi::Promise::Deferred deferred_;
    std::shared_ptr<Engine> engine_;
  };

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!engine_) {
      auto d = Napi::Promise::Deferred::New(env);
      d.Resolve(env.Undefined());
      return d.Promise();
    }
    auto* w = new DisposeWorker(env, std::move(engine_));
    engine_.reset();
    adapters_->loaded.clear();
    auto p = w->promise();
    w->Queue();
    return p;
  }

  std::shared_ptr<Engine> engine_;
  std::shared_ptr<AdapterTable> adapters_ = std::make_shared<AdapterTable>();
};
Napi::FunctionReference* ModelWrap::ctor = nullptr;

class LoadWorker : public StatusWorker<Napi::AsyncProgressQueueWorker<double>> {
 public:
  LoadWorker(Napi::Env env, std::string path, EngineOptions opts, Napi::Function progress)
      : StatusWorker(env), deferred_(Napi::Promise::Deferred::New(env)), path_(std::move(path)), opts_(opts) {
    if (!progress.IsEmpty()) progress_ = Napi::Persistent(progress);
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute(const ExecutionProgress& prog) override {
    std::unique_ptr<Engine> e;
    Status s = Engine::load(path_, opts_, throttled(prog), &e);
    if (!s) fail(s);
    else engine_ = std::shared_ptr<Engine>(std::move(e));
  }
  void OnProgress(const double* data, size_t n) override {
    if (n > 0) call_progress(progress_, data[n - 1]);  // a throw rejects the load (OnOK)
  }
  void OnOK() override {
    if (rejected_by_callback()) {
      engine_.reset();
      return;
    }
    settle(Code::Internal, "'" + path_ + "'", [&] {
      Napi::Object obj = ModelWrap::ctor->New({});
      ModelWrap::Unwrap(obj)->adopt(std::move(engine_));
      deferred_.Resolve(obj);
    });
    engine_.reset();  // not adopted (the wrapper could not be made): the engine stops here
  }
  void reject(Napi::Value err) override { deferred_.Reject(err); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string path_;
  EngineOptions opts_;
  Napi::FunctionReference progress_;
  std::shared_ptr<Engine> engine_;
};

Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject())
    throw_invalid(env, false, "loadModel(path, options, onProgress?): expected a string and an object");
  std::string path = path_arg(env, info[0], "the model path");
  Napi::Object o = info[1].As<Napi::Object>();
  // Every field is required (lib/model.ts fills them from lib/defaults.ts).
  EngineOptions opts;
  opts.threads = get_number<int, L::kThreads>(o);
  opts.n_ctx = get_number<int64_t, L::kContextSize>(o);
  const std::string kv_type = get_choice(o, "kvType", {"f16", "f32", "q8_0"});
  opts.kv_type = kv_type == "f32" ? GgmlType::F32 : kv_type == "q8_0" ? GgmlType::Q8_0 : GgmlType::F16;
  opts.kv_tokens = get_number<int64_t, L::kKvCacheTokens>(o);
  opts.block_size = get_number<int32_t, L::kKvBlockSize>(o);
  opts.max_batch_tokens = get_number<int64_t, L::kMaxBatchTokens>(o);
  opts.prefill_chunk = get_number<int64_t, L::kPrefillChunk>(o);
  opts.target_step_ms = get_number<double, L::kTargetStepMs>(o);
  opts.max_sequences = get_number<int64_t, L::kMaxSequences>(o);
  opts.max_queue = get_number<int64_t, L::kMaxQueue>(o);
  opts.prefix_cache = get_bool(o, "prefixCache");
  opts.static_batching = get_bool(o, "staticBatching");
  opts.fixed_batching = get_bool(o, "fixedBatching");
  opts.fixed_bucket = get_number<int64_t, L::kFixedBucket>(o);
  opts.repack = get_bool(o, "repack");
  const std::string adapter_type = get_choice(o, "adapterType", {"file", "q8_0", "q4_0"});
  opts.adapter_storage = adapter_type == "q8_0"   ? AdapterStorage::Q8_0
                         : adapter_type == "q4_0" ? AdapterStorage::Q4_0
                                                  : AdapterStorage::File;
  Napi::Function progress = optional_function(info, 2);
  auto* w = new LoadWorker(env, std::move(path), opts, progress);
  auto p = w->promise();
  w->Queue();
  return p;
}

}  // namespace

std::shared_ptr<Engine> model_engine(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(ModelWrap::ctor->Value()))
    throw_invalid(env, false, std::string("Expected a NativeModel for ") + what + " but received " + js_describe(v));
  std::shared_ptr<Engine> e = ModelWrap::Unwrap(v.As<Napi::Object>())->engine();
  if (!e) throw make_js_error(env, Code::Disposed, std::string("The ") + what + " has been disposed; load it again.");
  return e;
}

void init_model(Napi::Env env, Napi::Object exports) {
  ModelWrap::Init(env);
  // The core's defaults under the JS names of loadModel's options and generate's params.
  const EngineOptions e;
  Napi::Object load = defaults_group(env, exports, "load");
  load.Set("threads", e.threads);
  load.Set("contextSize", Napi::Number::New(env, (double)e.n_ctx));
  load.Set("kvType", type_traits(e.kv_type).name);
  load.Set("kvCacheTokens", Napi::Number::New(env, (double)e.kv_tokens));
  load.Set("kvBlockSize", e.block_size);
  load.Set("maxBatchTokens", Napi::Number::New(env, (double)e.max_batch_tokens));
  load.Set("prefillChunk", Napi::Number::New(env, (double)e.prefill_chunk));
  load.Set("targetStepMs", e.target_step_ms);
  load.Set("maxSequences", Napi::Number::New(env, (double)e.max_sequences));
  load.Set("maxQueue", Napi::Number::New(env, (double)e.max_queue));
  load.Set("prefixCache", e.prefix_cache);
  load.Set("staticBatching", e.static_batching);
  load.Set("fixedBatching", e.fixed_batching);
  load.Set("fixedBucket", Napi::Number::New(env, (double)e.fixed_bucket));
  load.Set("repack", e.repack);
  load.Set("adapterType", e.adapter_storage == AdapterStorage::Q8_0   ? "q8_0"
                          : e.adapter_storage == AdapterStorage::Q4_0 ? "q4_0"
                                                                      : "file");
  const GenerateRequest r;
  const SamplingParams& s = r.sampling;
  Napi::Object gen = defaults_group(env, exports, "generate");
  gen.Set("maxTokens", Napi::Number::New(env, (double)r.max_tokens));
  gen.Set("temperature", s.temperature);
  gen.Set("topK", s.top_k);
  gen.Set("topP", s.top_p);
  gen.Set("minP", s.min_p);
  gen.Set("repeatPenalty", s.repeat_penalty);
  gen.Set("repeatLastN", s.repeat_last_n);
  gen.Set("frequencyPenalty", s.frequency_penalty);
  gen.Set("presencePenalty", s.presence_penalty);
  gen.Set("seed", Napi::Number::New(env, (double)s.seed));
  gen.Set("logprobs", s.n_logprobs);
  gen.Set("wantLogprobs", r.want_logprobs);
  gen.Set("priority", r.priority);
  gen.Set("session", Napi::Number::New(env, (double)r.session));
  gen.Set("pin", r.pin);
  gen.Set("adapter", Napi::Number::New(env, (double)r.adapter));
  gen.Set("stopTokens", Napi::Array::New(env, r.stop_tokens.size()));
  gen.Set("logitBias", Napi::Array::New(env, s.logit_bias.size()));
  gen.Set("grammar", "");
  exports.Set("loadModel", Napi::Function::New(env, LoadModel, "loadModel"));
}

}  // namespace llmserve::napi
