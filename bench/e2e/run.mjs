#!/usr/bin/env node
// End-to-end benchmark: llmserve vs node-llama-cpp (llama.cpp) on the same GGUF file, llama-bench style.
//
//   npm run bench:e2e                      # pp512 + tg128, 3 trials, 2 threads, q4_0 TinyLlama-1.1B shape
//   npm run bench:e2e -- --quick           # pp128 + tg32, 1 trial (smoke check)
//   node bench/e2e/run.mjs --type q8_0 --threads 4 --trials 5 --only llmserve
//   npm run bench:e2e -- --pp 8192 --depth 4096 --tg 64 --trials 1   # long context (llama-bench -d)
//
// Every (engine, trial) runs in a fresh child process (trial.mjs); the model file is read once
// before each child so both engines start from a warm page cache. Medians over trials are printed
// with the ratio llmserve / node-llama-cpp and written to bench/results/e2e-<date>.json.
// See bench/README.md for how to read the numbers.

import { statSync } from "node:fs";
import os from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  CONTENDED_CORES,
  SHAPE,
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
  runChild,
  table,
  waitIdle,
  warmPageCache,
  warnBusyMachine,
  writeResults,
} from "../common.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const ENGINES = ["llmserve", "llamacpp"];
const ENGINE_LABEL = { llmserve: "llmserve", llamacpp: "node-llama-cpp" };
const TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"];

const HELP = `Usage: node bench/e2e/run.mjs [options]   (or: npm run bench:e2e -- [options])

  --type <t>        weight type of the synthesized model: ${TYPES.join(", ")} (default q4_0)
  --model <path>    benchmark this GGUF file instead of the synthesized one
  --threads <n>     compute threads for both engines (default 2)
  --trials <n>      child processes per engine; the median is reported (default 3)
  --pp <n>          prompt length of the prompt-processing test (default 512)
  --tg <n>          tokens of the generation test (default 128)
  --depth <n>       tokens of context before the generation test (its prompt; default 8), as
                    llama-bench -d: decode speed at that context length. A synthesized model gets a
                    trained context long enough for --pp and --depth + --tg (cached per length)
  --quick           smoke check: --pp 128 --tg 32 --trials 1 (explicit options still win)
  --only <engine>   llmserve | llamacpp
  --tier <t>        best (default): each engine's best kernels for this CPU; avx2: llmserve with
                    LLMSERVE_KERNELS=avx2 and llama.cpp with only its AVX2 "haswell" CPU backend;
                    avxvnni: LLMSERVE_KERNELS=avxvnni (AVX2 + AVX-VNNI) and its "alderlake" backend
  --timeout <s>     per-child limit in seconds (default 900)
  --seed <n>        seed of the pseudo-random prompt token ids (default 1234)
  --wait-idle       before each child, wait (up to 5 min) until the CPUs are < 15% busy
  --verbose         show the children's stderr
  -h, --help        this text

The synthesized model is cached in $LLMSERVE_BENCH_DIR or bench/.cache/; results go to bench/results/.`;

const die = makeDie("bench:e2e");

function parseOptions() {
  const { values: parsed, int } = parseCli(
    // plus the options every benchmark takes (see parseCli)
    {
      type: { type: "string" },
      trials: { type: "string" },
      pp: { type: "string" },
      tg: { type: "string" },
      depth: { type: "string" },
      only: { type: "string" },
    },
    HELP,
    die,
  );
  const quick = parsed.quick === true;
  const type = (parsed.type ?? "q4_0").toLowerCase();
  if (!TYPES.includes(type))
    die(`Expected one of ${TYPES.join(", ")} for --type but received ${JSON.stringify(parsed.type)}`);
  if (parsed.only !== undefined && !ENGINES.includes(parsed.only))
    die(`Expected llmserve or llamacpp for --only but received ${JSON.stringify(parsed.only)}`);
  if (parsed.model !== undefined && parsed.type !== undefined)
    die("--type chooses the synthesized model; it cannot be combined with --model");
  return {
    type,
    model: parsed.model === undefined ? undefined : resolve(parsed.model),
    threads: int("threads", parsed.threads, 2, 1),
    trials: int("trials", parsed.trials, quick ? 1 : 3, 1),
    pp: int("pp", parsed.pp, quick ? 128 : 512, 1),
    tg: int("tg", parsed.tg, quick ? 32 : 128, 1),
    tgPrompt: int("depth", parsed.depth, 8, 1),
    quick,
    engines: parsed.only ? [parsed.only] : ENGINES,
    timeoutS: int("timeout", parsed.timeout, 900, 1),
    seed: int("seed", parsed.seed, 1234, 0),
    verbose: parsed.verbose === true,
    waitIdle: parsed["wait-idle"] === true,
    tier: parsed.tier ?? "best",
  };
}

async function main() {
  const opts = parseOptions();
  const build = checkBuild(die);
  applyTier(opts.tier, die);
  const llmserve = await loadLlmserve(die);
  let isa;
  try {
    isa = llmserve.kernelIsa();
  } catch (err) {
    die(`${err.message}`);
  }
  const mach = machine(isa, llmserve.physicalCores());
  // A long test needs a model trained for it: the synthesized shape's context (2048) grows to the
  // next power of two that holds the longest sequence, in a file of its own.
  const longest = Math.max(opts.pp, opts.tgPrompt + opts.tg) + 64;
  let trained = SHAPE.context;
  while (trained < longest) trained *= 2;
  const model = await ensureModel(llmserve.synth, {
    model: opts.model,
    type: opts.type,
    die,
    progress: true,
    ...(trained > SHAPE.context
      ? { shape: { ...SHAPE, context: trained }, name: `tinyllama-1.1b-shape-ctx${trained}` }
      : {}),
  });
  const gguf = await llmserve.readGguf(model.path, { maxArrayLength: 16 });
  const vocab = gguf.tensors.find((t) => t.name === "token_embd.weight")?.shape?.[1] ?? SHAPE.vocabSize;
  const weightTypes = {};
  for (const t of gguf.tensors) weightTypes[t.type] = (weightTypes[t.type] ?? 0) + 1;
  const fileMiB = statSync(model.path).size / 2 ** 20;
  if (os.totalmem() < statSync(model.path).size * 2.5)
    console.warn("warning: little memory for this model; the page cache may not hold it for both engines.");

  const contextSize = Math.max(1024, opts.pp + 64, opts.tgPrompt + opts.tg + 64);
  console.log("");
  console.log(machineLine(mach));
  console.log(
    `model   : ${model.path} (${fileMiB.toFixed(0)} MiB; ${Object.entries(weightTypes)
      .map(([k, v]) => `${v} ${k}`)
      .join(", ")} tensors; vocab ${vocab})`,
  );
  console.log(
    `run     : tier ${opts.tier}, threads ${opts.threads}, trials ${opts.trials}, pp${opts.pp}, tg${opts.tg} (after a ${opts.tgPrompt}-token prompt: depth ${opts.tgPrompt}), context ${contextSize}, engines ${opts.engines.map((e) => ENGINE_LABEL[e]).join(" + ")}`,
  );
  warnBusyMachine(mach, opts.threads);
  console.log("");

  // The decode roofline: the machine's read bandwidth over the bytes one step reads. On a shared
  // host the bandwidth moves within minutes (here 50 <-> 83 GB/s), so it is measured just before
  // every trial and once after the last, and each trial is judged against its own probe.
  const bandwidth = async () => {
    try {
      return await llmserve.measureReadBandwidth({ threads: opts.threads });
    } catch (err) {
      console.warn(`warning: read-bandwidth probe failed (${err.message}); no roofline`);
      return Number.NaN;
    }
  };
  const decodeContext = opts.tgPrompt + Math.floor(opts.tg / 2); // the tg test's mean context
  const reads = await llmserve.decodeReadBytes(model.path, { context: decodeContext });

  const trials = [];
  let contended = false;
  for (let t = 0; t < opts.trials; t++) {
    // Alternate which engine goes first, so slow drift (thermal, background load) hits both.
    const order = t % 2 === 0 ? opts.engines : [...opts.engines].reverse();
    for (const engine of order) {
      await warmPageCache(model.path);
      process.stdout.write(`trial ${t + 1}/${opts.trials} ${ENGINE_LABEL[engine].padEnd(14)} ... `);
      const busyBefore = opts.waitIdle ? await waitIdle() : await cpuBusy(500);
      const bandwidthGBs = await bandwidth();
      const loadBefore = os.loadavg()[0];
      const t0 = Date.now();
      const msg = await runChild(
        join(here, "trial.mjs"),
        {
          engine,
          modelPath: model.path,
          threads: opts.threads,
          pp: opts.pp,
          tg: opts.tg,
          tgPrompt: opts.tgPrompt,
          contextSize,
          vocab,
          seed: opts.seed,
        },
        opts,
      );
      const wallS = (Date.now() - t0) / 1000;
      if (msg.ok) {
        const r = msg.result;
        console.log(
          `pp${opts.pp} ${r.pp.tps.toFixed(2)} tok/s, tg${opts.tg} ${r.tg.tps.toFixed(2)} tok/s  ` +
            `(cpu/thread ${r.pp.cpu.toFixed(2)}/${r.tg.cpu.toFixed(2)}, others ${fmtCores(r.pp.otherCores)}/${fmtCores(r.tg.otherCores)} cores, ` +
            `load ${(r.loadMs / 1000).toFixed(1)} s, child ${wallS.toFixed(0)} s)`,
        );
        if (Math.max(r.pp.otherCores ?? 0, r.tg.otherCores ?? 0) > CONTENDED_CORES) contended = true;
        if (engine === "llamacpp") checkLlamaCppVariant(opts.tier, r.details.cpuVariant, die);
        trials.push({
          engine,
          trial: t + 1,
          ok: true,
          cpuBusyBefore: busyBefore,
          loadAvg1m: loadBefore,
          bandwidthGBs,
          childWallS: wallS,
          ...r,
        });
      } else {
        console.log("FAILED");
        console.error(`  ${msg.error.replace(/\n/g, "\n  ")}`);
        trials.push({
          engine,
          trial: t + 1,
          ok: false,
          cpuBusyBefore: busyBefore,
          loadAvg1m: loadBefore,
          childWallS: wallS,
          error: msg.error,
        });
      }
    }
  }

  // llama-bench's names: tg128 after the default short prompt, "tg64 @ d4096" at a depth.
  const tgKey = opts.tgPrompt > 8 ? `tg${opts.tg} @ d${opts.tgPrompt}` : `tg${opts.tg}`;
  const summary = {};
  for (const engine of opts.engines) {
    const ok = trials.filter((r) => r.engine === engine && r.ok);
    summary[engine] = {
      trials: ok.length,
      [`pp${opts.pp}`]: median(ok.map((r) => r.pp.tps)),
      [tgKey]: median(ok.map((r) => r.tg.tps)),
      ...(engine === "llmserve" && ok.length
        ? {
            engineTiming: {
              [`pp${opts.pp}`]: median(ok.map((r) => r.pp.engineTps)),
              [tgKey]: median(ok.map((r) => r.tg.engineTps)),
            },
          }
        : {}),
    };
  }
  const tests = [`pp${opts.pp}`, tgKey];
  const ratios = {};
  // Each trial runs the two engines back to back (the order alternating), so a trial's own ratio is
  // the least exposed to the host's speed drifting between trials: printed next to the ratio of medians.
  const pairedRatios = {};
  if (summary.llmserve && summary.llamacpp)
    for (const k of tests) {
      ratios[k] = summary.llmserve[k] / summary.llamacpp[k];
      const key = k.startsWith("pp") ? "pp" : "tg";
      pairedRatios[k] = [];
      for (let t = 1; t <= opts.trials; t++) {
        const a = trials.find((r) => r.engine === "llmserve" && r.trial === t && r.ok);
        const b = trials.find((r) => r.engine === "llamacpp" && r.trial === t && r.ok);
        if (a && b) pairedRatios[k].push(a[key].tps / b[key].tps);
      }
    }

  const fmt = (x) => (Number.isFinite(x) ? x.toFixed(2) : "n/a");
  const rows = [];
  for (const k of tests) {
    for (const engine of opts.engines) {
      const s = summary[engine];
      const key = k.startsWith("pp") ? "pp" : "tg";
      const busy = trials.filter(
        (r) => r.engine === engine && r.ok && (r[key].otherCores ?? 0) > CONTENDED_CORES,
      ).length;
      rows.push([
        ENGINE_LABEL[engine],
        k,
        fmt(s[k]),
        `${s.trials}/${opts.trials}${busy ? ` (${busy} contended)` : ""}`,
        engine === "llmserve" && k in ratios ? `${fmt(ratios[k])}x` : "",
        engine === "llmserve" && pairedRatios[k]?.length > 1
          ? `${pairedRatios[k].map(fmt).join(" ")} (median ${fmt(median(pairedRatios[k]))})`
          : "",
      ]);
    }
  }
  console.log("");
  const variant = trials.find((r) => r.engine === "llamacpp" && r.ok)?.details?.cpuVariant;
  if (variant) console.log(`llama.cpp CPU backend: ${variant}; llmserve kernels: ${isa}`);
  const header = ["engine", "test", "tok/s (median)", "trials ok", "llmserve / llama.cpp", "per trial"];
  const cols = opts.engines.length < 2 ? 4 : opts.trials > 1 ? 6 : 5;
  console.log(
    table(
      rows.map((r) => r.slice(0, cols)),
      header.slice(0, cols),
      2,
    ),
  );
  console.log("");
  if (contended) {
    console.warn('warning: other processes used more than a quarter of a core during some test ("others" column):');
    console.warn("         those timings are contended; rerun on a quiet machine (or with --wait-idle).");
  }

  const roofline = decodeRoofline(reads, decodeContext, await bandwidth(), trials, tgKey, opts);
  if (roofline) for (const line of roofline.lines) console.log(line);
  console.log("");

  const llamaDetails = trials.find((r) => r.engine === "llamacpp" && r.ok)?.details;
  writeResults(
    "e2e",
    {
      machine: mach,
      loadAvgAtStart: os.loadavg(),
      build,
      model: {
        path: model.path,
        sizeBytes: statSync(model.path).size,
        synthesized: opts.model ? false : { ...SHAPE, context: trained, type: opts.type },
        weightTypes,
        vocab,
      },
      options: {
        threads: opts.threads,
        trials: opts.trials,
        pp: opts.pp,
        tg: opts.tg,
        tgPrompt: opts.tgPrompt,
        contextSize,
        seed: opts.seed,
        quick: opts.quick,
        engines: opts.engines,
        tier: opts.tier,
      },
      nodeLlamaCpp: llamaDetails ? { version: readPkgVersion("node-llama-cpp"), ...llamaDetails } : undefined,
      contended,
      summary,
      ratios,
      pairedRatios,
      roofline: roofline?.json,
      trials,
    },
    2,
  );
  if (trials.some((r) => !r.ok)) process.exitCode = 1;
}

// What the decode test could reach on this machine and how close each engine came: the bytes one
// step reads (weights + the KV cache at the test's mean context) against the bandwidth probe taken
// just before each trial (the last probe, after the trials, only widens the range printed).
function decodeRoofline(reads, decodeContext, lastProbe, trials, tgKey, opts) {
  const probes = [...trials.map((t) => t.bandwidthGBs), lastProbe].filter(Number.isFinite);
  if (!probes.length) return undefined;
  const gb = (b) => (b / 1e9).toFixed(2);
  const lo = Math.min(...probes);
  const hi = Math.max(...probes);
  const lines = [
    `decode  : a step reads ${gb(reads.total)} GB (weights ${gb(reads.weights)} + KV cache ${gb(reads.kvCache)} at ${decodeContext} tokens); ` +
      `read bandwidth ${lo.toFixed(1)}-${hi.toFixed(1)} GB/s over ${probes.length} probes (${opts.threads} threads): ceiling ${((lo * 1e9) / reads.total).toFixed(2)}-${((hi * 1e9) / reads.total).toFixed(2)} tok/s`,
  ];
  const engines = {};
  let over = false;
  for (const engine of opts.engines) {
    const ok = trials.filter((t) => t.engine === engine && t.ok && Number.isFinite(t.bandwidthGBs));
    if (!ok.length) continue;
    const read = ok.map((t) => (t.tg.tps * reads.total) / 1e9);
    const share = ok.map((t, i) => read[i] / t.bandwidthGBs);
    if (share.some((x) => x > 1.05)) over = true;
    engines[engine] = { readGBs: read, ofBandwidth: share };
    lines.push(
      `          ${ENGINE_LABEL[engine].padEnd(14)} ${tgKey}: ${read.map((x) => x.toFixed(1)).join(" / ")} GB/s per trial = ` +
        `${share.map((x) => `${(100 * x).toFixed(0)}%`).join(" / ")} of the bandwidth probed before each (median ${(100 * median(share)).toFixed(0)}%)`,
    );
  }
  if (over)
    lines.push(
      "          (a trial read more than its probe: the machine's bandwidth rose during it; compare paired trials)",
    );
  return {
    lines,
    json: { readBytesPerStep: reads, probesGBs: probes, engines },
  };
}

main().catch((err) => die(err?.stack ?? String(err)));
