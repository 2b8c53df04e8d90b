#!/usr/bin/env node
// Constrained decoding cost: aggregate decode tokens/s of `--streams` concurrent streams with and
// without a JSON schema, same process, same model, same prompts and seeds, alternating rounds.
// Goal (issue 16): the schema costs < 10% tok/s at 16 streams.
//
//   npm run bench:grammar                     # 16 streams, 128 tokens, 3 rounds of each
//   node bench/grammar/run.mjs --streams 4 --tokens 64 --rounds 1 --vocab 32000
//
// The model is synthesized once into bench/.cache/ (random weights: a 32000-token SentencePiece
// vocabulary, so the mask walks a realistic trie; a small transformer, so the mask's share of a
// step is larger than on a real model). A random model rarely closes a string, so most steps are
// inside one: almost every token allowed, the trie walked deeply (see --max-length).
// Results: bench/results/grammar-<date>.json.
import os from "node:os";
import {
  checkBuild,
  ensureModel,
  loadLlmserve,
  machine,
  machineLine,
  makeDie,
  median,
  parseCli,
  warnBusyMachine,
  writeResults,
} from "../common.mjs";

const HELP = `usage: node bench/grammar/run.mjs [--streams N] [--tokens N] [--rounds N] [--threads N] [--vocab N] [--model PATH]`;
const die = makeDie("bench:grammar");
const { values, int } = parseCli(
  {
    streams: { type: "string" },
    tokens: { type: "string" },
    rounds: { type: "string" },
    vocab: { type: "string" },
    "max-length": { type: "string" },
  },
  HELP,
  die,
);
const streams = int("streams", values.streams, 16, 1);
const tokens = int("tokens", values.tokens, 128, 1);
const rounds = int("rounds", values.rounds, 3, 1);
const vocab = int("vocab", values.vocab, 32000, 256);
// Unbounded strings (`char*`) return to the same grammar state every step (the mask cache's best
// case); --max-length N bounds them (`char{0,N}`: a new state each step, every mask walked).
const maxLength = values["max-length"] === undefined ? undefined : int("max-length", values["max-length"], 0, 1);
const str = maxLength === undefined ? { type: "string" } : { type: "string", maxLength };

checkBuild(die);
const loadAtStart = os.loadavg()[0];
const L = await loadLlmserve(die);
const threads = int("threads", values.threads, L.physicalCores(), 1);
const mach = machine(L.kernelIsa(), L.physicalCores());
console.log(machineLine(mach));
warnBusyMachine(mach, threads);

const shape = {
  arch: "llama",
  dim: 512,
  layers: 4,
  heads: 8,
  kvHeads: 4,
  ffn: 1408,
  vocabSize: vocab,
  context: 1024,
  seed: 7,
};
const { path } = await ensureModel(L.synth, {
  model: values.model,
  type: "q8_0",
  die,
  shape,
  name: `grammar-bench-v${vocab}`,
});
const model = await L.Model.load(path, { threads, contextSize: 1024, kvCacheTokens: streams * 1024 });

const SCHEMA = {
  type: "object",
  properties: {
    title: str,
    year: { type: "integer" },
    tags: { type: "array", items: str, maxItems: 8 },
    rating: { enum: ["good", "bad"] },
  },
  required: ["title", "year", "tags", "rating"],
  additionalProperties: false,
};

/** One round: `streams` concurrent requests; decode tok/s = generated tokens / wall time after the first token. */
async function round(constrained) {
  const cpu0 = process.cpuUsage();
  let generated = 0;
  let firstAt = Infinity;
  let lastAt = 0;
  const one = async (i) => {
    const opts = { maxTokens: tokens, temperature: 1, seed: 100 + i, ...(constrained ? { jsonSchema: SCHEMA } : {}) };
    for await (const c of model.generate(`Stream ${i}: describe a film as JSON.`, opts)) {
      const now = performance.now();
      if (c.tokens.length > 0) firstAt = Math.min(firstAt, now);
      generated += c.tokens.length;
      lastAt = now;
    }
  };
  await Promise.all(Array.from({ length: streams }, (_, i) => one(i)));
  const cpu = process.cpuUsage(cpu0);
  // CPU time per generated token: on a shared machine wall-clock rates swing with the neighbours'
  // load, while the work this process does per token barely does (prefill is included in both modes).
  const cpuMsPerTok = (cpu.user + cpu.system) / 1000 / Math.max(1, generated);
  return { tokPerS: (generated - streams) / ((lastAt - firstAt) / 1000), generated, cpuMsPerTok };
}

await round(false); // warm up (page cache, and the first grammar request builds the trie)
await round(true);
const free = [];
const json = [];
const freeCpu = [];
const jsonCpu = [];
const jsonTokens = [];
for (let r = 0; r < rounds; r++) {
  const a = await round(false);
  const b = await round(true);
  free.push(a.tokPerS);
  json.push(b.tokPerS);
  freeCpu.push(a.cpuMsPerTok);
  jsonCpu.push(b.cpuMsPerTok);
  jsonTokens.push(b.generated);
}
const loadAfter = os.loadavg()[0];
const { nEmbd, nLayer, nVocab } = model.info;
await model.dispose();
const f = median(free);
const j = median(json);
const cost = (1 - j / f) * 100;
const fc = median(freeCpu);
const jc = median(jsonCpu);
const cpuCost = (1 - fc / jc) * 100;
console.log(
  `model   : ${path} (dim ${nEmbd}, ${nLayer} layers, vocab ${nVocab}${values.model ? "" : ", q8_0"}), ${threads} threads`,
);
console.log(
  `decode  : ${streams} streams x ${tokens} tokens, median of ${rounds} alternating rounds, strings ${maxLength === undefined ? "unbounded" : `maxLength ${maxLength}`}`,
);
console.log(`  unconstrained : ${f.toFixed(1)} tok/s   (${free.map((x) => x.toFixed(1)).join(", ")})`);
console.log(`  JSON schema   : ${j.toFixed(1)} tok/s   (${json.map((x) => x.toFixed(1)).join(", ")})`);
console.log(`  cost          : ${cost.toFixed(1)}% (goal < 10%)`);
console.log(
  `  CPU per token : unconstrained ${fc.toFixed(2)} ms, JSON schema ${jc.toFixed(2)} ms -> cost ${cpuCost.toFixed(1)}% of tok/s at equal CPU (load average ${os.loadavg()[0].toFixed(2)} at start ${loadAtStart.toFixed(2)}; JSON rounds generated ${jsonTokens.join(", ")} tokens)`,
);
writeResults(
  "grammar",
  {
    machine: mach,
    threads,
    streams,
    tokens,
    rounds,
    vocab,
    maxLength,
    free,
    json,
    costPercent: cost,
    freeCpuMsPerToken: freeCpu,
    jsonCpuMsPerToken: jsonCpu,
    cpuCostPercent: cpuCost,
    loadAverage: [loadAtStart, loadAfter],
  },
  2,
);
