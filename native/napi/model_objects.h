// The JavaScript objects NativeModel hands out (model_objects.cc): a generation event (tokens,
// logprobs, text state, finish), info() (hyperparameters, options as applied, weight types) and
// stats() (engine counters and KV state).
#pragma once
#include <napi.h>

#include "sched/engine.h"

namespace llmserve::napi {

Napi::Object event_to_js(Napi::Env env, GenEvent& ev);
Napi::Object info_to_js(Napi::Env env, Engine& engine);
Napi::Object stats_to_js(Napi::Env env, const EngineStats& s);

}  // namespace llmserve::napi
