/** The typed surface of the native addon (native/napi). Internal: use the classes in index.ts. */

import type { ADAPTER_TYPES } from "./loadOptions.js";

/** A scalar GGUF metadata value (64-bit integers come back as `bigint`). */
export type GgufScalar = number | bigint | boolean | string;

/** Stands in for a metadata array longer than `maxArrayLength` (see {@link readGguf}). */
export interface GgufArraySummary {
  /** Always `"array"`. */
  type: "array";
  /** GGUF element type name, e.g. `"string"`, `"int32"`, `"float32"`. */
  elementType: string;
  /** Number of elements in the file. */
  length: number;
}

/**
 * One GGUF metadata value: a scalar, a typed array for numeric arrays, `string[]` / `boolean[]`,
 * nested arrays, or a {@link GgufArraySummary} for arrays longer than the caller's limit.
 */
export type GgufMetaValue =
  | GgufScalar
  | string[]
  | boolean[]
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array
  | GgufArraySummary
  | GgufMetaValue[];

/** One entry of a GGUF file's tensor table. */
export interface GgufTensorSummary {
  /** Tensor name, e.g. `"blk.0.attn_q.weight"`. */
  name: string;
  /** Dimensions as GGUF stores them, innermost (contiguous) first. */
  shape: number[];
  /** Element type name, e.g. `"f32"`, `"q8_0"`, `"q4_k"`. */
  type: string;
  /** Byte offset of the tensor data from the start of the data section ({@link GgufContents.dataOffset}). */
  offset: number;
  /** Size of the tensor data in bytes. */
  nbytes: number;
}

/** What {@link readGguf} returns: a GGUF file's header, metadata and tensor table. */
export interface GgufContents {
  /** GGUF format version (2 or 3). */
  version: number;
  /** Data alignment in bytes (`general.alignment`, default 32). */
  alignment: number;
  /** Absolute byte offset of the tensor data section in the file. */
  dataOffset: number;
  /** File size in bytes. */
  fileSize: number;
  /** Every metadata key/value pair, e.g. `metadata["general.architecture"]`. */
  metadata: Record<string, GgufMetaValue>;
  /** The tensor table, in file order. */
  tensors: GgufTensorSummary[];
}

/** loadModel()'s options: every field is required (the addon has no defaults; lib/model.ts sets them). */
export interface NativeModelOptions {
  threads: number;
  contextSize: number;
  kvType: "f16" | "f32" | "q8_0";
  kvCacheTokens: number;
  kvBlockSize: number;
  maxBatchTokens: number;
  maxSequences: number;
  maxQueue: number;
  prefixCache: boolean;
  staticBatching: boolean;
  fixedBatching: boolean;
  fixedBucket: number;
  prefillChunk: number;
  targetStepMs: number;
  repack: boolean;
  adapterType: (typeof ADAPTER_TYPES)[number];
}

/** Engine counters since load and the current KV state (surfaced as ModelStats). */
export interface NativeStats {
  /** Engine steps run (one forward pass over a batch each). */
  steps: number;
  /** Tokens computed over all steps (prompt chunks plus decode tokens). */
  batchTokens: number;
  /** Sequences scheduled over all steps (a sequence counts once per step it is in). */
  batchSequences: number;
  /** Most tokens computed in one step. */
  maxBatchTokensSeen: number;
  /** Most sequences in one step. */
  maxBatchSequencesSeen: number;
  /** Prompt tokens of requests that reached their first token. */
  promptTokens: number;
  /** Prompt tokens actually computed (not reused from cached KV; recomputation after preemption counts again). */
  prefillTokens: number;
  /** Prompt tokens whose KV was reused from the prefix cache or a session instead of computed. */
  reusedTokens: number;
  /** Tokens sampled and emitted. */
  generatedTokens: number;
  /** Generation requests admitted. */
  requests: number;
  /** Requests that ended normally (length, stop or end-of-generation token). */
  finished: number;
  /** Requests cancelled (AbortSignal, or the consumer left the `for await` loop early). */
  aborted: number;
  /** Requests that ended with an error. */
  errors: number;
  /** Times a running sequence gave up its KV blocks under memory pressure (it is recomputed later). */
  preemptions: number;
  /** Idle, unpinned sessions whose KV was dropped to make room. */
  sessionEvictions: number;
  /** Prefix-cache block lookups. */
  prefixLookups: number;
  /** Prefix-cache block lookups that found a block. */
  prefixHits: number;
  /** Whole-text evaluations run on the engine (embeddings, {@link Model.evaluate} calls). */
  evalSequences: number;
  /** Forward passes those took: texts that arrive together share a pass (see {@link Model.embed}). */
  evalPasses: number;
  /** Steps whose prompt tokens the dynamic batching policy chose (LoadOptions.targetStepMs). */
  dynamicSteps: number;
  /** The fitted step cost: ms per step ≈ stepMsBase + stepMsPerToken·tokens + stepMsPerRow·sampled sequences. */
  stepMsBase: number;
  /** See {@link NativeStats.stepMsBase}. */
  stepMsPerToken: number;
  /** See {@link NativeStats.stepMsBase}. */
  stepMsPerRow: number;
  /** Sequences running now. */
  running: number;
  /** Requests queued, not yet running. */
  waiting: number;
  /** Sessions (and pinned prefixes) holding KV now. */
  sessions: number;
  /** KV blocks in the pool. */
  blocksTotal: number;
  /** KV blocks referenced by running sequences or sessions. */
  blocksUsed: number;
  /** Unreferenced KV blocks kept for prefix reuse (evicted least recently used first). */
  blocksCached: number;
  /** KV blocks holding nothing. */
  blocksFree: number;
  /** Tokens per KV block. */
  blockSize: number;
  /** Tokens stored in used blocks (the rest of those blocks is unfilled). */
  kvTokensHeld: number;
  /**
   * Models with sliding-window layers: blocks of the local layers' own pool (0 when one pool holds
   * every layer). Its used blocks stay bounded by the window however long the context: blocks out
   * of every sequence's window are freed (or kept for prefix reuse, as cached).
   */
  localBlocksTotal: number;
  /** Local-pool blocks referenced by running sequences or sessions (each holds about its window). */
  localBlocksUsed: number;
  /** Unreferenced local-pool blocks kept for prefix reuse. */
  localBlocksCached: number;
  /** Local-pool blocks holding nothing. */
  localBlocksFree: number;
  /** Bytes of the global layers' KV pool (every layer's when the model has no sliding window). */
  kvBytesGlobal: number;
  /** Bytes of the sliding-window layers' KV pool (0 when one pool holds every layer). */
  kvBytesLocal: number;
  /**
   * Prefix-cache and session reuses cut short because the local layers' blocks of the window
   * before the reuse point were already freed or evicted (the rest of that prompt is recomputed).
   */
  prefixWindowMisses: number;
  /** Requests admitted while other sequences were running (joined a running batch); always 0 with static batching. */
  joinedRunning: number;
  /**
   * Fixed batching: pad tokens computed (prompts padded to the batch's length, plus one per
   * finished member per step until its batch ends): the mode's wasted compute.
   */
  paddedTokens: number;
  /** Fixed batching: pad tokens skipped because the KV pool had no free blocks for them. */
  padSkippedTokens: number;
  /** LoRA adapters loaded (see {@link Model.loadAdapter}). */
  adapters: number;
  /** Bytes of LoRA adapter weights held (their A and B matrices and the transposed copies of B the batched kernels read), unloaded adapters that running requests still use included. */
  adapterBytes: number;
}

/** Model shape and engine limits (surfaced as ModelInfo). */
export interface NativeModelInfo {
  /** Architecture from the file (`"llama"`, `"qwen2"`, ...). */
  arch: string;
  /** Vocabulary size (logits per token). */
  nVocab: number;
  /** Embedding (hidden) size. */
  nEmbd: number;
  /** Transformer blocks. */
  nLayer: number;
  /** Attention (query) heads. */
  nHead: number;
  /** Key/value heads (fewer than nHead with grouped-query attention). */
  nHeadKv: number;
  /** Feed-forward hidden size. */
  nFf: number;
  /** Size of one attention head. */
  headDim: number;
  /** Context length the model was trained with (from the file). */
  nCtxTrain: number;
  /** Most tokens (prompt + generated) one sequence may hold, as loaded. */
  contextSize: number;
  /** RoPE frequency base. */
  ropeFreqBase: number;
  /** RMSNorm epsilon. */
  rmsEps: number;
  /** True when the output projection reuses the token embedding. */
  tiedOutput: boolean;
  /** Compute threads of the engine. */
  threads: number;
  /** Tokens the KV pool holds across all sequences. */
  kvCacheTokens: number;
  /** Tokens per KV block. */
  kvBlockSize: number;
  /**
   * Prompts of at least this many tokens run with llama.cpp's prompt-batch attention arithmetic
   * (an f32 accumulator), every token of the request; shorter ones with its decode arithmetic (an
   * f16 accumulator). A session turn whose prompt first reaches it recomputes the conversation once.
   */
  promptTiledMinTokens: number;
  /** Most tokens computed in one engine step. */
  maxBatchTokens: number;
  /** Most prompt tokens per step while other requests generate (0 = no separate limit). */
  prefillChunk: number;
  /** The dynamic batching latency target in ms (0 = off; see LoadOptions.targetStepMs). */
  targetStepMs: number;
  /** The batching mode (see LoadOptions.batching). */
  batching: "continuous" | "static" | "fixed";
  /** Fixed batching's padding bucket in tokens (0 = each batch's longest prompt; see LoadOptions.fixedBucket). */
  fixedBucket: number;
  /** Most sequences running at once. */
  maxSequences: number;
  /** SIMD kernel family in use (`"avx512"`, `"avxvnni"`, `"avx2"` or `"scalar"`). */
  kernels: string;
  /** KV cache element type (`"f16"`, `"f32"` or `"q8_0"`). */
  kvType: string;
  /** Bytes of K and V storage in the KV pool (kvCacheTokens rounded up to blocks, every layer). */
  kvBytes: number;
  /** Bytes of weights copied at load into the kernels' interleaved layout (0 with `repack: false`). */
  repackedBytes: number;
  /** CSR matrices (compress --format csr) run by the CSR kernels. */
  csrMatrices: number;
  /** CSR matrices expanded to dense at load (denser than the CSR kernels' break-even, see docs/sparse-formats.md). */
  csrDenseMatrices: number;
  /** Number of tensors of each weight type, e.g. `{ q4_k: 154, f32: 45 }`. */
  weightTypes: Record<string, number>;
}

/** generate()'s params: every field is required (the addon has no defaults; lib/generate.ts sets them). */
export interface NativeGenerateParams {
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  repeatLastN: number;
  frequencyPenalty: number;
  presencePenalty: number;
  seed: number;
  /** Alternatives to report per token, in [0, 20]. */
  logprobs: number;
  /** Report each token's logprob (with `logprobs` alternatives). */
  wantLogprobs: boolean;
  stopTokens: number[];
  /** [token, bias] pairs, bias in [-100, 100] added to the raw logit (-100 bans); sorted by token. */
  logitBias: [number, number][];
  priority: number;
  /** 0: no session. */
  session: number;
  pin: boolean;
  /** 0: no adapter. */
  adapter: number;
  /** GBNF text constraining the output ("" = none); the addon parses it (ERR_GRAMMAR when bad). */
  grammar: string;
}

export interface NativeTokenLogprob {
  token: number;
  logprob: number;
  top: { token: number; logprob: number }[];
}

/** One event from the engine thread for a request. */
export interface NativeEvent {
  tokens?: number[];
  logprobs?: NativeTokenLogprob[];
  done?: boolean;
  finishReason?: "length" | "eos" | "abort";
  error?: { code: string; message: string };
  /** On the first token's event: prompt tokens whose KV was reused instead of computed. */
  reusedTokens?: number;
  timings?: {
    promptMs: number;
    generateMs: number;
    promptTokens: number;
    generatedTokens: number;
    reusedTokens: number;
  };
}

export interface NativeModel {
  info(): NativeModelInfo;
  /** Queues a request on the engine thread; returns its id. `onEvent` runs on the JS thread. */
  generate(tokens: Int32Array, params: NativeGenerateParams, onEvent: (e: NativeEvent) => void): number;
  cancel(id: number): void;
  stats(): NativeStats;
  /** Releases a session's (or pinned prefix's) KV blocks. */
  endSession(session: number): void;
  /** Logits for the last token ([nVocab]) or for every token ([n * nVocab]) of a fresh sequence, under a loaded adapter's id (0 or absent: the base model). */
  evaluate(tokens: Int32Array, logitsAll: boolean, adapter?: number): Promise<Float32Array>;
  /** A fresh sequence's final hidden states (after output_norm) pooled into [nEmbd]: 0 mean, 1 last, 2 cls. */
  /**
   * One pooled vector per token sequence ([n_embd] each), queued together so the engine packs them
   * into shared forward passes.
   */
  embed(seqs: Int32Array[], pooling: 0 | 1 | 2, normalize: boolean): Promise<Float32Array[]>;
  /** Reads a LoRA adapter on a worker thread and registers it under `name` (a fresh id each load). */
  loadAdapter(name: string, path: string, scale: number): Promise<NativeAdapterInfo>;
  /** New requests can no longer use it; those in flight keep it until they end. */
  unloadAdapter(name: string): void;
  /** The loaded adapters, in load order. */
  adapters(): NativeAdapterInfo[];
  /**
   * The vocabulary's token bytes for grammar masks: token i is bytes[offsets[i], offsets[i + 1])
   * (control tokens empty). Once per model, before the first request with a grammar.
   */
  setGrammarVocab(bytes: Uint8Array, offsets: Int32Array): void;
  dispose(): Promise<void>;
}

/** One loaded LoRA adapter (surfaced as AdapterInfo). */
export interface NativeAdapterInfo {
  /** The name it was loaded under. */
  name: string;
  /** The id requests carry (never reused by this model). */
  id: number;
  /** The adapter file. */
  path: string;
  /** The user scale (the effective scale is scale × alpha / rank when the file has an alpha). */
  scale: number;
}

/** synthLora()'s options: every field is required (lib/synth.ts sets them). */
export interface NativeSynthLoraOptions {
  rank: number;
  targets: string[];
  seed: number;
  alpha: number;
  type: string;
  stdB: number;
}

/** synth()'s options: every field is required (lib/synth.ts sets them). */
export interface NativeSynthOptions {
  arch: string;
  dim: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ffn: number;
  context: number;
  vocabFrom: string;
  vocabSize: number;
  type: string;
  seed: number;
  tiedOutput: boolean;
  headDim: number;
  ropeFreqs: boolean;
  ropeScaling: string;
  ropeScale: number;
  slidingWindow: number;
  swaPattern: number;
  attnSoftcap: number;
  finalSoftcap: number;
  ropeFreqBaseSwa: number;
  longRope: boolean;
  experts: number;
  expertsUsed: number;
}

/** quantize()'s options: type and threads are required (lib/quantize.ts sets them), the rest optional. */
export interface NativeQuantizeOptions {
  /** One of the addon's `quantizeTypes`, exactly. */
  type: string;
  threads: number;
  /** An importance-matrix file (llama.cpp's imatrix .dat or GGUF); absent: none. */
  imatrix?: string;
  /** llama-quantize's overrides (lib/quantize.ts QuantizeOptions); types and patterns checked natively. */
  pure?: boolean;
  outputTensorType?: string;
  tokenEmbeddingType?: string;
  tensorTypes?: string[];
}

/** What a finished quantize() wrote. */
export interface NativeQuantizeResult {
  /** general.file_type written (llama.cpp's llama_ftype). */
  ftype: number;
  /** Every tensor in file order: its type in the input and in the output ("q4_k", "f32", ...). */
  tensors: { name: string; from: string; to: string }[];
  /** Per-tensor block fallbacks and re-quantization warnings. */
  notes: string[];
  inputBytes: number;
  outputBytes: number;
}

/** A quantize() in flight: its result, and a way to stop it (the promise then rejects with ERR_CANCELLED). */
export interface NativeQuantizeJob {
  promise: Promise<NativeQuantizeResult>;
  cancel(): void;
}

/** finetune()'s options: every field is required (lib/train sets them). */
export interface NativeFinetuneOptions {
  rank: number;
  alpha: number;
  lr: number;
  minLr: number;
  warmup: number;
  batch: number;
  steps: number;
  clip: number;
  seed: number;
  weightDecay: number;
  momentum: number;
  larsEta: number;
  optimizer: "adamw" | "lars";
  threads: number;
  /** Projections of every block: "q", "k", "v", "o", "gate", "up", "down". */
  targets: string[];
  /** Distillation teacher (a GGUF path with the model's vocabulary), or null. */
  teacher: string | null;
  /** The KL term's share α in [0, 1] (used only with a teacher). */
  distill: number;
  /** Distillation temperature T > 0. */
  temperature: number;
  /** Adaptive rank (AdaLoRA-style P·diag(λ)·Q, pruned towards targetRank per matrix on average). */
  adaptiveRank: boolean;
  /** Components kept per matrix on average at the end, in [1, rank]; read only with adaptiveRank. */
  targetRank: number;
  /** Kept-activation size (MiB) above which a sequence trains with per-layer recomputation; 0 = always. */
  recomputeMb: number;
}

/** Token sequences for finetune(): sequence i is [offsets[i], offsets[i + 1]) of tokens and labels. */
export interface NativeTrainData {
  tokens: Int32Array;
  /** The token each position must predict, or -1 (no loss). */
  labels: Int32Array;
  offsets: Float64Array;
}

/** One training step as the addon reports it. */
export interface NativeTrainStep {
  step: number;
  steps: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokens: number;
  seconds: number;
  /** With a teacher and distill > 0: the mean CE and KL (at the temperature) parts of the loss; else 0. */
  ce: number;
  kl: number;
  /** Adaptive rank: the orthogonality penalty before the step, and the components kept after it; else 0. */
  orth: number;
  keptRank: number;
  /** Sequences of the step trained with per-layer recomputation (recomputeMb). */
  recomputed: number;
}

/** A finetune() in flight (cancel: the promise rejects with ERR_CANCELLED and no adapter is written). */
export interface NativeFinetuneJob {
  promise: Promise<{
    evalLossBefore: number;
    evalLossAfter: number;
    evalKlBefore: number;
    evalKlAfter: number;
    /** Adaptive rank: each adapted tensor's base name (e.g. "blk.0.attn_q.weight") to its final rank; else null. */
    ranks: Record<string, number> | null;
  }>;
  cancel(): void;
}

/** compress()'s options: every field is required (lib/compress.ts sets them). */
export interface NativeCompressOptions {
  /** A ratio in (0, 1) (unstructured) or "2:4"; null with lowrank. */
  prune: number | "2:4" | null;
  /** Low-rank factorization instead of pruning (rank 0: by energy; aware: calibrated), or null. */
  lowrank: { rank: number; energy: number; sparse: number; aware: boolean } | null;
  method: "magnitude" | "wanda";
  /** "sparse": 2:4 matrices in llmserve's 2:4 sparse format (only with prune "2:4"); "csr": CSR (only with a ratio); "dense": zeros in the input's type. */
  format: "dense" | "sparse" | "csr";
  /** The 2:4 sparse format's kept values ("auto": q8_0 for a quantized input matrix, f16 for others); "auto" unless format is "sparse". */
  values: "auto" | "f16" | "q8_0";
  /** Globs over tensor names or roles; empty: every layer matrix. */
  tensors: string[];
  threads: number;
  /** Calibration tokens per chunk (Wanda). */
  ctx: number;
  /** Only the argument checks: nothing is written, the promise resolves to the selected tensor names. */
  checkOnly: boolean;
}

/** What a finished compress() wrote. */
export interface NativeCompressResult {
  /** The pruned tensors in file order, with their (unchanged) type and zero count. */
  tensors: { name: string; type: string; zeros: number; elements: number }[];
  notes: string[];
  inputBytes: number;
  outputBytes: number;
  /** Tokens run for the calibration statistics (0 without). */
  calibTokens: number;
}

/** A compress() in flight (the promise rejects with ERR_CANCELLED after cancel()). */
export interface NativeCompressJob<R = NativeCompressResult> {
  promise: Promise<R>;
  cancel(): void;
}

/** Order statistics of a per-token series (llama-perplexity's percentiles, linearly interpolated). */
export interface NativeQuantiles {
  min: number;
  p0_1: number;
  p1: number;
  p5: number;
  p10: number;
  p25: number;
  median: number;
  p75: number;
  p90: number;
  p95: number;
  p99: number;
  p99_9: number;
  max: number;
}

/**
 * Statistics of the tokens scored so far (native/core/eval/perplexity.h PerplexitySummary). The
 * reference fields are present with a reference; the quantiles only from summary().
 */
export interface NativeEvalStats {
  count: number;
  nllMean: number;
  nllError: number;
  ppl: number;
  pplError: number;
  refNllMean?: number;
  refNllError?: number;
  refPpl?: number;
  refPplError?: number;
  correlation?: number;
  logRatio?: number;
  logRatioError?: number;
  pplRatio?: number;
  pplRatioError?: number;
  pplDiff?: number;
  pplDiffError?: number;
  klMean?: number;
  klError?: number;
  pDiffMean?: number;
  pDiffError?: number;
  pDiffRms?: number;
  pDiffRmsError?: number;
  sameTop?: number;
  sameTopError?: number;
  klQuantiles?: NativeQuantiles;
  pDiffQuantiles?: NativeQuantiles;
  /** summary(true) only: per scored token, in order (kl, pDiff, sameTop with a reference). */
  perToken?: { nll: Float32Array; kl?: Float32Array; pDiff?: Float32Array; sameTop?: Uint8Array };
}

/** A perplexity run (native/napi/eval_wrap.cc): one chunk at a time, then the summary. */
export interface NativeEvaluation {
  /** Evaluates one chunk (its ctx tokens, BOS in place) on the model (and reference); the running statistics. */
  chunk(tokens: Int32Array): Promise<NativeEvalStats>;
  /** Every statistic, quantiles included (and the per-token values when asked), computed off the JS thread. */
  summary(perToken: boolean): Promise<NativeEvalStats>;
}

export interface NativeAddon {
  /** The ranges the addon enforces on numbers from JS (native/napi/limits.h), by group; equal to lib/limits.ts LIMITS. */
  limits: Record<string, Record<string, { min: number; max: number; integer: boolean; minExclusive: boolean }>>;
  /** The core's own defaults (its struct initializers), by group; test/native/truth.test.ts compares them with lib/defaults.ts. */
  defaults: {
    load: NativeModelOptions;
    generate: NativeGenerateParams;
    synth: NativeSynthOptions;
    synthLora: NativeSynthLoraOptions;
    gguf: { maxStringBytes: number; maxMetadataBytes: number };
  };
  /** Every argument and field is required (lib/gguf.ts sets them; `keyPrefixes: []` = every key). */
  readGguf(
    path: string,
    maxArrayLength: number,
    options: { keyPrefixes: string[]; maxStringBytes: number; maxMetadataBytes: number },
  ): Promise<GgufContents>;
  /** Checks, as loading would but without reading the weights, that llmserve can run the file; rejects with that coded error. */
  checkModel(path: string): Promise<{ arch: string }>;
  /** Every error code the addon can produce (status.h), for checking lib/errors.ts against. */
  errorCodes(): string[];
  kernelIsa(): string;
  /** The measured read bandwidth in GB/s (native/core/machine/bandwidth.h), on worker threads. */
  readBandwidth(opts: { threads: number; megabytes: number }): Promise<number>;
  loadModel(path: string, opts: NativeModelOptions, onProgress?: (fraction: number) => void): Promise<NativeModel>;
  synth(
    opts: NativeSynthOptions,
    outPath: string,
    onProgress?: (fraction: number) => void,
  ): Promise<{ notes: string[] }>;
  synthLora(basePath: string, opts: NativeSynthLoraOptions, outPath: string): Promise<void>;
  /** Converts the model at `input` to a weight mix, written to `output` on a libuv worker (native/core/compress). */
  quantize(
    input: string,
    output: string,
    opts: NativeQuantizeOptions,
    onProgress?: (fraction: number) => void,
  ): NativeQuantizeJob;
  /** Trains a LoRA adapter of the model at `base` on a libuv worker (native/core/train) and writes it to `out`. */
  finetune(
    base: string,
    data: NativeTrainData,
    evalData: NativeTrainData | null,
    out: string,
    opts: NativeFinetuneOptions,
    onStep?: (step: NativeTrainStep) => void,
  ): NativeFinetuneJob;
  /** The mixes quantize() writes (native/core/compress/recipe.cpp), in its order. */
  quantizeTypes: string[];
  /** Prunes the model at `input` into `output` on a libuv worker (native/core/compress/prune.h); Wanda calibrates on `calib` first. */
  compress(
    input: string,
    output: string,
    opts: NativeCompressOptions,
    calib: Int32Array | null,
    onProgress?: (fraction: number) => void,
  ): NativeCompressJob<NativeCompressResult | { tensors: string[] }>;
  /** A perplexity run of `model` (KL divergence against `reference` when not null), `batch` tokens per forward pass. */
  createEvaluation(model: NativeModel, reference: NativeModel | null, batch: number): NativeEvaluation;
}
