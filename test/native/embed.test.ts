/**
 * Model.embed (issue 16, part 3) on a small random-weight model: last-token embeddings equal
 * llama.cpp's (node-llama-cpp 3.21.1's getEmbeddingFor, which for a generative GGUF returns the
 * last token's hidden state after the output norm, unnormalized) within 1e-5 of the vector's
 * largest component (measured 2e-7 .. 1e-6 on this f32 model); the pooling modes relate as causal attention says they must (cls = the
 * embedding of BOS alone, a one-token text has mean = last = cls); normalize gives unit length in
 * the same direction; the cache counts hits and returns the same bytes; a batch equals each text
 * alone on a second engine, and the texts of one call share forward passes (evalPasses); a bulk
 * embedding job runs beside generation without changing its tokens; and bad input is a typed error. The hidden states themselves are
 * checked against the double-precision reference in native/tests/test_eval.cpp.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlmserveError, Model } from "../../lib/index.js";
import { loadOracle, type OracleModel } from "../parity/oracle.js";
import { synthModel } from "../helpers.js";

const CONTEXT = 128;
let path: string;
let model: Model;
let oracle: OracleModel;

beforeAll(async () => {
  path = await synthModel("embed-f32", {
    dim: 64,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    ffn: 128,
    vocabSize: 512,
    type: "f32",
  });
  model = await Model.load(path, { threads: 1, contextSize: CONTEXT, kvCacheTokens: 1024 });
  oracle = await loadOracle(path, model.info.nVocab, CONTEXT);
});
afterAll(async () => {
  await oracle?.dispose();
  await model?.dispose();
});

const maxAbs = (v: ArrayLike<number>) => Array.from(v).reduce((m, x) => Math.max(m, Math.abs(x)), 0);
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) =>
  Array.from(a).reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
const bytes = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);
const norm = (v: ArrayLike<number>) => Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0));

/** Token ids 3.. of a fixed pseudo-random sequence after BOS. */
function tokens(n: number, seed: number): number[] {
  const out = [model.info.bos ?? 1];
  let x = seed;
  while (out.length < n) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out.push(3 + (x % (model.info.nVocab - 3)));
  }
  return out;
}

describe("Model.embed", () => {
  it("last pooling equals llama.cpp's embedding of the same tokens", async () => {
    const ctx = await oracle.model.createEmbeddingContext({ contextSize: CONTEXT, threads: 1 });
    try {
      for (const [n, seed] of [
        [1, 1],
        [17, 2],
        [60, 3],
      ]) {
        const t = tokens(n, seed);
        // node-llama-cpp prepends BOS only when missing and appends EOS only when the vocabulary asks.
        expect(ctx.calculateInputLength(t as never)).toBe(t.length);
        const ref = (await ctx.getEmbeddingFor(t as never)).vector;
        const [ours] = await model.embed([t], { pooling: "last", normalize: false });
        expect(ours.length).toBe(model.info.nEmbd);
        expect(ref.length).toBe(model.info.nEmbd);
        expect(maxDiff(ours, ref)).toBeLessThan(1e-5 * maxAbs(ref)); // measured: 2e-7 .. 1e-6
      }
    } finally {
      await ctx.dispose();
    }
  });

  it("pooling modes: cls is BOS alone, a one-token input has mean = last = cls, mean differs from last", async () => {
    const t = tokens(24, 7);
    const [mean, last, cls] = await Promise.all(
      (["mean", "last", "cls"] as const).map(
        async (pooling) => (await model.embed([t], { pooling, normalize: false }))[0],
      ),
    );
    const [bosAlone] = await model.embed([[t[0]]], { pooling: "last", normalize: false });
    expect(bytes(cls)).toEqual(bytes(bosAlone));
    const one = await Promise.all(
      (["mean", "last", "cls"] as const).map(
        async (pooling) => (await model.embed([[t[0]]], { pooling, normalize: false }))[0],
      ),
    );
    expect(bytes(one[0])).toEqual(bytes(one[1]));
    expect(bytes(one[2])).toEqual(bytes(one[1]));
    expect(maxDiff(mean, last)).toBeGreaterThan(0.05);
    expect(maxDiff(mean, cls)).toBeGreaterThan(0.05);
  });

  it("mean pooling is the average of the prefixes' last-token embeddings", async () => {
    // Causal attention: the hidden state of token i is the last-token embedding of tokens[0..i].
    const t = tokens(12, 11);
    const [mean] = await model.embed([t], { pooling: "mean", normalize: false });
    const rows = await model.embed(
      t.map((_, i) => t.slice(0, i + 1)),
      { pooling: "last", normalize: false },
    );
    const avg = new Float64Array(mean.length);
    for (const r of rows) for (let i = 0; i < r.length; i++) avg[i] += r[i] / rows.length;
    expect(maxDiff(mean, avg)).toBeLessThan(1e-5 * maxAbs(avg) + 1e-6);
  });

  it("normalize (the default) gives unit length in the raw vector's direction", async () => {
    const t = tokens(20, 5);
    const [raw] = await model.embed([t], { normalize: false });
    const [unit] = await model.embed([t]);
    expect(norm(unit)).toBeCloseTo(1, 5);
    const n = norm(raw);
    expect(
      maxDiff(
        unit,
        Array.from(raw, (x) => x / n),
      ),
    ).toBeLessThan(1e-6);
  });

  it("a repeated text is served from the cache, same bytes, counted in stats()", async () => {
    const before = model.stats();
    const [a] = await model.embed("the cat sat on the mat", { pooling: "mean" });
    const mid = model.stats();
    expect(mid.embeddingCacheMisses).toBe(before.embeddingCacheMisses + 1);
    expect(mid.embeddingCacheHits).toBe(before.embeddingCacheHits);
    const copy = Buffer.from(bytes(a));
    a.fill(0); // callers own their arrays: the cache keeps its own
    const [b] = await model.embed(["the cat sat on the mat"], { pooling: "mean" });
    expect(model.stats().embeddingCacheHits).toBe(mid.embeddingCacheHits + 1);
    expect(bytes(b)).toEqual(copy);
    // Another pooling is another entry.
    await model.embed("the cat sat on the mat", { pooling: "last" });
    expect(model.stats().embeddingCacheMisses).toBe(mid.embeddingCacheMisses + 1);
  });

  it("a batch gives each text's solo embedding (computed on a second engine, no shared cache)", async () => {
    const texts = ["alpha beta", "gamma", "delta epsilon zeta eta", "alpha beta"];
    const other = await Model.load(path, { threads: 1, contextSize: CONTEXT, kvCacheTokens: 1024 });
    try {
      const batch = await model.embed(texts, { pooling: "mean" });
      expect(batch.length).toBe(texts.length);
      for (const [i, t] of texts.entries()) {
        const [solo] = await other.embed(t, { pooling: "mean" });
        expect(bytes(batch[i])).toEqual(bytes(solo));
      }
    } finally {
      await other.dispose();
    }
  });

  it("texts of one call share forward passes, bit-identical to each text alone", async () => {
    // Eight texts of 3..10 tokens: one block each of the 8-block evaluation cache, 52 tokens under
    // the 512-token pass budget, so the engine packs them into a single pass.
    const seqs = Array.from({ length: 8 }, (_, i) => tokens(3 + i, 900 + i));
    const before = model.stats();
    const packed = await model.embed(seqs, { pooling: "mean" });
    const mid = model.stats();
    expect(mid.evalSequences - before.evalSequences).toBe(8);
    expect(mid.evalPasses - before.evalPasses).toBe(1);
    const other = await Model.load(path, { threads: 1, contextSize: CONTEXT, kvCacheTokens: 1024 });
    try {
      for (const [i, t] of seqs.entries()) {
        const [alone] = await other.embed([t], { pooling: "mean" });
        expect(bytes(packed[i])).toEqual(bytes(alone));
      }
      expect(other.stats().evalPasses).toBe(8);
    } finally {
      await other.dispose();
    }
  });

  it("a bulk embedding job and generation share the engine, and neither changes the other's output", async () => {
    const prompt = { tokens: tokens(12, 77) };
    const greedy = { maxTokens: 24, temperature: 0, seed: 1 };
    const run = async () => {
      const out: number[] = [];
      for await (const c of model.generate(prompt, greedy)) out.push(...c.tokens);
      return out;
    };
    const solo = await run();
    const texts = Array.from({ length: 80 }, (_, i) => tokens(5 + (i % 20), 3000 + i));
    const [together, vecs] = await Promise.all([run(), model.embed(texts, { pooling: "last" })]);
    expect(together).toEqual(solo);
    expect(vecs.length).toBe(80);
    expect(vecs.every((v) => Math.abs(norm(v) - 1) < 1e-5)).toBe(true);
  });

  it("bad input is a typed error", async () => {
    const code = async (p: Promise<unknown>) => {
      const e = await p.then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(e).toBeInstanceOf(LlmserveError);
      return (e as LlmserveError).code;
    };
    expect(await code(model.embed(""))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(model.embed(["ok", ""]))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(model.embed([[]]))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(model.embed([[model.info.nVocab]]))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(model.embed([tokens(CONTEXT + 1, 3)]))).toBe("ERR_CONTEXT_OVERFLOW");
    expect(await code(model.embed("x", { pooling: "max" as never }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(model.embed("x", { normalise: true } as never))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(model.embed("x", { signal: AbortSignal.abort() }))).toBe("ERR_CANCELLED");
    // The model still works after every refusal.
    expect((await model.embed("still fine"))[0].length).toBe(model.info.nEmbd);
  });
});
