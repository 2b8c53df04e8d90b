/** Model.load()'s options: their types, validation and defaults (from lib/defaults.ts). */
import { physicalCores } from "./cpu.js";
import { LlmserveError } from "./errors.js";
import type { ResolveOptions } from "./hub/index.js";
import type { NativeModelOptions } from "./native.js";
import { LOAD_DEFAULTS } from "./defaults.js";
import { LOAD_LIMITS as L } from "./limits.js";
import type { ProgressEvent } from "./progress.js";
import { checkBool, checkInt, checkKeys, checkLimit, checkObject, checkString } from "./validate.js";

/** Options of {@link Model.load}; every field is optional. */
export interface LoadOptions {
  /** Compute threads, in [1, 512] (default: the number of physical cores). */
  threads?: number;
  /** Most tokens one sequence may hold, in [0, 16777216] (default 4096; 0 = the model's training context). */
  contextSize?: number;
  /** KV cache element type: "f16" (default, as llama.cpp), "f32", or "q8_0" (half the memory of f16, as llama.cpp's `--cache-type-k/v q8_0`; needs a head size that is a multiple of 32). */
  kvType?: "f16" | "f32" | "q8_0";
  /** Total KV cache size in tokens, shared by all sequences, in [0, 67108864] (default and 0: contextSize). */
  kvCacheTokens?: number;
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
  /** Most sequences running at once (default 64). */
  maxSequences?: number;
  /** Most requests waiting before generate() throws ERR_QUEUE_FULL (default 1024). */
  maxQueue?: number;
  /** Reuse KV blocks of identical prompt prefixes across requests (default true). */
  prefixCache?: boolean;
  /** "continuous" (default) or "static" (a batch runs to completion before the next is formed; a benchmark baseline). */
  batching?: "continuous" | "static";
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
  onProgress?: (fraction: number, event: ProgressEvent) => void;
  download?: ResolveOptions;
} {
  const o = checkObject("load options", options) as LoadOptions & Record<string, unknown>;
  checkKeys("load options", o, [
    "threads",
    "contextSize",
    "kvType",
    "kvCacheTokens",
    "kvBlockSize",
    "maxBatchTokens",
    "maxSequences",
    "maxQueue",
    "prefixCache",
    "batching",
    "responseCacheBytes",
    "repack",
    "prefillChunk",
    "maxAdapters",
    "onProgress",
    "download",
  ]);
  const D = LOAD_DEFAULTS;
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
    staticBatching:
      (o.batching === undefined ? D.batching : checkString("batching", o.batching, ["continuous", "static"])) ===
      "static",
    repack: o.repack === undefined ? D.repack : checkBool("repack", o.repack),
    prefillChunk: int("prefillChunk"),
  };
  const responseCacheBytes =
    o.responseCacheBytes === undefined ? D.responseCacheBytes : checkInt("responseCacheBytes", o.responseCacheBytes, 0);
  if (o.onProgress !== undefined && typeof o.onProgress !== "function") {
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a function for onProgress");
  }
  const maxAdapters = o.maxAdapters === undefined ? D.maxAdapters : checkInt("maxAdapters", o.maxAdapters, 0);
  const download = o.download === undefined ? undefined : (checkObject("download", o.download) as ResolveOptions);
  return { nativeOptions, responseCacheBytes, maxAdapters, onProgress: o.onProgress, download };
}

export { physicalCores };
