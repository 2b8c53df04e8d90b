/**
 * The default of every option, in one place. The rule across the TypeScript / C++ boundary:
 * TypeScript validates user options (lib/validate.ts against the ranges of lib/limits.ts) and fills
 * every absent one from these tables; the library (Model.load, generate, synth, readGguf), the CLI
 * (its flags' defaults and help) and the server (what a request leaves unset) all read them here.
 * The native addon has no defaults of its own: every field it reads is required, and a missing one
 * is a TypeError. The core's struct initializers (EngineOptions, SamplingParams, GenerateRequest,
 * SynthOptions, GgufLimits) are what C++ callers get; the addon exports them as `addon.defaults`
 * and test/native/truth.test.ts asserts they equal these tables, so neither side can change a
 * default alone.
 */
import { randomInt } from "node:crypto";

/** What an absent `seed` becomes (library, CLI and server alike): a random integer in [0, 2^32). */
export function randomSeed(): number {
  return randomInt(0, 2 ** 32);
}

/** Defaults of `GenerateOptions` (Model.generate, generateBatch, complete, Session.send). */
export const GENERATE_DEFAULTS = {
  maxTokens: 256,
  temperature: 0.8,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1,
  repeatLastN: 64,
  frequencyPenalty: 0,
  presencePenalty: 0,
  /**
   * No seed given: a fresh random one per request ({@link randomSeed}), so sampling at
   * temperature > 0 differs from call to call; the seed used is reported on the last chunk
   * (`Chunk.seed`) so a run can be reproduced. The core's SamplingParams{} keeps seed 0 for C++
   * callers; the addon always receives a seed.
   */
  seed: "random",
  priority: 0,
  stopAtEos: true,
  parseSpecial: true,
  addSpecial: true,
  cache: false,
} as const;

/** Defaults of `EmbedOptions` (Model.embed, the server's /v1/embeddings, `llmserve embed`). */
export const EMBED_DEFAULTS = {
  /**
   * The last token's hidden state: what llama.cpp returns for a generative model, whose GGUF names
   * no pooling type (node-llama-cpp's getEmbeddingFor, llama-server with pooling "none" → last).
   */
  pooling: "last",
  /** Unit length (L2), as OpenAI's embeddings and llama-server's default (embd_normalize 2). */
  normalize: true,
  /** Bytes of the per-model embedding cache (TypeScript only): repeated texts are not recomputed. */
  cacheBytes: 16 << 20,
  /**
   * Texts of one embed() call queued on the engine together (the engine packs them into shared
   * forward passes of up to maxBatchTokens tokens); two such groups are in flight at once, the
   * rest wait, so an abort stops them.
   */
  groupTexts: 32,
} as const;

/**
 * Defaults of `LoadOptions` (Model.load). `threads` is not a constant: it defaults to the
 * number of physical cores (at most LOAD_LIMITS.threads.max), see `defaultThreads()` in loadOptions.ts.
 */
export const LOAD_DEFAULTS = {
  /**
   * The cap of the default context: an absent contextSize is min(4096, the model's training
   * context) (contextSizeFor in loadOptions.ts; EngineOptions{} has 4096 for C++ callers).
   */
  contextSize: 4096,
  kvType: "f16",
  /** 0: sized from free memory (kvFreeMemoryShare), see kvTokensByDefault in lib/kvMemory.ts. */
  kvCacheTokens: 0,
  /**
   * Absent kvCacheTokens and kvMemory: the KV cache may take this share of the memory free at load
   * (TypeScript only), bounded to [one context, maxSequences contexts]. Its pages are touched only
   * as sequences (and the prefix cache) use them.
   */
  kvFreeMemoryShare: 0.5,
  kvBlockSize: 16,
  maxBatchTokens: 512,
  prefillChunk: 128,
  targetStepMs: 0,
  fixedBucket: 0,
  maxSequences: 64,
  maxQueue: 1024,
  prefixCache: true,
  batching: "continuous",
  repack: true,
  adapterType: "file",
  /** Bytes of the response cache (TypeScript only: the engine has no such option). */
  responseCacheBytes: 64 << 20,
  /**
   * Most LoRA adapters resident in memory, 0 = no limit (TypeScript only: the adapter registry,
   * lib/adapters.ts, evicts and reloads). No limit by default: every loaded adapter stays resident
   * (no reload latency) unless the user bounds adapter memory.
   */
  maxAdapters: 0,
} as const;

/** Defaults of `SynthOptions` (synth() and `llmserve synth`). */
export const SYNTH_DEFAULTS = {
  arch: "llama",
  dim: 256,
  layers: 4,
  heads: 8,
  kvHeads: 2,
  ffn: 768,
  context: 2048,
  vocabFrom: "",
  vocabSize: 512,
  type: "f32",
  seed: 7,
  tiedOutput: false,
  headDim: 0,
  ropeFreqs: false,
  ropeScaling: "",
  ropeScale: 1,
  slidingWindow: 0,
  swaPattern: 0,
  attnSoftcap: 0,
  finalSoftcap: 0,
  ropeFreqBaseSwa: 0,
  longRope: false,
  experts: 0,
  expertsUsed: 0,
} as const;

/** Defaults of `Model.loadAdapter()`'s options (and `llmserve generate --adapter-scale`). */
export const ADAPTER_DEFAULTS = {
  scale: 1,
} as const;

/** Defaults of `SynthLoraOptions` (synthLora() and `llmserve synth-lora`). */
export const SYNTH_LORA_DEFAULTS = {
  rank: 4,
  targets: ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"],
  seed: 1,
  alpha: 0,
  type: "f32",
  stdB: 0.5,
} as const;

/**
 * Defaults of `FinetuneOptions` (finetune() and `llmserve finetune`). `warmupShare`: the share of
 * the steps whose learning rate ramps up linearly (then cosine decay to `minLr`). LARS's `larsEta`
 * is 1, so `lr` is about the relative change of each LoRA matrix per step (see docs/design.md).
 */
export const TRAIN_DEFAULTS = {
  rank: 8,
  alpha: 16,
  targets: ["q", "k", "v", "o", "gate", "up", "down"],
  optimizer: "adamw",
  lr: 1e-3,
  minLr: 0,
  warmupShare: 0.1,
  epochs: 1,
  batch: 1,
  ctx: 256,
  clip: 1,
  seed: 1,
  weightDecay: 0,
  momentum: 0.9,
  larsEta: 1,
  distill: 0.5,
  temperature: 2,
  recomputeMb: 1024,
} as const;

/**
 * Defaults of `EvaluatePerplexityOptions` (evaluatePerplexity() and `llmserve eval`); TypeScript
 * only. Both are llama-perplexity's (`-c 512`, `-b 2048`); `batch` above `ctx` runs a whole chunk
 * per forward pass. Absent `chunks` = every whole chunk of the text.
 */
export const EVAL_DEFAULTS = {
  ctx: 512,
  batch: 2048,
} as const;

/**
 * Defaults of `CompressOptions` (compress() and `llmserve compress`); TypeScript only. Magnitude
 * needs no calibration text; `calibCtx` is the calibration chunk (tokens per forward pass from an
 * empty cache), llama-imatrix's `-c 512`.
 */
export const COMPRESS_DEFAULTS = {
  method: "magnitude",
  /**
   * How 2:4 pruned matrices are stored: "sparse" (llmserve's 2:4 format, faster, llama.cpp cannot
   * load it). Unstructured pruning is always written "dense" (zeros in the input's type).
   */
  format24: "sparse",
  calibCtx: 512,
} as const;

/** Defaults of `ReadGgufOptions` (readGguf()). */
export const GGUF_DEFAULTS = {
  /** No array is summarized. */
  maxArrayLength: Number.MAX_SAFE_INTEGER,
  maxStringBytes: 64 * 2 ** 20,
  maxMetadataBytes: 512 * 2 ** 20,
} as const;

/** Defaults of `ReadBandwidthOptions` (measureReadBandwidth(); threads default to the physical cores). */
export const BANDWIDTH_DEFAULTS = {
  /** The probe's buffer in MiB: many times any last-level cache, so it measures memory, not cache. */
  megabytes: 1024,
} as const;

/**
 * Defaults of the HTTP server (createServer / serve and `llmserve serve`); TypeScript only.
 * `maxQueue` is the CLI's: `llmserve serve` admits this many sequences beyond maxSequences (and
 * sizes the engine's queue the same), while the library's serve() leaves admission to the engine.
 */
export const SERVER_DEFAULTS = {
  port: 8080,
  host: "127.0.0.1",
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 10_000,
  maxConnections: 1024,
  streamWriteTimeoutMs: 30_000,
  shutdownTimeoutMs: 10_000,
  bodyLimit: 8 * 2 ** 20,
  cliMaxQueue: 256,
} as const;

/**
 * Defaults of `ResolveOptions` (resolveModel(), `Model.load("hf:...")`, `llmserve pull`). The
 * environment overrides some (HF_ENDPOINT, HF_TOKEN, LLMSERVE_MODELS, LLMSERVE_OFFLINE /
 * HF_HUB_OFFLINE); see lib/hub/index.ts.
 */
export const HUB_DEFAULTS = {
  endpoint: "https://huggingface.co",
  revision: "main",
  /** The quantization picked when a repository has several GGUF files and the spec names none (as llama.cpp). */
  quant: "Q4_K_M",
  /** Milliseconds without a response or a byte of the body before a request is retried. */
  timeoutMs: 30_000,
  /** Retries of a failed request (dropped connection, timeout, 429, 5xx); progress resets the count. */
  retries: 5,
  /** First wait before a retry; it doubles each time, up to 30 s. */
  retryDelayMs: 1000,
  maxRedirects: 10,
} as const;
