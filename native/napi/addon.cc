// Addon entry: registers every wrapper. Only native/napi/ includes napi.h.
#include <napi.h>

#include "quant/quant.h"
#include "wrap_common.h"

namespace llmserve::napi {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  init_gguf(env, exports);
  init_model(env, exports);
  init_synth(env, exports);
  init_eval(env, exports);
  init_quantize(env, exports);
  init_train(env, exports);
  init_compress(env, exports);
  init_machine(env, exports);
  exports.Set("kernelIsa", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
                return Napi::String::New(info.Env(), kernel_isa());
              }));
  // addon.limits[group][name] = {min, max, integer, minExclusive}: the ranges the wrappers enforce
  // (limits.h), compared with lib/limits.ts by the tests.
  auto all = Napi::Object::New(env);
  for (const limits::Group& g : limits::kGroups) {
    auto group = Napi::Object::New(env);
    for (int i = 0; i < g.count; ++i) {
      const Limit& l = *g.items[i];
      auto o = Napi::Object::New(env);
      o.Set("min", l.min);
      o.Set("max", l.max);
      o.Set("integer", l.integer);
      o.Set("minExclusive", l.min_exclusive);
      group.Set(l.name, o);
    }
    all.Set(g.name, group);
  }
  exports.Set("limits", all);
  return exports;
}

}  // namespace llmserve::napi

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return llmserve::napi::Init(env, exports); }

NODE_API_MODULE(llmserve, InitAddon)
