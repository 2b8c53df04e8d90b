// Mutation testing of the C++ core: applies each hand-written mutation of native-mutations.mjs (an exact
// search/replace on one source file, which must match exactly once), rebuilds only the native test
// binary in its own build folder (build-mutate/), runs the native tests (dispatched kernels, then
// forced scalar), restores the file, and reports which mutations survived. Every mutation must be
// killed: a survivor means a native test is missing. `npm run test:mutation:native`
//   [-- --only id1,id2] [--list] [--keep-going: do not stop at the first survivor]
// The original file is restored whatever happens (error, test failure, Ctrl-C, SIGTERM); a copy of
// it is kept in build-mutate/backup/ while it is mutated, and a later run restores any left there
// (e.g. after a SIGKILL) before it starts.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { MUTATIONS } from "./native-mutations.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const buildDir = join(root, "build-mutate");
const backupDir = join(buildDir, "backup");
const bin = join(buildDir, "bin", "llmserve_native_tests");

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const value = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};

if (flag("--list")) {
  for (const m of MUTATIONS) console.log(`${m.id.padEnd(34)} ${m.file}: ${m.why}`);
  process.exit(0);
}

/** Files currently mutated: path -> original text (restored on any exit). */
const pending = new Map();
function restoreAll() {
  for (const [file, text] of pending) {
    writeFileSync(join(root, file), text);
    pending.delete(file);
  }
  rmSync(backupDir, { recursive: true, force: true });
}
let child;
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    if (child) child.kill("SIGKILL");
    restoreAll();
    console.error(`\nmutate-native: ${sig}: restored the source; stopping`);
    process.exit(130);
  });
}
process.on("exit", restoreAll);
process.on("uncaughtException", (err) => {
  restoreAll();
  console.error(err);
  process.exit(2);
});

/** Runs a command; resolves { code, out, ms }; code "timeout" past timeoutMs. */
function run(cmd, argv, { env = {}, timeoutMs = 0, quiet = true } = {}) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    let out = "";
    child = spawn(cmd, argv, { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    const onData = (d) => {
      out += d;
      if (!quiet) process.stdout.write(d);
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    let timedOut = false;
    const timer = timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          child.kill("SIGKILL");
        }, timeoutMs)
      : undefined;
    child.on("close", (code) => {
      clearTimeout(timer);
      child = undefined;
      resolve({ code: timedOut ? "timeout" : code, out, ms: Date.now() - t0 });
    });
  });
}

const jobs = String(Math.max(1, Math.min(2, availableParallelism())));
async function build(quiet = true) {
  if (!existsSync(join(buildDir, "CMakeCache.txt"))) {
    const c = await run(
      "cmake",
      ["-S", root, "-B", buildDir, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DLLMSERVE_BUILD_TESTS=ON"],
      { quiet },
    );
    if (c.code !== 0) return c;
  }
  return run("cmake", ["--build", buildDir, "--target", "llmserve_native_tests", "-j", jobs], { quiet });
}

// The few slow tests (file-level quantization and imatrix byte-equality against llama.cpp, the
// empirical sampling frequencies: over 90% of a native run) run after the rest, so most mutations
// are killed in seconds; the verdict is the same as one whole run (a survivor has passed them all).
const SLOW = ["quantize_", "imatrix_", "sampling_empirical"];

/** The native tests, dispatched kernels (fast ones, then the slow ones), then forced scalar (as npm run test:native). */
async function tests(timeoutMs) {
  const passes = [
    ["dispatched kernels", SLOW.map((s) => `-${s}`), {}],
    ["dispatched kernels, slow tests", SLOW, {}],
    ["forced scalar", [], { LLMSERVE_FORCE_SCALAR: "1" }],
  ];
  let out = "";
  let ms = 0;
  let last = { code: 0 };
  for (const [pass, args, env] of passes) {
    last = await run(bin, args, { timeoutMs, env });
    out += last.out;
    ms += last.ms;
    if (last.code !== 0) return { code: last.code, out, ms, pass };
  }
  return { code: 0, out, ms, pass: "forced scalar" };
}

// A previous run killed mid-mutation leaves its backups: put them back first.
if (existsSync(backupDir)) {
  for (const name of readdirSync(backupDir)) {
    const file = decodeURIComponent(name);
    writeFileSync(join(root, file), readFileSync(join(backupDir, name)));
    console.log(`mutate-native: restored ${file} left mutated by an interrupted run`);
  }
  rmSync(backupDir, { recursive: true, force: true });
}

const only = value("--only")?.split(",");
const list = only ? MUTATIONS.filter((m) => only.includes(m.id)) : MUTATIONS;
if (only && list.length !== only.length) {
  console.error(
    `mutate-native: unknown id in --only (${only.filter((id) => !MUTATIONS.some((m) => m.id === id)).join(", ")}); see --list`,
  );
  process.exit(2);
}
// Each mutation must match its file exactly once before anything is built.
for (const m of list) {
  const text = readFileSync(join(root, m.file), "utf8");
  const n = text.split(m.find).length - 1;
  if (n !== 1) {
    console.error(
      `mutate-native: ${m.id}: the text to replace occurs ${n} times in ${m.file} (must be exactly once); update the mutation`,
    );
    process.exit(2);
  }
}

console.log(`mutate-native: baseline build in ${buildDir} (native test binary only)`);
let b = await build(false);
if (b.code !== 0) {
  console.error("mutate-native: the unmutated source does not build");
  process.exit(2);
}
const base = await tests(0);
if (base.code !== 0) {
  console.error(
    base.out
      .split("\n")
      .filter((l) => l.startsWith("FAIL") || l.includes("failed"))
      .join("\n"),
  );
  console.error("mutate-native: the native tests fail without any mutation; fix them first");
  process.exit(2);
}
const timeoutMs = Math.max(120_000, base.ms * 10);
console.log(
  `mutate-native: baseline passes (${(base.ms / 1000).toFixed(1)} s); ${list.length} mutations, test timeout ${(timeoutMs / 1000).toFixed(0)} s`,
);

const results = [];
for (const m of list) {
  const path = join(root, m.file);
  const original = readFileSync(path, "utf8");
  mkdirSync(backupDir, { recursive: true });
  writeFileSync(join(backupDir, encodeURIComponent(m.file)), original);
  pending.set(m.file, original);
  let result;
  try {
    writeFileSync(
      path,
      original.replace(m.find, () => m.replace),
    );
    b = await build();
    if (b.code !== 0) {
      result = { status: "no-build", detail: (b.out.match(/error: .*/) ?? ["build failed"])[0] };
    } else {
      const t = await tests(timeoutMs);
      const failing = t.out
        .split("\n")
        .filter((l) => l.startsWith("FAIL "))
        .map((l) =>
          l
            .slice(5)
            .replace(/ \(\d+ ms\)$/, "")
            .trim(),
        );
      result =
        t.code === 0
          ? { status: "SURVIVED", detail: "every native test passed" }
          : t.code === "timeout"
            ? { status: "killed", detail: `timed out (${t.pass})` }
            : {
                status: "killed",
                detail: `${t.pass}: ${[...new Set(failing)].slice(0, 4).join(", ") || `exit ${t.code}`}`,
              };
    }
  } finally {
    writeFileSync(path, original);
    pending.delete(m.file);
    rmSync(backupDir, { recursive: true, force: true });
  }
  results.push({ ...m, ...result });
  console.log(`${result.status.padEnd(8)} ${m.id.padEnd(34)} ${result.detail}`);
  if (result.status === "SURVIVED" && !flag("--keep-going") && !only) {
    console.log("mutate-native: stopping at the first survivor (--keep-going runs the rest)");
    break;
  }
}
await build(); // leave build-mutate matching the restored source

const killed = results.filter((r) => r.status === "killed").length;
const survived = results.filter((r) => r.status === "SURVIVED");
const broken = results.filter((r) => r.status === "no-build");
console.log(
  `\nmutate-native: ${killed} killed, ${survived.length} survived, ${broken.length} did not build, of ${results.length} run`,
);
for (const r of survived) console.log(`  survived: ${r.id} (${r.file}): ${r.why}`);
for (const r of broken) console.log(`  did not build: ${r.id}: ${r.detail}`);
process.exit(survived.length > 0 || broken.length > 0 || results.length < list.length ? 1 : 0);
