/**
 * llmserve: load llama.cpp GGUF models in Node.js and stream tokens with `for await`.
 * @packageDocumentation
 */
export {
  Model,
  physicalCores,
  type LoadOptions,
  type ModelInfo,
  type ModelStats,
  type AdapterInfo,
  type LoadAdapterOptions,
} from "./model.js";
export { Session, type SessionOptions } from "./session.js";
export {
  evaluatePerplexity,
  type EvalInput,
  type EvaluatePerplexityOptions,
  type EvalProgress,
  type PerplexityResult,
  type ReferenceComparison,
  type SeriesStats,
} from "./eval.js";
export type {
  Chunk,
  ChunkBase,
  FinalChunk,
  PartialChunk,
  GenerateOptions,
  FinishReason,
  Prompt,
  Timings,
  TokenLogprob,
} from "./generate.js";
export type { EmbedOptions, Pooling } from "./embed.js";
export { jsonSchemaToGbnf, jsonObjectGbnf, SUPPORTED_KEYWORDS as JSON_SCHEMA_KEYWORDS } from "./grammar/jsonSchema.js";
export {
  Tokenizer,
  OFFTHREAD_MIN_CHARS,
  type EncodeOptions,
  type DecodeOptions,
  type StreamOptions,
  type TokenDecoder,
} from "./tokenizer/index.js";
export { encodeStream, type EncodeStreamOptions } from "./tokenizer/stream.js";
export {
  readGguf,
  checkModel,
  type CheckedModel,
  type ReadGgufOptions,
  type GgufContents,
  type GgufMetaValue,
  type GgufScalar,
  type GgufArraySummary,
  type GgufTensorSummary,
} from "./gguf.js";
export {
  synth,
  synthLora,
  SYNTH_TYPES,
  SYNTH_ARCHS,
  SYNTH_ROPE_SCALINGS,
  LORA_TARGETS,
  LORA_TARGET_ALIASES,
  type SynthOptions,
  type SynthType,
  type SynthArch,
  type SynthLoraOptions,
} from "./synth.js";
export {
  type CompressedTensor,
  type CompressOptions,
  type CompressResult,
  compress,
  type FactoredTensor,
  type LowRankSpec,
  COMPRESS_FORMATS,
  PRUNE_METHODS,
} from "./compress.js";
export {
  quantize,
  QUANTIZE_TYPES,
  QUANTIZE_TYPE_ALIASES,
  type QuantizeOptions,
  type QuantizeResult,
  type QuantizeType,
  type QuantizedTensor,
} from "./quantize.js";
export { LlmserveError, ERROR_CODES, NATIVE_ERROR_CODES, JS_ERROR_CODES, type ErrorCode } from "./errors.js";
export { LIMITS, type Limit, type Limits } from "./limits.js";
export { kernelIsa } from "./kernels.js";
export {
  measureReadBandwidth,
  decodeReadBytes,
  type ReadBandwidthOptions,
  type DecodeReadOptions,
  type DecodeReadBytes,
} from "./machine.js";
export {
  createServer,
  serve,
  defaultModelName,
  ApiError,
  type ServerOptions,
  type ServeOptions,
  type ServeResult,
  type ShutdownOptions,
  type LlmserveServerState,
  type OpenAIErrorBody,
} from "./server/index.js";
export {
  ChatTemplate,
  BUILTIN_CHAT_TEMPLATES,
  BUILTIN_CHAT_TEMPLATE_NAMES,
  detectBuiltinTemplate,
  type BuiltinChatTemplate,
  type ChatMessage,
  type ChatContentPart,
  type RenderOptions,
  type ChatTemplateLoadOptions,
  type ChatTemplateMeta,
  type ChatLimits,
  defaultChatLimits,
  RenderPool,
  sharedRenderPool,
  type RenderPoolOptions,
  type RenderJob,
} from "./chat/index.js";
export { ServerMetrics, METRIC_NAMES, type MetricsOptions } from "./metrics.js";
export {
  resolveModel,
  listModels,
  removeModel,
  defaultCacheDir,
  isRemoteSpec,
  type ResolveOptions,
  type CachedModel,
} from "./hub/index.js";
export {
  ProgressReporter,
  ProgressTracker,
  type ProgressEvent,
  type ProgressCallback,
  type ReporterOptions,
} from "./progress.js";
export {
  Conversation,
  type ConversationOptions,
  type TurnOptions,
  type ToolChoice,
  type NamedToolChoice,
} from "./chat/conversation.js";
export {
  TOOL_FAMILIES,
  detectToolFamily,
  parseToolCalls,
  toolCallGrammar,
  toolsForTemplate,
  messagesForTemplate,
  checkTools,
  type ToolFamily,
  type ToolFamilySpec,
  type ToolDefinition,
  type ToolCall,
  type ParsedToolReply,
  type ForcedToolCall,
} from "./chat/tools.js";
export {
  finetune,
  TRAIN_TARGETS,
  TRAIN_OPTIMIZERS,
  type FinetuneOptions,
  type FinetuneEvent,
  type FinetuneStep,
  type FinetuneDone,
} from "./train/index.js";
