// Declarations of each wrapper's init function, called from addon.cc.
#pragma once
#include <napi.h>

#include <cstring>

namespace llmserve::napi {
void init_gguf(Napi::Env env, Napi::Object exports);
void init_model(Napi::Env env, Napi::Object exports);
void init_synth(Napi::Env env, Napi::Object exports);
}  // namespace llmserve::napi
