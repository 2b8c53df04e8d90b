/**
 * compress(): pruning a model (lib/compress.ts over native/core/compress/prune.h).
 * - Bad arguments are typed errors before any work, and nothing is written.
 * - On the trained fixture (aidreams260K), quality measured as KL divergence against the original
 *   (evaluatePerplexity with a reference): monotone in the ratio pruned, and Wanda (calibrated on a
 *   text) beats magnitude at 50% and at 2:4.
 * - A 2:4 file in the sparse format (f16 or q8_0 kept values) loads, runs, and matches the dense
 *   2:4 file closely; `info` says llama.cpp cannot load it.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { type CompressOptions, compress, evaluatePerplexity, Model } from "../../lib/index.js";
import { fixture, haveFixtures, synthModel, tmpRoot } from "../helpers.js";
import { badArgumentTests, llmserveOnlyInfo, klToOriginal, writeTexts } from "./compressQuality.js";

const CTX = 128;
const out = (n: string) => join(tmpRoot, `compress-${n}-${process.pid}.gguf`);

describe("compress: bad arguments", () => {
  let model: string;
  beforeAll(async () => {
    // ffn 90: ffn_down rows (90) are not divisible by 4.
    model = await synthModel("compress-bad", { dim: 64, layers: 1, heads: 4, kvHeads: 2, ffn: 90, vocabSize: 320 });
  });
  badArgumentTests(() => model, out, [
    ["ratio 0", { prune: 0 }, /ratio in \(0, 1\)/],
    ["ratio 1.5", { prune: 1.5 }, /ratio in \(0, 1\)/],
    ["prune 3:4", { prune: "3:4" as "2:4" }, /"2:4"/],
    ["wanda without calib", { prune: 0.5, method: "wanda" }, /calibration text/],
    ["unknown pattern", { prune: 0.5, tensors: ["ffn_*", "attn_qq"] }, /'attn_qq' matches no layer matrix/],
    ["2:4 on rows of 90", { prune: "2:4" }, /multiple of 4.*blk\.0\.ffn_down\.weight/],
    ["sparse with a ratio", { prune: 0.5, format: "sparse" }, /2:4 pruned matrices only/],
    ["values with a ratio", { prune: 0.5, values: "q8_0" }, /values \(f16 or q8_0\).*format "sparse"/],
    ["values with dense 2:4", { prune: "2:4", format: "dense", values: "f16" }, /format "sparse"/],
    ["unknown values", { prune: "2:4", values: "q4_0" as "q8_0" }, /values/],
    ["unknown method", { prune: 0.5, method: "random" as "wanda" }, /method/],
  ]);
  it("refuses to overwrite its input; a missing calibration file is ERR_FILE_NOT_FOUND", async () => {
    await expect(compress(model, model, { prune: 0.5 })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    const path = out("bad-calib");
    await expect(
      compress(model, path, { prune: 0.5, method: "wanda", calib: join(tmpRoot, "no-such-calib.txt") }),
    ).rejects.toMatchObject({ code: "ERR_FILE_NOT_FOUND" });
    expect(existsSync(path)).toBe(false);
  });
  it("leaving the bad rows out with tensors makes 2:4 valid", async () => {
    const path = out("ok-24");
    const r = await compress(model, path, { prune: "2:4", tensors: ["attn_*", "ffn_gate", "ffn_up"], threads: 1 });
    expect(r.format).toBe("sparse");
    expect(r.tensors.map((t) => t.name)).not.toContain("blk.0.ffn_down.weight");
    for (const t of r.tensors) expect(t.zeros).toBe(t.elements / 2);
  });
});

describe.skipIf(!haveFixtures)("compress on the trained fixture (aidreams260K)", () => {
  const src = fixture("models", "aidreams260K.gguf");
  let calib = "";
  let text = "";
  beforeAll(() => {
    ({ calib, text } = writeTexts("compress"));
  });
  const kl = (path: string) => klToOriginal(src, path, text, CTX);

  it("quality is monotone in the ratio, and Wanda beats magnitude at 50% and at 2:4", async () => {
    const runs: [string, CompressOptions][] = [
      ["mag25", { prune: 0.25 }],
      ["mag50", { prune: 0.5 }],
      ["mag75", { prune: 0.75 }],
      ["wanda50", { prune: 0.5, method: "wanda", calib }],
      ["mag24", { prune: "2:4", format: "dense" }],
      ["wanda24", { prune: "2:4", format: "dense", method: "wanda", calib }],
    ];
    const q: Record<string, { kl: number; top1: number }> = {};
    for (const [name, opts] of runs) {
      const fractions: number[] = [];
      const r = await compress(src, out(name), { ...opts, threads: 2, onProgress: (f) => fractions.push(f) });
      expect(fractions.at(-1)).toBe(1);
      if (opts.method === "wanda") expect(r.calibTokens).toBeGreaterThan(50);
      q[name] = await kl(out(name));
      console.log(`[compress] ${name}: KL ${q[name].kl.toExponential(3)}, top-1 ${(100 * q[name].top1).toFixed(1)}%`);
    }
    expect(q.mag25.kl).toBeGreaterThan(0);
    expect(q.mag25.kl).toBeLessThan(q.mag50.kl);
    expect(q.mag50.kl).toBeLessThan(q.mag75.kl);
    expect(q.wanda50.kl).toBeLessThan(q.mag50.kl);
    expect(q.wanda24.kl).toBeLessThan(q.mag24.kl);
  }, 120_000);

  it("the 2:4 sparse format loads and runs like the dense 2:4 file; info says llama.cpp cannot load it", async () => {
    await compress(src, out("s24-dense"), { prune: "2:4", format: "dense", threads: 2 });
    const r = await compress(src, out("s24-sparse"), { prune: "2:4", threads: 2 });
    expect(r.format).toBe("sparse");
    expect(r.notes.join(" ")).toMatch(/llama\.cpp cannot load/);
    // f32 weights: the sparse format rounds the kept values to f16, so close, not equal.
    const dense = await Model.load(out("s24-dense"), { threads: 1, contextSize: CTX });
    const sparse = await Model.load(out("s24-sparse"), { threads: 1, contextSize: CTX });
    try {
      const r2 = await evaluatePerplexity(sparse, { file: text }, { ctx: CTX, reference: dense });
      expect(r2.reference?.kl.mean).toBeLessThan(1e-3);
      expect(r2.reference?.top1).toBeGreaterThan(0.97);
    } finally {
      await sparse.dispose();
      await dense.dispose();
    }
    const info = llmserveOnlyInfo(out("s24-sparse"));
    if (info !== undefined) expect(info).toMatch(/ffn_down\.weight\.s24v .*2:4 sparse: kept values \(f16\)/);
  }, 60_000);

  it("q8_0 kept values (int8 + a scale per 32) run close to the dense 2:4 model", async () => {
    // ffn_down's rows (172) are not a multiple of 64, which q8_0 values need.
    const tensors = ["attn_*", "ffn_gate", "ffn_up"];
    await compress(src, out("s24q-dense"), { prune: "2:4", format: "dense", tensors, threads: 2 });
    const r = await compress(src, out("s24q-q8"), { prune: "2:4", values: "q8_0", tensors, threads: 2 });
    expect(r.tensors.length).toBe(4 * 6);
    for (const t of r.tensors) expect(t.type).toBe("q8_0");
    expect(r.notes.join(" ")).toMatch(/q8_0/);
    const dense = await Model.load(out("s24q-dense"), { threads: 1, contextSize: CTX });
    const q8 = await Model.load(out("s24q-q8"), { threads: 1, contextSize: CTX });
    try {
      const r2 = await evaluatePerplexity(q8, { file: text }, { ctx: CTX, reference: dense });
      console.log(
        `[compress] 2:4 q8_0 values vs dense 2:4: KL ${r2.reference?.kl.mean.toExponential(3)}, top-1 ${r2.reference?.top1}`,
      );
      expect(r2.reference?.kl.mean).toBeLessThan(1e-3); // measured 8.6e-5
      expect(r2.reference?.top1).toBeGreaterThan(0.97);
    } finally {
      await q8.dispose();
      await dense.dispose();
    }
    const info = llmserveOnlyInfo(out("s24q-q8"));
    if (info !== undefined) expect(info).toMatch(/ffn_up\.weight\.s24v .*2:4 sparse: kept values \(q8_0\)/);
  }, 60_000);
});
