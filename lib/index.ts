/**
 * llmserve: load llama.cpp GGUF models in Node.js and stream tokens with `for await`.
 * @packageDocumentation
 */
export { Model, physicalCores, type LoadOptions, type ModelInfo, type ModelStats } from "./model.js";
export { Session, type SessionOptions } from "./session.js";
export type { Chunk, GenerateOptions, FinishReason, Prompt, Timings, TokenLogprob } from "./generate.js";
export { Tokenizer } from "./tokenizer/index.js";
export { readGguf, type GgufContents, type GgufMetaValue, type GgufTensorSummary } from "./gguf.js";
export { synth, SYNTH_TYPES, type SynthOptions, type SynthType } from "./synth.js";
export { LlmserveError, type ErrorCode } from "./errors.js";
export { kernelIsa } from "./kernels.js";
