// bench:compress — decode (tgN) and prefill (ppN) speed of a 2:4 pruned model in llmserve's 2:4
// sparse format against the dense model of the same value type (f16) with the same zeros, on a
// synthesized TinyLlama-1.1B-shape f16 model (random weights: speed does not depend on them).
//   npm run bench:compress                 # TinyLlama shape, pp512 + tg128, 3 rounds
//   npm run bench:compress -- --quick      # dim 512, 8 layers: pp128 + tg32, 1 round (smoke check)
//   npm run bench:compress -- --lowrank 256  # adds the FFN matrices factored at rank 256, plain and + 2% sparse
//   npm run bench:compress -- --csr          # adds unstructured 90% (dense zeros and CSR) and 95% (CSR) pruning
//   npm run bench:compress -- --q8           # adds the q8_0 model, 2:4 with its zeros in q8_0, and 2:4 sparse with q8_0 values
// (kernel-level CSR vs dense GEMV / GEMM by density: llmserve_bench_kernels --csr, bench/kernels/)
// Both files are made once (cache: bench/.cache or $LLMSERVE_BENCH_DIR). Each round measures every
// file in turn in this process (one model loaded at a time); medians are reported.
import os from "node:os";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import {
  SHAPE,
  cacheDir,
  ensureModel,
  loadLlmserve,
  machine,
  machineLine,
  makeDie,
  median,
  parseCli,
  table,
  tokenIds,
  warnBusyMachine,
  writeResults,
} from "../common.mjs";

const die = makeDie("bench:compress");
const HELP = `Usage: npm run bench:compress -- [options]
  --quick          smoke check: a small model (dim 512, 8 layers), pp128 + tg32, 1 round
  --threads <n>    compute threads (default 2)
  --trials <n>     rounds; the median is reported (default 3)
  --model <path>   an f16 llama-family GGUF instead of the synthesized TinyLlama-1.1B shape
  --lowrank <r>    also the FFN matrices factored at rank r (ranks comma-separated), plain and + 2% sparse residual
  --csr            also unstructured pruning: 90% with the zeros stored densely, 90% and 95% in the CSR format
  --q8             also the q8_0 value type: the q8_0 model, 2:4 with zeros in q8_0, 2:4 sparse with q8_0 kept values
  -h, --help       this text`;
const { values: opts, int } = parseCli(
  { trials: { type: "string" }, lowrank: { type: "string" }, csr: { type: "boolean" }, q8: { type: "boolean" } },
  HELP,
  die,
);
const ranks = opts.lowrank === undefined ? [] : String(opts.lowrank).split(",").map(Number);
if (ranks.some((r) => !Number.isInteger(r) || r < 1))
  die(`--lowrank takes ranks >= 1, e.g. 256 or 256,512; got '${opts.lowrank}'`);
const quick = Boolean(opts.quick);
const threads = int("threads", opts.threads, 2, 1);
const trials = int("trials", opts.trials, quick ? 1 : 3, 1);
const pp = quick ? 128 : 512;
const tg = quick ? 32 : 128;
const shape = quick ? { ...SHAPE, dim: 512, layers: 8, heads: 8, kvHeads: 2, ffn: 1408 } : SHAPE;

const llmserve = await loadLlmserve(die);
const mach = machine(llmserve.kernelIsa(), llmserve.physicalCores());
console.log(machineLine(mach));
warnBusyMachine(mach, threads);

const base = await ensureModel(llmserve.synth, {
  model: opts.model,
  type: "f16",
  die,
  shape,
  name: quick ? "compress-quick" : "tinyllama-1.1b-shape",
});
const files = { dense: base.path };
// The dense model each row is compared with in "x same type" (the f16 dense model unless listed).
const sameType = {};
for (const [name, format] of [
  ["2:4 dense", "dense"],
  ["2:4 sparse", "sparse"],
]) {
  const path = join(
    cacheDir(),
    `${base.path
      .split("/")
      .at(-1)
      .replace(/\.gguf$/, "")}-prune24-${format}.gguf`,
  );
  if (!existsSync(path)) {
    const t0 = performance.now();
    await llmserve.compress(base.path, path, { prune: "2:4", format, threads });
    console.log(`compressed ${name} in ${((performance.now() - t0) / 1000).toFixed(1)} s -> ${path}`);
  }
  files[name] = path;
}
const stem = base.path
  .split("/")
  .at(-1)
  .replace(/\.gguf$/, "");
if (opts.q8) {
  const q8 = join(cacheDir(), `${stem}-q8_0.gguf`);
  if (!existsSync(q8)) {
    const t0 = performance.now();
    await llmserve.quantize(base.path, q8, { type: "q8_0", threads });
    console.log(`quantized q8_0 in ${((performance.now() - t0) / 1000).toFixed(1)} s -> ${q8}`);
  }
  files["q8_0"] = q8;
  for (const [name, format] of [
    ["2:4 q8_0 dense", "dense"],
    ["2:4 q8_0 sparse", "sparse"],
  ]) {
    const path = join(cacheDir(), `${stem}-q8_0-prune24-${format}.gguf`);
    if (!existsSync(path)) {
      const t0 = performance.now();
      // sparse: q8_0 kept values (values "auto" picks them for a q8_0 input; said explicitly here).
      await llmserve.compress(q8, path, {
        prune: "2:4",
        format,
        threads,
        ...(format === "sparse" ? { values: "q8_0" } : {}),
      });
      console.log(`compressed ${name} in ${((performance.now() - t0) / 1000).toFixed(1)} s -> ${path}`);
    }
    files[name] = path;
    sameType[name] = "q8_0";
  }
}
for (const [name, ratio, format] of opts.csr
  ? [
      ["90% dense", 0.9, "dense"],
      ["90% csr", 0.9, "csr"],
      ["95% csr", 0.95, "csr"],
    ]
  : []) {
  const path = join(cacheDir(), `${stem}-prune${Math.round(ratio * 100)}-${format}.gguf`);
  if (!existsSync(path)) {
    const t0 = performance.now();
    await llmserve.compress(base.path, path, { prune: ratio, format, threads });
    console.log(`compressed ${name} in ${((performance.now() - t0) / 1000).toFixed(1)} s -> ${path}`);
  }
  files[name] = path;
}
for (const rank of ranks) {
  for (const sparse of [0, 0.02]) {
    const name = `rank ${rank} ffn${sparse ? " + 2%" : ""}`;
    const stem = base.path
      .split("/")
      .at(-1)
      .replace(/\.gguf$/, "");
    const path = join(cacheDir(), `${stem}-lowrank${rank}${sparse ? "-s2" : ""}.gguf`);
    if (!existsSync(path)) {
      const t0 = performance.now();
      await llmserve.compress(base.path, path, { lowrank: { rank }, sparse, tensors: ["ffn_*"], threads });
      console.log(`compressed ${name} in ${((performance.now() - t0) / 1000).toFixed(1)} s -> ${path}`);
    }
    files[name] = path;
  }
}

async function measure(path) {
  const model = await llmserve.Model.load(path, { threads, contextSize: pp + tg + 64 });
  try {
    const vocab = model.info.nVocab;
    await model.complete({ tokens: tokenIds(8, vocab, 1) }, { maxTokens: 2, temperature: 0, stopAtEos: false });
    let t0 = performance.now();
    await model.complete({ tokens: tokenIds(pp, vocab, 2) }, { maxTokens: 1, temperature: 0, stopAtEos: false });
    const ppMs = performance.now() - t0;
    let got = 0;
    let first = 0;
    t0 = 0;
    for await (const c of model.generate(
      { tokens: tokenIds(8, vocab, 3) },
      { maxTokens: tg + 1, temperature: 0, stopAtEos: false },
    )) {
      got += c.tokens?.length ?? 0;
      if (got >= 1 && !first) first = performance.now();
      if (got >= tg + 1) t0 = performance.now();
    }
    return { pp: (pp * 1000) / ppMs, tg: (tg * 1000) / (t0 - first) };
  } finally {
    await model.dispose();
  }
}

const runs = Object.fromEntries(Object.keys(files).map((k) => [k, { pp: [], tg: [] }]));
for (let i = 0; i < trials; ++i) {
  for (const [name, path] of Object.entries(files)) {
    const r = await measure(path);
    runs[name].pp.push(r.pp);
    runs[name].tg.push(r.tg);
    console.log(`round ${i + 1} ${name}: pp${pp} ${r.pp.toFixed(1)} tok/s, tg${tg} ${r.tg.toFixed(2)} tok/s`);
  }
}
const rows = Object.entries(files).map(([name, path]) => {
  const ppM = median(runs[name].pp);
  const tgM = median(runs[name].tg);
  const same = runs[sameType[name] ?? "dense"];
  return [
    name,
    `${(statSync(path).size / 2 ** 20).toFixed(0)} MiB`,
    ppM.toFixed(1),
    (ppM / median(same.pp)).toFixed(2),
    tgM.toFixed(2),
    (tgM / median(same.tg)).toFixed(2),
  ];
});
console.log(table(rows, ["model", "file", `pp${pp} tok/s`, "x dense same type", `tg${tg} tok/s`, "x dense same type"]));
console.log('"x dense same type": against the dense f16 model, or the dense q8_0 model for the q8_0 rows.');
console.log(
  `load average now: ${os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")} (other processes make these noisy)`,
);
writeResults("compress", { machine: mach, threads, trials, pp, tg, shape, files, runs });
