// AddressSanitizer + UndefinedBehaviorSanitizer run: builds the native tests and the addon with
// -DLLMSERVE_SANITIZE=ON in build-asan/ (the normal build/ is untouched), runs the native tests
// (dispatched kernels and forced scalar, leak checking on), then a bounded subset of the vitest
// suite against the sanitized addon. Any sanitizer report fails the run.
//
//   npm run test:asan                      # build + native tests + vitest subset
//   npm run test:asan -- --no-js           # native tests only (--no-native: vitest only)
//   npm run test:asan -- test/native/model.test.ts   # these vitest files instead of the default set
//
// Node itself is not instrumented, so the ASan runtime is preloaded into it (LD_PRELOAD, the
// shared runtime of the compiler that built the addon) with leak detection off (node's own
// allocations at exit are not ours to judge). Compiler: clang++ when present (CXX overrides),
// else g++. Needs the TypeScript build (dist/) only for tests that spawn the CLI.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const noJs = args.includes("--no-js");
const noNative = args.includes("--no-native");
const files = args.filter((a) => !a.startsWith("--"));
// The addon's own behaviour (load, generate, batching, sessions, errors) and the server's error
// paths: the native surface, without the long parity / packaging suites, and without the test
// files whose time goes into model-file compute (quantize, low-rank factorization, distillation:
// their native code runs sanitized in the native tests above; compress and finetune stay, for
// their workers' boundary).
const JS_SKIP = new Set(["quantize.test.ts", "lowrank.test.ts", "distill.test.ts"]);
const DEFAULT_JS = [
  ...readdirSync(join(root, "test", "native"))
    .filter((f) => f.endsWith(".test.ts") && !JS_SKIP.has(f))
    .map((f) => `test/native/${f}`),
  "test/server/errors.test.ts",
  "test/unit/tokenizer/roundtrip.test.ts",
];

const has = (cmd) => spawnSync(cmd, ["--version"], { stdio: "ignore" }).status === 0;
// clang only with its ASan runtime installed (Debian: libclang-rt-14-dev), else g++ (libasan).
const clangRuntime = () =>
  spawnSync("clang++", ["-print-file-name=libclang_rt.asan-x86_64.so"], { encoding: "utf8" }).stdout?.trim();
const cxx = process.env.CXX ?? (has("clang++") && existsSync(clangRuntime() ?? "") ? "clang++" : "g++");
const clang = /clang/.test(cxx);
const build = join(root, "build-asan");
const t0 = Date.now();
const secs = () => `${((Date.now() - t0) / 1000).toFixed(0)}s`;

function run(cmd, argv, env = process.env) {
  const r = spawnSync(cmd, argv, { stdio: "inherit", cwd: root, env });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

console.log(`# test:asan: building build-asan with ${cxx}`);
const cmakeJs = join(root, "node_modules", ".bin", "cmake-js");
// cmake-js finds node's headers through npm's nodedir (set when run by npm); when run directly,
// use the system headers if present instead of downloading them.
const nodedir = process.env.npm_config_nodedir ?? (existsSync("/usr/include/node/node_api.h") ? "/usr" : undefined);
// cmake-js only configures (node's include paths); the build is plain cmake, because cmake-js
// compile answers a compile error with a full clean rebuild (doubling a failing CI step).
const buildEnv = { ...process.env, ...(nodedir ? { npm_config_nodedir: nodedir } : {}) };
if (!existsSync(join(build, "build.ninja")) && !existsSync(join(build, "Makefile"))) {
  if (
    run(
      cmakeJs,
      [
        "configure",
        "--out",
        "build-asan",
        "--CDLLMSERVE_SANITIZE=ON",
        "--CDLLMSERVE_BUILD_TESTS=ON",
        `--CDCMAKE_CXX_COMPILER=${cxx}`,
      ],
      buildEnv,
    ) !== 0
  )
    process.exit(1);
}
if (run("cmake", ["--build", build, "--parallel", process.env.CMAKE_BUILD_PARALLEL_LEVEL ?? "2"], buildEnv) !== 0) {
  process.exit(1);
}
console.log(`# test:asan: built (${secs()})`);

const sanEnv = {
  UBSAN_OPTIONS: "print_stacktrace=1:halt_on_error=1",
};
let failed = false;
const bin = join(build, "bin", "llmserve_native_tests");
// The forced-scalar pass skips the slowest tests whose code has no ISA dispatch worth a second
// sanitized run: file-level quantization and imatrix byte-equality against llama.cpp (weight
// quantizers are scalar; their SIMD activation quantizers are covered by the kernel tests of both
// passes) and the empirical sampling-frequency test: 172 of the 186 s of a whole native run
// (normal build, busy 2-core machine), so the second pass costs a small fraction of the first.
const SCALAR_PASS_SKIP = ["-quantize_", "-imatrix_", "-sampling_empirical"];
// The dispatched pass skips only the four file-level byte-parity tests against llama.cpp's
// quantizer (about 48 s of a 70 s normal run, several times that sanitized): the same quantize
// pipeline (tensor walk, imatrix, threads, writer) still runs sanitized in the other quantize_
// tests, and the byte parity itself is checked by npm test's unsanitized runs.
const DISPATCHED_PASS_SKIP = ["-_llama_model_quantize", "-quantize_bytes_equal_ggml_quantize_chunk"];
for (const [label, extra, filters] of noNative
  ? []
  : [
      ["dispatched kernels", {}, DISPATCHED_PASS_SKIP],
      ["forced scalar", { LLMSERVE_FORCE_SCALAR: "1" }, SCALAR_PASS_SKIP],
    ]) {
  console.log(`# test:asan: native tests (${label}${filters.length ? `, skipping ${filters.join(" ")}` : ""})`);
  const st = run(bin, filters, {
    ...process.env,
    ...sanEnv,
    ...extra,
    ASAN_OPTIONS: "detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1",
  });
  if (st !== 0) failed = true;
}
console.log(`# test:asan: native tests done (${secs()})`);

if (!noJs) {
  const addon = [join(build, "Release", "llmserve.node"), join(build, "llmserve.node")].find(existsSync);
  const runtimeName = clang ? "libclang_rt.asan-x86_64.so" : "libasan.so";
  const runtime = spawnSync(cxx, [`-print-file-name=${runtimeName}`], { encoding: "utf8" }).stdout.trim();
  if (!addon || !existsSync(runtime)) {
    console.error(`test:asan: addon (${addon}) or ASan runtime (${runtime}) not found`);
    process.exit(1);
  }
  const env = {
    ...process.env,
    ...sanEnv,
    LLMSERVE_ADDON: addon,
    LD_PRELOAD: runtime,
    // node is not instrumented: no leak report at its exit; the sanitized addon still aborts the
    // process on the first error.
    ASAN_OPTIONS: "detect_leaks=0:detect_stack_use_after_return=0",
  };
  // The sanitized addon must load with the runtime in place (else every test would fail obscurely).
  const probe = spawnSync(
    process.execPath,
    [
      "-e",
      "process.dlopen({ exports: {} }, process.env.LLMSERVE_ADDON);" +
        "const maps = require('fs').readFileSync('/proc/self/maps', 'utf8');" +
        "if (!/asan/.test(maps)) { console.error('ASan runtime not mapped'); process.exit(1); }",
    ],
    { env, encoding: "utf8" },
  );
  if (probe.status !== 0) {
    console.error(`test:asan: the sanitized addon does not load under node:\n${probe.stderr}`);
    process.exit(1);
  }
  console.log(`# test:asan: vitest with ${addon} (LD_PRELOAD=${runtime})`);
  // Through run-vitest.mjs, like npm test: judged by the tests' results, robust to worker RPC timeouts.
  const st = run(
    process.execPath,
    [join(root, "scripts", "run-vitest.mjs"), ...(files.length ? files : DEFAULT_JS)],
    env,
  );
  if (st !== 0) failed = true;
}
console.log(`# test:asan: ${failed ? "FAILED" : "passed"} (${secs()})`);
process.exit(failed ? 1 : 0);
