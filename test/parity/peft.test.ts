/**
 * PEFT adapters vs llama.cpp: llama.cpp (node-llama-cpp 3.21.1) cannot read a PEFT folder, so it runs
 * the merged model (W + scale·B·A written by test/peftFiles.ts, with lora_B's q/k rows permuted as
 * convert_hf_to_gguf.py permutes a llama's q_proj / k_proj) while llmserve runs the base with the
 * PEFT adapter. Greedy tokens must be equal, on a llama base (where the permutation matters) and a
 * qwen2 base (where it must not be applied), and differ from the base model's. Both sides use an
 * f16 KV cache.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model } from "../../lib/index.js";
import { synthModel, tmpRoot } from "../helpers.js";
import { writeMerged, writePeft } from "../peftFiles.js";
import { firstDiff, fmtTop, loadOracle } from "./oracle.js";

const SHAPE = { dim: 256, layers: 2, heads: 4, kvHeads: 2, ffn: 512, vocabSize: 512, context: 512, seed: 13 };
const CONTEXT = 256;
const GREEDY_TOKENS = 24;
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpRoot, "peft-parity-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function check(arch: "llama" | "qwen2"): Promise<void> {
  const base = await synthModel(`peft-parity-${arch}`, { ...SHAPE, arch, type: "f32" });
  const peft = join(dir, arch);
  const pairs = await writePeft(base, peft, {
    r: 8,
    alpha: 16,
    modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    rankPattern: { "layers.0.mlp.up_proj": 4 },
    dtype: (m) => (m.includes("self_attn") ? "BF16" : "F32"),
    seed: 21,
    stdB: 0.05,
  });
  const model = await Model.load(base, { threads: 1, contextSize: CONTEXT, kvType: "f16" });
  const merged = join(dir, `${arch}-merged.gguf`);
  await writeMerged(base, merged, pairs, {
    userScale: 1,
    permuteQK: arch === "llama",
    nHead: model.info.nHead,
    nHeadKv: model.info.nHeadKv,
  });
  const oracle = await loadOracle(merged, model.info.nVocab, CONTEXT);
  try {
    await model.loadAdapter("peft", peft);
    const prompt = model.tokenize("Once upon a time");
    const opts = { maxTokens: GREEDY_TOKENS, temperature: 0, stopAtEos: false } as const;
    const mine = (await model.complete({ tokens: prompt }, { ...opts, adapter: "peft" })).tokens;
    const base0 = (await model.complete({ tokens: prompt }, opts)).tokens;
    const ref = await oracle.greedy(prompt, GREEDY_TOKENS);
    const k = firstDiff(mine, ref.tokens);
    expect(
      k,
      k < 0
        ? ""
        : `${arch}: llmserve + PEFT differs from llama.cpp on the merged model at step ${k}: ${JSON.stringify(mine.slice(k, k + 4))} vs ${JSON.stringify(ref.tokens.slice(k, k + 4))}; llama.cpp's distribution there ${fmtTop(ref.dists[k])}`,
    ).toBe(-1);
    expect(mine).not.toEqual(base0);
  } finally {
    await oracle.dispose();
    await model.dispose();
  }
}

describe("PEFT adapter (llmserve) = merged model (llama.cpp), greedy", () => {
  it("llama base (q/k lora_B rows permuted)", () => check("llama"), 240_000);
  it("qwen2 base (not permuted)", () => check("qwen2"), 240_000);
});
