/**
 * The parity oracle: llama.cpp through node-llama-cpp (pinned devDependency, CPU prebuilt binary).
 *
 * How the numbers are obtained (checked in node-llama-cpp 3.21.1's sources, and against the
 * fixtures' *.reference.json by test/parity/fixtures.test.ts):
 * - Tokens given to `LlamaContextSequence.controlledEvaluate` / `evaluateWithMetadata` are decoded
 *   exactly as given: node-llama-cpp adds BOS only in its tokenizer and chat layers, never here.
 * - With `temperature: 0` the native sampler chain is only `llama_sampler_init_greedy()` (top-k,
 *   top-p, min-p and temperature stages are added only when temperature > 0; penalties only when
 *   asked for), which picks the argmax without changing the logits. The reported `probabilities`
 *   are then softmax(raw logits) over the whole vocabulary (AddonContext.cpp SampleToken), i.e.
 *   free of sampling effects.
 * - Teacher forcing: `controlledEvaluate` with `generateNext.probabilities` on every input token
 *   decodes the sequence as one batch with logits at every position and returns, for input
 *   position i, the next-token distribution after tokens[0..i].
 * - Greedy generation: `evaluateWithMetadata(prompt, {probabilities: true}, {temperature: 0})`
 *   decodes the prompt as one batch, then one token at a time, as node-llama-cpp always does.
 * - `LlamaModel.tokenize(text, specialTokens)` calls `common_tokenize(vocab, text,
 *   add_special = false, parse_special = specialTokens)`: it never adds BOS.
 * - Context defaults are llama.cpp's (as used for the fixtures' references): f16 KV cache and
 *   flash attention "auto", which is on for the CPU backend. `flashAttention: false` selects the
 *   classic KQ-softmax-V path, used here as a second llama.cpp configuration that measures how
 *   much llama.cpp's own results move under a benign change of attention numerics.
 */
import {
  getLlama,
  LlamaLogLevel,
  type ControlledEvaluateInputItem,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";

let llamaPromise: Promise<Llama> | undefined;

/** One llama.cpp instance per test file (vitest runs each file in its own process). */
export function oracleLlama(): Promise<Llama> {
  llamaPromise ??= getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
  return llamaPromise;
}

export interface OracleOptions {
  /** llama.cpp's flash attention (default: llama.cpp's own default, "auto" = on for CPU). */
  flashAttention?: boolean;
  /** Teacher forcing in one batched call instead of one call per token. */
  batched?: boolean;
  /** Compute threads (numerics do not depend on it; 1 avoids spin-wait contention on 2 cores). */
  threads?: number;
  /** KV cache element type for K and V (default f16, llama.cpp's default). */
  kvType?: "f16" | "q8_0";
  /** LoRA adapters applied to the context (llama.cpp's `llama_set_adapter_lora`, each with its scale). */
  lora?: { filePath: string; scale: number }[];
}

export interface OracleModel {
  model: LlamaModel;
  /** Next-token distributions (dense, indexed by token id) after every prefix tokens[0..i]. */
  teacherForce(tokens: number[], override?: OracleOptions): Promise<Float64Array[]>;
  /** Greedy continuation of `maxTokens` tokens after `prompt` (EOS does not stop it), with each step's distribution. */
  greedy(
    prompt: number[],
    maxTokens: number,
    override?: OracleOptions,
  ): Promise<{ tokens: number[]; dists: Float64Array[] }>;
  /** llama.cpp's tokenization (never adds BOS). */
  tokenize(text: string, parseSpecial?: boolean): number[];
  dispose(): Promise<void>;
}

/** node-llama-cpp's distribution (a Map over the whole vocabulary, sorted) as a dense array. */
function mapToDense(m: Map<number, number>, nVocab: number): Float64Array {
  if (m.size !== nVocab)
    throw new Error(`node-llama-cpp returned ${m.size} probabilities, expected the whole vocabulary (${nVocab})`);
  const out = new Float64Array(nVocab);
  for (const [t, p] of m) out[t] = p;
  return out;
}

/**
 * Loads a GGUF into llama.cpp on the CPU. `nVocab` is checked against every returned distribution.
 * `opts` apply to every evaluation; a call's `override` replaces them for that call.
 */
export async function loadOracle(
  modelPath: string,
  nVocab: number,
  contextSize: number,
  opts: OracleOptions = {},
): Promise<OracleModel> {
  const llama = await oracleLlama();
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const contexts = new Set<LlamaContext>();
  // node-llama-cpp 3.21.1 still turns flash attention off by default for gemma2 (GgufInsights:
  // "flashAttentionSupported" is false for it, from before llama.cpp's flash attention took the
  // logit soft-cap), while its llama.cpp runs gemma2 with flash attention on CPU ("auto") and needs
  // it for a quantized V cache. Ask for llama.cpp's own default explicitly.
  const faDefault = model.fileInfo.metadata?.general?.architecture === "gemma2" ? true : undefined;

  async function withSequence<T>(
    override: OracleOptions | undefined,
    fn: (seq: LlamaContextSequence) => Promise<T>,
  ): Promise<T> {
    const o = { ...opts, ...override };
    // A fresh context per call: nothing is carried over between evaluations.
    const context = await model.createContext({
      contextSize,
      batchSize: contextSize,
      sequences: 1,
      threads: o.threads ?? 1,
      ...((o.flashAttention ?? faDefault) === undefined ? {} : { flashAttention: o.flashAttention ?? faDefault }),
      ...(o.kvType === "q8_0" ? { experimentalKvCacheKeyType: "Q8_0", experimentalKvCacheValueType: "Q8_0" } : {}),
      ...(o.lora?.length ? { lora: { adapters: o.lora } } : {}),
    });
    contexts.add(context);
    try {
      return await fn(context.getSequence());
    } finally {
      contexts.delete(context);
      await context.dispose();
    }
  }

  return {
    model,
    teacherForce: (tokens, override) =>
      withSequence(override, async (seq) => {
        const o = { ...opts, ...override };
        const item = (t: number): ControlledEvaluateInputItem => [
          t as Token,
          { generateNext: { probabilities: true, options: { temperature: 0 } } },
        ];
        // Stepwise (default): one decode call per token, the way both engines generate; llama.cpp's
        // batched prompt path uses other attention kernels (tiled flash attention) for many queries.
        const out =
          (o.batched ?? false)
            ? await seq.controlledEvaluate(tokens.map(item))
            : await (async () => {
                const acc = [];
                for (const t of tokens) acc.push((await seq.controlledEvaluate([item(t)]))[0]);
                return acc;
              })();
        return tokens.map((_, i) => {
          const probs = out[i]?.next.probabilities;
          if (!probs) throw new Error(`node-llama-cpp returned no distribution for position ${i}`);
          return mapToDense(probs, nVocab);
        });
      }),
    greedy: (prompt, maxTokens, override) =>
      withSequence(override, async (seq) => {
        const tokens: number[] = [];
        const dists: Float64Array[] = [];
        for await (const r of seq.evaluateWithMetadata(
          prompt as Token[],
          { probabilities: true },
          { temperature: 0, yieldEogToken: true },
        )) {
          tokens.push(r.token);
          dists.push(mapToDense(r.probabilities, nVocab));
          if (tokens.length >= maxTokens) break;
        }
        return { tokens, dists };
      }),
    tokenize: (text, parseSpecial = false) => Array.from(model.tokenize(text, parseSpecial)),
    async dispose() {
      for (const c of contexts) await c.dispose();
      await model.dispose();
    },
  };
}

/** Softmax (in float64) of row `row` of an [n * nVocab] logits array. */
export function softmaxRow(logits: Float32Array, row: number, nVocab: number): Float64Array {
  const off = row * nVocab;
  let max = -Infinity;
  for (let i = 0; i < nVocab; i++) max = Math.max(max, logits[off + i]);
  const out = new Float64Array(nVocab);
  let sum = 0;
  for (let i = 0; i < nVocab; i++) sum += out[i] = Math.exp(logits[off + i] - max);
  for (let i = 0; i < nVocab; i++) out[i] /= sum;
  return out;
}

/** All rows of an [n * nVocab] logits array as distributions. */
export function softmaxRows(logits: Float32Array, nVocab: number): Float64Array[] {
  if (logits.length % nVocab !== 0)
    throw new Error(`logits length ${logits.length} is not a multiple of nVocab ${nVocab}`);
  return Array.from({ length: logits.length / nVocab }, (_, i) => softmaxRow(logits, i, nVocab));
}

export function argmax(p: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < p.length; i++) if (p[i] > p[best]) best = i;
  return best;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** The k most probable [token, probability] pairs, highest first (ties: lower id first). */
export function topK(p: ArrayLike<number>, k: number): [number, number][] {
  const idx = Array.from({ length: p.length }, (_, i) => i);
  idx.sort((x, y) => p[y] - p[x] || x - y);
  return idx.slice(0, k).map((i) => [i, p[i]]);
}

/** Compact "[id:prob, ...]" of the top k entries, for failure messages. */
export function fmtTop(p: ArrayLike<number>, k = 3): string {
  return `[${topK(p, k)
    .map(([t, q]) => `${t}:${q.toFixed(5)}`)
    .join(", ")}]`;
}

export interface DistComparison {
  /** max over positions of max over tokens |p - q| */
  maxErr: number;
  /** position of maxErr */
  at: number;
  /** positions whose argmax agrees */
  agree: number;
  n: number;
  /** positions whose argmax differs */
  disagreeAt: number[];
}

/** Compares two lists of distributions position by position. */
export function compareDists(a: Float64Array[], b: Float64Array[]): DistComparison {
  if (a.length !== b.length) throw new Error(`position count mismatch: ${a.length} vs ${b.length}`);
  let maxErr = 0,
    at = 0,
    agree = 0;
  const disagreeAt: number[] = [];
  for (let i = 0; i < a.length; i++) {
    const e = maxAbsDiff(a[i], b[i]);
    if (e > maxErr) {
      maxErr = e;
      at = i;
    }
    if (argmax(a[i]) === argmax(b[i])) agree++;
    else disagreeAt.push(i);
  }
  return { maxErr, at, agree, n: a.length, disagreeAt };
}

/**
 * Bounds on quantized (and noisy) parity, relative to llama.cpp's own spread ("floor": llama.cpp
 * with flash attention off vs on, on the same positions); synth.test.ts explains them. Shared by
 * every parity test that judges quantized weights.
 */
export const QUANT_MAX_ERR = 0.1; // loose bound on teacher-forced max |Δp|, quantized types
export const FLOOR_ERR_FACTOR = 1.5; // non-strict: error may reach 1.5 × llama.cpp's own spread
export const FLOOR_MISS_SLACK = 4; // non-strict: top-1 misses may reach max(2 × llama.cpp's own, its own + 4)

/**
 * The fewest positions (of `floor.n`) whose top-1 must agree with llama.cpp: 99% (the spec), relaxed
 * to llama.cpp's own misses times 2 (or plus FLOOR_MISS_SLACK), but never below 90%.
 */
export function minTop1Agree(floor: DistComparison): number {
  const n = floor.n;
  const miss = n - floor.agree;
  return Math.max(Math.ceil(0.9 * n), Math.min(Math.ceil(0.99 * n), n - Math.max(2 * miss, miss + FLOOR_MISS_SLACK)));
}

/** Index of the first difference between two token lists (-1 when equal). */
export function firstDiff(a: readonly number[], b: readonly number[]): number {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** Deterministic pseudo-random token sequence (mulberry32) starting with `bos`; ids 0..2 are avoided after it. */
export function pseudoRandomTokens(n: number, nVocab: number, seed: number, bos = 1): number[] {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = [bos];
  while (out.length < n) out.push(3 + Math.floor(next() * (nVocab - 3)));
  return out;
}
