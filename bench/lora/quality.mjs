#!/usr/bin/env node
// What keeping LoRA adapters quantized costs in output quality (Model.load's adapterType).
//
//   npm run bench:lora-quality                  # rank 64, 4 adapters at 3 strengths, q8_0 and q4_0
//   npm run bench:lora-quality -- --quick       # smoke check (small model, 1 adapter per strength)
//   node bench/lora/quality.mjs --rank 32 --std-b 0.1 --adapters 2
//
// The same f16 adapter files bench:lora serves (synthLora: q, k, v, o, gate, up, down) are loaded
// three times over one base: as the file holds them (the reference), as q8_0 and as q4_0. Every
// copy scores the same token sequences (Model.evaluate with the adapter, every position), and per
// storage the benchmark prints against the reference:
//   KL      mean KL(reference || stored) over positions, in nats (llama-perplexity's measure)
//   top-1   share of positions where both put their maximum on the same token
//   rel err RMS of the stored copy's logits minus the reference's, over the RMS of what the
//           adapter changes (reference minus the base without adapter): the delta's own error
// next to how far the adapter moves the base (KL(reference || base), top-1 kept), and, as a yardstick,
// the same file at a 1% and a 10% lower user scale. Adapters are synthesized at several strengths
// (synthLora's stdB: the spread of B), since the error a storage adds grows with the delta: a real
// fine-tune moves the base less than synthLora's default. Over a quantized base, any change to the
// delta however small also flips roundings of the activations the base's int8 dots read, so at
// weak strengths every row shows that floor (the 1% row says where it lies).
// Results: bench/results/lora-quality-<date>.json; bench/README.md ("Multi-LoRA") reads them.

import {
  checkBuild,
  ensureModel,
  loadLlmserve,
  machine,
  machineLine,
  makeDie,
  mean,
  parseCli,
  table,
  tokenIds,
  warnBusyMachine,
  writeResults,
} from "../common.mjs";
import { ensureAdapters, QUICK_MODEL } from "./adapters.mjs";

const die = makeDie("bench:lora-quality");
const STORAGES = ["q8_0", "q4_0"];
// What each row compares with the reference: a copy (models[m]) of the adapter at a user scale.
const VARIANTS = [
  { name: "scale 0.99", model: "file", scale: 0.99 },
  { name: "scale 0.9", model: "file", scale: 0.9 },
  { name: "q8_0", model: "q8_0", scale: 1 },
  { name: "q4_0", model: "q4_0", scale: 1 },
];
const HELP = `usage: node bench/lora/quality.mjs [options]
  --rank <r>            adapter rank (default 64; a multiple of 32 runs the gemm passes)
  --adapters <n>        adapters per strength, averaged (default 4; --quick 1)
  --std-b <list>        synthLora stdB values, the adapters' strengths (default 0.5,0.1,0.03)
  --sequences <n>       token sequences scored (default 4; --quick 2)
  --tokens <n>          tokens per sequence, every position scored (default 128; --quick 32)
  --type <t>            base weight type when synthesized: q4_0 (default), q8_0, f16
  --model <path>        a base GGUF instead of the synthesized TinyLlama-1.1B-shape one
  --threads <n>         threads (default 2)
  --seed <n>            token seed (default 1)
  --quick               small model, fewer adapters and tokens`;

function parseOptions() {
  const { values: p, int } = parseCli(
    {
      rank: { type: "string" },
      adapters: { type: "string" },
      "std-b": { type: "string" },
      sequences: { type: "string" },
      tokens: { type: "string" },
      type: { type: "string" },
    },
    HELP,
    die,
  );
  const quick = p.quick === true;
  const stdB = (p["std-b"] ?? "0.5,0.1,0.03").split(",").map((s) => Number(s.trim()));
  if (!stdB.length || !stdB.every((x) => Number.isFinite(x) && x > 0 && x <= 100))
    die(`Expected a list of numbers in (0, 100] for --std-b but received ${JSON.stringify(p["std-b"])}`);
  const type = p.type ?? "q4_0";
  if (!["q4_0", "q8_0", "f16"].includes(type))
    die(`Expected q4_0, q8_0 or f16 for --type but received ${JSON.stringify(type)}`);
  return {
    quick,
    model: p.model,
    type,
    rank: int("rank", p.rank, 64, 1),
    adapters: int("adapters", p.adapters, quick ? 1 : 4, 1),
    stdB,
    sequences: int("sequences", p.sequences, quick ? 2 : 4, 1),
    tokens: int("tokens", p.tokens, quick ? 32 : 128, 2),
    threads: int("threads", p.threads, 2, 1),
    seed: int("seed", p.seed, 1, 0),
  };
}

/** Log-softmax of one row, in double. */
function logSoftmax(row) {
  let m = -Infinity;
  for (const v of row) m = Math.max(m, v);
  let s = 0;
  for (const v of row) s += Math.exp(v - m);
  const l = m + Math.log(s);
  return Float64Array.from(row, (v) => v - l);
}

const argmax = (v) => v.reduce((best, x, i) => (x > v[best] ? i : best), 0);

/** Per-position KL(ref || q) and top-1 agreement between two [rows * n] logit sets. */
function compare(ref, q, n) {
  const kl = [];
  let same = 0;
  for (let r = 0; r < ref.length / n; r++) {
    const a = ref.subarray(r * n, (r + 1) * n);
    const b = q.subarray(r * n, (r + 1) * n);
    const la = logSoftmax(a);
    const lb = logSoftmax(b);
    let k = 0;
    for (let i = 0; i < n; i++) k += Math.exp(la[i]) * (la[i] - lb[i]);
    kl.push(Math.max(0, k));
    if (argmax(a) === argmax(b)) same++;
  }
  return { kl, same, rows: ref.length / n };
}

/** Sum of squares of a - b. */
function sq(a, b) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return s;
}

async function main() {
  const opts = parseOptions();
  checkBuild(die);
  const llmserve = await loadLlmserve(die);
  const mach = machine(llmserve.kernelIsa(), llmserve.physicalCores());
  let model;
  try {
    model = await ensureModel(llmserve.synth, {
      model: opts.model,
      type: opts.type,
      die,
      ...(opts.quick ? QUICK_MODEL : {}),
    });
  } catch (err) {
    die(err.message);
  }
  console.log("");
  console.log(machineLine(mach));
  console.log(`model   : ${model.path}`);
  console.log(
    `run     : rank ${opts.rank}, ${opts.adapters} f16 adapter(s) per strength (stdB ${opts.stdB.join(", ")}), ` +
      `${opts.sequences} sequences x ${opts.tokens} tokens, every position scored, threads ${opts.threads}`,
  );
  warnBusyMachine(mach, opts.threads);
  const load = (adapterType) =>
    llmserve.Model.load(model.path, {
      threads: opts.threads,
      contextSize: Math.max(256, opts.tokens),
      adapterType,
      prefixCache: false,
    });
  const models = { file: await load("file") };
  for (const s of STORAGES) models[s] = await load(s);
  const vocab = models.file.info.nVocab;
  const seqs = Array.from({ length: opts.sequences }, (_, i) => tokenIds(opts.tokens, vocab, opts.seed + 101 * i));
  const baseLogits = [];
  for (const t of seqs) baseLogits.push(await models.file.evaluate(t, { all: true }));

  const rows = [];
  const results = [];
  for (const stdB of opts.stdB) {
    const acc = { base: { kl: [], same: 0, rows: 0 } };
    for (const v of VARIANTS) acc[v.name] = { kl: [], same: 0, rows: 0, errSq: 0, deltaSq: 0 };
    const paths = await ensureAdapters(llmserve.synthLora, model.path, {
      rank: opts.rank,
      n: opts.adapters,
      type: "f16",
      stdB,
    });
    for (const path of paths) {
      for (const m of Object.values(models)) await m.loadAdapter("x", path);
      for (const v of VARIANTS) if (v.scale !== 1) await models[v.model].loadAdapter(v.name, path, { scale: v.scale });
      for (let i = 0; i < seqs.length; i++) {
        const ref = await models.file.evaluate(seqs[i], { all: true, adapter: "x" });
        const c = compare(ref, baseLogits[i], vocab);
        acc.base.kl.push(...c.kl);
        acc.base.same += c.same;
        acc.base.rows += c.rows;
        const deltaSq = sq(ref, baseLogits[i]);
        for (const v of VARIANTS) {
          const q = await models[v.model].evaluate(seqs[i], { all: true, adapter: v.scale === 1 ? "x" : v.name });
          const d = compare(ref, q, vocab);
          const e = acc[v.name];
          e.kl.push(...d.kl);
          e.same += d.same;
          e.rows += d.rows;
          e.errSq += sq(q, ref);
          e.deltaSq += deltaSq;
        }
      }
      for (const m of Object.values(models)) m.unloadAdapter("x");
      for (const v of VARIANTS) if (v.scale !== 1) models[v.model].unloadAdapter(v.name);
    }
    const fmt = (x) => x.toExponential(2);
    const pct = (x) => `${(100 * x).toFixed(1)}%`;
    const r = {
      stdB,
      adapterVsBase: { kl: mean(acc.base.kl), top1: acc.base.same / acc.base.rows },
    };
    rows.push([`stdB ${stdB}`, "base, no adapter", fmt(r.adapterVsBase.kl), pct(r.adapterVsBase.top1), "-"]);
    for (const v of VARIANTS) {
      const e = acc[v.name];
      r[v.name] = { kl: mean(e.kl), top1: e.same / e.rows, relErr: Math.sqrt(e.errSq / e.deltaSq) };
      rows.push([
        "",
        v.scale === 1 ? `kept as ${v.name}` : `file at ${v.name}`,
        fmt(r[v.name].kl),
        pct(r[v.name].top1),
        pct(r[v.name].relErr),
      ]);
    }
    results.push(r);
  }
  for (const m of Object.values(models)) await m.dispose();
  console.log("");
  console.log("against the f16 adapter file (the reference), every position of every sequence:");
  console.log("");
  console.log(table(rows, ["adapters", "against", "KL (nats)", "top-1", "rel err"], 2));
  console.log("");
  console.log(
    "(base: how far the adapter moves it; file at scale s: the yardstick; rel err: RMS logit error over the RMS of what the adapter changes)",
  );
  writeResults("lora-quality", { machine: mach, options: opts, model: model.path, results }, 2);
}

await main();
