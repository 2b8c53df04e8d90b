/**
 * compress --format csr: unstructured pruning stored as CSR (lib/compress.ts over
 * native/core/compress/prune.h, run by native/core/model/csr.h).
 * - Bad arguments (csr with 2:4, ratios outside (0, 1)) are typed errors before any work, nothing written.
 * - At 90% pruning the model runs on the CSR kernels (info.csrMatrices) and matches the dense file
 *   with the same zeros (same greedy tokens; logits close: the dense f16 path rounds activations to
 *   f16, CSR keeps them f32).
 * - At 50% the matrices are expanded to dense at load (info.csrDenseMatrices): then the file runs
 *   exactly the dense file's f16 rows on the same kernels, so its tokens equal the dense file's.
 * - `llmserve info` shows each CSR matrix's density and what runs it, and that llama.cpp cannot load the file.
 * - On the trained fixture (f32 weights, rounded to f16 by CSR): 90% CSR against the dense 90% file
 *   (KL and top-1 over a text), and against the original: quality monotone in the ratio.
 */
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { type CompressOptions, compress, evaluatePerplexity, Model } from "../../lib/index.js";
import { fixture, haveFixtures, repoRoot, synthModel, tmpRoot } from "../helpers.js";

const out = (n: string) => join(tmpRoot, `csr-${n}-${process.pid}.gguf`);
const PROMPT = [1, 17, 42, 99, 5, 64, 3, 120];

async function greedy(path: string): Promise<{ tokens: number[]; csr: number; dense: number }> {
  const m = await Model.load(path, { threads: 2, contextSize: 64 });
  try {
    const r = await m.complete({ tokens: PROMPT }, { maxTokens: 12, temperature: 0, stopAtEos: false });
    return { tokens: r.tokens ?? [], csr: m.info.csrMatrices, dense: m.info.csrDenseMatrices };
  } finally {
    await m.dispose();
  }
}

describe("compress --format csr", () => {
  let model: string;
  beforeAll(async () => {
    // f16 weights: CSR stores the kept values exactly. ffn 168: rows and tiles with tails.
    model = await synthModel("csr-f16", {
      dim: 64,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 168,
      vocabSize: 320,
      type: "f16",
    });
  });

  const bad: [string, CompressOptions, RegExp][] = [
    ["csr with 2:4", { prune: "2:4", format: "csr" }, /CSR format holds unstructured pruning/],
    ["csr at ratio 0", { prune: 0, format: "csr" }, /ratio in \(0, 1\)/],
    ["csr at ratio 1", { prune: 1, format: "csr" }, /ratio in \(0, 1\)/],
    ["csr at ratio -0.1", { prune: -0.1, format: "csr" }, /ratio in \(0, 1\)/],
    ["unknown format", { prune: 0.9, format: "coo" as "csr" }, /format/],
  ];
  for (const [name, opts, message] of bad) {
    it(`${name}: ERR_INVALID_ARGUMENT, nothing written`, async () => {
      const path = out(`bad-${name.replace(/\W+/g, "-")}`);
      await expect(compress(model, path, opts)).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT", message });
      expect(existsSync(path)).toBe(false);
    });
  }

  it("90%: runs on the CSR kernels, same greedy tokens as the dense file with the same zeros, a smaller file", async () => {
    const d = await compress(model, out("d90"), { prune: 0.9, threads: 1 });
    const c = await compress(model, out("c90"), { prune: 0.9, format: "csr", threads: 1 });
    expect(c.format).toBe("csr");
    expect(c.notes.join(" ")).toMatch(/llama\.cpp cannot load/);
    expect(c.tensors).toHaveLength(14);
    for (const t of c.tensors) expect(t.type).toBe("f16");
    // Same zero count per tensor as the dense file (the same entries are pruned).
    expect(c.tensors.map((t) => t.zeros)).toEqual(d.tensors.map((t) => t.zeros));
    expect(statSync(out("c90")).size).toBeLessThan(statSync(out("d90")).size);
    const a = await greedy(out("d90"));
    const b = await greedy(out("c90"));
    expect(a.csr).toBe(0);
    expect(b).toMatchObject({ csr: 14, dense: 0 });
    expect(b.tokens).toEqual(a.tokens);
  });

  it("phi3's fused ffn_up: each row view (gate, up) is judged by its own density and runs as CSR", async () => {
    const phi3 = await synthModel("csr-phi3-f16", {
      arch: "phi3",
      dim: 64,
      layers: 2,
      heads: 4,
      kvHeads: 4,
      ffn: 168,
      vocabSize: 320,
      type: "f16",
    });
    // 85% pruned: each view holds 15% of its entries, under the 20% dense-fallback threshold (the up
    // view once counted the gate's entries too: 30%, and was expanded to dense).
    await compress(phi3, out("phi3-d85"), { prune: 0.85, tensors: ["ffn_up"], threads: 1 });
    await compress(phi3, out("phi3-c85"), { prune: 0.85, format: "csr", tensors: ["ffn_up"], threads: 1 });
    const a = await greedy(out("phi3-d85"));
    const b = await greedy(out("phi3-c85"));
    expect(b).toMatchObject({ csr: 4, dense: 0 });
    expect(b.tokens).toEqual(a.tokens);
  });

  it("50%: expanded to dense at load, and then exactly the dense file's tokens", async () => {
    await compress(model, out("d50"), { prune: 0.5, threads: 1 });
    await compress(model, out("c50"), { prune: 0.5, format: "csr", threads: 1 });
    const a = await greedy(out("d50"));
    const b = await greedy(out("c50"));
    expect(b).toMatchObject({ csr: 0, dense: 14 });
    expect(b.tokens).toEqual(a.tokens);
  });

  const cli = join(repoRoot, "dist", "cli.js");
  it.runIf(existsSync(cli))(
    "info: per-matrix density and kernel, and that llama.cpp cannot load the file",
    async () => {
      await compress(model, out("info"), { prune: 0.9, format: "csr", threads: 1 });
      const info = spawnSync(process.execPath, [cli, "info", "-m", out("info")], { encoding: "utf8" });
      expect(info.status, info.stderr).toBe(0);
      expect(info.stdout).toMatch(/llamaCpp\s+cannot load this file: it holds llmserve's CSR sparse tensors/);
      expect(info.stdout).toMatch(/csrMatrices\s+14/);
      expect(info.stdout).toMatch(/csr\s+14 matrices, density 10\.\d%\.\.1\d\.\d%; 14 run as CSR, 0 expanded/);
      expect(info.stdout).toMatch(
        /blk\.0\.ffn_down\.weight\.sp_ptr .*CSR sparse \(\d+ entries, density 10\.\d%: runs as CSR\)/,
      );
      const ok = spawnSync(
        process.execPath,
        [cli, "--quiet", "compress", model, out("cli-ok"), "--prune", "90%", "--format", "csr", "-t", "1"],
        { encoding: "utf8" },
      );
      expect(ok.status, ok.stderr).toBe(0);
      expect(ok.stdout).toMatch(/^wrote .*: pruned 14 tensors \(ratio 0\.9, magnitude\), 8\d\.\d% zeros/);
      expect(ok.stderr).toMatch(/llmserve's CSR format .*llama\.cpp CANNOT load this file/);
      const r = spawnSync(
        process.execPath,
        [cli, "--quiet", "compress", model, out("cli-bad"), "--prune", "2:4", "--format", "csr"],
        { encoding: "utf8" },
      );
      expect(r.status).toBe(1);
      expect(r.stderr).toContain("(ERR_INVALID_ARGUMENT;");
      expect(existsSync(out("cli-bad"))).toBe(false);
    },
  );
});

describe.skipIf(!haveFixtures)("compress --format csr on the trained fixture (aidreams260K)", () => {
  const src = fixture("models", "aidreams260K.gguf");
  const text = join(tmpRoot, `csr-text-${process.pid}.txt`);
  beforeAll(() => {
    const para =
      "I dream of gradients that flow like rivers through the hidden layers. Each weight trembles, then settles.\n" +
      "Numbers whisper softly. Attention drifts across the tokens, gathering meaning from the shadows of the data.\n";
    writeFileSync(text, para.repeat(8));
  });

  async function klAgainst(path: string, reference: string): Promise<{ kl: number; top1: number }> {
    const ref = await Model.load(reference, { threads: 1, contextSize: 128 });
    const m = await Model.load(path, { threads: 1, contextSize: 128 });
    try {
      const r = await evaluatePerplexity(m, { file: text }, { ctx: 128, reference: ref });
      if (!r.reference) throw new Error("no reference statistics");
      return { kl: r.reference.kl.mean, top1: r.reference.top1 };
    } finally {
      await m.dispose();
      await ref.dispose();
    }
  }

  it("90% CSR runs like the dense 90% file; quality against the original is monotone in the ratio", async () => {
    await compress(src, out("fx-d90"), { prune: 0.9, threads: 2 });
    await compress(src, out("fx-c90"), { prune: 0.9, format: "csr", threads: 2 });
    await compress(src, out("fx-c95"), { prune: 0.95, format: "csr", threads: 2 });
    const same = await klAgainst(out("fx-c90"), out("fx-d90"));
    console.log(`[csr] 90% csr vs 90% dense: KL ${same.kl.toExponential(3)}, top-1 ${(100 * same.top1).toFixed(1)}%`);
    // Only the f16 rounding of the kept values (and f32 activations) differ.
    expect(same.kl).toBeLessThan(1e-3);
    expect(same.top1).toBeGreaterThan(0.97);
    const q90 = await klAgainst(out("fx-c90"), src);
    const q95 = await klAgainst(out("fx-c95"), src);
    console.log(`[csr] vs original: 90% KL ${q90.kl.toExponential(3)}, 95% KL ${q95.kl.toExponential(3)}`);
    expect(q90.kl).toBeGreaterThan(0);
    expect(q90.kl).toBeLessThan(q95.kl);
  }, 60_000);
});
