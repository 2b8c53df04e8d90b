/**
 * Embeddings: one vector per text from the model's final hidden states (after the output norm,
 * llama.cpp's "result_norm"), pooled over the text's tokens. Each text is evaluated from scratch on
 * the model's engine thread in its private evaluation cache (as Model.evaluate and perplexity
 * are), never on the event loop; texts queued together share forward passes (Engine::submit_evals,
 * packed by Executor::evaluate_batch, one pass between generation steps); pooled vectors are kept in a byte-bounded LRU keyed by the token
 * ids, so a repeated text is not recomputed.
 */
import { EMBED_DEFAULTS } from "./defaults.js";
import { LlmserveError, wrapNative } from "./errors.js";
import type { NativeModel } from "./native.js";
import { checkBool, checkKeys, checkObject, checkString } from "./validate.js";

/** How token vectors become one vector per text. */
export type Pooling = "mean" | "last" | "cls";

const POOLING_CODES: Record<Pooling, 0 | 1 | 2> = { mean: 0, last: 1, cls: 2 };

/** Options of {@link Model.embed}; every field is optional. */
export interface EmbedOptions {
  /**
   * "last" (default): the last token's hidden state, what llama.cpp returns for a generative model;
   * "mean": the average over every token (BOS included); "cls": the first token's.
   */
  pooling?: Pooling;
  /** Scale each vector to unit Euclidean length (default true, as OpenAI's and llama-server's). */
  normalize?: boolean;
  /** Stops the call: it rejects with ERR_CANCELLED (texts already on the engine finish unseen). */
  signal?: AbortSignal;
}

/** @internal Resolved embed options. */
export interface ResolvedEmbedOptions {
  pooling: Pooling;
  normalize: boolean;
  signal?: AbortSignal;
}

/** @internal */
export function resolveEmbedOptions(options: unknown): ResolvedEmbedOptions {
  const o = checkObject("embed options", options);
  checkKeys("embed options", o, ["pooling", "normalize", "signal"]);
  const pooling = (
    o.pooling === undefined ? EMBED_DEFAULTS.pooling : checkString("pooling", o.pooling, Object.keys(POOLING_CODES))
  ) as Pooling;
  const normalize = o.normalize === undefined ? EMBED_DEFAULTS.normalize : checkBool("normalize", o.normalize);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal))
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected an AbortSignal for signal");
  return { pooling, normalize, signal: o.signal as AbortSignal | undefined };
}

/**
 * @internal Model.embed's input as token sequences: a string or an array of strings and token id
 * arrays; texts tokenized (with BOS as the vocabulary asks) off the event loop when long. Errors:
 * ERR_INVALID_ARGUMENT (not an array, an empty text or token array), ERR_CONTEXT_OVERFLOW.
 */
export async function embedInputs(
  input: unknown,
  contextSize: number,
  tokenizeText: (text: string) => number[] | Promise<number[]>,
  checkIds: (ids: number[]) => number[],
): Promise<number[][]> {
  const items = typeof input === "string" ? [input] : input;
  if (!Array.isArray(items))
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      "Expected a string or an array of strings (or token id arrays) for embed input",
    );
  return Promise.all(
    items.map(async (it, i) => {
      if (typeof it === "string" && it.length === 0)
        throw new LlmserveError("ERR_INVALID_ARGUMENT", `embed input ${i} is an empty string; give it some text`);
      const t = typeof it === "string" ? await tokenizeText(it) : checkIds(it as number[]);
      if (t.length === 0) throw new LlmserveError("ERR_INVALID_ARGUMENT", `embed input ${i} has no tokens`);
      if (t.length > contextSize)
        throw new LlmserveError(
          "ERR_CONTEXT_OVERFLOW",
          `embed input ${i} has ${t.length} tokens but the context holds ${contextSize}; shorten it or load the model with a larger contextSize.`,
        );
      return t;
    }),
  );
}

/** @internal Pooled vectors by token ids and pooling; LRU within a byte budget. */
export class EmbeddingCache {
  private readonly map = new Map<string, Float32Array>(); // insertion order = LRU order
  private bytes = 0;
  hits = 0;
  misses = 0;

  constructor(readonly maxBytes: number) {}

  static key(tokens: readonly number[], o: ResolvedEmbedOptions): string {
    return `${o.pooling}${o.normalize ? "n" : "r"}:${tokens.join(",")}`;
  }

  private static size(key: string, v: Float32Array): number {
    return key.length * 2 + v.byteLength;
  }

  get(key: string): Float32Array | undefined {
    const v = this.map.get(key);
    if (!v) {
      this.misses++;
      return undefined;
    }
    this.map.delete(key);
    this.map.set(key, v);
    this.hits++;
    return v;
  }

  set(key: string, v: Float32Array): void {
    const bytes = EmbeddingCache.size(key, v);
    if (bytes > this.maxBytes || this.map.has(key)) return;
    while (this.bytes + bytes > this.maxBytes) {
      const [k, old] = this.map.entries().next().value as [string, Float32Array];
      this.map.delete(k);
      this.bytes -= EmbeddingCache.size(k, old);
    }
    this.map.set(key, v);
    this.bytes += bytes;
  }

  get entries(): number {
    return this.map.size;
  }
}

function cancelled(): LlmserveError {
  return new LlmserveError("ERR_CANCELLED", "embed was cancelled by its AbortSignal");
}

/**
 * @internal Embeds token sequences (already checked against the vocabulary and the context): cache
 * hits at once, the rest on the engine in groups of EMBED_DEFAULTS.groupTexts (queued together so
 * they share forward passes), two groups in flight. Every result is a fresh copy, so callers may
 * modify it without touching the cache.
 */
export async function embedTokens(
  native: () => NativeModel,
  cache: EmbeddingCache,
  seqs: readonly number[][],
  o: ResolvedEmbedOptions,
): Promise<Float32Array[]> {
  const out: Float32Array[] = new Array(seqs.length);
  const todo: number[] = [];
  for (let i = 0; i < seqs.length; i++) {
    const hit = cache.get(EmbeddingCache.key(seqs[i], o));
    if (hit) out[i] = hit.slice();
    else todo.push(i);
  }
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < todo.length) {
      if (o.signal?.aborted) throw cancelled();
      const group = todo.slice(next, next + EMBED_DEFAULTS.groupTexts);
      next += group.length;
      const vs = await wrapNative(
        native().embed(
          group.map((i) => Int32Array.from(seqs[i])),
          POOLING_CODES[o.pooling],
          o.normalize,
        ),
      );
      group.forEach((i, k) => {
        cache.set(EmbeddingCache.key(seqs[i], o), vs[k]);
        out[i] = vs[k].slice();
      });
    }
  };
  if (o.signal?.aborted) throw cancelled();
  const all = Promise.all(
    Array.from({ length: Math.min(2, Math.ceil(todo.length / EMBED_DEFAULTS.groupTexts)) }, worker),
  );
  if (!o.signal) {
    await all;
    return out;
  }
  // Reported through the race below, or abandoned after an abort: never an unhandled rejection.
  all.catch(() => {});
  // Reject as soon as the signal fires; the texts already on the engine finish unseen.
  let onAbort = (): void => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(cancelled());
    o.signal?.addEventListener("abort", onAbort, { once: true });
  });
  try {
    await Promise.race([all, aborted]);
  } finally {
    o.signal.removeEventListener("abort", onAbort);
  }
  return out;
}
