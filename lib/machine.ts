/**
 * What bounds decoding on this machine. A decode step reads every weight byte once per generated
 * token (and the sequence's KV cache), so one sequence cannot decode faster than the machine's read
 * bandwidth ({@link measureReadBandwidth}) over those bytes ({@link decodeReadBytes}): the ceiling
 * `llmserve info --bandwidth` prints and bench:e2e compares both engines against.
 */
import { loadAddon } from "./binding.js";
import { BANDWIDTH_DEFAULTS } from "./defaults.js";
import { LlmserveError, fromNative, wrapNative } from "./errors.js";
import { readGguf } from "./gguf.js";
import { kvSplitOf } from "./kvMemory.js";
import { LOAD_LIMITS, MACHINE_LIMITS } from "./limits.js";
import { defaultThreads } from "./loadOptions.js";
import { checkKeys, checkLimit, checkObject, checkPath, checkString } from "./validate.js";

/** Options of {@link measureReadBandwidth}. */
export interface ReadBandwidthOptions {
  /** Threads reading at once (default: the physical cores, as Model.load's default). */
  threads?: number;
  /** The buffer read, in MiB, at most 4096 (default 1024: many times any last-level cache). */
  megabytes?: number;
}

/**
 * Measures this machine's read bandwidth in GB/s (1e9 bytes per second): each thread sums its own
 * part of a buffer, best of 5 passes, on worker threads (the event loop stays free; ~1 s). Other
 * work running at the same time lowers the result. Rejects with `ERR_OUT_OF_MEMORY` when the
 * buffer cannot be allocated, `ERR_INVALID_ARGUMENT` for options out of range.
 * @param options see {@link ReadBandwidthOptions}
 */
export function measureReadBandwidth(options: ReadBandwidthOptions = {}): Promise<number> {
  try {
    const o = checkObject("measureReadBandwidth options", options);
    checkKeys("measureReadBandwidth options", o, ["threads", "megabytes"]);
    const L = MACHINE_LIMITS;
    const threads = o.threads === undefined ? defaultThreads() : checkLimit("threads", o.threads, L.threads);
    const megabytes =
      o.megabytes === undefined ? BANDWIDTH_DEFAULTS.megabytes : checkLimit("megabytes", o.megabytes, L.megabytes);
    return wrapNative(loadAddon().readBandwidth({ threads, megabytes }));
  } catch (err) {
    return Promise.reject(fromNative(err));
  }
}

/** Options of {@link decodeReadBytes}. */
export interface DecodeReadOptions {
  /** Tokens already in the sequence's context (its KV cache is read once per step). Default 0. */
  context?: number;
  /** The KV cache's element type (as Model.load's kvType). Default "f16". */
  kvType?: "f16" | "f32" | "q8_0";
}

/** What {@link decodeReadBytes} resolves with, in bytes. */
export interface DecodeReadBytes {
  /** Weights one step reads: every tensor but the token embeddings (one row is looked up), which count only when the output projection is tied to them; of a mixture of experts, the used share of the expert tensors. */
  weights: number;
  /** The KV cache at `context` tokens (K and V of every layer; sliding-window layers at most their window). */
  kvCache: number;
  /** weights + kvCache. */
  total: number;
}

/**
 * The bytes one decode step of one sequence reads from memory, computed from a GGUF file's tensor
 * table (no weights are loaded). Sparse (CSR) matrices count at their file size, although the
 * engine expands the denser ones at load. Rejects with `ERR_BAD_SHAPE` when `context` > 0 and the
 * file does not give its attention shape. Read bandwidth over `total` is that sequence's decode ceiling in
 * tokens per second; batched decoding shares the weight reads between sequences.
 * @param path the GGUF model file
 * @param options see {@link DecodeReadOptions}
 */
export async function decodeReadBytes(path: string, options: DecodeReadOptions = {}): Promise<DecodeReadBytes> {
  checkPath("path", path);
  const o = checkObject("decodeReadBytes options", options);
  checkKeys("decodeReadBytes options", o, ["context", "kvType"]);
  const context = o.context === undefined ? 0 : checkLimit("context", o.context, LOAD_LIMITS.contextSize);
  const kvType = o.kvType === undefined ? "f16" : checkString("kvType", o.kvType, ["f16", "f32", "q8_0"]);
  // One read of the header: the tensor table, the architecture's keys (per-layer arrays whole, as
  // kvSplit reads them; the vocabulary's long arrays are summarized).
  const g = await readGguf(path, { maxArrayLength: 4096 });
  const m = g.metadata;
  const arch = m["general.architecture"];
  const tied = !g.tensors.some((t) => t.name === "output.weight");
  const experts = typeof arch === "string" ? Number(m[`${arch}.expert_count`] ?? 0) : 0;
  const used = typeof arch === "string" ? Number(m[`${arch}.expert_used_count`] ?? 0) : 0;
  let weights = 0;
  for (const t of g.tensors) {
    if (t.name === "token_embd.weight" && !tied) continue;
    // Expert tensors (blk.N.ffn_*_exps.weight) are read for the routed experts only.
    weights += experts > 0 && used > 0 && /_exps\b/.test(t.name) ? Math.round((t.nbytes * used) / experts) : t.nbytes;
  }
  let kvCache = 0;
  if (context > 0) {
    const split = typeof arch === "string" ? kvSplitOf(arch, m, kvType) : undefined;
    if (!split)
      throw new LlmserveError(
        "ERR_BAD_SHAPE",
        `${path} does not give its attention shape (architecture, block_count, head_count_kv, head size), so the KV cache a step reads at ${context} tokens of context is unknown; pass context 0 for the weights alone`,
      );
    kvCache = split.perToken * context + split.localPerToken * Math.min(context, split.window);
  }
  return { weights, kvCache, total: weights + kvCache };
}
