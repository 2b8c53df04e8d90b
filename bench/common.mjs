// Helpers shared by the end-to-end (e2e/) and serving (serving/) benchmarks, parents and children:
// command line, build and addon checks, the synthesized model and its cache path, the machine line,
// the /proc/stat contention measure, pseudo-random prompts, child processes and result files.

import { execFileSync, fork } from "node:child_process";
import { createHash } from "node:crypto";
import {
  cpSync,
  createReadStream,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");

// TinyLlama-1.1B shape (TinyLlama/TinyLlama-1.1B-Chat-v1.0 config).
export const SHAPE = {
  arch: "llama",
  dim: 2048,
  layers: 22,
  heads: 32,
  kvHeads: 4,
  ffn: 5632,
  vocabSize: 32000,
  context: 2048,
  seed: 7,
};

// A test is "contended" when other processes used more than this many cores while it ran.
export const CONTENDED_CORES = 0.25;

// ---------------------------------------------------------------- command line

/** die(msg): prints "<prefix>: msg" to stderr and exits with 1. */
export function makeDie(prefix) {
  return (msg) => {
    console.error(`${prefix}: ${msg}`);
    process.exit(1);
  };
}

// Options every benchmark takes, with the same meaning in each.
const SHARED_OPTIONS = {
  quick: { type: "boolean" },
  model: { type: "string" },
  threads: { type: "string" },
  seed: { type: "string" },
  timeout: { type: "string" },
  "wait-idle": { type: "boolean" },
  verbose: { type: "boolean" },
  tier: { type: "string" },
};

/**
 * Parses process.argv with node:util parseArgs: `options` plus the shared ones (--quick, --model,
 * --threads, --seed, --timeout, --wait-idle, --verbose) and -h/--help (prints `help`, exits 0); an
 * unknown option dies with the help text. Returns the values and int(name, value, default, min):
 * the default when value is undefined, else an integer >= min (or die).
 */
export function parseCli(options, help, die) {
  let values;
  try {
    values = parseArgs({ options: { ...SHARED_OPTIONS, ...options, help: { type: "boolean", short: "h" } } }).values;
  } catch (err) {
    die(`${err.message}\n\n${help}`);
  }
  if (values.help) {
    console.log(help);
    process.exit(0);
  }
  const int = (name, v, def, min) => {
    if (v === undefined) return def;
    const n = Number(v);
    if (!Number.isInteger(n) || n < min)
      die(`Expected an integer >= ${min} for --${name} but received ${JSON.stringify(v)}`);
    return n;
  };
  return { values, int };
}

// ---------------------------------------------------------------- build, machine, model

/** dist/ and the addon must exist; warns when sources look newer than the build. */
export function checkBuild(die) {
  const distIndex = join(repoRoot, "dist", "index.js");
  if (!existsSync(distIndex)) die(`${relative(process.cwd(), distIndex)} is missing: run \`npm run build\` first.`);
  const addons = [
    process.env.LLMSERVE_ADDON,
    join(repoRoot, "prebuilds", `${process.platform}-${process.arch}`, "llmserve.node"),
    join(repoRoot, "build", "Release", "llmserve.node"),
    join(repoRoot, "build", "llmserve.node"),
  ].filter(Boolean);
  const addon = addons.find((p) => existsSync(p));
  if (!addon) die("the native addon is not built (no build/Release/llmserve.node): run `npm run build` first.");
  const newest = (dir, exts) => {
    let t = 0;
    if (!existsSync(dir)) return t;
    for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
      if (e.isFile() && exts.some((x) => e.name.endsWith(x)))
        t = Math.max(t, statSync(join(e.parentPath ?? e.path, e.name)).mtimeMs);
    }
    return t;
  };
  const warnings = [];
  if (newest(join(repoRoot, "lib"), [".ts"]) > statSync(distIndex).mtimeMs)
    warnings.push("lib/ has TypeScript newer than dist/");
  if (newest(join(repoRoot, "native"), [".cpp", ".cc", ".h"]) > statSync(addon).mtimeMs)
    warnings.push(`native/ has sources newer than ${relative(repoRoot, addon)}`);
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

/** Imports dist/index.js (the package as users get it), or dies. */
export async function loadLlmserve(die) {
  try {
    return await import(join(repoRoot, "dist", "index.js"));
  } catch (err) {
    die(`could not load dist/index.js (${err.message}); run \`npm run build\` first.`);
  }
}

export function machine(kernelIsa, physicalCores) {
  let cpu = os.cpus()[0]?.model ?? "unknown";
  let flags = [];
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8");
    cpu = /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? cpu;
    flags = (/^flags\s*:\s*(.+)$/m.exec(info)?.[1] ?? "")
      .split(/\s+/)
      .filter((f) => /^(avx|avx2|fma|f16c|avx512\w*|amx\w*)$/.test(f));
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

export function machineLine(m) {
  return `machine : ${m.cpu}, ${m.physicalCores} cores / ${m.logicalCpus} logical CPUs, ${m.memoryGiB} GiB, Node ${m.node}, llmserve kernels ${m.llmserveKernelIsa}`;
}

/** Warns when the machine is already busy or `threads` oversubscribes its physical cores. */
export function warnBusyMachine(mach, threads) {
  const load = os.loadavg()[0];
  if (load > mach.logicalCpus * 0.5)
    console.warn(
      `warning: load average ${load.toFixed(2)} on ${mach.logicalCpus} CPUs: other processes are busy; numbers will be noisy.`,
    );
  if (threads > mach.physicalCores)
    console.warn(`warning: ${threads} threads on ${mach.physicalCores} physical cores oversubscribes the CPU.`);
}

/** The cache directory of generated models and adapters: $LLMSERVE_BENCH_DIR or bench/.cache/ (created). */
export function cacheDir() {
  const dir = process.env.LLMSERVE_BENCH_DIR
    ? resolve(process.env.LLMSERVE_BENCH_DIR)
    : join(repoRoot, "bench", ".cache");
  mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * `model` when given (it must exist, else die); otherwise a model of weight `type` and `shape`
 * (default the TinyLlama-1.1B shape, named `name`), synthesized once into the cache directory
 * (written to a temp name, then renamed) and reused. `progress`: show the percentage while
 * synthesizing (on a TTY).
 */
export async function ensureModel(
  synth,
  { model, type, die, progress = false, shape = SHAPE, name = "tinyllama-1.1b-shape" },
) {
  if (model) {
    if (!existsSync(model)) die(`--model ${model} does not exist`);
    return { path: model, synthesized: false };
  }
  const path = join(cacheDir(), `${name}-${type}-seed${shape.seed}.gguf`);
  if (existsSync(path)) return { path, synthesized: false };
  const tmp = `${path}.partial-${process.pid}`;
  process.stdout.write(`Synthesizing a ${name} ${type} model (once) -> ${path}\n`);
  const t0 = Date.now();
  let shown = -1;
  const onProgress = (f) => {
    const pct = Math.floor(f * 100);
    if (pct >= shown + 10 && process.stdout.isTTY) {
      shown = pct;
      process.stdout.write(`  ${pct}%\r`);
    }
  };
  try {
    const { notes } = await synth(tmp, { ...shape, type, ...(progress ? { onProgress } : {}) });
    for (const n of notes) console.log(`  note: ${n}`);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  renameSync(tmp, path);
  console.log(
    `  done in ${((Date.now() - t0) / 1000).toFixed(1)} s (${(statSync(path).size / 2 ** 20).toFixed(0)} MiB)`,
  );
  return { path, synthesized: true };
}

/** Reads the file once so both engines map it from the page cache. */
export function warmPageCache(path) {
  return new Promise((res, rej) => {
    const s = createReadStream(path, { highWaterMark: 8 << 20 });
    s.on("data", () => {});
    s.on("end", res);
    s.on("error", rej);
  });
}

export function readPkgVersion(name) {
  try {
    return JSON.parse(readFileSync(join(repoRoot, "node_modules", name, "package.json"), "utf8")).version;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- CPU use and contention

/** Busy and total jiffies over all CPUs from /proc/stat (undefined off Linux). */
export function procStat() {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1, 9).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    return { busy: total - f[3] - f[4], total };
  } catch {
    return undefined;
  }
}

/**
 * Runs fn and returns [result, { wallMs, cpu, otherCores }]:
 *   cpu        = this process's CPU time during fn / (wall time x threads): ~1 when the engine kept
 *                its threads busy (or spinning); below 1 when its threads idled or were preempted;
 *   otherCores = cores' worth of CPU time that other processes used meanwhile (from /proc/stat):
 *                ~0 on a quiet machine; when it is large, the timing is contended.
 */
export async function withCpu(threads, fn) {
  const s0 = procStat();
  const c0 = process.cpuUsage();
  const w0 = performance.now();
  const r = await fn();
  const c = process.cpuUsage(c0);
  const wallMs = performance.now() - w0;
  const s1 = procStat();
  const ownCores = (c.user + c.system) / 1000 / wallMs;
  let otherCores;
  if (s0 && s1 && s1.total > s0.total) {
    otherCores = +Math.max(
      0,
      ((s1.busy - s0.busy) / (s1.total - s0.total)) * os.availableParallelism() - ownCores,
    ).toFixed(2);
  }
  return [r, { wallMs, cpu: +(ownCores / threads).toFixed(3), otherCores }];
}

/** Fraction of all CPUs busy (not idle/iowait) over `ms`, from /proc/stat; undefined off Linux. */
export async function cpuBusy(ms = 1000) {
  const a = procStat();
  await new Promise((r) => setTimeout(r, ms));
  const b = procStat();
  return a && b && b.total > a.total ? +((b.busy - a.busy) / (b.total - a.total)).toFixed(3) : undefined;
}

/** With --wait-idle: waits until other processes leave the CPUs < 15% busy (gives up after 5 min). */
export async function waitIdle() {
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

// ---------------------------------------------------------------- prompts

/** Deterministic pseudo-random numbers in [0, 1) (mulberry32). */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Deterministic pseudo-random token ids in [3, vocab): 0..2 are unk/bos/eos in llama vocabularies. */
export function tokenIds(n, vocab, seed) {
  const next = rng(seed);
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = 3 + Math.floor(next() * (vocab - 3));
  return out;
}

// ---------------------------------------------------------------- child processes

/**
 * Forks `script` (a path), sends it `msg` and resolves with the one message it answers
 * ({ ok: true, result } or { ok: false, error }). opts: { timeoutS, verbose } (verbose: the child's
 * stdout and stderr go to ours; otherwise a failure's error ends with the tail of its stderr).
 */
export function runChild(script, msg, opts) {
  return new Promise((res) => {
    const child = fork(script, [], {
      stdio: ["ignore", opts.verbose ? "inherit" : "ignore", opts.verbose ? "inherit" : "pipe", "ipc"],
    });
    let stderr = "";
    child.stderr?.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
    let answer;
    const timer = setTimeout(() => {
      answer = { ok: false, error: `timed out after ${opts.timeoutS} s` };
      child.kill("SIGKILL");
    }, opts.timeoutS * 1000);
    child.on("message", (m) => (answer ??= m));
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      if (!answer) answer = { ok: false, error: `child exited with ${signal ?? code} before reporting` };
      if (!answer.ok && stderr.trim()) answer.error += `\n--- child stderr (tail) ---\n${stderr.trim()}`;
      res(answer);
    });
    child.send(msg);
  });
}

/** In a child: answers the parent's one message with { ok: true, result: await fn(msg) } or { ok: false, error }, then exits. */
export function serveOneMessage(fn) {
  process.once("message", async (msg) => {
    try {
      const result = await fn(msg);
      process.send({ ok: true, result }, () => process.exit(0));
    } catch (err) {
      process.send({ ok: false, error: `${err?.code ? `${err.code}: ` : ""}${err?.stack ?? err}` }, () =>
        process.exit(1),
      );
    }
  });
}

// ---------------------------------------------------------------- instruction-set tier

/**
 * --tier values: best = each engine's best kernels for this CPU; avx2 = both restricted to AVX2
 * (llama.cpp's "haswell" CPU variant); avxvnni = AVX2 + AVX-VNNI (llama.cpp's "alderlake" variant,
 * the Intel client cores that have AVX-VNNI without AVX-512).
 */
export const TIERS = ["best", "avx2", "avxvnni"];
/** The llama.cpp CPU variant each restricted tier keeps. */
const TIER_VARIANT = { avx2: "haswell", avxvnni: "alderlake" };

/**
 * Applies --tier in the parent, before llmserve's addon loads and before any child is forked
 * (children inherit the environment). avx2 / avxvnni: LLMSERVE_KERNELS=<tier> for llmserve, and for
 * node-llama-cpp a copy of its prebuilt package (cached) whose bins keep only that tier's variant
 * of the CPU backend (children load it through importLlamaCpp). Children report the variant
 * llama.cpp actually loaded (llamaCppCpuVariant); check it with checkLlamaCppVariant.
 */
export function applyTier(tier, die) {
  if (!TIERS.includes(tier)) die(`Expected one of ${TIERS.join(", ")} for --tier but received ${JSON.stringify(tier)}`);
  if (tier === "best") return;
  const variant = TIER_VARIANT[tier];
  if (process.platform !== "linux" || process.arch !== "x64")
    die(`--tier ${tier} needs Linux x64 (the ${variant} variant of node-llama-cpp's prebuilt CPU backend)`);
  // Without AVX-VNNI llmserve would quietly run plain AVX2 and llama.cpp's alderlake build would not load.
  if (tier === "avxvnni" && !/\bavx_vnni\b/.test(readFileSync("/proc/cpuinfo", "utf8")))
    die("--tier avxvnni needs a CPU with AVX-VNNI (avx_vnni in /proc/cpuinfo); use --tier avx2 on this one");
  const src = join(repoRoot, "node_modules", "@node-llama-cpp", "linux-x64");
  let version;
  try {
    version = JSON.parse(readFileSync(join(src, "package.json"), "utf8")).version;
  } catch {
    die(`${src} is missing; run \`npm ci\` (node-llama-cpp's prebuilt Linux x64 package)`);
  }
  const dst = join(cacheDir(), `node-llama-cpp-linux-x64-${variant}-${version}`);
  if (!existsSync(join(dst, "package.json"))) {
    const tmp = `${dst}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    const keep = new RegExp(`libggml-cpu-${variant}\\.so$`);
    cpSync(src, tmp, {
      recursive: true,
      filter: (p) => !/libggml-cpu-.*\.so$/.test(p) || keep.test(p),
    });
    renameSync(tmp, dst);
  }
  process.env.LLMSERVE_KERNELS = tier;
  process.env.LLMSERVE_BENCH_LLAMA_PKG = dst;
}

/** In a child: imports node-llama-cpp, from the AVX2-only package copy when the tier asks for it. */
export async function importLlamaCpp() {
  const pkg = process.env.LLMSERVE_BENCH_LLAMA_PKG;
  if (pkg) {
    const { register } = await import("node:module");
    register("./llama-tier-hook.mjs", import.meta.url, { data: { pkg } });
  }
  return import("node-llama-cpp");
}

/** In a child, after getLlama: the libggml-cpu-<variant>.so llama.cpp loaded ("haswell", "zen4", ...). */
export function llamaCppCpuVariant() {
  try {
    return /libggml-cpu-([\w-]+)\.so/.exec(readFileSync("/proc/self/maps", "utf8"))?.[1] ?? "unknown";
  } catch {
    return "unknown";
  }
}

/** Dies when a restricted --tier asked for one llama.cpp variant and a child loaded another one. */
export function checkLlamaCppVariant(tier, variant, die) {
  const want = TIER_VARIANT[tier];
  if (want && variant !== want)
    die(
      `--tier ${tier}: node-llama-cpp loaded its "${variant}" CPU backend, not "${want}"; the comparison would be unfair`,
    );
}

// ---------------------------------------------------------------- statistics, tables, results

export const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

export const median = (xs) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

export function percentile(xs, p) {
  if (xs.length === 0) return NaN;
  const s = Float64Array.from(xs).sort();
  const i = (s.length - 1) * p;
  const lo = Math.floor(i);
  const hi = Math.ceil(i);
  return s[lo] + (s[hi] - s[lo]) * (i - lo);
}

/** Cores' worth of CPU for display ("?" when unknown). */
export const fmtCores = (x) => (x === undefined ? "?" : x.toFixed(2));

/** Markdown table; the first `left` columns are left-aligned, the rest right-aligned. */
export function table(rows, header, left = 1) {
  const all = [header, ...rows];
  const w = header.map((_, i) => Math.max(...all.map((r) => String(r[i]).length)));
  const line = (r) =>
    `| ${r.map((c, i) => (i < left ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join(" | ")} |`;
  return [
    line(header),
    `|${w.map((n, i) => (i < left ? "-".repeat(n + 2) : `${"-".repeat(n + 1)}:`)).join("|")}|`,
    ...rows.map(line),
  ].join("\n");
}

/**
 * Writes { benchmark, date, ...fields } to bench/results/<benchmark>-<UTC date>.json (JSON indented
 * by `indent`) and prints its path.
 */
export function writeResults(benchmark, fields, indent) {
  const stamp = new Date()
    .toISOString()
    .replace(/:/g, "-")
    .replace(/\.\d+Z$/, "Z");
  const outDir = join(repoRoot, "bench", "results");
  mkdirSync(outDir, { recursive: true });
  const outPath = join(outDir, `${benchmark}-${stamp}.json`);
  writeFileSync(outPath, `${JSON.stringify({ benchmark, date: new Date().toISOString(), ...fields }, null, indent)}\n`);
  console.log(`results : ${relative(process.cwd(), outPath)}`);
}
