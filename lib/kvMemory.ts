/**
 * Sizing the KV cache from a byte budget (`kvMemory: "4GiB"`, `llmserve serve --kv-memory 4GiB`)
 * instead of a token count: what users know is how much memory they can give it. The bytes one
 * token takes follow from the model's shape in the GGUF file, as native/core/kv/kv_pool.h lays the
 * pool out: K and V, one row of n_head_kv x head_dim elements per layer, f32 / f16 / q8_0 (blocks
 * of 32 elements stored in 34 bytes).
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

/**
 * Bytes of KV cache one token takes in this model file (K and V, every layer), or undefined when
 * the file does not give its shape.
 */
export async function kvBytesPerToken(path: string, kvType: string): Promise<number | undefined> {
  const { metadata: a } = await readGguf(path, { maxArrayLength: 0, keyPrefix: "general.architecture" });
  const arch = a["general.architecture"];
  if (typeof arch !== "string") return undefined;
  const { metadata: m } = await readGguf(path, { maxArrayLength: 4096, keyPrefix: `${arch}.` });
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
  return 2 * layers * rowBytes(kvType, kvHeads * headDim);
}

/**
 * kvCacheTokens for a byte budget: as many whole KV blocks as fit, at least one full context
 * (ERR_INVALID_ARGUMENT saying what to change otherwise).
 */
export function kvTokensForBudget(budget: number, perToken: number, blockSize: number, contextSize: number): number {
  const blocks = Math.floor(budget / (perToken * blockSize));
  const tokens = Math.min(blocks * blockSize, LOAD_LIMITS.kvCacheTokens.max);
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
): number {
  const roundUp = (n: number) => Math.ceil(n / blockSize) * blockSize;
  const budget = Math.floor((free * LOAD_DEFAULTS.kvFreeMemoryShare) / (perToken * blockSize)) * blockSize;
  const most = Math.min(roundUp(contextSize * maxSequences), LOAD_LIMITS.kvCacheTokens.max);
  return Math.max(roundUp(contextSize), Math.min(budget, most));
}
