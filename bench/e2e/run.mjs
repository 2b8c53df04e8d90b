#!/usr/bin/env node
// End-to-end benchmark: llmserve vs node-llama-cpp (llama.cpp) on the same GGUF file, llama-bench style.
//
//   npm run bench:e2e                      # pp512 + tg128, 3 trials, 2 threads, q4_0 TinyLlama-1.1B shape
//   npm run bench:e2e -- --quick           # pp128 + tg32, 1 trial (smoke check)
//   node bench/e2e/run.mjs --type q8_0 --threads 4 --trials 5 --only llmserve
//
// Every (engine, trial) runs in a fresh child process (trial.mjs); the model file is read once
// before each child so both engines start from a warm page cache. Medians over trials are printed
// with the ratio llmserve / node-llama-cpp and written to bench/results/e2e-<date>.json.
// See bench/README.md for how to read the numbers.

import { execFileSync, fork } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, "..", "..");
const ENGINES = ["llmserve", "llamacpp"];
const ENGINE_LABEL = { llmserve: "llmserve", llamacpp: "node-llama-cpp" };
// A test is "contended" when other processes used more than this many cores while it ran.
const CONTENDED_CORES = 0.25;
const TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"];
// TinyLlama-1.1B shape (TinyLlama/TinyLlama-1.1B-Chat-v1.0 config).
const SHAPE = { arch: "llama", dim: 2048, layers: 22, heads: 32, kvHeads: 4, ffn: 5632, vocabSize: 32000, context: 2048, seed: 7 };

const HELP = `Usage: node bench/e2e/run.mjs [options]   (or: npm run bench:e2e -- [options])

  --type <t>        weight type of the synthesized model: ${TYPES.join(", ")} (default q4_0)
  --model <path>    benchmark this GGUF file instead of the synthesized one
  --threads <n>     compute threads for both engines (default 2)
  --trials <n>      child processes per engine; the median is reported (default 3)
  --pp <n>          prompt length of the prompt-processing test (default 512)
  --tg <n>          tokens of the generation test (default 128)
  --quick           smoke check: --pp 128 --tg 32 --trials 1 (explicit options still win)
  --only <engine>   llmserve | llamacpp
  --timeout <s>     per-child limit in seconds (default 900)
  --seed <n>        seed of the pseudo-random prompt token ids (default 1234)
  --wait-idle       before each child, wait (up to 5 min) until the CPUs are < 15% busy
  --verbose         show the children's stderr
  -h, --help        this text

The synthesized model is cached in $LLMSERVE_BENCH_DIR or bench/.cache/; results go to bench/results/.`;

function die(msg) {
  console.error(`bench:e2e: ${msg}`);
  process.exit(1);
}

function parseOptions() {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        type: { type: "string" },
        model: { type: "string" },
        threads: { type: "string" },
        trials: { type: "string" },
        pp: { type: "string" },
        tg: { type: "string" },
        quick: { type: "boolean" },
        only: { type: "string" },
        timeout: { type: "string" },
        seed: { type: "string" },
        verbose: { type: "boolean" },
        "wait-idle": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (err) {
    die(`${err.message}\n\n${HELP}`);
  }
  if (parsed.help) {
    console.log(HELP);
    process.exit(0);
  }
  const int = (name, v, def, min) => {
    if (v === undefined) return def;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) die(`Expected an integer >= ${min} for --${name} but received ${JSON.stringify(v)}`);
    return n;
  };
  const quick = parsed.quick === true;
  const type = (parsed.type ?? "q4_0").toLowerCase();
  if (!TYPES.includes(type)) die(`Expected one of ${TYPES.join(", ")} for --type but received ${JSON.stringify(parsed.type)}`);
  if (parsed.only !== undefined && !ENGINES.includes(parsed.only)) die(`Expected llmserve or llamacpp for --only but received ${JSON.stringify(parsed.only)}`);
  if (parsed.model !== undefined && parsed.type !== undefined) die("--type chooses the synthesized model; it cannot be combined with --model");
  return {
    type,
    model: parsed.model === undefined ? undefined : resolve(parsed.model),
    threads: int("threads", parsed.threads, 2, 1),
    trials: int("trials", parsed.trials, quick ? 1 : 3, 1),
    pp: int("pp", parsed.pp, quick ? 128 : 512, 1),
    tg: int("tg", parsed.tg, quick ? 32 : 128, 1),
    tgPrompt: 8,
    quick,
    engines: parsed.only ? [parsed.only] : ENGINES,
    timeoutS: int("timeout", parsed.timeout, 900, 1),
    seed: int("seed", parsed.seed, 1234, 0),
    verbose: parsed.verbose === true,
    waitIdle: parsed["wait-idle"] === true,
  };
}

/** dist/ and the addon must exist; warn when sources look newer than the build. */
function checkBuild() {
  const distIndex = join(repoRoot, "dist", "index.js");
  if (!existsSync(distIndex)) die(`${relative(process.cwd(), distIndex)} is missing: run \`npm run build\` first.`);
  const addons = [process.env.LLMSERVE_ADDON, join(repoRoot, "prebuilds", `${process.platform}-${process.arch}`, "llmserve.node"), join(repoRoot, "build", "Release", "llmserve.node"), join(repoRoot, "build", "llmserve.node")].filter(Boolean);
  const addon = addons.find((p) => existsSync(p));
  if (!addon) die("the native addon is not built (no build/Release/llmserve.node): run `npm run build` first.");
  const newest = (dir, exts) => {
    let t = 0;
    if (!existsSync(dir)) return t;
    for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
      if (e.isFile() && exts.some((x) => e.name.endsWith(x))) t = Math.max(t, statSync(join(e.parentPath ?? e.path, e.name)).mtimeMs);
    }
    return t;
  };
  const warnings = [];
  if (newest(join(repoRoot, "lib"), [".ts"]) > statSync(distIndex).mtimeMs) warnings.push("lib/ has TypeScript newer than dist/");
  if (newest(join(repoRoot, "native"), [".cpp", ".cc", ".h"]) > statSync(addon).mtimeMs) warnings.push(`native/ has sources newer than ${relative(repoRoot, addon)}`);
  for (const w of warnings) console.warn(`warning: ${w}; run \`npm run build\` to benchmark the current code.`);
  const git = (...args) => {
    try {
      return execFileSync("git", args, { cwd: repoRoot, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    } catch {
      return undefined;
    }
  };
  const st = statSync(addon);
  return {
    addon: relative(repoRoot, addon),
    addonBuilt: st.mtime.toISOString(),
    addonSha256: createHash("sha256").update(readFileSync(addon)).digest("hex"),
    gitCommit: git("rev-parse", "HEAD"),
    gitDirty: (git("status", "--porcelain", "--untracked-files=no") ?? "") !== "",
    staleWarnings: warnings,
  };
}

function machine(kernelIsa, physicalCores) {
  let cpu = os.cpus()[0]?.model ?? "unknown";
  let flags = [];
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8");
    cpu = /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? cpu;
    flags = (/^flags\s*:\s*(.+)$/m.exec(info)?.[1] ?? "").split(/\s+/).filter((f) => /^(avx|avx2|fma|f16c|avx512\w*|amx\w*)$/.test(f));
  } catch {
    /* not Linux */
  }
  return {
    cpu,
    logicalCpus: os.availableParallelism(),
    physicalCores,
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    llmserveKernelIsa: kernelIsa,
    simdFlags: flags.join(" "),
  };
}

/** Synthesizes the model once into the cache directory (written to a temp name, then renamed). */
async function ensureModel(opts, synth) {
  if (opts.model) {
    if (!existsSync(opts.model)) die(`--model ${opts.model} does not exist`);
    return { path: opts.model, synthesized: false };
  }
  const dir = process.env.LLMSERVE_BENCH_DIR ? resolve(process.env.LLMSERVE_BENCH_DIR) : join(repoRoot, "bench", ".cache");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `tinyllama-1.1b-shape-${opts.type}-seed${SHAPE.seed}.gguf`);
  if (existsSync(path)) return { path, synthesized: false };
  const tmp = `${path}.partial-${process.pid}`;
  process.stdout.write(`Synthesizing a TinyLlama-1.1B-shape ${opts.type} model (once) -> ${path}\n`);
  const t0 = Date.now();
  let shown = -1;
  try {
    const { notes } = await synth(tmp, {
      ...SHAPE,
      type: opts.type,
      onProgress: (f) => {
        const pct = Math.floor(f * 100);
        if (pct >= shown + 10 && process.stdout.isTTY) {
          shown = pct;
          process.stdout.write(`  ${pct}%\r`);
        }
      },
    });
    for (const n of notes) console.log(`  note: ${n}`);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  renameSync(tmp, path);
  console.log(`  done in ${((Date.now() - t0) / 1000).toFixed(1)} s (${(statSync(path).size / 2 ** 20).toFixed(0)} MiB)`);
  return { path, synthesized: true };
}

/** Fraction of all CPUs busy (not idle/iowait) over `ms`, from /proc/stat; undefined off Linux. */
async function cpuBusy(ms = 1000) {
  const read = () => {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    return { idle: f[3] + (f[4] ?? 0), total: f.slice(0, 8).reduce((a, b) => a + b, 0) };
  };
  try {
    const a = read();
    await new Promise((r) => setTimeout(r, ms));
    const b = read();
    return b.total > a.total ? +(1 - (b.idle - a.idle) / (b.total - a.total)).toFixed(3) : undefined;
  } catch {
    return undefined;
  }
}

/** With --wait-idle: waits until other processes leave the CPUs mostly idle (gives up after 5 min). */
async function waitIdle() {
  const until = Date.now() + 300_000;
  let busy = await cpuBusy();
  let said = false;
  while (busy !== undefined && busy > 0.15 && Date.now() < until) {
    if (!said) process.stdout.write(`(waiting for idle CPUs: ${(busy * 100).toFixed(0)}% busy) `);
    said = true;
    busy = await cpuBusy(2000);
  }
  return busy;
}

/** Reads the file once so both engines map it from the page cache. */
function warmPageCache(path) {
  return new Promise((res, rej) => {
    const s = createReadStream(path, { highWaterMark: 8 << 20 });
    s.on("data", () => {});
    s.on("end", res);
    s.on("error", rej);
  });
}

function runTrial(cfg, opts) {
  return new Promise((res) => {
    const child = fork(join(here, "trial.mjs"), [], { stdio: ["ignore", opts.verbose ? "inherit" : "ignore", opts.verbose ? "inherit" : "pipe", "ipc"] });
    let stderr = "";
    child.stderr?.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
    let msg;
    const timer = setTimeout(() => {
      msg = { ok: false, error: `timed out after ${opts.timeoutS} s` };
      child.kill("SIGKILL");
    }, opts.timeoutS * 1000);
    child.on("message", (m) => (msg ??= m));
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      if (!msg) msg = { ok: false, error: `child exited with ${signal ?? code} before reporting` };
      if (!msg.ok && stderr.trim()) msg.error += `\n--- child stderr (tail) ---\n${stderr.trim()}`;
      res(msg);
    });
    child.send(cfg);
  });
}

const fmtCores = (x) => (x === undefined ? "?" : x.toFixed(2));

const median = (xs) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

function table(rows, header) {
  const all = [header, ...rows];
  const w = header.map((_, i) => Math.max(...all.map((r) => String(r[i]).length)));
  const line = (r) => "| " + r.map((c, i) => (i === 0 || i === 1 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join(" | ") + " |";
  return [line(header), "|" + w.map((n, i) => (i < 2 ? "-".repeat(n + 2) : "-".repeat(n + 1) + ":")).join("|") + "|", ...rows.map(line)].join("\n");
}

async function main() {
  const opts = parseOptions();
  const build = checkBuild();
  let llmserve;
  try {
    llmserve = await import(join(repoRoot, "dist", "index.js"));
  } catch (err) {
    die(`could not load dist/index.js (${err.message}); run \`npm run build\` first.`);
  }
  let isa;
  try {
    isa = llmserve.kernelIsa();
  } catch (err) {
    die(`${err.message}`);
  }
  const mach = machine(isa, llmserve.physicalCores());
  const model = await ensureModel(opts, llmserve.synth);
  const gguf = await llmserve.readGguf(model.path, { maxArrayLength: 16 });
  const vocab = gguf.tensors.find((t) => t.name === "token_embd.weight")?.shape?.[1] ?? SHAPE.vocabSize;
  const weightTypes = {};
  for (const t of gguf.tensors) weightTypes[t.type] = (weightTypes[t.type] ?? 0) + 1;
  const fileMiB = statSync(model.path).size / 2 ** 20;
  if (os.totalmem() < statSync(model.path).size * 2.5) console.warn("warning: little memory for this model; the page cache may not hold it for both engines.");

  const contextSize = Math.max(1024, opts.pp + 64, opts.tgPrompt + opts.tg + 64);
  const load = os.loadavg()[0];
  console.log("");
  console.log(`machine : ${mach.cpu}, ${mach.physicalCores} cores / ${mach.logicalCpus} logical CPUs, ${mach.memoryGiB} GiB, Node ${mach.node}, llmserve kernels ${mach.llmserveKernelIsa}`);
  console.log(`model   : ${model.path} (${fileMiB.toFixed(0)} MiB; ${Object.entries(weightTypes).map(([k, v]) => `${v} ${k}`).join(", ")} tensors; vocab ${vocab})`);
  console.log(`run     : threads ${opts.threads}, trials ${opts.trials}, pp${opts.pp}, tg${opts.tg} (after a ${opts.tgPrompt}-token prompt), context ${contextSize}, engines ${opts.engines.map((e) => ENGINE_LABEL[e]).join(" + ")}`);
  if (load > mach.logicalCpus * 0.5) console.warn(`warning: load average ${load.toFixed(2)} on ${mach.logicalCpus} CPUs: other processes are busy; numbers will be noisy.`);
  if (opts.threads > mach.physicalCores) console.warn(`warning: ${opts.threads} threads on ${mach.physicalCores} physical cores oversubscribes the CPU.`);
  console.log("");

  const trials = [];
  let contended = false;
  for (let t = 0; t < opts.trials; t++) {
    // Alternate which engine goes first, so slow drift (thermal, background load) hits both.
    const order = t % 2 === 0 ? opts.engines : [...opts.engines].reverse();
    for (const engine of order) {
      await warmPageCache(model.path);
      process.stdout.write(`trial ${t + 1}/${opts.trials} ${ENGINE_LABEL[engine].padEnd(14)} ... `);
      const busyBefore = opts.waitIdle ? await waitIdle() : await cpuBusy(500);
      const loadBefore = os.loadavg()[0];
      const t0 = Date.now();
      const msg = await runTrial({ engine, modelPath: model.path, threads: opts.threads, pp: opts.pp, tg: opts.tg, tgPrompt: opts.tgPrompt, contextSize, vocab, seed: opts.seed }, opts);
      const wallS = (Date.now() - t0) / 1000;
      if (msg.ok) {
        const r = msg.result;
        console.log(
          `pp${opts.pp} ${r.pp.tps.toFixed(2)} tok/s, tg${opts.tg} ${r.tg.tps.toFixed(2)} tok/s  ` +
            `(cpu/thread ${r.pp.cpu.toFixed(2)}/${r.tg.cpu.toFixed(2)}, others ${fmtCores(r.pp.otherCores)}/${fmtCores(r.tg.otherCores)} cores, ` +
            `load ${(r.loadMs / 1000).toFixed(1)} s, child ${wallS.toFixed(0)} s)`,
        );
        if (Math.max(r.pp.otherCores ?? 0, r.tg.otherCores ?? 0) > CONTENDED_CORES) contended = true;
        trials.push({ engine, trial: t + 1, ok: true, cpuBusyBefore: busyBefore, loadAvg1m: loadBefore, childWallS: wallS, ...r });
      } else {
        console.log("FAILED");
        console.error(`  ${msg.error.replace(/\n/g, "\n  ")}`);
        trials.push({ engine, trial: t + 1, ok: false, cpuBusyBefore: busyBefore, loadAvg1m: loadBefore, childWallS: wallS, error: msg.error });
      }
    }
  }

  const summary = {};
  for (const engine of opts.engines) {
    const ok = trials.filter((r) => r.engine === engine && r.ok);
    summary[engine] = {
      trials: ok.length,
      [`pp${opts.pp}`]: median(ok.map((r) => r.pp.tps)),
      [`tg${opts.tg}`]: median(ok.map((r) => r.tg.tps)),
      ...(engine === "llmserve" && ok.length ? { engineTiming: { [`pp${opts.pp}`]: median(ok.map((r) => r.pp.engineTps)), [`tg${opts.tg}`]: median(ok.map((r) => r.tg.engineTps)) } } : {}),
    };
  }
  const tests = [`pp${opts.pp}`, `tg${opts.tg}`];
  const ratios = {};
  if (summary.llmserve && summary.llamacpp) for (const k of tests) ratios[k] = summary.llmserve[k] / summary.llamacpp[k];

  const fmt = (x) => (Number.isFinite(x) ? x.toFixed(2) : "n/a");
  const rows = [];
  for (const k of tests) {
    for (const engine of opts.engines) {
      const s = summary[engine];
      const key = k.startsWith("pp") ? "pp" : "tg";
      const busy = trials.filter((r) => r.engine === engine && r.ok && (r[key].otherCores ?? 0) > CONTENDED_CORES).length;
      rows.push([ENGINE_LABEL[engine], k, fmt(s[k]), `${s.trials}/${opts.trials}${busy ? ` (${busy} contended)` : ""}`, engine === "llmserve" && k in ratios ? `${fmt(ratios[k])}x` : ""]);
    }
  }
  console.log("");
  const header = ["engine", "test", "tok/s (median)", "trials ok", "llmserve / llama.cpp"];
  console.log(opts.engines.length > 1 ? table(rows, header) : table(rows.map((r) => r.slice(0, 4)), header.slice(0, 4)));
  console.log("");
  if (contended) {
    console.warn("warning: other processes used more than a quarter of a core during some test (\"others\" column):");
    console.warn("         those timings are contended; rerun on a quiet machine (or with --wait-idle).");
  }

  const stamp = new Date().toISOString().replace(/:/g, "-").replace(/\.\d+Z$/, "Z");
  const outDir = join(repoRoot, "bench", "results");
  mkdirSync(outDir, { recursive: true });
  const outPath = join(outDir, `e2e-${stamp}.json`);
  const llamaDetails = trials.find((r) => r.engine === "llamacpp" && r.ok)?.details;
  writeFileSync(
    outPath,
    JSON.stringify(
      {
        benchmark: "e2e",
        date: new Date().toISOString(),
        machine: mach,
        loadAvgAtStart: os.loadavg(),
        build,
        model: { path: model.path, sizeBytes: statSync(model.path).size, synthesized: opts.model ? false : { ...SHAPE, type: opts.type }, weightTypes, vocab },
        options: { threads: opts.threads, trials: opts.trials, pp: opts.pp, tg: opts.tg, tgPrompt: opts.tgPrompt, contextSize, seed: opts.seed, quick: opts.quick, engines: opts.engines },
        nodeLlamaCpp: llamaDetails ? { version: readPkgVersion("node-llama-cpp"), ...llamaDetails } : undefined,
        contended,
        summary,
        ratios,
        trials,
      },
      null,
      2,
    ) + "\n",
  );
  console.log(`results : ${relative(process.cwd(), outPath)}`);
  if (trials.some((r) => !r.ok)) process.exitCode = 1;
}

function readPkgVersion(name) {
  try {
    return JSON.parse(readFileSync(join(repoRoot, "node_modules", name, "package.json"), "utf8")).version;
  } catch {
    return undefined;
  }
}

main().catch((err) => die(err?.stack ?? String(err)));
