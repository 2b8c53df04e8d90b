/**
 * Model.load({ adapterType: "q4_0" }): adapters whose rank is a multiple of 32 are kept as q4_0 A
 * and B (18 bytes per 32 values) and run llama.cpp's q4_0 adapter arithmetic; the stats count
 * those bytes; requests over two q4_0 adapters and the base, batched, give the tokens each gives
 * alone. Model.evaluate under an adapter: its logits are the adapter's (the greedy first token of
 * a generate request with it), not the base's; an unknown name is ERR_ADAPTER_NOT_FOUND; an evicted
 * adapter is reloaded for it.
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
  base = await synthModel("lora-q4", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 400 });
  for (let i = 0; i < 2; i++) {
    const p = join(tmpRoot, `lora-q4-${i}-${process.pid}.gguf`);
    await synthLora(base, p, { rank: 32, seed: 30 + i, type: "f16" });
    adapters.push(p);
  }
  m = await Model.load(base, { threads: 1, contextSize: 128, kvType: "f32", adapterType: "q4_0", maxAdapters: 1 });
});
afterAll(async () => {
  await m?.dispose();
});

const argmax = (v: Float32Array) => v.reduce((best, x, i) => (x > v[best] ? i : best), 0);

describe("adapterType: q4_0", () => {
  it("keeps A and B as q4_0: the stats count 18 bytes per 32 values", async () => {
    await m.loadAdapter("a", adapters[0]);
    // rank 32; per layer the targets q, k, v, o, gate, up, down have (n_in, n_out):
    const pairs = adapterTargetShapes(64, 32, 128);
    const perLayer = pairs.reduce((s, [i, o]) => s + ((32 * (i + o)) / 32) * 18, 0);
    expect(m.stats().adapterBytes).toBe(2 * perLayer);
    m.unloadAdapter("a");
  });

  it("requests over two q4_0 adapters and the base, batched, give the tokens each gives alone", async () => {
    await m.loadAdapter("x", adapters[0]);
    await m.loadAdapter("y", adapters[1]);
    await expectBatchedAsAlone(m, ["x", "y", undefined, "y", "x", undefined]);
    const prompt = { tokens: [1, 300, 310] };
    const viaBase = await collectTokens(m.generate(prompt, fixed));
    const viaX = await collectTokens(m.generate(prompt, { ...fixed, adapter: "x" }));
    expect(viaX).not.toEqual(viaBase);
    m.unloadAdapter("x");
    m.unloadAdapter("y");
  });
});

describe("Model.evaluate({ adapter })", () => {
  it("gives the adapter's logits, reloading an evicted adapter, and refuses an unknown name", async () => {
    await m.loadAdapter("p", adapters[0]);
    await m.loadAdapter("q", adapters[1]); // maxAdapters 1: p is evicted
    expect(m.adapters().find((a) => a.name === "p")?.resident).toBe(false);
    const tokens = [1, 305, 322, 340];
    const viaP = await m.evaluate(tokens, { adapter: "p" });
    expect(m.adapters().find((a) => a.name === "p")?.loads).toBe(2); // reloaded for the evaluation
    const viaBase = await m.evaluate(tokens);
    const viaQ = await m.evaluate(tokens, { adapter: "q" });
    expect(viaP.length).toBe(viaBase.length);
    expect(viaP).not.toEqual(viaBase);
    expect(viaP).not.toEqual(viaQ);
    for (const [name, logits] of [
      ["p", viaP],
      ["q", viaQ],
    ] as const) {
      const first = await collectTokens(m.generate({ tokens }, { ...fixed, maxTokens: 1, adapter: name }));
      expect(first).toEqual([argmax(logits)]);
    }
    // every row: the last row equals the single-row result
    const all = await m.evaluate(tokens, { adapter: "p", all: true });
    expect(all.length).toBe(tokens.length * viaP.length);
    expect(all.subarray(all.length - viaP.length)).toEqual(viaP);
    const err = await m.evaluate(tokens, { adapter: "nope" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LlmserveError);
    expect((err as LlmserveError).code).toBe("ERR_ADAPTER_NOT_FOUND");
    // nothing stays held after the evaluations (a failed one included)
    expect(m.adapters().map((a) => a.inUse)).toEqual([0, 0]);
    // an evaluation holds its adapter: unloading it right after the call does not fail it, whether
    // the adapter is resident (q, after this evaluation) ...
    await m.evaluate(tokens, { adapter: "q" });
    expect(m.adapters().find((a) => a.name === "q")?.resident).toBe(true);
    const pending = m.evaluate(tokens, { adapter: "q" });
    m.unloadAdapter("q");
    expect(await pending).toEqual(viaQ);
    // ... or being reloaded (p was evicted by q's reload above)
    expect(m.adapters().find((a) => a.name === "p")?.resident).toBe(false);
    const reloading = m.evaluate(tokens, { adapter: "p" });
    m.unloadAdapter("p");
    expect(await reloading).toEqual(viaP);
    expect(m.adapters()).toEqual([]);
    expect((await m.evaluate(tokens)).length).toBe(viaBase.length);
  });
});
