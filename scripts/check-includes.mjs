// The C++ core's include graph points one way: a folder of native/core includes only itself and
// folders below it (LAYERS, lowest first); nothing in native/core includes native/napi or the
// tests. Run by `npm test` (milliseconds); prints each violation with the line that makes it.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, normalize, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const core = join(root, "native", "core");

/** Rank of each folder of native/core ("" = files at its top, e.g. status.h); lower = more basic. */
export const LAYERS = {
  "": 0,
  isa: 0,
  math: 0,
  threadpool: 0, // no dependencies inside the core
  os: 0, // file mappings, aligned memory, atomic replace (POSIX and Windows)
  quant: 1,
  sampling: 1, // block formats and kernels; sampling
  grammar: 1, // GBNF parser, grammar matcher, vocabulary trie masks (needs only status.h)
  eval: 1, // perplexity / KL scoring of logit rows (needs only status.h; sched/ runs it on engines)
  machine: 1, // facts measured at run time: read bandwidth (over threadpool/ and isa/)
  gguf: 2, // file format (uses quant's type table)
  kv: 3, // paged KV storage, allocator, rotation, eval cache
  attention: 4, // paged attention over kv/
  model: 5, // architectures: config, weights, forward pass
  lora: 6, // LoRA adapters: load against a model, per-segment deltas
  train: 6, // LoRA training: forward keeping activations, backward ops, optimizers (over model/)
  compress: 6, // offline model transforms over GGUF files (quantize, prune; calibration runs model/'s forward pass)
  backend: 7,
  synth: 7, // executors (own a model, adapters); synthetic model writer
  sched: 8, // the scheduler: sees only backend/executor.h
};

function* files(dir, pattern = /\.(h|cpp)$/) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* files(p, pattern);
    else if (pattern.test(name)) yield p;
  }
}

/** The core folder a path belongs to ("" for top-level files), or null outside native/core. */
function folderOf(path) {
  const rel = relative(core, path);
  if (rel.startsWith("..")) return null;
  const parts = rel.split(sep);
  return parts.length > 1 ? parts[0] : "";
}

export function check() {
  const problems = [];
  for (const file of files(core)) {
    const from = folderOf(file);
    if (!(from in LAYERS)) {
      problems.push(`${relative(root, file)}: folder "${from}" has no layer in scripts/check-includes.mjs`);
      continue;
    }
    readFileSync(file, "utf8")
      .split("\n")
      .forEach((line, i) => {
        const m = /^\s*#\s*include\s+"([^"]+)"/.exec(line);
        if (!m) return;
        // Quoted includes resolve next to the file first, then from native/core (the include root).
        const local = normalize(join(dirname(file), m[1]));
        let target = local;
        try {
          statSync(local);
        } catch {
          target = normalize(join(core, m[1]));
        }
        const to = folderOf(target);
        const where = `${relative(root, file)}:${i + 1}: #include "${m[1]}"`;
        if (to === null) problems.push(`${where} reaches outside native/core`);
        else if (!(to in LAYERS)) problems.push(`${where}: folder "${to}" has no layer`);
        else if (to !== from && LAYERS[to] >= LAYERS[from]) {
          problems.push(
            `${where}: ${from || "(top)"} (layer ${LAYERS[from]}) may not include ${to || "(top)"} (layer ${LAYERS[to]})`,
          );
        }
      });
  }
  return problems;
}

/**
 * Portability: operating-system calls live in native/core/os (POSIX and Windows side by side), so a
 * Windows build breaks in one folder, not five. Elsewhere in native/core and native/napi these
 * headers and calls are refused (the native tests may use them: they run on Linux only).
 */
const OS_ONLY = [
  [
    /^\s*#\s*include\s+<(sys\/[^>]+|unistd\.h|fcntl\.h|dlfcn\.h|pthread\.h|windows\.h|io\.h)>/,
    "a POSIX/Windows header",
  ],
  [/\b(mmap|munmap|madvise|fsync|getpid|sysconf)\s*\(/, "a POSIX call"],
  [/\bstd::aligned_alloc\b/, "std::aligned_alloc (MSVC has none: use os::aligned_alloc)"],
  [/\bM_PI\b/, "M_PI (not in standard C++: use std::numbers::pi)"],
];

export function checkPortable() {
  const problems = [];
  const dirs = [core, join(root, "native", "napi")];
  for (const dir of dirs) {
    for (const file of files(dir, /\.(h|cpp|cc)$/)) {
      if (folderOf(file) === "os") continue;
      readFileSync(file, "utf8")
        .split("\n")
        .forEach((line, i) => {
          const code = line.replace(/\/\/.*$/, "");
          for (const [re, what] of OS_ONLY) {
            if (re.test(code)) problems.push(`${relative(root, file)}:${i + 1}: ${what} outside native/core/os`);
          }
        });
    }
  }
  return problems;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === normalize(process.argv[1])) {
  const problems = [...check(), ...checkPortable()];
  for (const p of problems) console.error(p);
  if (problems.length) {
    console.error(
      `check-includes: ${problems.length} problem(s): includes that point up or sideways (see LAYERS), or OS calls outside native/core/os`,
    );
    process.exit(1);
  }
  console.log(
    `check-includes: native/core include graph points one way (${Object.keys(LAYERS).length} folders); OS calls only in native/core/os`,
  );
}
