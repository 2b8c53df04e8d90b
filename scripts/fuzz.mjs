// Builds the libFuzzer targets (native/fuzz) with clang -fsanitize=fuzzer,address,undefined in
// build-fuzz/ and runs each one for a bounded number of executions / seconds, then runs the
// TypeScript tokenizer fuzz harness (scripts/fuzz/tokenizer.mjs). Prints executions and findings
// per target; exits 1 when any target found something (crash inputs land in build-fuzz/findings/).
//
//   npm run fuzz                              # every target, 1,000,000 runs each (or 20 min)
//   npm run fuzz -- --runs 20000 --max-time 60 --targets gguf,sampling,peft
//   npm run fuzz -- --no-tokenizer            # native targets only
//   npm run fuzz -- --reproduce build-fuzz/findings/gguf/crash-...   # rerun one input
//
// Needs clang++ with libFuzzer (Debian: apt-get install clang libclang-rt-14-dev), cmake, ninja
// or make. The corpus grows in build-fuzz/corpus/<target> between runs; seeds are regenerated
// by make_seeds (our own GGUF writer) on every run.
import { spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const { values: opt } = parseArgs({
  options: {
    runs: { type: "string", default: "1000000" },
    "max-time": { type: "string", default: "1200" },
    targets: { type: "string", default: "gguf,sampling,engine,peft" },
    tokenizer: { type: "boolean", default: true },
    "no-tokenizer": { type: "boolean", default: false },
    "tokenizer-runs": { type: "string", default: "20000" },
    jobs: { type: "string", default: process.env.CMAKE_BUILD_PARALLEL_LEVEL ?? "2" },
    reproduce: { type: "string" },
    "build-only": { type: "boolean", default: false },
  },
});
const build = join(root, "build-fuzz");
const cxx = process.env.FUZZ_CXX ?? "clang++";

function run(cmd, args, extra = {}) {
  const r = spawnSync(cmd, args, { stdio: "inherit", cwd: root, ...extra });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

if (spawnSync(cxx, ["--version"], { stdio: "ignore" }).status !== 0) {
  console.error(
    `fuzz: ${cxx} not found. Install clang with libFuzzer (Debian 12: apt-get install -y clang libclang-rt-14-dev) or set FUZZ_CXX.`,
  );
  process.exit(2);
}
const generator = spawnSync("ninja", ["--version"], { stdio: "ignore" }).status === 0 ? ["-G", "Ninja"] : [];
if (!existsSync(join(build, "CMakeCache.txt"))) {
  const st = run("cmake", [
    "-S",
    root,
    "-B",
    build,
    ...generator,
    `-DCMAKE_CXX_COMPILER=${cxx}`,
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLMSERVE_FUZZ=ON",
    "-DLLMSERVE_BUILD_TESTS=OFF",
  ]);
  if (st !== 0) process.exit(st);
}
if (run("cmake", ["--build", build, "--parallel", opt.jobs]) !== 0) process.exit(1);
if (opt["build-only"]) process.exit(0);

const env = {
  ...process.env,
  // Sanitizer reports are fatal and symbolized; libFuzzer turns them into findings.
  ASAN_OPTIONS: process.env.ASAN_OPTIONS ?? "abort_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1",
  UBSAN_OPTIONS: process.env.UBSAN_OPTIONS ?? "print_stacktrace=1:halt_on_error=1",
};

if (opt.reproduce) {
  const target = opt.reproduce.split("/").at(-2);
  process.exit(run(join(build, "bin", `fuzz_${target}`), [opt.reproduce], { env }));
}

const seeds = join(build, "seeds");
rmSync(seeds, { recursive: true, force: true });
if (run(join(build, "bin", "make_seeds"), [seeds], { env }) !== 0) process.exit(1);

const results = [];
for (const target of opt.targets.split(",").filter(Boolean)) {
  const bin = join(build, "bin", `fuzz_${target}`);
  const corpus = join(build, "corpus", target);
  const findings = join(build, "findings", target);
  mkdirSync(corpus, { recursive: true });
  mkdirSync(findings, { recursive: true });
  const before = new Set(readdirSync(findings));
  const args = [
    corpus,
    join(seeds, target),
    `-runs=${opt.runs}`,
    `-max_total_time=${opt["max-time"]}`,
    "-print_final_stats=1",
    "-timeout=60",
    "-rss_limit_mb=4096",
    `-artifact_prefix=${findings}/`,
    target === "gguf" || target === "peft" ? "-max_len=65536" : "-max_len=4096",
  ];
  const dict = join(root, "native", "fuzz", `${target}.dict`);
  if (existsSync(dict)) args.push(`-dict=${dict}`);
  console.log(`\n# fuzz_${target}: ${args.join(" ")}`);
  const t0 = Date.now();
  // libFuzzer's log goes to a file (follow it with tail -f while it runs), summarized below.
  const logFile = join(build, "logs", `${target}.log`);
  mkdirSync(dirname(logFile), { recursive: true });
  const fd = openSync(logFile, "w");
  console.log(`  log: ${logFile}`);
  const r = spawnSync(bin, args, { cwd: root, env, stdio: ["ignore", fd, fd] });
  closeSync(fd);
  const err = readFileSync(logFile, "utf8");
  const tail = err
    .split("\n")
    .filter((l) => !/^(#\d+\s+(NEW|REDUCE|pulse|INITED)|\s+NEW_FUNC)/.test(l))
    .slice(-60)
    .join("\n");
  process.stderr.write(`${tail}\n`);
  const execs = Number(
    /stat::number_of_executed_units:\s*(\d+)/.exec(err)?.[1] ?? /Done (\d+) runs/.exec(err)?.[1] ?? 0,
  );
  const cov = /cov: (\d+)/g;
  let m,
    lastCov = 0;
  while ((m = cov.exec(err))) lastCov = Number(m[1]);
  const fresh = readdirSync(findings).filter((f) => !before.has(f));
  results.push({
    target: `fuzz_${target}`,
    execs,
    seconds: Math.round((Date.now() - t0) / 1000),
    coverage: lastCov,
    corpus: readdirSync(corpus).length,
    exit: r.status,
    findings: fresh.map((f) => join(findings, f)),
  });
}

if (opt.tokenizer && !opt["no-tokenizer"]) {
  console.log("\n# tokenizer (TypeScript harness)");
  const t0 = Date.now();
  const r = spawnSync(
    process.execPath,
    [join(root, "scripts", "fuzz", "tokenizer.mjs"), "--runs", opt["tokenizer-runs"]],
    { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
  );
  process.stdout.write(r.stdout ?? "");
  const execs = Number(/executions: (\d+)/.exec(r.stdout ?? "")?.[1] ?? 0);
  const found = [...(r.stdout ?? "").matchAll(/^FINDING (.*)$/gm)].map((x) => x[1]);
  results.push({
    target: "tokenizer.mjs",
    execs,
    seconds: Math.round((Date.now() - t0) / 1000),
    coverage: "-",
    corpus: "-",
    exit: r.status,
    findings: found,
  });
}

console.log("\n# fuzz summary");
console.log("target          executions   seconds  cov    corpus  findings");
let bad = false;
for (const x of results) {
  const ok = x.exit === 0 && x.findings.length === 0;
  bad ||= !ok;
  console.log(
    `${x.target.padEnd(15)} ${String(x.execs).padStart(10)} ${String(x.seconds).padStart(9)}  ${String(x.coverage).padEnd(6)} ${String(x.corpus).padStart(6)}  ${ok ? "none" : `${x.findings.length || `exit ${x.exit}`}`}`,
  );
  for (const f of x.findings) console.log(`    ${f}`);
}
process.exit(bad ? 1 : 0);
