/** Model.load()'s options: their types, validation and defaults (from lib/defaults.ts). */
import { basename } from "node:path";
import { physicalCores } from "./cpu.js";
import { LlmserveError } from "./errors.js";
import type { ResolveOptions } from "./hub/index.js";
import type { NativeModelOptions } from "./native.js";
import { LOAD_DEFAULTS } from "./defaults.js";
import { readGguf } from "./gguf.js";
import { parseBytes } from "./kvMemory.js";
import { LOAD_LIMITS as L } from "./limits.js";
import type { ProgressEvent } from "./progress.js";
import { checkBool, checkInt, checkKeys, checkLimit, checkObject, checkString } from "./validate.js";

/** How LoRA adapters' factors can be kept in memory (Model.load's adapterType). */
export const ADAPTER_TYPES = ["file", "q8_0", "q4_0"] as const;

/** Options of {@link Model.load}; every field is optional. */
export interface LoadOptions {
  /** Compute threads, in [1, 512] (default: the number of physical cores). */
  threads?: number;
  /**
   * Most tokens one sequence may hold, in [0, 16777216] (default: the model's training context, at
   * most 4096; 0 = the training context). A value above the training context works but warns once
   * (process warning LLMSERVE_CONTEXT_OVER_TRAINING): models degrade past what they were trained on.
   */
  contextSize?: number;
  /** KV cache element type: "f16" (default, as llama.cpp), "f32", or "q8_0" (half the memory of f16, as llama.cpp's `--cache-type-k/v q8_0`; needs a head size that is a multiple of 32). */
  kvType?: "f16" | "f32" | "q8_0";
  /**
   * Total KV cache size in tokens, shared by all sequences, in [0, 67108864]. Default (and 0): half
   * the memory free at load, at least one context and at most maxSequences contexts
   * (`info.kvCacheTokens` tells the result).
   */
  kvCacheTokens?: number;
  /**
   * The KV cache's size as a memory budget instead of kvCacheTokens: bytes, or text such as "4GiB",
   * "512MiB", "1.5GB". It holds as many whole kvBlockSize blocks of this model's KV (per its shape
   * and kvType) as fit, at least one full context (ERR_INVALID_ARGUMENT otherwise); `info.kvCacheTokens`
   * and `info.kvBytes` tell the result. Not with kvCacheTokens.
   */
  kvMemory?: number | string;
  /** Tokens per KV block (default 16). */
  kvBlockSize?: number;
  /** Most tokens computed per engine step: decode tokens plus prompt chunks (default 512). */
  maxBatchTokens?: number;
  /**
   * Most prompt tokens per step while other requests are generating (default 128; 0 = only
   * maxBatchTokens limits them). Long prompts then arrive in smaller chunks, so generating requests
   * keep a low inter-token latency; a step with nothing generating uses all of maxBatchTokens.
   */
  prefillChunk?: number;
  /**
   * Dynamic batching (default 0 = off): a latency target in milliseconds for a step while requests
   * are generating. The engine fits each step's cost (ms per token and per sampled sequence, from
   * the steps it ran) and gives a step only as many prompt tokens as fit the target next to the
   * decode tokens, in place of prefillChunk, so inter-token latency holds while long prompts arrive
   * (prefillChunk applies until the fit has seen prompt chunks of several sizes). The fit is in
   * {@link ModelStats.stepMsPerToken} and friends.
   */
  targetStepMs?: number;
  /** Most sequences running at once (default 64). */
  maxSequences?: number;
  /** Most requests waiting before generate() throws ERR_QUEUE_FULL (default 1024). */
  maxQueue?: number;
  /** Reuse KV blocks of identical prompt prefixes across requests (default true). */
  prefixCache?: boolean;
  /**
   * "continuous" (default), "static" (a batch runs to completion before the next is formed) or
   * "fixed" (fixed-length batching: as static, with every prompt of a batch padded to one length
   * and run whole, and finished members costing a pad token per step until the batch ends; the
   * padding is computed and counted in {@link ModelStats.paddedTokens} but changes no output).
   * "static" and "fixed" are benchmark baselines.
   */
  batching?: "continuous" | "static" | "fixed";
  /**
   * Fixed batching: prompts are padded to the next multiple of this many tokens (default 0: to
   * the batch's longest prompt). Only with `batching: "fixed"`.
   */
  fixedBucket?: number;
  /** Byte budget of the response cache for `cache: true` requests (default 64 MiB; 0 disables). */
  responseCacheBytes?: number;
  /**
   * Copy quantized weight matrices at load into the GEMM kernels' interleaved layout and release the
   * file's pages for them (default true): the same memory, faster decode. `false` keeps every weight
   * in the file's memory mapping: faster load, and the pages are shared by every process mapping the file.
   */
  repack?: boolean;
  /**
   * Most LoRA adapters kept in memory (default 0: no limit). Adapters loaded beyond it stay
   * registered: the least recently used one that no request is using is evicted, and reloaded from
   * its file (same path and scale) when a request names it again. Adapters in use are never
   * evicted; while more than this many are in use, that many stay resident (see loadAdapter).
   */
  maxAdapters?: number;
  /**
   * How LoRA adapters' factors are kept in memory: `"file"` (default) as the file stores them, or
   * quantized at load:
   * - `"q8_0"`: about half the memory of f16. At a rank that is a multiple of 32 the adapter then
   *   computes as llama.cpp computes the same adapter converted to q8_0 (activations rounded to
   *   q8_0, int8 dot products), which is also faster where a step reads many adapters (rank 64 over
   *   4 adapters: +21% decode time instead of +39% with f16; bench/README.md, "Multi-LoRA"); other
   *   ranks keep f32 arithmetic over the q8_0 factors. The output changes about as much as the
   *   adapter's scale turned down by 1% (`npm run bench:lora-quality`).
   * - `"q4_0"`: about 0.28 of f16's memory (18 bytes per 32 values), and the least decode time where
   *   a step reads many adapters (rank 64 over 16 adapters: about 0.7x q8_0's LoRA time), computed as
   *   llama.cpp computes a q4_0 adapter file. The output changes about as much as the adapter's
   *   scale turned down by 10%: a trade for memory and speed, not a free one. Ranks that are not
   *   multiples of 32 are kept as q8_0.
   *
   * Adapter files already in q8_0 or q4_0, and matrices whose sizes are not multiples of 32, stay
   * as stored.
   */
  adapterType?: (typeof ADAPTER_TYPES)[number];
  /**
   * Called while work progresses: with the fraction done in [0, 1] and the full
   * {@link ProgressEvent} (phase "download" with bytes, rate and ETA while an `hf:` or URL model
   * is downloaded, then "load" while weights are mapped and paged in).
   */
  onProgress?: (fraction: number, event: ProgressEvent) => void;
  /**
   * How `hf:` and `https://` models are fetched into the model cache: cache folder, offline mode,
   * token, endpoint, timeouts (see {@link ResolveOptions}; progress goes to `onProgress`).
   */
  download?: Omit<ResolveOptions, "onProgress">;
}

/** The default of {@link LoadOptions.threads}: the physical cores, at most the threads limit (512). */
export function defaultThreads(): number {
  return Math.min(physicalCores(), L.threads.max);
}

/**
 * @internal Validates load options and fills every absent one from LOAD_DEFAULTS: the complete
 * options the addon needs (it has no defaults of its own), plus the TypeScript-only ones.
 */
export function resolveLoadOptions(options: unknown): {
  nativeOptions: NativeModelOptions;
  responseCacheBytes: number;
  maxAdapters: number;
  /** False when contextSize was absent (nativeOptions has LOAD_DEFAULTS' cap; see {@link contextSizeFor}). */
  contextSizeGiven: boolean;
  /** kvMemory in bytes, when given (Model.load sizes kvCacheTokens from it). */
  kvMemoryBytes?: number;
  /** True when kvCacheTokens was given as a positive count (else Model.load sizes it). */
  kvCacheTokensGiven: boolean;
  onProgress?: (fraction: number, event: ProgressEvent) => void;
  download?: ResolveOptions;
} {
  const o = checkObject("load options", options) as LoadOptions & Record<string, unknown>;
  checkKeys("load options", o, [
    "threads",
    "contextSize",
    "kvType",
    "kvCacheTokens",
    "kvMemory",
    "kvBlockSize",
    "maxBatchTokens",
    "maxSequences",
    "maxQueue",
    "prefixCache",
    "batching",
    "fixedBucket",
    "responseCacheBytes",
    "repack",
    "prefillChunk",
    "targetStepMs",
    "maxAdapters",
    "adapterType",
    "onProgress",
    "download",
  ]);
  const D = LOAD_DEFAULTS;
  const batching =
    o.batching === undefined ? D.batching : checkString("batching", o.batching, ["continuous", "static", "fixed"]);
  if (o.fixedBucket !== undefined && batching !== "fixed")
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `fixedBucket applies to batching: "fixed" only (batching is "${batching}"); pass batching: "fixed" or drop fixedBucket`,
    );
  const int = (name: keyof typeof L & keyof typeof D): number =>
    o[name] === undefined ? D[name] : checkLimit(name, o[name], L[name]);
  // Every field of the native options is set here (the addon has no defaults of its own).
  const nativeOptions: NativeModelOptions = {
    threads: o.threads === undefined ? defaultThreads() : checkLimit("threads", o.threads, L.threads),
    contextSize: int("contextSize"),
    kvType:
      o.kvType === undefined
        ? D.kvType
        : (checkString("kvType", o.kvType, ["f16", "f32", "q8_0"]) as NativeModelOptions["kvType"]),
    kvCacheTokens: int("kvCacheTokens"),
    kvBlockSize: int("kvBlockSize"),
    maxBatchTokens: int("maxBatchTokens"),
    maxSequences: int("maxSequences"),
    maxQueue: int("maxQueue"),
    prefixCache: o.prefixCache === undefined ? D.prefixCache : checkBool("prefixCache", o.prefixCache),
    staticBatching: batching === "static",
    fixedBatching: batching === "fixed",
    fixedBucket: int("fixedBucket"),
    repack: o.repack === undefined ? D.repack : checkBool("repack", o.repack),
    prefillChunk: int("prefillChunk"),
    targetStepMs:
      o.targetStepMs === undefined ? D.targetStepMs : checkLimit("targetStepMs", o.targetStepMs, L.targetStepMs),
    adapterType:
      o.adapterType === undefined
        ? D.adapterType
        : (checkString("adapterType", o.adapterType, ADAPTER_TYPES) as NativeModelOptions["adapterType"]),
  };
  const responseCacheBytes =
    o.responseCacheBytes === undefined ? D.responseCacheBytes : checkInt("responseCacheBytes", o.responseCacheBytes, 0);
  if (o.onProgress !== undefined && typeof o.onProgress !== "function") {
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a function for onProgress");
  }
  const maxAdapters = o.maxAdapters === undefined ? D.maxAdapters : checkInt("maxAdapters", o.maxAdapters, 0);
  const download = o.download === undefined ? undefined : (checkObject("download", o.download) as ResolveOptions);
  if (o.kvMemory !== undefined && o.kvCacheTokens !== undefined)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      "Pass kvMemory (a byte budget) or kvCacheTokens (a token count), not both",
    );
  return {
    nativeOptions,
    responseCacheBytes,
    maxAdapters,
    contextSizeGiven: o.contextSize !== undefined,
    kvMemoryBytes: o.kvMemory === undefined ? undefined : parseBytes("kvMemory", o.kvMemory),
    kvCacheTokensGiven: nativeOptions.kvCacheTokens > 0,
    onProgress: o.onProgress,
    download,
  };
}

/**
 * @internal The context a GGUF file's model was trained for (`{arch}.context_length`), 0 when the
 * file does not say or cannot be read (loading it then reports why).
 */
export async function trainingContext(path: string): Promise<number> {
  try {
    const read = async (key: string) => (await readGguf(path, { maxArrayLength: 0, keyPrefix: key })).metadata[key];
    const arch = await read("general.architecture");
    if (typeof arch !== "string") return 0;
    const n = await read(`${arch}.context_length`);
    const v = typeof n === "bigint" ? Number(n) : n;
    return typeof v === "number" && Number.isSafeInteger(v) && v > 0 ? v : 0;
  } catch {
    return 0;
  }
}

const warnedContext = new Set<string>();

/**
 * @internal The context size to load with: an absent one is the training context capped at
 * LOAD_DEFAULTS.contextSize (4096), so a small model does not get a KV cache it cannot use and a
 * large one does not take all memory; a given one is kept, with one process warning per model file
 * when it exceeds the training context.
 */
export function contextSizeFor(requested: number | undefined, train: number, path: string): number {
  const cap = LOAD_DEFAULTS.contextSize;
  if (requested === undefined) return train > 0 ? Math.min(cap, train) : cap;
  if (train > 0 && requested > train && !warnedContext.has(path)) {
    warnedContext.add(path);
    process.emitWarning(
      `contextSize ${requested} is larger than the ${train} tokens ${basename(path)} was trained for; output past ${train} tokens may degrade. Load it with contextSize ${train} or less (0 = exactly the training context) unless the model is known to extrapolate.`,
      { type: "LlmserveWarning", code: "LLMSERVE_CONTEXT_OVER_TRAINING" },
    );
  }
  return requested;
}

export { physicalCores };
