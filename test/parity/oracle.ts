/**
 * The parity oracle: llama.cpp through node-llama-cpp (pinned devDependency, CPU prebuilt binary).
 *
 * How the numbers are obtained (checked against node-llama-cpp 3.21.1 sources):
 * - Tokens passed to `LlamaContextSequence.controlledEvaluate` / `evaluateWithMetadata` are decoded
 *   exactly as given: node-llama-cpp adds BOS only in its tokenizer / chat layers, never here.
 * - With `temperature: 0` the native sampler chain is just `llama_sampler_init_greedy()` (no top-k,
 *   top-p, min-p, temperature or penalty stage, since none is configured), which picks the argmax
 *   without touching the logits; the reported `probabilities` are then softmax(raw logits) over the
 *   whole vocabulary (AddonContext.cpp SampleToken), i.e. free of sampling effects.
 * - Teacher forcing: `controlledEvaluate` with `generateNext.probabilities` on every input token
 *   decodes the whole sequence as one batch with logits at every position and yields, for input
 *   position i, the next-token distribution after tokens[0..i].
 * - `LlamaModel.tokenize(text, specialTokens)` calls `common_tokenize(vocab, text, add_special=false,
 *   parse_special=specialTokens)`: it never adds BOS.
 */
import { getLlama, type Llama, type LlamaContext, type LlamaModel } from "node-llama-cpp";

let llamaPromise: Promise<Llama> | undefined;

/** One llama.cpp instance per test file (per process: vitest forks one process per file). */
export function oracleLlama(): Promise<Llama> {
  llamaPromise ??= getLlama({ gpu: false, build: "never", logLevel: "error" as never, progressLogs: false });
  return llamaPromise;
}

export interface OracleModel {
  model: LlamaModel;
  /** Distributions (probability per token id, length nVocab) after every prefix tokens[0..i]. */
  teacherForce(tokens: number[]): Promise<Float64Array[]>;
  /** Greedy continuation of `maxTokens` tokens after `prompt` (EOS does not stop it). */
  greedy(prompt: number[], maxTokens: number): Promise<{ tokens: number[]; dists: Float64Array[] }>;
  tokenize(text: string, specialTokens?: boolean): number[];
  dispose(): Promise<void>;
}

/** node-llama-cpp's distribution (every vocabulary entry, sorted) as a dense array indexed by token id. */
function mapToDense(m: Map<number, number>): Float64Array {
  const out = new Float64Array(m.size);
  for (const [t, p] of m) out[t] = p;
  return out;
}

/** Loads a GGUF into llama.cpp (CPU, default f16 KV cache as in the fixtures' references). */
export async function loadOracle(modelPath: string, contextSize: number, opts: { flashAttention?: boolean } = {}): Promise<OracleModel> {
  const llama = await oracleLlama();
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const contexts = new Set<LlamaContext>();

  async function withSequence<T>(fn: (seq: ReturnType<LlamaContext["getSequence"]>) => Promise<T>): Promise<T> {
    // A fresh context per call: no state carried between evaluations.
    const context = await model.createContext({ contextSize, sequences: 1, batchSize: contextSize, threads: 2, flashAttention: opts.flashAttention });
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
    teacherForce: (tokens) =>
      withSequence(async (seq) => {
        const out = await seq.controlledEvaluate(
          tokens.map((t) => [t, { generateNext: { probabilities: true, token: true, options: { temperature: 0 } } }] as const),
        );
        return out.map((o, i) => {
          const probs = o?.next.probabilities;
          if (!probs) throw new Error(`node-llama-cpp returned no distribution for position ${i}`);
          return mapToDense(probs);
        });
      }),
    greedy: (prompt, maxTokens) =>
      withSequence(async (seq) => {
        const tokens: number[] = [];
        const dists: Float64Array[] = [];
        const it = seq.evaluateWithMetadata(prompt, { probabilities: true }, { temperature: 0, yieldEogToken: true });
        for await (const r of it) {
          tokens.push(r.token);
          dists.push(mapToDense(r.probabilities));
          if (tokens.length >= maxTokens) break;
        }
        return { tokens, dists };
      }),
    tokenize: (text, specialTokens = false) => Array.from(model.tokenize(text, specialTokens)),
    async dispose() {
      for (const c of contexts) await c.dispose();
      await model.dispose();
    },
  };
}

/** Softmax of raw logits (row `row` of an [n * nVocab] array) in float64. */
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

export function argmax(p: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < p.length; i++) if (p[i] > p[best]) best = i;
  return best;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** The k most probable [token, probability] pairs, highest first. */
export function topK(p: ArrayLike<number>, k: number): [number, number][] {
  const idx = Array.from({ length: p.length }, (_, i) => i);
  idx.sort((x, y) => p[y] - p[x] || x - y);
  return idx.slice(0, k).map((i) => [i, p[i]]);
}

/** Deterministic pseudo-random token sequence (mulberry32), starting with `bos`. */
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
  // Avoid the special ids 0..2 (unk/bos/eos) in the body of the sequence.
  while (out.length < n) out.push(3 + Math.floor(next() * (nVocab - 3)));
  return out;
}
