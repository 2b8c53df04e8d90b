/**
 * The allowed range of every numeric option, in one place: the TypeScript checks (lib/validate.ts
 * checkLimit) and the HTTP schemas (lib/server/schemas.ts) read it, and the native addon enforces
 * the same table (native/napi/limits.h, exported as `addon.limits`; a test asserts they are equal),
 * so callers that bypass the TypeScript layer get the same errors.
 */

/** A numeric range: `[min, max]`, or `(min, max]` with `minExclusive`. */
export interface Limit {
  /** Smallest allowed value (excluded when `minExclusive`). */
  readonly min: number;
  /** Largest allowed value. */
  readonly max: number;
  /** Only integers are allowed. */
  readonly integer: boolean;
  /** `min` itself is not allowed. */
  readonly minExclusive: boolean;
}

/** Largest 32-bit signed integer: the ceiling of options the engine stores in an int32. */
export const INT32_MAX = 2147483647;

/** Most messages in one chat (ChatTemplate's default limit and the server's schema maximum). */
export const MAX_CHAT_MESSAGES = 4096;

const int = (min: number, max: number): Limit => ({ min, max, integer: true, minExclusive: false });
const num = (min: number, max: number, minExclusive = false): Limit => ({ min, max, integer: false, minExclusive });

/** Options of generate() (and the native request's internal fields: session, adapter, stop tokens, ids). */
export const GENERATE_LIMITS = {
  maxTokens: int(0, INT32_MAX),
  temperature: num(0, 100),
  topK: int(0, INT32_MAX),
  topP: num(0, 1, true),
  minP: num(0, 1),
  repeatPenalty: num(0, 100, true),
  repeatLastN: int(-1, INT32_MAX),
  frequencyPenalty: num(-2, 2),
  presencePenalty: num(-2, 2),
  seed: int(0, Number.MAX_SAFE_INTEGER),
  logprobs: int(0, 20),
  priority: int(-1000000, 1000000),
  session: int(0, Number.MAX_SAFE_INTEGER),
  adapter: int(0, Number.MAX_SAFE_INTEGER),
  stopTokens: int(0, INT32_MAX),
  "stopTokens.length": int(0, 65536),
  /** Each logitBias value (OpenAI's range; -100 bans the token). */
  logitBias: num(-100, 100),
  "logitBias.token": int(0, INT32_MAX),
  "logitBias.length": int(0, 65536),
  id: int(0, Number.MAX_SAFE_INTEGER),
} as const satisfies Record<string, Limit>;

/** Engine options of Model.load(). */
export const LOAD_LIMITS = {
  threads: int(1, 512),
  contextSize: int(0, 1 << 24),
  kvCacheTokens: int(0, 1 << 26),
  kvBlockSize: int(1, 4096),
  maxBatchTokens: int(1, 1 << 20),
  prefillChunk: int(0, 1 << 20),
  targetStepMs: num(0, 60000),
  fixedBucket: int(0, 1 << 20),
  maxSequences: int(1, 1 << 16),
  maxQueue: int(1, 1 << 24),
} as const satisfies Record<string, Limit>;

/** Shape options of synth(). */
export const SYNTH_LIMITS = {
  dim: int(1, 1 << 16),
  layers: int(1, 512),
  heads: int(1, 1024),
  kvHeads: int(1, 1024),
  ffn: int(1, 1 << 18),
  context: int(1, 1 << 24),
  vocabSize: int(1, 1 << 20),
  seed: int(0, Number.MAX_SAFE_INTEGER),
  /** 0 = dim / heads. */
  headDim: int(0, 16384),
  /** The loader's range of RoPE scaling factors. */
  ropeScale: num(1 / 1024, 1024),
  /** gemma2/gemma3 keys: 0 = not written (the architecture's default applies). */
  slidingWindow: int(0, 1 << 24),
  swaPattern: int(0, 4096),
  attnSoftcap: num(0, 1e6),
  finalSoftcap: num(0, 1e6),
  ropeFreqBaseSwa: num(0, 1e12),
  /** Mixture of experts: 0 = dense (llama.cpp's LLAMA_MAX_EXPERTS is 512). */
  experts: int(0, 512),
  expertsUsed: int(0, 512),
} as const satisfies Record<string, Limit>;

/** LoRA adapters: Model.loadAdapter()'s `scale` and synthLora()'s options. */
export const LORA_LIMITS = {
  scale: num(-100, 100),
  rank: int(1, 4096),
  seed: int(0, Number.MAX_SAFE_INTEGER),
  alpha: num(0, 65536),
  stdB: num(0, 100),
} as const satisfies Record<string, Limit>;

/** Options of readGguf(). */
export const GGUF_LIMITS = {
  maxArrayLength: int(0, Number.MAX_SAFE_INTEGER),
  maxStringBytes: int(1, Number.MAX_SAFE_INTEGER),
  maxMetadataBytes: int(1, Number.MAX_SAFE_INTEGER),
} as const satisfies Record<string, Limit>;

/**
 * evaluatePerplexity()'s options: `ctx` (tokens per chunk; at least 3, so each chunk scores at
 * least one token), `batch` (tokens per forward pass) and `chunks`.
 */
export const EVAL_LIMITS = {
  ctx: int(3, 1 << 24),
  batch: int(1, 1 << 24),
  chunks: int(1, INT32_MAX),
} as const satisfies Record<string, Limit>;

/** Options of finetune() (lib/train): LoRA shape, optimizer, schedule. */
export const TRAIN_LIMITS = {
  rank: int(1, 4096),
  alpha: num(0, 65536, true),
  lr: num(0, 10, true),
  minLr: num(0, 10),
  warmup: int(0, INT32_MAX),
  batch: int(1, 65536),
  steps: int(1, INT32_MAX),
  clip: num(0, 1e6),
  seed: int(0, Number.MAX_SAFE_INTEGER),
  weightDecay: num(0, 10),
  momentum: num(0, 0.999),
  larsEta: num(0, 100, true),
  distill: num(0, 1),
  temperature: num(0, 100, true),
  targetRank: int(1, 4096),
  recomputeMb: int(0, 1 << 24),
} as const satisfies Record<string, Limit>;

/** Options of measureReadBandwidth(): the probe's threads and its buffer in MiB. */
export const MACHINE_LIMITS = {
  threads: int(1, 512),
  megabytes: int(1, 4096),
} as const satisfies Record<string, Limit>;

/** The ranges of {@link LIMITS}, by the group name the native addon exports them under (`addon.limits`). */
export interface Limits {
  /** generate() options, by name (plus the native request's internal `session`, `adapter`, `stopTokens` and `id`). */
  readonly generate: Readonly<Record<string, Limit>>;
  /** Model.load() engine options, by name. */
  readonly load: Readonly<Record<string, Limit>>;
  /** synth() shape options, by name. */
  readonly synth: Readonly<Record<string, Limit>>;
  /** Model.loadAdapter()'s scale and synthLora() options, by name. */
  readonly lora: Readonly<Record<string, Limit>>;
  /** readGguf() options, by name. */
  readonly gguf: Readonly<Record<string, Limit>>;
  /** evaluatePerplexity() options, by name. */
  readonly eval: Readonly<Record<string, Limit>>;
  /** finetune() options, by name. */
  readonly train: Readonly<Record<string, Limit>>;
  /** measureReadBandwidth() options, by name. */
  readonly machine: Readonly<Record<string, Limit>>;
}

/**
 * The allowed range of every numeric option, e.g. `LIMITS.generate.topK` is
 * `{ min: 0, max: 2147483647, integer: true, minExclusive: false }`.
 */
export const LIMITS: Limits = {
  generate: GENERATE_LIMITS,
  load: LOAD_LIMITS,
  synth: SYNTH_LIMITS,
  lora: LORA_LIMITS,
  gguf: GGUF_LIMITS,
  eval: EVAL_LIMITS,
  train: TRAIN_LIMITS,
  machine: MACHINE_LIMITS,
};

/** "an integer in [0, 20]", "a number in (0, 1]": the words both layers' messages use. */
export function describeLimit(l: Limit): string {
  return `${l.integer ? "an integer" : "a number"} in ${l.minExclusive ? "(" : "["}${l.min}, ${l.max}]`;
}
