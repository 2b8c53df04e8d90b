// The allowed range of every number JS passes to the addon. lib/limits.ts holds the same table for
// the TypeScript checks (which run first and give the same messages); the addon exports this one
// as `limits` and test/native/limits.test.ts asserts the two are equal, so they cannot drift.
// Each read (wrap_common.h get_number) checks the value against its Limit and static_asserts that
// the Limit fits the C++ type it is cast to, so no out-of-range double is ever converted (UB).
#pragma once

namespace llmserve::napi {

struct Limit {
  const char* name;    // the option's JS name, used in error messages
  double min, max;     // inclusive bounds (min exclusive when min_exclusive)
  bool integer;        // integers only (and then |bounds| <= 2^53 - 1, exact in a double)
  bool min_exclusive;  // (min, max] instead of [min, max]
};

namespace limits {

inline constexpr double kInt32Max = 2147483647.0;
inline constexpr double kSafeMax = 9007199254740991.0;  // Number.MAX_SAFE_INTEGER

// generate(tokens, params, onEvent): params
inline constexpr Limit kMaxTokens{"maxTokens", 0, kInt32Max, true, false};
inline constexpr Limit kTemperature{"temperature", 0, 100, false, false};
inline constexpr Limit kTopK{"topK", 0, kInt32Max, true, false};
inline constexpr Limit kTopP{"topP", 0, 1, false, true};
inline constexpr Limit kMinP{"minP", 0, 1, false, false};
inline constexpr Limit kRepeatPenalty{"repeatPenalty", 0, 100, false, true};
inline constexpr Limit kRepeatLastN{"repeatLastN", -1, kInt32Max, true, false};
inline constexpr Limit kFrequencyPenalty{"frequencyPenalty", -2, 2, false, false};
inline constexpr Limit kPresencePenalty{"presencePenalty", -2, 2, false, false};
inline constexpr Limit kSeed{"seed", 0, kSafeMax, true, false};
inline constexpr Limit kLogprobs{"logprobs", 0, 20, true, false};
inline constexpr Limit kPriority{"priority", -1000000, 1000000, true, false};
inline constexpr Limit kSession{"session", 0, kSafeMax, true, false};
inline constexpr Limit kAdapter{"adapter", 0, kSafeMax, true, false};
inline constexpr Limit kStopToken{"stopTokens", 0, kInt32Max, true, false};  // each element
inline constexpr Limit kStopTokensLength{"stopTokens.length", 0, 65536, true, false};
inline constexpr Limit kLogitBias{"logitBias", -100, 100, false, false};  // each bias
inline constexpr Limit kLogitBiasToken{"logitBias.token", 0, kInt32Max, true, false};
inline constexpr Limit kLogitBiasLength{"logitBias.length", 0, 65536, true, false};
inline constexpr Limit kRequestId{"id", 0, kSafeMax, true, false};  // cancel(id), endSession(id)

// loadModel(path, options)
inline constexpr Limit kThreads{"threads", 1, 512, true, false};
inline constexpr Limit kContextSize{"contextSize", 0, 1 << 24, true, false};
inline constexpr Limit kKvCacheTokens{"kvCacheTokens", 0, 1 << 26, true, false};  // 0 = contextSize
inline constexpr Limit kKvBlockSize{"kvBlockSize", 1, 4096, true, false};
inline constexpr Limit kMaxBatchTokens{"maxBatchTokens", 1, 1 << 20, true, false};
inline constexpr Limit kPrefillChunk{"prefillChunk", 0, 1 << 20, true, false};
inline constexpr Limit kTargetStepMs{"targetStepMs", 0, 60000, false, false};  // 0 = off
inline constexpr Limit kFixedBucket{"fixedBucket", 0, 1 << 20, true, false};   // 0 = the longest prompt
inline constexpr Limit kMaxSequences{"maxSequences", 1, 1 << 16, true, false};
inline constexpr Limit kMaxQueue{"maxQueue", 1, 1 << 24, true, false};

// synth(options, outPath)
inline constexpr Limit kSynthDim{"dim", 1, 1 << 16, true, false};
inline constexpr Limit kSynthLayers{"layers", 1, 512, true, false};
inline constexpr Limit kSynthHeads{"heads", 1, 1024, true, false};
inline constexpr Limit kSynthKvHeads{"kvHeads", 1, 1024, true, false};
inline constexpr Limit kSynthFfn{"ffn", 1, 1 << 18, true, false};
inline constexpr Limit kSynthContext{"context", 1, 1 << 24, true, false};
inline constexpr Limit kSynthVocabSize{"vocabSize", 1, 1 << 20, true, false};
inline constexpr Limit kSynthSeed{"seed", 0, kSafeMax, true, false};
inline constexpr Limit kSynthHeadDim{"headDim", 0, 16384, true, false};  // 0 = dim / heads
inline constexpr Limit kSynthRopeScale{"ropeScale", 1.0 / 1024, 1024, false, false};
// gemma2 / gemma3 keys; 0 = not written (the architecture's default applies).
inline constexpr Limit kSynthSlidingWindow{"slidingWindow", 0, 1 << 24, true, false};
inline constexpr Limit kSynthSwaPattern{"swaPattern", 0, 4096, true, false};
inline constexpr Limit kSynthAttnSoftcap{"attnSoftcap", 0, 1e6, false, false};
inline constexpr Limit kSynthFinalSoftcap{"finalSoftcap", 0, 1e6, false, false};
inline constexpr Limit kSynthRopeFreqBaseSwa{"ropeFreqBaseSwa", 0, 1e12, false, false};
// Mixture of experts: 0 = dense (llama.cpp's LLAMA_MAX_EXPERTS is 512).
inline constexpr Limit kSynthExperts{"experts", 0, 512, true, false};
inline constexpr Limit kSynthExpertsUsed{"expertsUsed", 0, 512, true, false};

// loadAdapter(name, path, scale) and synthLora(base, options, outPath)
inline constexpr Limit kAdapterScale{"scale", -100, 100, false, false};
inline constexpr Limit kLoraRank{"rank", 1, 4096, true, false};
inline constexpr Limit kLoraSeed{"seed", 0, kSafeMax, true, false};
inline constexpr Limit kLoraAlpha{"alpha", 0, 65536, false, false};
inline constexpr Limit kLoraStdB{"stdB", 0, 100, false, false};

// readGguf(path, maxArrayLength, {maxStringBytes, maxMetadataBytes})
inline constexpr Limit kMaxArrayLength{"maxArrayLength", 0, kSafeMax, true, false};
inline constexpr Limit kMaxStringBytes{"maxStringBytes", 1, kSafeMax, true, false};
inline constexpr Limit kMaxMetadataBytes{"maxMetadataBytes", 1, kSafeMax, true, false};

// createEvaluation(model, reference, batch) and its chunk(tokens): a chunk's length is ctx.
inline constexpr Limit kEvalCtx{"ctx", 3, 1 << 24, true, false};
inline constexpr Limit kEvalBatch{"batch", 1, 1 << 24, true, false};
inline constexpr Limit kEvalChunks{"chunks", 1, 2147483647, true, false};

// finetune(base, data, evalData, out, options, onStep)
inline constexpr Limit kTrainRank{"rank", 1, 4096, true, false};
inline constexpr Limit kTrainAlpha{"alpha", 0, 65536, false, true};
inline constexpr Limit kTrainLr{"lr", 0, 10, false, true};
inline constexpr Limit kTrainMinLr{"minLr", 0, 10, false, false};
inline constexpr Limit kTrainWarmup{"warmup", 0, 2147483647, true, false};
inline constexpr Limit kTrainBatch{"batch", 1, 65536, true, false};
inline constexpr Limit kTrainSteps{"steps", 1, 2147483647, true, false};
inline constexpr Limit kTrainClip{"clip", 0, 1e6, false, false};  // 0 = no clipping
inline constexpr Limit kTrainSeed{"seed", 0, kSafeMax, true, false};
inline constexpr Limit kTrainWeightDecay{"weightDecay", 0, 10, false, false};
inline constexpr Limit kTrainMomentum{"momentum", 0, 0.999, false, false};
inline constexpr Limit kTrainLarsEta{"larsEta", 0, 100, false, true};
inline constexpr Limit kTrainDistill{"distill", 0, 1, false, false};
inline constexpr Limit kTrainTemperature{"temperature", 0, 100, false, true};
inline constexpr Limit kTrainTargetRank{"targetRank", 1, 4096, true, false};
inline constexpr Limit kTrainRecomputeMb{"recomputeMb", 0, 1 << 24, true, false};  // MiB; 0 = always recompute

// readBandwidth(options): the probe's threads and buffer (MiB; many times the last-level cache,
// at most 4 GiB: the buffer is written in full, so an oversized one would meet the OOM killer)
inline constexpr Limit kBandwidthThreads{"threads", 1, 512, true, false};
inline constexpr Limit kBandwidthMegabytes{"megabytes", 1, 4096, true, false};

// Exported to JS as addon.limits[group][name].
struct Group {
  const char* name;
  const Limit* const* items;
  int count;
};
inline constexpr const Limit* kGenerate[] = {&kMaxTokens,
                                             &kTemperature,
                                             &kTopK,
                                             &kTopP,
                                             &kMinP,
                                             &kRepeatPenalty,
                                             &kRepeatLastN,
                                             &kFrequencyPenalty,
                                             &kPresencePenalty,
                                             &kSeed,
                                             &kLogprobs,
                                             &kPriority,
                                             &kSession,
                                             &kAdapter,
                                             &kStopToken,
                                             &kStopTokensLength,
                                             &kLogitBias,
                                             &kLogitBiasToken,
                                             &kLogitBiasLength,
                                             &kRequestId};
inline constexpr const Limit* kLoad[] = {&kThreads,        &kContextSize,  &kKvCacheTokens, &kKvBlockSize,
                                         &kMaxBatchTokens, &kPrefillChunk, &kTargetStepMs,  &kFixedBucket,
                                         &kMaxSequences,   &kMaxQueue};
inline constexpr const Limit* kSynth[] = {
    &kSynthDim,           &kSynthLayers,     &kSynthHeads,       &kSynthKvHeads,      &kSynthFfn,
    &kSynthContext,       &kSynthVocabSize,  &kSynthSeed,        &kSynthHeadDim,      &kSynthRopeScale,
    &kSynthSlidingWindow, &kSynthSwaPattern, &kSynthAttnSoftcap, &kSynthFinalSoftcap, &kSynthRopeFreqBaseSwa,
    &kSynthExperts,       &kSynthExpertsUsed};
inline constexpr const Limit* kLora[] = {&kAdapterScale, &kLoraRank, &kLoraSeed, &kLoraAlpha, &kLoraStdB};
inline constexpr const Limit* kGguf[] = {&kMaxArrayLength, &kMaxStringBytes, &kMaxMetadataBytes};
inline constexpr const Limit* kEval[] = {&kEvalCtx, &kEvalBatch, &kEvalChunks};
inline constexpr const Limit* kMachine[] = {&kBandwidthThreads, &kBandwidthMegabytes};
inline constexpr const Limit* kTrain[] = {&kTrainRank,    &kTrainAlpha,       &kTrainLr,         &kTrainMinLr,
                                          &kTrainWarmup,  &kTrainBatch,       &kTrainSteps,      &kTrainClip,
                                          &kTrainSeed,    &kTrainWeightDecay, &kTrainMomentum,   &kTrainLarsEta,
                                          &kTrainDistill, &kTrainTemperature, &kTrainTargetRank, &kTrainRecomputeMb};
inline constexpr Group kGroups[] = {
    {"generate", kGenerate, sizeof(kGenerate) / sizeof(kGenerate[0])},
    {"load", kLoad, sizeof(kLoad) / sizeof(kLoad[0])},
    {"synth", kSynth, sizeof(kSynth) / sizeof(kSynth[0])},
    {"lora", kLora, sizeof(kLora) / sizeof(kLora[0])},
    {"gguf", kGguf, sizeof(kGguf) / sizeof(kGguf[0])},
    {"eval", kEval, sizeof(kEval) / sizeof(kEval[0])},
    {"train", kTrain, sizeof(kTrain) / sizeof(kTrain[0])},
    {"machine", kMachine, sizeof(kMachine) / sizeof(kMachine[0])},
};

}  // namespace limits
}  // namespace llmserve::napi
