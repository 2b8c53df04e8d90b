#!/usr/bin/env node
// Embedding throughput: `--texts` token sequences (lengths spread over --min-len..--max-len) embedded
// three ways on the same GGUF, same process, alternating rounds, fresh texts each time (so no cache
// serves them):
//   packed   : one llmserve model.embed(texts) call (the engine packs the texts into shared passes)
//   one-by-one: llmserve, one model.embed([text]) call at a time (one pass per text)
//   llama.cpp : node-llama-cpp's embedding context, getEmbeddingFor one text at a time (how its
//               users embed; llama.cpp through node-llama-cpp, not llama-server)
// Last-token pooling, unit length (what llama.cpp returns for a generative GGUF). Prints texts/s and
// the ratios, the machine line and the load; results: bench/results/embed-<date>.json.
//
//   npm run bench:embed                       # TinyLlama-1.1B shape q4_0, 64 texts of 16..64 tokens
//   node bench/embed/run.mjs --texts 32 --rounds 1 --quick
import os from "node:os";
import { performance } from "node:perf_hooks";
import {
  checkBuild,
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

const HELP = `usage: node bench/embed/run.mjs [--texts N] [--min-len N] [--max-len N] [--rounds N] [--threads N] [--type q4_0|q8_0|f16] [--model PATH] [--quick] [--no-llamacpp]`;
const die = makeDie("bench:embed");
const { values, int } = parseCli(
  {
    texts: { type: "string" },
    "min-len": { type: "string" },
    "max-len": { type: "string" },
    rounds: { type: "string" },
    type: { type: "string" },
    "no-llamacpp": { type: "boolean" },
  },
  HELP,
  die,
);
const quick = values.quick === true;
const nTexts = int("texts", values.texts, quick ? 16 : 64, 1);
const minLen = int("min-len", values["min-len"], 16, 1);
const maxLen = int("max-len", values["max-len"], 64, minLen);
const rounds = int("rounds", values.rounds, quick ? 1 : 3, 1);
const type = values.type ?? "q4_0";
if (!["q4_0", "q8_0", "f16"].includes(type)) die(`Expected q4_0, q8_0 or f16 for --type but received ${type}`);

const build = checkBuild(die);
const loadAtStart = os.loadavg()[0];
const L = await loadLlmserve(die);
const threads = int("threads", values.threads, L.physicalCores(), 1);
const mach = machine(L.kernelIsa(), L.physicalCores());
console.log(machineLine(mach));
warnBusyMachine(mach, threads);

const { path } = await ensureModel(L.synth, { model: values.model, type, die });
const contextSize = Math.max(512, maxLen);
const model = await L.Model.load(path, { threads, contextSize, kvCacheTokens: 2048 });
const vocab = model.info.nVocab;
const bos = model.info.bos ?? 1;

let seed = 1;
/** Fresh texts: BOS and pseudo-random ids, lengths spread evenly over [minLen, maxLen]. */
function texts() {
  return Array.from({ length: nTexts }, (_, i) => {
    const n = minLen + Math.round(((maxLen - minLen) * i) / Math.max(1, nTexts - 1));
    return [bos, ...tokenIds(n - 1, vocab, seed++ * 7919)];
  });
}
const tokensOf = (ts) => ts.reduce((s, t) => s + t.length, 0);

let llama;
if (!values["no-llamacpp"]) {
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
  const lib = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
  const m = await lib.loadModel({ modelPath: path });
  const ctx = await m.createEmbeddingContext({ contextSize, threads });
  llama = { lib, m, ctx };
}

const modes = {
  packed: async (ts) => {
    await model.embed(ts, { pooling: "last" });
  },
  "one-by-one": async (ts) => {
    for (const t of ts) await model.embed([t], { pooling: "last" });
  },
  ...(llama
    ? {
        "llama.cpp": async (ts) => {
          for (const t of ts) await llama.ctx.getEmbeddingFor(t);
        },
      }
    : {}),
};

// Warm-up: one text each way (page faults, scratch growth).
for (const run of Object.values(modes)) await run(texts().slice(0, 2));

const seconds = Object.fromEntries(Object.keys(modes).map((k) => [k, []]));
const evalBefore = model.stats();
for (let r = 0; r < rounds; r++) {
  for (const [name, run] of Object.entries(modes)) {
    const ts = texts();
    const t0 = performance.now();
    await run(ts);
    seconds[name].push((performance.now() - t0) / 1000);
  }
}
const evalAfter = model.stats();
const loadAtEnd = os.loadavg()[0];

const perText = nTexts;
const tokensPerRound = tokensOf(texts());
const rate = Object.fromEntries(Object.entries(seconds).map(([k, v]) => [k, perText / median(v)]));
const rows = Object.entries(rate).map(([k, tps]) => [
  k,
  tps.toFixed(1),
  ((tps * tokensPerRound) / perText).toFixed(0),
  (tps / rate.packed).toFixed(2),
  llama ? (tps / rate["llama.cpp"]).toFixed(2) : "-",
]);
console.log(
  `\n${nTexts} texts of ${minLen}..${maxLen} tokens, ${type}, ${threads} threads, ${rounds} round(s), median; load ${loadAtStart.toFixed(2)} -> ${loadAtEnd.toFixed(2)}\n`,
);
console.log(table(rows, ["mode", "texts/s", "tokens/s", "vs packed", "vs llama.cpp"]));
const passes = evalAfter.evalPasses - evalBefore.evalPasses;
const seqs = evalAfter.evalSequences - evalBefore.evalSequences;
console.log(`\nllmserve: ${seqs} texts in ${passes} engine passes (both llmserve modes)`);

writeResults("embed", {
  machine: mach,
  build,
  model: path,
  type,
  threads,
  texts: nTexts,
  minLen,
  maxLen,
  rounds,
  loadAverage: { start: loadAtStart, end: loadAtEnd },
  seconds,
  textsPerSecond: rate,
  evalPasses: passes,
  evalSequences: seqs,
});

await model.dispose();
if (llama) {
  await llama.ctx.dispose();
  await llama.m.dispose();
  await llama.lib.dispose();
}
