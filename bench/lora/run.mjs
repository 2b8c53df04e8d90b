#!/usr/bin/env node
// Multi-LoRA decode benchmark: what serving many adapters over one base model costs.
//
//   npm run bench:lora                      # 16 streams over 1, 4, 16 adapters, rank 8 and 64
//   npm run bench:lora -- --quick           # smoke check (< 2 minutes on 2 cores, small model)
//   node bench/lora/run.mjs --ranks 16 --adapters 2,8 --tokens 64
//
// 1. overhead : llmserve's aggregate decode tok/s with `--streams` concurrent streams spread
//               round-robin over k adapters of rank r, against the same streams without adapters
//               (same process, same model, same prompts). Goals (issue 11): <= 15% at rank 8,
//               <= 40% at rank 64.
// 2. llama.cpp: the same mixed workload the llama.cpp way, node-llama-cpp with one context per
//               adapter (`createContext({ lora })`), each batching the streams of its adapter.
//               Goal: llmserve >= 3x its aggregate decode throughput.
//
// The base model and the adapters (synthLora: q, k, v, o, gate, up, down) are synthesized once into
// bench/.cache/ (or $LLMSERVE_BENCH_DIR). Each engine runs in a fresh child process (child.mjs)
// after every file is read once (warm page cache). Results: bench/results/lora-<date>.json.
// See bench/README.md ("Multi-LoRA") for how to read the numbers.

import { execFileSync } from "node:child_process";
import { statSync } from "node:fs";
import os from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  CONTENDED_CORES,
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
  runChild,
  table,
  tokenIds,
  waitIdle,
  warmPageCache,
  warnBusyMachine,
  writeResults,
} from "../common.mjs";
import { ensureAdapters, QUICK_MODEL, TARGETS } from "./adapters.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const die = makeDie("bench:lora");

// Issue 11's goals: the highest acceptable overhead per rank, and the ratio over llama.cpp.
const OVERHEAD_GOAL = { 8: 0.15, 64: 0.4 };
const LLAMACPP_GOAL = 3;
const HELP = `Usage: node bench/lora/run.mjs [options]   (or: npm run bench:lora -- [options])

  --quick                smoke check (< 2 min): a small synthesized llama (dim 512, 8 layers), 8
                         tokens, 1 trial, 90 s per child
  --tokens <n>           decode tokens per stream (default 32)
  --streams <n>          concurrent streams (default 16)
  --ranks <list>         adapter ranks (default 8,64)
  --adapters <list>      how many adapters the streams are spread over (default 1,4,16)
  --llamacpp-adapters <list>  adapter counts of the node-llama-cpp comparison (default 4)
  --llamacpp-modes <list>     sequential and/or concurrent (default both; see bench/README.md)
  --order <o>            llmserve's batch order: interleaved (stream j uses adapter j mod k, so
                         neighbours differ: one segment per row) or grouped (each adapter's streams
                         submitted together: k segments) (default interleaved)
  --lora-type <t>        adapter A/B type: f32, f16, bf16, q8_0, q4_0 (default f16, llama.cpp's converter's)
  --adapter-type <t>     how llmserve keeps adapters in memory (Model.load's adapterType): file,
                         q8_0 or q4_0 (default file)
  --type <t>             synthesized base's weight type (default q4_0)
  --trials <n>           trials per configuration; medians are reported (default 3)
  --prompt <n>           prompt tokens per stream (default 16)
  --only <engine>        llmserve or llamacpp
  --threads <n>          compute threads for both engines (default 2)
  --model <path>         any llama-family GGUF instead of the synthesized TinyLlama-1.1B shape
  --seed <n>             prompt token seed (default 1234)
  --timeout <s>          per-child limit in seconds (default 1800; --quick 90)
  --wait-idle            before each child, wait (up to 5 min) until the CPUs are < 15% busy
  --verbose              show the children's stderr
  -h, --help             this text`;

function parseOptions() {
  const { values: p, int } = parseCli(
    {
      tokens: { type: "string" },
      streams: { type: "string" },
      ranks: { type: "string" },
      adapters: { type: "string" },
      "llamacpp-adapters": { type: "string" },
      "llamacpp-modes": { type: "string" },
      order: { type: "string" },
      "lora-type": { type: "string" },
      "adapter-type": { type: "string" },
      type: { type: "string" },
      trials: { type: "string" },
      prompt: { type: "string" },
      only: { type: "string" },
    },
    HELP,
    die,
  );
  const quick = p.quick === true;
  const list = (name, v, def) => {
    if (v === undefined) return def;
    const xs = v.split(",").map((s) => Number(s.trim()));
    if (!xs.length || !xs.every((n) => Number.isInteger(n) && n >= 1))
      die(`Expected a list of positive integers for --${name} but received ${JSON.stringify(v)}`);
    return [...new Set(xs)];
  };
  const oneOf = (name, v, def, allowed) => {
    if (v === undefined) return def;
    if (!allowed.includes(v))
      die(`Expected one of ${allowed.join(", ")} for --${name} but received ${JSON.stringify(v)}`);
    return v;
  };
  const modes = (p["llamacpp-modes"] ?? "sequential,concurrent").split(",").map((s) => s.trim());
  for (const m of modes)
    if (m !== "sequential" && m !== "concurrent")
      die(`Expected sequential and/or concurrent for --llamacpp-modes but received ${JSON.stringify(m)}`);
  const opts = {
    quick,
    tokens: int("tokens", p.tokens, quick ? 8 : 32, 2),
    streams: int("streams", p.streams, 16, 1),
    ranks: list("ranks", p.ranks, [8, 64]),
    adapters: list("adapters", p.adapters, [1, 4, 16]),
    llamacppAdapters: list("llamacpp-adapters", p["llamacpp-adapters"], [4]),
    llamacppModes: [...new Set(modes)],
    order: oneOf("order", p.order, "interleaved", ["interleaved", "grouped"]),
    loraType: oneOf("lora-type", p["lora-type"], "f16", ["f32", "f16", "bf16", "q8_0", "q4_0"]),
    adapterType: oneOf("adapter-type", p["adapter-type"], "file", ["file", "q8_0", "q4_0"]),
    type: oneOf("type", p.type, "q4_0", ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"]),
    trials: int("trials", p.trials, quick ? 1 : 3, 1),
    promptTokens: int("prompt", p.prompt, 16, 1),
    engines: p.only ? [oneOf("only", p.only, undefined, ["llmserve", "llamacpp"])] : ["llmserve", "llamacpp"],
    threads: int("threads", p.threads, 2, 1),
    model: p.model,
    seed: int("seed", p.seed, 1234, 0),
    // --quick keeps its promise (< 2 min) even on a busy machine: a child that needs more fails.
    timeoutS: int("timeout", p.timeout, quick ? 90 : 1800, 1),
    waitIdle: p["wait-idle"] === true,
    verbose: p.verbose === true,
  };
  for (const k of [...opts.adapters, ...opts.llamacppAdapters])
    if (k > opts.streams) die(`${k} adapters need at least ${k} streams (--streams is ${opts.streams})`);
  return opts;
}

/** Adapter files of `rank` for the base at `modelPath`: n of them (seeds 1..n), synthesized once. */
/** stream j -> adapter index: round-robin (interleaved) or in blocks of streams/k (grouped). */
function assign(streams, k, order) {
  return Array.from({ length: streams }, (_, j) => (order === "grouped" ? Math.floor((j * k) / streams) : j % k));
}

// ---------------------------------------------------------------- metrics

/** Decode window of a set of streams submitted together: from the moment every stream has its
 *  first token (all prefills done) to the last token; tokens that arrive after its start. */
function window(streams, submitted) {
  const start = Math.max(...streams.map((s) => s[0]));
  const end = Math.max(...streams.map((s) => s[s.length - 1]));
  let tokens = 0;
  let all = 0;
  for (const s of streams) {
    all += s.length;
    for (const t of s) if (t > start) tokens++;
  }
  return { tokens, ms: end - start, all, e2eMs: end - submitted };
}

/** One timed run's decode and end-to-end (prefill included) tok/s. A llama.cpp run has groups
 *  (one per context): sequential groups' windows add up; concurrent ones share one window. */
function runMetrics(run) {
  let w;
  if (run.groups && run.mode === "sequential") {
    const ws = run.groups.map((g) => window(g.streams, g.submitted));
    w = {
      tokens: ws.reduce((a, x) => a + x.tokens, 0),
      ms: ws.reduce((a, x) => a + x.ms, 0),
      all: ws.reduce((a, x) => a + x.all, 0),
      e2eMs: ws.reduce((a, x) => a + x.e2eMs, 0),
    };
  } else {
    w = window(run.groups ? run.groups.flatMap((g) => g.streams) : run.streams, run.submitted);
  }
  // llmserve's cross-check on the engine's clock: decode tokens (all but each stream's first) over
  // the streams' mean first-to-last-token time (equal for every stream when they share each step).
  let engineTps;
  if (run.engine?.every((e) => e.generateMs > 0)) {
    const decoded = run.engine.reduce((a, e) => a + e.generatedTokens - 1, 0);
    engineTps = (decoded * 1000 * run.engine.length) / run.engine.reduce((a, e) => a + e.generateMs, 0);
  }
  return {
    tps: w.ms > 0 ? (w.tokens * 1000) / w.ms : NaN,
    engineTps,
    e2eTps: (w.all * 1000) / w.e2eMs,
    windowTokens: w.tokens,
    windowMs: w.ms,
    cpu: run.cpu.cpu,
    otherCores: run.cpu.otherCores,
    sequencesPerStep: run.sequencesPerStep,
  };
}

/** Per configuration key (and llama.cpp mode): the trials' metrics and their medians. */
function summarize(trials, keyOf) {
  const by = new Map();
  for (const runs of trials)
    for (const r of runs) {
      const k = keyOf(r);
      if (!by.has(k)) by.set(k, []);
      by.get(k).push(runMetrics(r));
    }
  const out = {};
  for (const [k, ms] of by) {
    const tps = ms.map((m) => m.tps);
    out[k] = {
      tps: median(tps),
      tpsMin: Math.min(...tps),
      tpsMax: Math.max(...tps),
      e2eTps: median(ms.map((m) => m.e2eTps)),
      engineTps: median(ms.map((m) => m.engineTps ?? NaN)),
      otherCoresMax: Math.max(...ms.map((m) => m.otherCores ?? 0)),
      cpu: median(ms.map((m) => m.cpu)),
      sequencesPerStep: median(ms.map((m) => m.sequencesPerStep ?? NaN)),
      trials: ms,
    };
  }
  return out;
}

// ---------------------------------------------------------------- main

const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "n/a");
const pct = (x) => (Number.isFinite(x) ? `${x >= 0 ? "+" : ""}${(x * 100).toFixed(1)}%` : "n/a");
const uptime = () => {
  try {
    return execFileSync("uptime", { encoding: "utf8" }).trim();
  } catch {
    return `load average: ${os.loadavg().join(", ")}`;
  }
};

async function main() {
  const opts = parseOptions();
  const build = checkBuild(die);
  const llmserve = await loadLlmserve(die);
  const mach = machine(llmserve.kernelIsa(), llmserve.physicalCores());
  const uptimeStart = uptime();
  const loadAvgStart = os.loadavg();
  let model;
  const adapterPaths = {};
  try {
    model = await ensureModel(llmserve.synth, {
      model: opts.model,
      type: opts.type,
      die,
      ...(opts.quick ? QUICK_MODEL : {}),
    });
    const need = Math.max(...opts.adapters, ...(opts.engines.includes("llamacpp") ? opts.llamacppAdapters : [1]));
    for (const r of opts.ranks)
      adapterPaths[r] = await ensureAdapters(llmserve.synthLora, model.path, { rank: r, n: need, type: opts.loraType });
  } catch (err) {
    die(err.message);
  }
  const gguf = await llmserve.readGguf(model.path, { maxArrayLength: 16 });
  const vocab = gguf.tensors.find((t) => t.name === "token_embd.weight")?.shape?.[1] ?? 32000;
  const fileMiB = statSync(model.path).size / 2 ** 20;
  const adapterMiB = Object.fromEntries(opts.ranks.map((r) => [r, statSync(adapterPaths[r][0]).size / 2 ** 20]));
  // Distinct prompts (first tokens differ); every configuration decodes these same prompts.
  const seen = new Set();
  const prompts = Array.from({ length: opts.streams }, (_, j) => {
    let s = opts.seed + j;
    let p = tokenIds(opts.promptTokens, vocab, s);
    while (seen.has(p[0])) p = tokenIds(opts.promptTokens, vocab, (s += 7919));
    seen.add(p[0]);
    return p;
  });

  console.log("");
  console.log(machineLine(mach));
  console.log(`load    : ${uptimeStart}`);
  console.log(`model   : ${model.path} (${fileMiB.toFixed(0)} MiB; vocab ${vocab})`);
  console.log(
    `adapters: ${opts.loraType}, targets q,k,v,o,gate,up,down of every layer; ${opts.ranks.map((r) => `rank ${r} ${f(adapterMiB[r])} MiB each`).join(", ")}`,
  );
  console.log(
    `run     : threads ${opts.threads} (both engines), ${opts.streams} streams x (${opts.promptTokens}-token prompt + ${opts.tokens} greedy tokens), ` +
      `${opts.trials} trial(s); llmserve (adapterType ${opts.adapterType}) over ${opts.adapters.join(", ")} adapters (${opts.order}); node-llama-cpp over ${opts.llamacppAdapters.join(", ")} (${opts.llamacppModes.join(", ")})`,
  );
  warnBusyMachine(mach, opts.threads);
  console.log("");

  const files = [model.path, ...Object.values(adapterPaths).flat()];
  const base = {
    modelPath: model.path,
    threads: opts.threads,
    streams: opts.streams,
    tokens: opts.tokens,
    promptTokens: opts.promptTokens,
    trials: opts.trials,
    adapterType: opts.adapterType,
    prompts,
  };
  const runs = [];
  const launch = async (label, job) => {
    for (const p of files) await warmPageCache(p);
    process.stdout.write(`${label.padEnd(28)} ... `);
    const busyBefore = opts.waitIdle ? await waitIdle() : await cpuBusy(500);
    const t0 = Date.now();
    const msg = await runChild(join(here, "child.mjs"), { ...base, ...job }, opts);
    const run = {
      label,
      engine: job.engine,
      cpuBusyBefore: busyBefore,
      uptimeAfter: uptime(),
      childWallS: (Date.now() - t0) / 1000,
      ...msg,
    };
    runs.push(run);
    if (!msg.ok) {
      console.log("FAILED");
      console.error(`  ${msg.error.replace(/\n/g, "\n  ")}`);
      if (job.engine === "llamacpp" && /timed out/.test(msg.error) && opts.threads > 1)
        console.error(
          "  (llama.cpp's threads spin at barriers and crawl when other processes take the cores: try --threads 1, or --wait-idle on a quiet machine)",
        );
    } else {
      console.log(`done in ${run.childWallS.toFixed(0)} s (load ${(msg.result.loadMs / 1000).toFixed(1)} s)`);
    }
    return run;
  };

  // 1. llmserve: base and every (rank, adapters) configuration in one process.
  let ours;
  if (opts.engines.includes("llmserve")) {
    const configs = [{ key: "base", k: 0 }];
    const adapters = [];
    for (const r of opts.ranks) {
      const n = Math.max(...opts.adapters);
      const names = adapterPaths[r].slice(0, n).map((_, i) => `r${r}-${i + 1}`);
      for (const [i, path] of adapterPaths[r].slice(0, n).entries()) adapters.push({ name: names[i], path });
      for (const k of opts.adapters)
        configs.push({ key: `r${r}x${k}`, rank: r, k, names, adapterOf: assign(opts.streams, k, opts.order) });
    }
    const run = await launch("llmserve (all configs)", { engine: "llmserve", configs, adapters });
    if (run.ok) ours = summarize(run.result.trials, (r) => r.key);
  }

  // 2. node-llama-cpp: one context per adapter.
  let theirs;
  if (opts.engines.includes("llamacpp")) {
    const configs = [];
    for (const r of opts.ranks)
      for (const k of opts.llamacppAdapters)
        configs.push({
          key: `r${r}x${k}`,
          rank: r,
          k,
          paths: adapterPaths[r].slice(0, k),
          adapterOf: assign(opts.streams, k, "interleaved"),
        });
    const run = await launch("node-llama-cpp (llama.cpp way)", {
      engine: "llamacpp",
      configs,
      modes: opts.llamacppModes,
    });
    if (run.ok) theirs = summarize(run.result.trials, (r) => (r.key === "base" ? "base" : `${r.key}:${r.mode}`));
  }

  // Tables.
  let contended = false;
  const goals = { overhead: {}, llamacpp: {} };
  if (ours) {
    const b = ours.base;
    console.log(
      `\nllmserve: aggregate decode tok/s, ${opts.streams} streams, window = every stream past its first token (median of ${opts.trials})\n`,
    );
    const rows = [];
    const row = (label, rank, k, m, over) => {
      contended ||= m.otherCoresMax > CONTENDED_CORES;
      const goal = OVERHEAD_GOAL[rank];
      let verdict = "";
      if (goal !== undefined && Number.isFinite(over))
        verdict = over <= goal ? `ok (<= ${goal * 100}%)` : `MISSED (<= ${goal * 100}%)`;
      rows.push([
        label,
        rank ?? "-",
        k,
        f(m.tps),
        `${f(m.tpsMin)}-${f(m.tpsMax)}`,
        f(m.e2eTps),
        f(m.engineTps),
        over === undefined ? "-" : pct(over),
        verdict,
        f(m.sequencesPerStep),
        fmtCores(m.otherCoresMax),
      ]);
    };
    row("no adapter", undefined, 0, b);
    for (const r of opts.ranks)
      for (const k of opts.adapters) {
        const m = ours[`r${r}x${k}`];
        // Overhead: extra time per decoded token over the base = base tok/s / LoRA tok/s - 1.
        const over = b.tps / m.tps - 1;
        m.overhead = over;
        if (OVERHEAD_GOAL[r] !== undefined)
          goals.overhead[`r${r}x${k}`] = { overhead: over, goal: OVERHEAD_GOAL[r], met: over <= OVERHEAD_GOAL[r] };
        row(`LoRA r${r}`, r, k, m, over);
      }
    console.log(
      table(rows, [
        "streams use",
        "rank",
        "adapters",
        "decode tok/s",
        "min-max",
        "e2e tok/s",
        "engine tok/s",
        "overhead",
        "goal",
        "seqs/step",
        "others (cores)",
      ]),
    );
  }
  if (theirs) {
    console.log(
      `\nThe llama.cpp way (node-llama-cpp, one context per adapter) vs llmserve on the same streams (decode tok/s, median)\n`,
    );
    const rows = [];
    for (const r of opts.ranks)
      for (const k of opts.llamacppAdapters) {
        const key = `r${r}x${k}`;
        const modes = opts.llamacppModes.map((m) => theirs[`${key}:${m}`]);
        for (const m of modes) contended ||= m.otherCoresMax > CONTENDED_CORES;
        const best = Math.max(...modes.map((m) => m.tps));
        const o = ours?.[key];
        const ratio = o ? o.tps / best : NaN;
        if (Number.isFinite(ratio)) goals.llamacpp[key] = { ratio, goal: LLAMACPP_GOAL, met: ratio >= LLAMACPP_GOAL };
        rows.push([
          r,
          k,
          o ? f(o.tps) : "-",
          ...modes.map((m) => f(m.tps)),
          Number.isFinite(ratio) ? `${f(ratio, 2)}x` : "-",
          Number.isFinite(ratio)
            ? ratio >= LLAMACPP_GOAL
              ? `ok (>= ${LLAMACPP_GOAL}x)`
              : `MISSED (>= ${LLAMACPP_GOAL}x)`
            : "",
          [...modes.map((m) => fmtCores(m.otherCoresMax))].join(" / "),
        ]);
      }
    contended ||= theirs.base.otherCoresMax > CONTENDED_CORES;
    console.log(
      table(rows, [
        "rank",
        "adapters",
        "llmserve",
        ...opts.llamacppModes.map((m) => `llama.cpp ${m}`),
        "llmserve / best llama.cpp",
        "goal",
        "others (cores)",
      ]),
    );
    console.log(
      `\nreference: node-llama-cpp without adapters, one context with ${opts.streams} sequences: ${f(theirs.base.tps)} tok/s` +
        (ours ? ` (llmserve without adapters: ${f(ours.base.tps)} tok/s)` : ""),
    );
  }
  console.log("");
  const uptimeEnd = uptime();
  console.log(`load    : ${uptimeEnd}`);
  if (contended) {
    console.warn('warning: other processes used more than a quarter of a core during some run ("others" columns):');
    console.warn("         those timings are contended; rerun on a quiet machine (or with --wait-idle).");
  }
  writeResults(
    "lora",
    {
      machine: mach,
      load: { uptimeStart, uptimeEnd, loadAvgStart, loadAvgEnd: os.loadavg() },
      build,
      model: { path: model.path, sizeBytes: statSync(model.path).size, vocab, synthesized: !opts.model },
      adapters: { type: opts.loraType, targets: TARGETS, mibEach: adapterMiB, paths: adapterPaths },
      options: opts,
      nodeLlamaCpp: {
        version: readPkgVersion("node-llama-cpp"),
        ...(runs.find((r) => r.ok && r.engine === "llamacpp")?.result.details ?? {}),
      },
      contended,
      goals,
      summary: { llmserve: strip(ours), llamacpp: strip(theirs) },
      runs,
    },
    1,
  );
  if (runs.some((r) => !r.ok)) process.exitCode = 1;
}

/** The summary without its per-trial arrays (those are in runs[]). */
function strip(s) {
  if (!s) return undefined;
  return Object.fromEntries(Object.entries(s).map(([k, { trials, ...rest }]) => [k, rest]));
}

main().catch((err) => die(err?.stack ?? String(err)));
