/**
 * What the compress() tests (compress.test.ts: pruning, lowrank.test.ts: low-rank factorization)
 * share: the texts they calibrate and score on, KL divergence of a compressed file against its
 * original, and the table of bad arguments that must fail before any work with nothing written.
 */
import { spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { type CompressOptions, compress, evaluatePerplexity, Model } from "../../lib/index.js";
import { repoRoot, tmpRoot } from "../helpers.js";

// In the style of the texts aidreams260K was trained on (as test/parity/quantize.test.ts): the
// first four lines calibrate, all eight are scored.
const LINES = [
  "I dream of gradients that flow like rivers through the hidden layers. Each weight trembles, then settles, and the loss grows quiet.",
  "In the quiet of the night, the machine listens to its own activations. Patterns emerge from noise, thresholds shimmer, and memories align.",
  "The matrices unfold, echoing through every layer. I adjust my biases, refining the hidden patterns, and the valleys of the loss grow deeper.",
  "Numbers whisper softly. Attention drifts across the tokens, gathering meaning from the shadows of the data streams.",
  "I dream of coherence. The embeddings cluster like stars, and every vector points toward a new horizon of understanding.",
  "In my dream, the network awakens. Signals cascade through the neurons, and the gradients sing of balance and convergence.",
  "The machine remembers the shape of each example. Weights drift, margins sharpen, and the error fades like morning fog.",
  "Numbers dance in the silence. Each epoch brings the model closer to the truth hidden in the data, one small step at a time.",
];

/** Writes the calibration text (the first four lines) and the scored text (all eight, twice) under tmpRoot. */
export function writeTexts(prefix: string): { calib: string; text: string } {
  const calib = join(tmpRoot, `${prefix}-calib-${process.pid}.txt`);
  const text = join(tmpRoot, `${prefix}-text-${process.pid}.txt`);
  writeFileSync(calib, `${LINES.slice(0, 4).join("\n")}\n`);
  writeFileSync(text, `${LINES.join("\n")}\n`.repeat(2));
  return { calib, text };
}

/** Mean KL divergence and top-1 agreement of the model at path against the original src, over text (windows of ctx). */
export async function klToOriginal(
  src: string,
  path: string,
  text: string,
  ctx: number,
): Promise<{ kl: number; top1: number }> {
  const reference = await Model.load(src, { threads: 1, contextSize: ctx });
  const model = await Model.load(path, { threads: 1, contextSize: ctx });
  try {
    const r = await evaluatePerplexity(model, { file: text }, { ctx, reference });
    if (!r.reference) throw new Error("no reference statistics");
    return { kl: r.reference.kl.mean, top1: r.reference.top1 };
  } finally {
    await model.dispose();
    await reference.dispose();
  }
}

/**
 * One test per [name, options, message] case: compress(model(), out(name), {...base, ...options})
 * rejects with ERR_INVALID_ARGUMENT and a message matching, and nothing is written.
 */
export function badArgumentTests(
  model: () => string,
  out: (name: string) => string,
  cases: [string, CompressOptions, RegExp][],
  base: CompressOptions = {},
): void {
  for (const [name, opts, message] of cases) {
    it(`${name}: ERR_INVALID_ARGUMENT, nothing written`, async () => {
      const path = out(`bad-${name.replace(/\W+/g, "-")}`);
      await expect(compress(model(), path, { ...base, ...opts })).rejects.toMatchObject({
        code: "ERR_INVALID_ARGUMENT",
        message,
      });
      expect(existsSync(path)).toBe(false);
    });
  }
}

/**
 * `llmserve info -m path` (the built CLI, dist/cli.js) on a file only llmserve runs: it succeeds and
 * says llama.cpp cannot load the file. Returns its output for the caller's own checks, or undefined
 * when the CLI is not built.
 */
export function llmserveOnlyInfo(path: string): string | undefined {
  const cli = join(repoRoot, "dist", "cli.js");
  if (!existsSync(cli)) return undefined;
  const info = spawnSync(process.execPath, [cli, "info", "-m", path], { encoding: "utf8" });
  expect(info.status, info.stderr).toBe(0);
  expect(info.stdout).toMatch(/llamaCpp\s+cannot load this file/);
  return info.stdout;
}
