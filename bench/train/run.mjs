#!/usr/bin/env node
// LoRA training speed: `finetune` for a few steps (rank 8, ctx 256 by default, all seven
// projections, AdamW) on one model, median tokens/s of the steps after the first (the first
// includes page-cache warm-up), peak RSS of the process and the load average before / after.
// Models: --model PATH, or the dim-512 4-layer q8_0 synth of README's training table (default;
// synthesized once into bench/.cache). The text is generated (words from a fixed list, seeded), so
// no file is needed.
//
//   npm run bench:train                                        # the dim-512 synth, 4 steps
//   node bench/train/run.mjs --model /path/to/model.gguf --steps 2 --threads 2
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { checkBuild, ensureModel, loadLlmserve, makeDie, median, parseCli } from "../common.mjs";

const die = makeDie("bench:train");
const { values, int } = parseCli(
  {
    steps: { type: "string" },
    ctx: { type: "string" },
    rank: { type: "string" },
    "recompute-mb": { type: "string" },
    type: { type: "string" },
  },
  "usage: node bench/train/run.mjs [--model PATH] [--steps N] [--ctx N] [--rank N] [--threads N] [--recompute-mb N] [--type q8_0|q4_0|f32]",
  die,
);
checkBuild(die);
const lib = await loadLlmserve(die);
const steps = int("steps", values.steps, 4, 1);
const ctx = int("ctx", values.ctx, 256, 8);
const rank = int("rank", values.rank, 8, 1);
const threads = int("threads", values.threads, 2, 1);
const SYNTH512 = {
  arch: "llama",
  dim: 512,
  layers: 4,
  heads: 8,
  kvHeads: 4,
  ffn: 1376,
  vocabSize: 2048,
  context: 2048,
  seed: 7,
};
const { path } = await ensureModel(lib.synth, {
  model: values.model,
  type: values.type ?? "q8_0",
  die,
  shape: SYNTH512,
  name: "train-synth-dim512",
});

const dir = mkdtempSync(join(os.tmpdir(), "llmserve-bench-train-"));
const words = "the a model trains on small text and every step moves its adapter toward lower loss".split(" ");
let s = 12345;
const parts = [];
for (let i = 0; i < ctx * (steps + 2) * 2; i++) {
  s = (s * 1103515245 + 12345) % 2147483648;
  parts.push(words[s % words.length]);
}
const data = join(dir, "train.txt");
writeFileSync(data, `${parts.join(" ")}\n`);

const load0 = os.loadavg();
const tps = [];
let recomputeMb;
if (values["recompute-mb"] !== undefined) recomputeMb = int("recompute-mb", values["recompute-mb"], 1024, 0);
try {
  for await (const ev of lib.finetune({
    model: path,
    data,
    output: join(dir, "adapter.gguf"),
    rank,
    ctx,
    steps,
    threads,
    lr: 1e-4,
    ...(recomputeMb !== undefined ? { recomputeMb } : {}),
  })) {
    if (ev.type !== "step") continue;
    tps.push(ev.tokensPerSecond);
    console.log(`step ${ev.step}/${ev.steps}: loss ${ev.loss.toFixed(4)}, ${ev.tokensPerSecond.toFixed(1)} tokens/s`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const load1 = os.loadavg();
const rest = tps.length > 1 ? tps.slice(1) : tps;
console.log(
  `model ${path}\nrank ${rank}, ctx ${ctx}, ${threads} threads: median ${median(rest).toFixed(1)} tokens/s ` +
    `(steps 2..: ${rest.map((v) => v.toFixed(1)).join(", ")}), peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB, ` +
    `load average ${load0[0].toFixed(1)} -> ${load1[0].toFixed(1)}`,
);
