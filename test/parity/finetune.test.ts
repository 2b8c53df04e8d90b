/**
 * A LoRA adapter trained by finetune() on the trained fixture (aidreams260K) loads in llama.cpp
 * (node-llama-cpp 3.21.1, `createContext({lora: {adapters}})`) and gives the same greedy tokens
 * there as in llmserve (Model.loadAdapter + complete({adapter})), both with an f16 KV cache; the
 * adapter must also change the tokens, so an adapter ignored on both sides cannot pass. This checks
 * the exported orientation of A and B (ne [n_in, r] / [r, n_out]) and the alpha / rank scale.
 * The same for an adaptive-rank adapter (ranks differ per matrix, some matrices pruned away): both
 * engines scale each matrix by alpha / its own rank, which the export folds into A.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model } from "../../lib/index.js";
import { finetune } from "../../lib/train/index.js";
import { fixture, haveFixtures, tmpRoot } from "../helpers.js";
import { firstDiff, fmtTop, loadOracle, type OracleModel } from "./oracle.js";

const BASE = fixture("models", "aidreams260K.gguf");
const CONTEXT = 128;
const GREEDY_TOKENS = 32;

describe.skipIf(!haveFixtures)("finetuned adapter: greedy parity with llama.cpp", () => {
  let model: Model;
  let oracle: OracleModel;
  const adapter = join(tmpRoot, `finetune-parity-${process.pid}.gguf`);
  const adaptive = join(tmpRoot, `finetune-parity-ada-${process.pid}.gguf`);
  let adaRanks: Record<string, number> = {};

  beforeAll(async () => {
    const data = join(tmpRoot, `finetune-parity-${process.pid}.txt`);
    writeFileSync(data, "The blue robot sings to the quiet moon. A silver cat dreams of warm circuits. ".repeat(30));
    // alpha 8 / rank 4: scale 2, so a wrong alpha handling on either side shows up.
    for await (const _ of finetune({
      model: BASE,
      data,
      output: adapter,
      ctx: 64,
      steps: 12,
      rank: 4,
      alpha: 8,
      lr: 3e-3,
      threads: 2,
    }));
    // Adaptive rank 4 -> 2 per matrix on average: per-matrix ranks 0..4 with alpha 8.
    for await (const e of finetune({
      model: BASE,
      data,
      output: adaptive,
      ctx: 64,
      steps: 16,
      rank: 4,
      alpha: 8,
      lr: 1e-2,
      threads: 2,
      adaptiveRank: true,
      targetRank: 2,
    }))
      if (e.type === "done") adaRanks = e.ranks ?? {};
    model = await Model.load(BASE, { threads: 1, contextSize: CONTEXT, kvType: "f16" });
    await model.loadAdapter("ft", adapter);
    await model.loadAdapter("ada", adaptive);
    oracle = await loadOracle(BASE, model.info.nVocab, CONTEXT);
  }, 120_000);

  afterAll(async () => {
    await model?.dispose();
    await oracle?.dispose();
  });

  /** The adapter (loaded as `name`, file `path`) gives llama.cpp's greedy tokens, and not the base's. */
  async function expectSameGreedy(name: string, path: string): Promise<void> {
    const prompt = model.tokenize("I dream of");
    const opts = { maxTokens: GREEDY_TOKENS, temperature: 0, stopAtEos: false };
    const base = (await model.complete({ tokens: prompt }, opts)).tokens;
    const mine = (await model.complete({ tokens: prompt }, { ...opts, adapter: name })).tokens;
    const ref = await oracle.greedy(prompt, GREEDY_TOKENS, { lora: [{ filePath: path, scale: 1 }] });
    const k = firstDiff(mine, ref.tokens);
    expect(
      k,
      k < 0
        ? ""
        : `greedy differs at step ${k}: llmserve ${JSON.stringify(mine.slice(k, k + 4))} llama.cpp ${JSON.stringify(ref.tokens.slice(k, k + 4))}; llama.cpp's distribution there ${fmtTop(ref.dists[k])}`,
    ).toBe(-1);
    expect(mine).not.toEqual(base);
  }

  it("same greedy tokens with the adapter in both engines, and different from the base", async () => {
    await expectSameGreedy("ft", adapter);
  }, 120_000);

  it("an adaptive-rank adapter (per-matrix ranks): the same greedy tokens in both engines", async () => {
    const ranks = Object.values(adaRanks);
    expect(new Set(ranks).size).toBeGreaterThan(1); // the ranks really differ per matrix
    expect(ranks).toContain(0); // and some matrices have no tensors at all
    expect(ranks.reduce((a, b) => a + b, 0)).toBe(2 * ranks.length);
    await expectSameGreedy("ada", adaptive);
  }, 120_000);
});
