// Helpers shared by the serving benchmark's parent (run.mjs) and its children (child.mjs).
// Patterns follow bench/e2e: the same synthesized model and cache path, the same machine line,
// the same /proc/stat contention measure.

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

// TinyLlama-1.1B shape, exactly as bench/e2e/run.mjs synthesizes it (same cache file).
export const SHAPE = { arch: "llama", dim: 2048, layers: 22, heads: 32, kvHeads: 4, ffn: 5632, vocabSize: 32000, context: 2048, seed: 7 };
export const MODEL_TYPE = "q4_0";

/** Deterministic pseudo-random numbers in [0, 1) (mulberry32), as bench/e2e/trial.mjs. */
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
 *   cpu        = this process's CPU time / (wall x threads): ~1 when the engine kept its threads busy;
 *   otherCores = cores' worth of CPU that other processes used meanwhile (/proc/stat): ~0 when quiet.
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
    otherCores = +Math.max(0, ((s1.busy - s0.busy) / (s1.total - s0.total)) * os.availableParallelism() - ownCores).toFixed(2);
  }
  return [r, { wallMs, cpu: +(ownCores / threads).toFixed(3), otherCores }];
}

/** Fraction of all CPUs busy over `ms`, from /proc/stat; undefined off Linux. */
export async function cpuBusy(ms = 1000) {
  const a = procStat();
  await new Promise((r) => setTimeout(r, ms));
  const b = procStat();
  return a && b && b.total > a.total ? +((b.busy - a.busy) / (b.total - a.total)).toFixed(3) : undefined;
}

/** Waits (up to 5 min) until other processes leave the CPUs < 15% busy. */
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

/** Reads the file once so both engines map it from the page cache. */
export function warmPageCache(path) {
  return new Promise((res, rej) => {
    const s = createReadStream(path, { highWaterMark: 8 << 20 });
    s.on("data", () => {});
    s.on("end", res);
    s.on("error", rej);
  });
}

export function percentile(xs, p) {
  if (xs.length === 0) return NaN;
  const s = Float64Array.from(xs).sort();
  const i = (s.length - 1) * p;
  const lo = Math.floor(i);
  const hi = Math.ceil(i);
  return s[lo] + (s[hi] - s[lo]) * (i - lo);
}

export const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

export function machine(kernelIsa, physicalCores) {
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

export function machineLine(m) {
  return `machine : ${m.cpu}, ${m.physicalCores} cores / ${m.logicalCpus} logical CPUs, ${m.memoryGiB} GiB, Node ${m.node}, llmserve kernels ${m.llmserveKernelIsa}`;
}

/** dist/ and the addon must exist; warns when sources look newer than the build (as bench/e2e). */
export function checkBuild(die) {
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

/** The model bench/e2e synthesizes (q4_0), made once into the same cache path and reused. */
export async function ensureModel(modelOpt, synth) {
  if (modelOpt) {
    if (!existsSync(modelOpt)) throw new Error(`--model ${modelOpt} does not exist`);
    return { path: modelOpt, synthesized: false };
  }
  const dir = process.env.LLMSERVE_BENCH_DIR ? resolve(process.env.LLMSERVE_BENCH_DIR) : join(repoRoot, "bench", ".cache");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `tinyllama-1.1b-shape-${MODEL_TYPE}-seed${SHAPE.seed}.gguf`);
  if (existsSync(path)) return { path, synthesized: false };
  const tmp = `${path}.partial-${process.pid}`;
  process.stdout.write(`Synthesizing a TinyLlama-1.1B-shape ${MODEL_TYPE} model (once) -> ${path}\n`);
  const t0 = Date.now();
  try {
    const { notes } = await synth(tmp, { ...SHAPE, type: MODEL_TYPE });
    for (const n of notes) console.log(`  note: ${n}`);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  renameSync(tmp, path);
  console.log(`  done in ${((Date.now() - t0) / 1000).toFixed(1)} s (${(statSync(path).size / 2 ** 20).toFixed(0)} MiB)`);
  return { path, synthesized: true };
}

/** Markdown table; the first `left` columns are left-aligned, the rest right-aligned. */
export function table(rows, header, left = 1) {
  const all = [header, ...rows];
  const w = header.map((_, i) => Math.max(...all.map((r) => String(r[i]).length)));
  const line = (r) => "| " + r.map((c, i) => (i < left ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join(" | ") + " |";
  return [line(header), "|" + w.map((n, i) => (i < left ? "-".repeat(n + 2) : "-".repeat(n + 1) + ":")).join("|") + "|", ...rows.map(line)].join("\n");
}

export function readPkgVersion(name) {
  try {
    return JSON.parse(readFileSync(join(repoRoot, "node_modules", name, "package.json"), "utf8")).version;
  } catch {
    return undefined;
  }
}
