/**
 * Sizing the KV cache from a byte budget (`kvMemory: "4GiB"`, `llmserve serve --kv-memory 4GiB`)
 * instead of a token count: what users know is how much memory they can give it. The bytes one
 * token takes follow from the model's shape in the GGUF file, as native/core/kv/kv_pool.h lays the
 * pool out: K and V, one row of n_head_kv x head_dim elements per layer, f32 / f16 / q8_0 (blocks
 * of 32 elements stored in 34 bytes). Models with sliding-window layers (gemma2, gemma3) keep those
 * layers' K/V in a second pool that only holds each sequence's window (KvPools in
 * native/core/kv/kv_pool.h): its size does not grow with kvCacheTokens beyond maxSequences windows
 * plus one batch, so a budget buys more tokens of the global layers.
 */
import { freemem } from "node:os";
import { LOAD_DEFAULTS } from "./defaults.js";
import { LlmserveError } from "./errors.js";
import { readGguf } from "./gguf.js";
import { LOAD_LIMITS } from "./limits.js";

const UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/** A byte count: a non-negative number, or text such as "4GiB", "512 MiB", "1.5GB", "1000000". */
export function parseBytes(name: string, v: unknown): number {
  let bytes: number | undefined;
  if (typeof v === "number") bytes = v;
  else if (typeof v === "string") {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$/i.exec(v);
    if (m) bytes = Number(m[1]) * UNITS[(m[2] ?? "b").toLowerCase()];
  }
  if (bytes === undefined || !Number.isFinite(bytes) || bytes <= 0)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `Expected a positive byte count such as 4294967296 or "4GiB" (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB) for ${name} but received ${JSON.stringify(v)}`,
    );
  return Math.floor(bytes);
}

/** Bytes of one row of `n` KV elements of `kvType` (as the core's row_size). */
function rowBytes(kvType: string, n: number): number {
  if (kvType === "f32") return 4 * n;
  if (kvType === "q8_0") return (n / 32) * 34;
  return 2 * n;
}

/** How a model's KV splits into the global layers' pool and the sliding-window layers' pool. */
export interface KvSplit {
  /** Bytes one token takes in the global layers' pool (0 when every layer is local). */
  perToken: number;
  /** Bytes one token takes in the sliding-window layers' pool (0: no sliding window). */
  localPerToken: number;
  /** The sliding window in tokens (0: none). */
  window: number;
}

/**
 * Bytes of KV cache one token takes in this model file (K and V, every layer), or undefined when
 * the file does not give its shape.
 */
export async function kvBytesPerToken(path: string, kvType: string): Promise<number | undefined> {
  const split = await kvSplit(path, kvType);
  return split && split.perToken + split.localPerToken;
}

/**
 * The KV split of this model file (as native/core/model/model_config.cpp reads gemma's window and
 * layer pattern, after llama.cpp: gemma2 always windowed, default 4096, every 2nd layer global;
 * gemma3 windowed only with attention.sliding_window > 0, default period 6, period 0 = every layer
 * local; other architectures have no local layers), or undefined when the file does not give its shape.
 */
export async function kvSplit(path: string, kvType: string): Promise<KvSplit | undefined> {
  const { metadata: a } = await readGguf(path, { maxArrayLength: 0, keyPrefix: "general.architecture" });
  const arch = a["general.architecture"];
  if (typeof arch !== "string") return undefined;
  const { metadata: m } = await readGguf(path, { maxArrayLength: 4096, keyPrefix: `${arch}.` });
  return kvSplitOf(arch, m, kvType);
}

/**
 * kvSplit from metadata already read: `m` holds the file's `${arch}.` keys (per-layer arrays of up
 * to a few thousand entries kept whole).
 */
export function kvSplitOf(arch: string, m: Record<string, unknown>, kvType: string): KvSplit | undefined {
  const num = (key: string): number | undefined => {
    const v = m[`${arch}.${key}`];
    if (typeof v === "number" || typeof v === "bigint") return Number(v);
    // Per-layer head counts (some architectures): the pool's rows are sized by the largest.
    if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === "number")) return Math.max(...(v as number[]));
    return undefined;
  };
  const layers = num("block_count");
  const heads = num("attention.head_count");
  const kvHeads = num("attention.head_count_kv") ?? heads;
  const embd = num("embedding_length");
  const headDim = num("attention.key_length") ?? (embd && heads ? embd / heads : undefined);
  if (!layers || !kvHeads || !headDim) return undefined;
  const row = 2 * rowBytes(kvType, kvHeads * headDim);
  const gemma = arch === "gemma2" || arch === "gemma3";
  const window = gemma ? (num("attention.sliding_window") ?? (arch === "gemma2" ? 4096 : 0)) : 0;
  const period = num("attention.sliding_window_pattern") ?? (arch === "gemma2" ? 2 : 6);
  let local = 0;
  for (let il = 0; window > 0 && il < layers; ++il) if (period === 0 || il % period < period - 1) ++local;
  return { perToken: row * (layers - local), localPerToken: row * local, window };
}

/**
 * The tokens of the sliding-window layers' pool the engine allocates for kvCacheTokens `tokens`
 * (its default, native/core/backend/executor.h local_kv_tokens 0): maxSequences windows of
 * window + 2 blocks plus one batch of maxBatchTokens, at most kvCacheTokens, in whole blocks.
 */
export function kvLocalTokens(
  split: KvSplit,
  tokens: number,
  blockSize: number,
  maxSequences: number,
  maxBatchTokens: number,
): number {
  if (split.localPerToken === 0) return 0;
  const auto = maxSequences * (split.window + 2 * blockSize) + maxBatchTokens;
  return Math.ceil(Math.min(tokens, auto) / blockSize) * blockSize;
}

/**
 * kvCacheTokens whose pools fit `budget` bytes: the global layers' pool grows with it, the local
 * pool stops at `localCap` tokens (kvLocalTokens with an unbounded kvCacheTokens). Whole blocks.
 */
export function kvTokensWithin(budget: number, split: KvSplit, blockSize: number, localCap: number): number {
  const blocks = (n: number) => Math.floor(n / blockSize) * blockSize;
  const both = split.perToken + split.localPerToken;
  const small = blocks(budget / both); // kvCacheTokens <= localCap: both pools that size
  if (split.localPerToken === 0 || small <= localCap) return small;
  if (split.perToken === 0) return LOAD_LIMITS.kvCacheTokens.max; // every layer local: only the cap costs memory
  return Math.max(small, blocks((budget - split.localPerToken * localCap) / split.perToken));
}

/** A sliding-window model's split and its local pool's cap in tokens (see kvTokensWithin). */
export interface LocalKv {
  split: KvSplit;
  cap: number;
}

/**
 * kvCacheTokens for a byte budget: as many whole KV blocks as fit, at least one full context
 * (ERR_INVALID_ARGUMENT saying what to change otherwise). With `local`, the sliding-window
 * layers' pool takes at most its cap of the budget (perToken is then both pools' bytes a token).
 */
export function kvTokensForBudget(
  budget: number,
  perToken: number,
  blockSize: number,
  contextSize: number,
  local?: LocalKv,
): number {
  const fit = local
    ? kvTokensWithin(budget, local.split, blockSize, local.cap)
    : Math.floor(budget / (perToken * blockSize)) * blockSize;
  const tokens = Math.min(fit, LOAD_LIMITS.kvCacheTokens.max);
  if (tokens < contextSize)
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `kvMemory of ${budget} bytes holds ${tokens} tokens of this model's KV cache (${perToken} bytes each), less than one context of ${contextSize} tokens: raise kvMemory to at least ${Math.ceil(contextSize / blockSize) * blockSize * perToken} bytes or lower contextSize.`,
    );
  return tokens;
}

/**
 * The default kvCacheTokens: LOAD_DEFAULTS.kvFreeMemoryShare of the memory free now, in whole
 * blocks, at least one context and at most maxSequences contexts (one sequence per running slot
 * at full length; more would never be used at once).
 */
export function kvTokensByDefault(
  perToken: number,
  blockSize: number,
  contextSize: number,
  maxSequences: number,
  free: number = freemem(),
  local?: LocalKv,
): number {
  const roundUp = (n: number) => Math.ceil(n / blockSize) * blockSize;
  const bytes = free * LOAD_DEFAULTS.kvFreeMemoryShare;
  const budget = local
    ? kvTokensWithin(bytes, local.split, blockSize, local.cap)
    : Math.floor(bytes / (perToken * blockSize)) * blockSize;
  const most = Math.min(roundUp(contextSize * maxSequences), LOAD_LIMITS.kvCacheTokens.max);
  return Math.max(roundUp(contextSize), Math.min(budget, most));
}
