// Addon entry: registers every wrapper. Only native/napi/ includes napi.h.
#include <napi.h>

#include "quant/quant.h"
#include "wrap_common.h"

namespace llmserve::napi {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  init_gguf(env, exports);
  init_model(env, exports);
  init_synth(env, exports);
  exports.Set("kernelIsa", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), kernel_isa());
  }));
  return exports;
}

}  // namespace llmserve::napi

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return llmserve::napi::Init(env, exports); }

NODE_API_MODULE(llmserve, InitAddon)
