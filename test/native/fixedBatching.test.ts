/**
 * Fixed-length batching (`batching: "fixed"`) on a synthetic model: a batch's prompts are padded to
 * one length and finished members keep costing a pad token per step until the batch ends. The
 * padding is computed (stats.paddedTokens, checked against the rule by hand) but changes no
 * request's tokens.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { Model } from "../../lib/index.js";
import { synthModel } from "../helpers.js";
import { checkInvariance, collect, greedy, prompts } from "./invariance.js";

describe("fixed batching", () => {
  let synthPath: string;
  let solo: number[][];
  const opts = { threads: 2, contextSize: 512, kvCacheTokens: 4096, maxSequences: 4 };
  // Prompts of 4, 17, 30 and 43 tokens (invariance.ts prompts()).
  const maxTokens = [300, 8, 4, 2];
  let ps: number[][];

  beforeAll(async () => {
    synthPath = await synthModel("batch-q8", {
      dim: 128,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 256,
      vocabSize: 512,
      type: "q8_0",
    });
    const c = await Model.load(synthPath, opts);
    try {
      ps = prompts(4, c.info.nVocab, 21);
      solo = [];
      for (const [i, p] of ps.entries())
        solo.push((await collect(c.generate({ tokens: p }, { ...greedy, maxTokens: maxTokens[i] }))).tokens);
    } finally {
      await c.dispose();
    }
  });

  // A runs alone; B, C, D arrive once A has its first token and form the next batch when A's ends.
  async function scenario(model: Model): Promise<number[][]> {
    let firstToken!: () => void;
    const started = new Promise<void>((r) => (firstToken = r));
    const ra = collect(model.generate({ tokens: ps[0] }, { ...greedy, maxTokens: maxTokens[0] }), () => firstToken());
    await started;
    const rest = await Promise.all(
      ps.slice(1).map((p, i) => collect(model.generate({ tokens: p }, { ...greedy, maxTokens: maxTokens[i + 1] }))),
    );
    return [(await ra).tokens, ...rest.map((r) => r.tokens)];
  }

  it.each([
    // Longest prompt (43): B, C, D pad 26 + 13 + 0; then C (4 tokens) costs 4 decode pads and D
    // (2 tokens) 6 while B generates its 8. A's batch of one needs none.
    [0, 26 + 13 + 0 + 4 + 6],
    // Buckets of 16: A pads 4 to 16 (12); the batch pads to 48: 31 + 18 + 5, then 4 + 6.
    [16, 12 + 31 + 18 + 5 + 4 + 6],
  ])("fixedBucket %i: same tokens as each request alone; paddedTokens %i by hand", async (bucket, padded) => {
    const m = await Model.load(synthPath, {
      ...opts,
      batching: "fixed",
      ...(bucket ? { fixedBucket: bucket } : {}),
    });
    try {
      expect(m.info.batching).toBe("fixed");
      expect(m.info.fixedBucket).toBe(bucket);
      expect(await scenario(m)).toEqual(solo);
      const s = m.stats();
      expect(s.joinedRunning).toBe(0);
      expect(s.maxBatchSequencesSeen).toBe(3);
      expect(s.paddedTokens).toBe(padded);
      expect(s.padSkippedTokens).toBe(0);
      expect(s.blocksUsed).toBe(0);
    } finally {
      await m.dispose();
    }
  });

  it("12 concurrent requests with staggered arrivals (several padded batches, maxSequences 4) equal each alone", async () => {
    const m = await Model.load(synthPath, { ...opts, maxBatchTokens: 48, batching: "fixed", fixedBucket: 16 });
    try {
      await checkInvariance(m, prompts(12, m.info.nVocab, 5), 12);
      const s = m.stats();
      expect(s.paddedTokens).toBeGreaterThan(0);
      expect(s.maxBatchSequencesSeen).toBeGreaterThan(1);
      expect(s.joinedRunning).toBe(0);
      expect(s.blocksUsed).toBe(0);
    } finally {
      await m.dispose();
    }
  });

  it("bad batching and fixedBucket values are typed errors", async () => {
    for (const bad of [
      { batching: "padded" },
      { batching: "fixed", fixedBucket: -1 },
      { batching: "fixed", fixedBucket: 1.5 },
      { batching: "fixed", fixedBucket: 2 ** 21 },
      { fixedBucket: 64 }, // only with batching "fixed"
    ]) {
      await expect(Model.load(synthPath, bad as never)).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    }
  });
});
