#!/usr/bin/env node
// Continuous-batching benchmarks: llmserve vs node-llama-cpp (llama.cpp) on the same GGUF file.
//
//   npm run bench:serving                    # decode at 1..32 streams + a 64-request serving run
//   npm run bench:serving -- --quick         # smoke check (~2 minutes on 2 cores)
//   node bench/serving/run.mjs --only serving --requests 32 --rate 0.25
//   node bench/serving/run.mjs --quick --only serving,llmserve --rates 1,2,4,8   # the trade-off curve
//
// 1. decode : aggregate decode tok/s with N concurrent streams (N = 1, 4, 8, 16, 32), both engines.
// 2. serving: Poisson arrivals, a shared system prompt + a random user prompt, random output
//             lengths; throughput, TTFT and inter-token latency for llmserve continuous, llmserve
//             static, llmserve fixed (fixed-length batching: padded prompts, batch run to
//             completion), and node-llama-cpp (as many sequences as fit the same KV budget; FCFS).
//             --rates a,b,c repeats it per arrival rate and draws the trade-off curve
//             (throughput vs TTFT p50 and ITL p99 per mode) as bench/results/serving-curve-*.svg.
// 3. KV     : llmserve's stats().kvWaste sampled during its serving runs, prefix-cache hit rate.
//
// Every engine configuration runs in a fresh child process (child.mjs) after the model file is
// read once (warm page cache). Results go to bench/results/serving-<date>.json.
// See bench/README.md ("Serving") for how to read the numbers.

import { mkdirSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { curveSvg } from "./curve.mjs";
import { decodeMetrics, decodeSummary, kvMetrics, servingMetrics } from "./metrics.mjs";
import {
  CONTENDED_CORES,
  applyTier,
  checkLlamaCppVariant,
  checkBuild,
  cpuBusy,
  ensureModel,
  fmtCores,
  loadLlmserve,
  machine,
  machineLine,
  makeDie,
  median,
  parseCli,
  readPkgVersion,
  repoRoot,
  rng,
  runChild,
  table,
  tokenIds,
  waitIdle,
  warmPageCache,
  warnBusyMachine,
  writeResults,
} from "../common.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const MODEL_TYPE = "q4_0"; // the model bench/e2e synthesizes by default (same cache file)
const LABEL = {
  llmserve: "llmserve",
  llamacpp: "node-llama-cpp",
  continuous: "llmserve continuous",
  static: "llmserve static",
  dynamic: "llmserve dynamic",
  fixed: "llmserve fixed",
};

const HELP = `Usage: node bench/serving/run.mjs [options]   (or: npm run bench:serving -- [options])

  --quick               smoke check (~2 min on 2 cores): streams 1,4,8 x 16 tokens; 8 requests,
                        64-token system prompt, 16-64 user tokens, 8-16 output tokens, rate 4/s
  --only <list>         comma-separated parts and/or engines: decode, serving, llmserve, llamacpp,
                        continuous, static, fixed, dynamic (e.g. --only serving,llmserve)
  --target-step-ms <ms> adds the "dynamic" serving mode: continuous batching with targetStepMs
                        (prompt tokens per step from the measured step cost; compare ITL p99)
  --fixed-bucket <n>    the "fixed" mode pads prompts to multiples of n tokens (default 0: to
                        each batch's longest prompt)
  --rates <a,b,...>     serving at each arrival rate (requests/s) in turn: the batching trade-off
                        curve, written as an SVG next to the JSON results
  --threads <n>         compute threads for both engines (default 2)
  --rate <r>            serving arrival rate in requests/s (Poisson; "inf" = all at t=0; default 0.5)
  --requests <n>        serving requests (default 64)
  --concurrency <list>  decode stream counts (default 1,4,8,16,32)
  --rounds <n>          decode: run both engines n times, alternating which goes first; the table
                        gives each engine's median tok/s and the median of the per-round ratios (the
                        two runs of a round are back to back, so a round's ratio is the least
                        exposed to the host's speed drifting; default 1)
  --tg <n>              decode tokens per stream (default 64)
  --system <n>          shared system-prompt tokens (default 256)
  --prompt <a-b>        user-prompt tokens after the system prompt, uniform (default 32-512)
  --output <a-b>        serving output tokens per request, uniform (default 64-128)
  --kv-tokens <n>       KV budget in tokens: llmserve's kvCacheTokens; node-llama-cpp gets
                        floor(n / per-sequence context) sequences (default 8192)
  --max-batch-tokens <n> llmserve maxBatchTokens and node-llama-cpp batchSize (default 512)
  --max-sequences <n>   llmserve maxSequences in the serving run (default 64)
  --model <path>        any GGUF instead of the synthesized TinyLlama-1.1B-shape q4_0
  --seed <n>            seed of prompts, lengths and arrivals (default 1234)
  --tier <t>            best (default): each engine's best kernels for this CPU; avx2: llmserve with
                        LLMSERVE_KERNELS=avx2 and llama.cpp with only its AVX2 "haswell" CPU backend;
                        avxvnni: LLMSERVE_KERNELS=avxvnni (AVX2 + AVX-VNNI) and its "alderlake" backend
  --timeout <s>         per-child limit in seconds (default 1800)
  --wait-idle           before each child, wait (up to 5 min) until the CPUs are < 15% busy
  --verbose             show the children's stderr
  -h, --help            this text`;

const die = makeDie("bench:serving");

function parseOptions() {
  const { values: p, int } = parseCli(
    // plus the options every benchmark takes (see parseCli)
    {
      only: { type: "string" },
      rate: { type: "string" },
      requests: { type: "string" },
      concurrency: { type: "string" },
      tg: { type: "string" },
      system: { type: "string" },
      prompt: { type: "string" },
      output: { type: "string" },
      "kv-tokens": { type: "string" },
      "max-batch-tokens": { type: "string" },
      "max-sequences": { type: "string" },
      "sample-ms": { type: "string" },
      "target-step-ms": { type: "string" },
      "fixed-bucket": { type: "string" },
      rates: { type: "string" },
      rounds: { type: "string" },
    },
    HELP,
    die,
  );
  const quick = p.quick === true;
  const range = (name, v, def, min) => {
    if (v === undefined) return def;
    const m = /^(\d+)(?:-(\d+))?$/.exec(v);
    const r = m ? [Number(m[1]), Number(m[2] ?? m[1])] : undefined;
    if (!r || r[0] < min || r[1] < r[0])
      die(`Expected a range like 32-512 (>= ${min}) for --${name} but received ${JSON.stringify(v)}`);
    return r;
  };
  let rate = quick ? 4 : 0.5;
  if (p.rate !== undefined) {
    rate = p.rate === "inf" ? Infinity : Number(p.rate);
    if (!(rate > 0)) die(`Expected a positive number or "inf" for --rate but received ${JSON.stringify(p.rate)}`);
  }
  const ONLY = ["decode", "serving", "llmserve", "llamacpp", "continuous", "static", "fixed", "dynamic"];
  const only = (p.only ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  for (const o of only)
    if (!ONLY.includes(o)) die(`Expected items of ${ONLY.join(", ")} for --only but received ${JSON.stringify(o)}`);
  const parts = only.filter((o) => o === "decode" || o === "serving");
  const engines = only.filter((o) => o === "llmserve" || o === "llamacpp");
  const modes = only.filter((o) => ["continuous", "static", "fixed", "dynamic"].includes(o));
  let rates;
  if (p.rates !== undefined) {
    rates = p.rates.split(",").map((x) => (x.trim() === "inf" ? Infinity : Number(x.trim())));
    if (!rates.length || !rates.every((r) => r > 0))
      die(`Expected a list of positive rates (or "inf") for --rates but received ${JSON.stringify(p.rates)}`);
  }
  let targetStepMs;
  if (p["target-step-ms"] !== undefined) {
    targetStepMs = Number(p["target-step-ms"]);
    if (!(targetStepMs > 0 && targetStepMs <= 60000))
      die(`Expected a number in (0, 60000] for --target-step-ms but received ${JSON.stringify(p["target-step-ms"])}`);
  }
  if (modes.includes("dynamic") && targetStepMs === undefined) die("the dynamic mode needs --target-step-ms <ms>");
  if (modes.length && !engines.includes("llmserve")) engines.push("llmserve");
  let concurrency = quick ? [1, 4, 8] : [1, 4, 8, 16, 32];
  if (p.concurrency !== undefined) {
    concurrency = p.concurrency.split(",").map((s) => Number(s.trim()));
    if (!concurrency.every((n) => Number.isInteger(n) && n >= 1))
      die(`Expected a list of positive integers for --concurrency but received ${JSON.stringify(p.concurrency)}`);
  }
  const opts = {
    quick,
    parts: parts.length ? parts : ["decode", "serving"],
    engines: engines.length ? engines : ["llmserve", "llamacpp"],
    modes: modes.length ? modes : ["continuous", "static", "fixed", ...(targetStepMs ? ["dynamic"] : [])],
    fixedBucket: int("fixed-bucket", p["fixed-bucket"], 0, 0),
    rates,
    targetStepMs,
    threads: int("threads", p.threads, 2, 1),
    rate,
    requests: int("requests", p.requests, quick ? 8 : 64, 1),
    concurrency,
    tg: int("tg", p.tg, quick ? 16 : 64, 2),
    rounds: int("rounds", p.rounds, 1, 1),
    decodePrompt: 16,
    system: int("system", p.system, quick ? 64 : 256, 0),
    prompt: range("prompt", p.prompt, quick ? [16, 64] : [32, 512], 1),
    output: range("output", p.output, quick ? [8, 16] : [64, 128], 1),
    kvTokens: int("kv-tokens", p["kv-tokens"], quick ? 2048 : 8192, 16),
    maxBatchTokens: int("max-batch-tokens", p["max-batch-tokens"], 512, 1),
    maxSequences: int("max-sequences", p["max-sequences"], 64, 1),
    model: p.model,
    seed: int("seed", p.seed, 1234, 0),
    timeoutS: int("timeout", p.timeout, 1800, 1),
    waitIdle: p["wait-idle"] === true,
    verbose: p.verbose === true,
    tier: p.tier ?? "best",
    sampleMs: int("sample-ms", p["sample-ms"], 250, 10),
  };
  return opts;
}

/** The serving workload: identical for every engine (token ids, lengths, arrival offsets). */
function makeWorkload(opts, vocab, modelContext) {
  const r = rng(opts.seed + 17);
  const uni = ([a, b]) => a + Math.floor(r() * (b - a + 1));
  const system = tokenIds(opts.system, vocab, opts.seed + 100);
  const requests = [];
  let t = 0;
  for (let i = 0; i < opts.requests; i++) {
    if (i > 0 && Number.isFinite(opts.rate)) t += (-Math.log(1 - r()) / opts.rate) * 1000;
    const userLen = uni(opts.prompt);
    const outLen = uni(opts.output);
    requests.push({ i, arrivalMs: t, user: tokenIds(userLen, vocab, opts.seed + 1000 + i), outLen });
  }
  const maxLen = opts.system + opts.prompt[1] + opts.output[1];
  let contextPerSeq = Math.ceil(maxLen / 256) * 256;
  if (modelContext) contextPerSeq = Math.min(contextPerSeq, Math.max(modelContext, maxLen));
  return { system, requests, contextPerSeq, maxLen, rate: Number.isFinite(opts.rate) ? opts.rate : "inf" };
}

function decodeLevels(opts, vocab) {
  const seen = new Set();
  return opts.concurrency.map((n) => ({
    n,
    prompts: Array.from({ length: n }, (_, j) => {
      // Distinct first tokens across every prompt of the run: no prefix-cache reuse in this test.
      let s = opts.seed + 10_000 * n + j;
      let p = tokenIds(opts.decodePrompt, vocab, s);
      while (seen.has(p[0])) p = tokenIds(opts.decodePrompt, vocab, (s += 7919));
      seen.add(p[0]);
      return p;
    }),
  }));
}

// ---------------------------------------------------------------- main

const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "n/a");
const pct = (x) => (Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : "n/a");

async function main() {
  const opts = parseOptions();
  const build = checkBuild(die);
  applyTier(opts.tier, die);
  const llmserve = await loadLlmserve(die);
  const mach = machine(llmserve.kernelIsa(), llmserve.physicalCores());
  let model;
  try {
    model = await ensureModel(llmserve.synth, { model: opts.model, type: MODEL_TYPE, die });
  } catch (err) {
    die(err.message);
  }
  const gguf = await llmserve.readGguf(model.path, { maxArrayLength: 16 });
  const vocab = gguf.tensors.find((t) => t.name === "token_embd.weight")?.shape?.[1] ?? 32000;
  const ctxKey = Object.keys(gguf.metadata).find((k) => k.endsWith(".context_length"));
  const modelContext = ctxKey ? Number(gguf.metadata[ctxKey]) : undefined;
  const fileMiB = statSync(model.path).size / 2 ** 20;
  const workload = makeWorkload(opts, vocab, modelContext);
  const levels = decodeLevels(opts, vocab);
  const rateText = opts.rates
    ? `rates ${opts.rates.join(", ")}/s Poisson (one run each)`
    : Number.isFinite(opts.rate)
      ? `${opts.rate}/s Poisson`
      : "all at t=0";

  console.log("");
  console.log(machineLine(mach));
  console.log(`model   : ${model.path} (${fileMiB.toFixed(0)} MiB; vocab ${vocab})`);
  console.log(
    `run     : tier ${opts.tier}, threads ${opts.threads}, parts ${opts.parts.join(" + ")}, engines ${opts.engines.map((e) => LABEL[e]).join(" + ")}${opts.engines.includes("llmserve") && opts.parts.includes("serving") ? ` (serving: ${opts.modes.join(" + ")})` : ""}`,
  );
  if (opts.parts.includes("decode"))
    console.log(
      `decode  : streams ${opts.concurrency.join(", ")}; each a distinct ${opts.decodePrompt}-token prompt + ${opts.tg} greedy tokens, no EOS stop`,
    );
  if (opts.parts.includes("serving"))
    console.log(
      `serving : ${opts.requests} requests, ${rateText}, prompt = ${opts.system}-token shared system prompt + ${opts.prompt.join("-")} user tokens, ` +
        `output ${opts.output.join("-")} tokens; KV budget ${opts.kvTokens} tokens (node-llama-cpp: ${Math.max(1, Math.min(opts.requests, Math.floor(opts.kvTokens / workload.contextPerSeq)))} sequences x ${workload.contextPerSeq}), maxBatchTokens ${opts.maxBatchTokens}`,
    );
  warnBusyMachine(mach, opts.threads);
  if (opts.system + opts.prompt[1] + opts.output[1] > (modelContext ?? Infinity))
    die(`the longest request (${workload.maxLen} tokens) exceeds the model's context (${modelContext})`);
  console.log("");

  const base = {
    modelPath: model.path,
    threads: opts.threads,
    vocab,
    seed: opts.seed,
    maxBatchTokens: opts.maxBatchTokens,
  };
  const runs = [];
  let llamaVariant;
  let contended = false;
  const launch = async (label, job) => {
    await warmPageCache(model.path);
    process.stdout.write(`${label.padEnd(34)} ... `);
    const busyBefore = opts.waitIdle ? await waitIdle() : await cpuBusy(500);
    let addonBuilt;
    try {
      addonBuilt = statSync(join(repoRoot, build.addon)).mtime.toISOString(); // the build may change under a long run
    } catch {
      /* removed meanwhile */
    }
    const t0 = Date.now();
    const msg = await runChild(join(here, "child.mjs"), { ...base, ...job }, opts);
    const childS = (Date.now() - t0) / 1000;
    const run = {
      label,
      job: {
        task: job.task,
        engine: job.engine,
        batching: job.batching,
        targetStepMs: job.targetStepMs,
        fixedBucket: job.fixedBucket,
        rate: job.workload?.rate,
      },
      addonBuilt,
      cpuBusyBefore: busyBefore,
      loadAvg1m: os.loadavg()[0],
      childWallS: childS,
      ...msg,
    };
    runs.push(run);
    const variant = msg.ok ? msg.result?.details?.cpuVariant : undefined;
    if (variant) {
      checkLlamaCppVariant(opts.tier, variant, die);
      llamaVariant = variant;
    }
    if (!msg.ok) {
      console.log("FAILED");
      console.error(`  ${msg.error.replace(/\n/g, "\n  ")}`);
    }
    return run;
  };

  // 1. Decode at N concurrent streams, --rounds times; each round alternates which engine goes first.
  const decodeRounds = [];
  if (opts.parts.includes("decode")) {
    for (let r = 0; r < opts.rounds; r++) {
      const order = r % 2 === 0 ? opts.engines : [...opts.engines].reverse();
      const round = {};
      for (const engine of order) {
        const tag = opts.rounds > 1 ? ` (round ${r + 1}/${opts.rounds})` : "";
        const run = await launch(`decode ${LABEL[engine]}${tag}`, {
          task: "decode",
          engine,
          concurrency: opts.concurrency,
          levels,
          tg: opts.tg,
          decodePrompt: opts.decodePrompt,
        });
        if (!run.ok) continue;
        round[engine] = run.result.levels.map((l) => decodeMetrics(l, opts.tg));
        const worst = Math.max(...round[engine].map((m) => m.otherCores ?? 0));
        if (worst > CONTENDED_CORES) contended = true;
        console.log(
          `${round[engine].map((m) => `${m.n}: ${f(m.tps, 1)}`).join(", ")} tok/s  (others up to ${fmtCores(worst)} cores, load ${(run.result.loadMs / 1000).toFixed(1)} s, child ${run.childWallS.toFixed(0)} s)`,
        );
      }
      decodeRounds.push(round);
    }
  }
  const decode = decodeSummary(decodeRounds, opts.concurrency);

  // Tables.
  const ratios = { decode: {}, serving: {} };
  if (Object.keys(decode).length) {
    const rounds = decodeRounds.length > 1 ? `; medians of ${decodeRounds.length} rounds` : "";
    console.log(
      `\nDecode: aggregate tok/s with N concurrent streams (window: all streams past their first token${rounds})\n`,
    );
    const rows = opts.concurrency.map((n, i) => {
      const a = decode.llmserve?.[i];
      const b = decode.llamacpp?.[i];
      const ratio = a && b ? median(a.roundRatios) : NaN;
      if (Number.isFinite(ratio)) ratios.decode[n] = ratio;
      const others = [a?.otherCores, b?.otherCores]
        .filter((x) => x !== undefined)
        .map(fmtCores)
        .join(" / ");
      return [
        n,
        a ? f(a.tps) : "-",
        b ? f(b.tps) : "-",
        Number.isFinite(ratio) ? `${f(ratio)}x` : "-",
        ...(decodeRounds.length > 1 ? [a?.roundRatios.length ? a.roundRatios.map((x) => f(x)).join(" ") : "-"] : []),
        a ? f(a.stats.tokensPerStep, 1) : "-",
        a ? f(a.stats.sequencesPerStep, 1) : "-",
        others,
      ];
    });
    console.log(
      table(rows, [
        "streams",
        "llmserve tok/s",
        "node-llama-cpp tok/s",
        "llmserve / llama.cpp",
        ...(decodeRounds.length > 1 ? ["per round"] : []),
        "llmserve tok/step",
        "seqs/step",
        "others (cores)",
      ]),
    );
  }

  // 2 + 3. Serving, at each rate of --rates (the trade-off curve) or at --rate.
  let serving = {};
  let kv = {};
  const perRate = [];
  const curve = [];
  for (const rate of opts.parts.includes("serving") ? (opts.rates ?? [opts.rate]) : []) {
    const workload = makeWorkload({ ...opts, rate }, vocab, modelContext);
    const rateText = Number.isFinite(rate) ? `${rate}/s Poisson` : "all at t=0";
    serving = {};
    kv = {};
    ratios.serving = {};
    if (opts.rates) console.log(`\nserving at ${rateText}`);
    const configs = [];
    if (opts.engines.includes("llmserve"))
      for (const m of opts.modes)
        configs.push({
          key: m,
          engine: "llmserve",
          batching: m === "dynamic" ? "continuous" : m,
          targetStepMs: m === "dynamic" ? opts.targetStepMs : 0,
          fixedBucket: m === "fixed" ? opts.fixedBucket : 0,
        });
    if (opts.engines.includes("llamacpp")) configs.push({ key: "llamacpp", engine: "llamacpp" });
    for (const c of configs) {
      const run = await launch(`serving ${LABEL[c.key]}`, {
        task: "serve",
        engine: c.engine,
        batching: c.batching,
        targetStepMs: c.targetStepMs,
        fixedBucket: c.fixedBucket,
        workload,
        kvTokens: opts.kvTokens,
        maxSequences: opts.maxSequences,
        sampleMs: opts.sampleMs,
      });
      if (!run.ok) continue;
      const m = servingMetrics(run.result, workload);
      if (c.engine === "llmserve") m.stats = run.result.stats;
      serving[c.key] = m;
      kv[c.key] = kvMetrics(run.result, c.engine);
      if ((m.otherCores ?? 0) > CONTENDED_CORES) contended = true;
      console.log(
        `${f(m.throughput)} out tok/s, TTFT p50 ${f(m.ttftP50 / 1000)} s  (cpu/thread ${f(m.cpu)}, others ${fmtCores(m.otherCores)} cores, makespan ${f(m.makespanS, 0)} s, child ${run.childWallS.toFixed(0)} s)`,
      );
    }
    console.log(`\nServing: ${opts.requests} requests, ${rateText}; latencies measured from each request's arrival\n`);
    const rows = Object.entries(serving).map(([k, m]) => [
      LABEL[k],
      f(m.throughput),
      f(m.ttftP50 / 1000),
      f(m.ttftP99 / 1000),
      f(m.itlP50, 0),
      f(m.itlP99, 0),
      f(m.e2eP50 / 1000, 1),
      f(m.makespanS, 0),
      m.stats ? `${f(m.stats.sequencesPerStep, 1)} / ${m.stats.maxBatchSequencesSeen}` : `- / ${kv[k]?.slots}`,
      fmtCores(m.otherCores),
    ]);
    console.log(
      table(rows, [
        "engine",
        "out tok/s",
        "TTFT p50 (s)",
        "TTFT p99 (s)",
        "ITL p50 (ms)",
        "ITL p99 (ms)",
        "e2e p50 (s)",
        "makespan (s)",
        "seqs/step mean / max",
        "others (cores)",
      ]),
    );
    if (serving.continuous && serving.static) {
      ratios.serving.continuousOverStatic = {
        throughput: serving.continuous.throughput / serving.static.throughput,
        ttftP50: serving.static.ttftP50 / serving.continuous.ttftP50,
      };
      console.log(
        `\ncontinuous / static (the seed's claim, measured): throughput ${f(ratios.serving.continuousOverStatic.throughput)}x, ` +
          `TTFT p50 ${f(ratios.serving.continuousOverStatic.ttftP50)}x lower`,
      );
    }
    if (serving.continuous && serving.fixed) {
      const st = serving.fixed.stats;
      ratios.serving.continuousOverFixed = {
        throughput: serving.continuous.throughput / serving.fixed.throughput,
        ttftP50: serving.fixed.ttftP50 / serving.continuous.ttftP50,
        paddedShare: st.batchTokens ? st.paddedTokens / st.batchTokens : 0,
      };
      const r = ratios.serving.continuousOverFixed;
      console.log(
        `continuous / fixed (fixed-length batching${opts.fixedBucket ? `, buckets of ${opts.fixedBucket}` : ""}): throughput ${f(r.throughput)}x, ` +
          `TTFT p50 ${f(r.ttftP50)}x lower; fixed computed ${st.paddedTokens} pad tokens (${pct(r.paddedShare)} of its batch tokens` +
          `${st.padSkippedTokens ? `; ${st.padSkippedTokens} skipped for want of KV blocks` : ""})`,
      );
    }
    if (serving.continuous && serving.dynamic) {
      ratios.serving.dynamicOverContinuous = {
        throughput: serving.dynamic.throughput / serving.continuous.throughput,
        itlP99: serving.continuous.itlP99 / serving.dynamic.itlP99,
        ttftP50: serving.continuous.ttftP50 / serving.dynamic.ttftP50,
      };
      const r = ratios.serving.dynamicOverContinuous;
      console.log(
        `dynamic (targetStepMs ${opts.targetStepMs}) / continuous (prefillChunk fixed): throughput ${f(r.throughput)}x, ` +
          `ITL p99 ${f(r.itlP99)}x lower, TTFT p50 ${f(r.ttftP50)}x lower`,
      );
    }
    if (serving.continuous && serving.llamacpp) {
      ratios.serving.continuousOverLlamaCpp = {
        throughput: serving.continuous.throughput / serving.llamacpp.throughput,
        ttftP50: serving.llamacpp.ttftP50 / serving.continuous.ttftP50,
      };
      console.log(
        `llmserve continuous / node-llama-cpp: throughput ${f(ratios.serving.continuousOverLlamaCpp.throughput)}x, TTFT p50 ${f(ratios.serving.continuousOverLlamaCpp.ttftP50)}x lower`,
      );
    }
    console.log(`\nKV cache during the serving runs (sampled every ${opts.sampleMs} ms while requests run)\n`);
    const krows = Object.entries(kv).map(([k, m]) => [
      LABEL[k],
      pct(m.wasteMean),
      pct(m.wasteMax),
      pct(m.poolUseMean),
      k === "llamacpp"
        ? `${f(m.busySlotsMean, 1)} of ${m.slots} slots`
        : `${f(m.runningMean, 1)} (+${f(m.waitingMean, 1)} waiting)`,
      k === "llamacpp" ? "-" : pct(m.prefixHitRate),
      pct(serving[k].reusedPromptTokens / serving[k].promptTokens),
      k === "llamacpp" ? "-" : f(m.heldPerSlotMean),
      k === "llamacpp" ? "-" : String(m.preemptions),
    ]);
    console.log(
      table(krows, [
        "engine",
        "KV waste mean",
        "KV waste max",
        "KV pool used",
        "running seqs",
        "prefix hit rate",
        "prompt tokens reused",
        "held / slot",
        "preemptions",
      ]),
    );
    perRate.push({ rate: Number.isFinite(rate) ? rate : "inf", serving, kv, ratios: ratios.serving });
    for (const [mode, m] of Object.entries(serving))
      curve.push({
        mode,
        label: LABEL[mode],
        rate: Number.isFinite(rate) ? rate : 1e9,
        rateLabel: Number.isFinite(rate) ? String(rate) : "inf",
        throughput: m.throughput,
        ttftP50: m.ttftP50,
        itlP99: m.itlP99,
        paddedTokens: m.stats?.paddedTokens,
      });
  }
  let curveSvgPath;
  if (opts.rates && curve.length) {
    const svg = curveSvg(curve, {
      title: `Batching trade-off: ${opts.requests} requests per rate, rates ${opts.rates.join(", ")}/s`,
      subtitle: [
        machineLine(mach),
        `threads ${opts.threads}; prompt ${opts.system} + ${opts.prompt.join("-")} tokens, output ${opts.output.join("-")}; ` +
          `load average ${os
            .loadavg()
            .map((x) => x.toFixed(2))
            .join(" ")} at the end`,
      ],
    });
    const stamp = new Date()
      .toISOString()
      .replace(/:/g, "-")
      .replace(/\.\d+Z$/, "Z");
    curveSvgPath = join(repoRoot, "bench", "results", `serving-curve-${stamp}.svg`);
    mkdirSync(dirname(curveSvgPath), { recursive: true });
    writeFileSync(curveSvgPath, svg);
    console.log(`\ncurve   : ${relative(process.cwd(), curveSvgPath)}`);
    console.log(
      table(
        curve.map((p) => [p.label, p.rateLabel, f(p.throughput), f(p.ttftP50 / 1000), f(p.itlP99, 0)]),
        ["mode", "rate (req/s)", "out tok/s", "TTFT p50 (s)", "ITL p99 (ms)"],
      ),
    );
  }
  console.log("");
  const builds = [...new Set(runs.map((r) => r.addonBuilt).filter(Boolean))];
  if (builds.length > 1)
    console.warn(
      `warning: the native addon was rebuilt during this run (${builds.join(", ")}): children ran different builds (see runs[].addonBuilt in the JSON).`,
    );
  if (contended) {
    console.warn('warning: other processes used more than a quarter of a core during some phase ("others" columns):');
    console.warn("         those timings are contended; rerun on a quiet machine (or with --wait-idle).");
  }

  if (llamaVariant) console.log(`llama.cpp CPU backend: ${llamaVariant}; llmserve kernels: ${mach.llmserveKernelIsa}`);
  const { requests: wreq, system, ...wrest } = workload;
  writeResults(
    "serving",
    {
      machine: mach,
      loadAvgAtStart: os.loadavg(),
      build,
      model: { path: model.path, sizeBytes: statSync(model.path).size, vocab, context: modelContext },
      options: { ...opts, rate: Number.isFinite(opts.rate) ? opts.rate : "inf" },
      workload: {
        ...wrest,
        systemTokens: system.length,
        requests: wreq.map((r) => ({
          i: r.i,
          arrivalMs: r.arrivalMs,
          promptTokens: system.length + r.user.length,
          outLen: r.outLen,
        })),
      },
      nodeLlamaCpp: {
        version: readPkgVersion("node-llama-cpp"),
        ...(runs.find((r) => r.ok && r.job.engine === "llamacpp")?.result.details ?? {}),
      },
      contended,
      summary: { decode, decodeRounds, serving, kv, ...(opts.rates ? { perRate, curve, curveSvg: curveSvgPath } : {}) },
      ratios,
      runs,
    },
    1,
  );
  if (runs.some((r) => !r.ok)) process.exitCode = 1;
}

main().catch((err) => die(err?.stack ?? String(err)));
