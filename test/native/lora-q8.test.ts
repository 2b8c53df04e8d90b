/**
 * Model.load({ adapterType: "q8_0" }): adapters are kept as q8_0 (A and B transposed, 34 bytes per
 * 32 values), the stats count those bytes, requests over several q8_0 adapters batched together
 * give the tokens each gives alone, and a wrong value is a typed error.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlmserveError, Model, synthLora } from "../../lib/index.js";
import { adapterTargetShapes, collectTokens, expectBatchedAsAlone, synthModel, tmpRoot } from "../helpers.js";

let m: Model;
let base: string;
const adapters: string[] = [];
const fixed = { temperature: 0, stopAtEos: false, maxTokens: 6 } as const;

beforeAll(async () => {
  base = await synthModel("lora-q8", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 400 });
  for (let i = 0; i < 2; i++) {
    const p = join(tmpRoot, `lora-q8-${i}-${process.pid}.gguf`);
    await synthLora(base, p, { rank: 4 + 4 * i, seed: 20 + i });
    adapters.push(p);
  }
  m = await Model.load(base, { threads: 1, contextSize: 128, kvType: "f32", adapterType: "q8_0" });
});
afterAll(async () => {
  await m?.dispose();
});

describe("adapterType: q8_0", () => {
  it("keeps A and B transposed as q8_0: the stats count 34 bytes per 32 values", async () => {
    await m.loadAdapter("a", adapters[0]);
    // rank 4; per layer the targets q, k, v, o, gate, up, down have (n_in, n_out):
    const pairs = adapterTargetShapes(64, 32, 128);
    const q8 = (n: number) => (n / 32) * 34;
    const perLayer = pairs.reduce((s, [i, o]) => s + 4 * (q8(i) + q8(o)), 0);
    expect(m.stats().adapterBytes).toBe(2 * perLayer);
    m.unloadAdapter("a");
  });

  it("requests over two q8_0 adapters and the base, batched, give the tokens each gives alone", async () => {
    await m.loadAdapter("x", adapters[0]);
    await m.loadAdapter("y", adapters[1]);
    await expectBatchedAsAlone(m, ["x", "y", undefined, "y", "x", undefined]);
    // the adapters change what the model says (same prompt, adapter vs base)
    const prompt = { tokens: [1, 300, 310] };
    const viaBase = await collectTokens(m.generate(prompt, fixed));
    const viaX = await collectTokens(m.generate(prompt, { ...fixed, adapter: "x" }));
    const viaY = await collectTokens(m.generate(prompt, { ...fixed, adapter: "y" }));
    expect(new Set([viaBase, viaX, viaY].map((t) => t.join(","))).size).toBeGreaterThan(1);
    m.unloadAdapter("x");
    m.unloadAdapter("y");
  });

  it("a wrong adapterType is ERR_INVALID_ARGUMENT naming the choices", async () => {
    const err = await Model.load(base, { adapterType: "q4_1" as never }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LlmserveError);
    expect((err as LlmserveError).code).toBe("ERR_INVALID_ARGUMENT");
    expect((err as LlmserveError).message).toContain("adapterType");
  });
});
