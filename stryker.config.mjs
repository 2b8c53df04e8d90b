// Mutation testing of the TypeScript layer (lib/) with Stryker: `npm run test:mutation` mutates
// every module below; `npm run test:mutation -- --mutate lib/responseCache.ts` one module. Each
// module runs only the test files that exercise it (TESTS; the fallback is the whole suite, which
// takes long), with per-test coverage so a mutant runs only the tests that reach it. Incremental:
// results are kept in reports/stryker-incremental.json (gitignored), and a rerun re-tests only
// mutants whose code or tests changed. Not part of `npm test`.
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const MODULES = [
  "lib/generate.ts",
  "lib/validate.ts",
  "lib/limits.ts",
  "lib/defaults.ts",
  "lib/session.ts",
  "lib/responseCache.ts",
  "lib/model.ts",
  "lib/loadOptions.ts",
  "lib/kvMemory.ts",
  "lib/adapters.ts",
  "lib/errors.ts",
  "lib/eval.ts",
  "lib/chat/templates.ts",
  "lib/chat/index.ts",
  "lib/chat/renderPool.ts",
  "lib/metrics.ts",
  "lib/gguf.ts",
  "lib/synth.ts",
  "lib/quantize.ts",
  "lib/tokenizer/*.ts",
  "lib/server/*.ts",
];

/**
 * The test files that exercise each module: a module's own row, else the rows whose folder key
 * ("lib/chat/") is a prefix of its path.
 */
const TESTS = {
  "lib/responseCache.ts": ["test/unit/responseCache.test.ts"],
  "lib/validate.ts": ["test/unit/validate.test.ts"],
  "lib/limits.ts": ["test/unit/validate.test.ts", "test/unit/chat/limits.test.ts"],
  "lib/server/errors.ts": ["test/unit/server/errors.test.ts"],
  "lib/server/auth.ts": ["test/unit/server/auth.test.ts", "test/server/auth.test.ts"],
  "lib/server/schemas.ts": ["test/unit/server/schemas.test.ts", "test/unit/server/schemas.validation.test.ts"],
  "lib/server/openai.ts": [
    "test/server/openai.test.ts",
    "test/server/openai-options.test.ts",
    "test/server/lifecycle.test.ts",
    "test/server/errors.test.ts",
  ],
  "lib/server/sse.ts": ["test/unit/server/sse.test.ts"],
  "lib/server/fields.ts": ["test/unit/server/fields.test.ts", "test/server/semantics.test.ts"],
  "lib/server/tokenize.ts": ["test/server/semantics.test.ts"],
  "lib/server/request.ts": [
    "test/server/openai-options.test.ts",
    "test/unit/server/schemas.test.ts",
    "test/server/openai.test.ts",
  ],
  "lib/server/response.ts": [
    "test/server/openai.test.ts",
    "test/server/openai-options.test.ts",
    "test/server/semantics.test.ts",
  ],
  "lib/defaults.ts": ["test/native/truth.test.ts", "test/unit/defaults.test.ts"],
  "lib/generate.ts": [
    "test/unit/generate.test.ts",
    "test/native/model.test.ts",
    "test/native/limits.test.ts",
    "test/native/sharedSignal.test.ts",
  ],
  "lib/session.ts": ["test/native/session.test.ts"],
  "lib/model.ts": [
    "test/native/model.test.ts",
    "test/native/batching.test.ts",
    "test/native/lora.test.ts",
    "test/native/lora-lru.test.ts",
  ],
  "lib/kvMemory.ts": ["test/native/kvMemory.test.ts"],
  "lib/loadOptions.ts": [
    "test/native/truth.test.ts",
    "test/native/model.test.ts",
    "test/native/contextDefault.test.ts",
  ],
  "lib/adapters.ts": ["test/unit/adapters.test.ts", "test/native/lora-lru.test.ts", "test/native/lora.test.ts"],
  "lib/errors.ts": ["test/unit/errors.test.ts"],
  "lib/quantize.ts": ["test/native/quantize.test.ts"],
  "lib/eval.ts": ["test/native/eval.test.ts", "test/parity/perplexity.test.ts"],
  "lib/tokenizer/stream.ts": ["test/unit/tokenizer/stream.test.ts"],
  "lib/metrics.ts": ["test/unit/metrics.test.ts"],
  "lib/gguf.ts": ["test/unit/synth.test.ts", "test/native/hostile-gguf.test.ts", "test/native/truth.test.ts"],
  "lib/synth.ts": ["test/unit/synth.test.ts", "test/native/truth.test.ts"],
  "lib/chat/": [
    "test/unit/chat/renderPool.test.ts",
    "test/unit/chat/index.test.ts",
    "test/unit/chat/templates.test.ts",
    "test/unit/chat/limits.test.ts",
  ],
  // the split table's static mutants rerun every test: leave out the slow round trips
  "lib/tokenizer/pretokenize.ts": [
    "test/unit/tokenizer/pretokenize.test.ts",
    "test/unit/tokenizer/pretokenize-table.test.ts",
    "test/unit/tokenizer/llamacpp-vectors.test.ts",
    "test/unit/tokenizer/tokenizer.test.ts",
  ],
  // in-memory vocabularies only: static mutants (the text tables) rerun every listed test
  "lib/tokenizer/vocab.ts": ["test/unit/tokenizer/vocab.test.ts", "test/unit/tokenizer/tokenizer.test.ts"],
  "lib/tokenizer/detokenize.ts": ["test/unit/tokenizer/detokenize.test.ts", "test/unit/tokenizer/tokenizer.test.ts"],
  "lib/tokenizer/unicode.ts": [
    "test/unit/tokenizer/unicode.test.ts",
    "test/unit/tokenizer/tokenizer.test.ts",
    "test/unit/tokenizer/pretokenize.test.ts",
  ],
  "lib/tokenizer/index.ts": ["test/unit/tokenizer/api.test.ts", "test/unit/tokenizer/tokenizer.test.ts"],
  "lib/tokenizer/thread.ts": ["test/unit/tokenizer/thread.test.ts", "test/unit/tokenizer/api.test.ts"],
  "lib/tokenizer/encodeWorker.ts": ["test/unit/tokenizer/thread.test.ts"],
  "lib/tokenizer/": [
    "test/unit/tokenizer/tokenizer.test.ts",
    "test/unit/tokenizer/pretokenize.test.ts",
    "test/unit/tokenizer/pretokenize-table.test.ts",
    "test/unit/tokenizer/roundtrip.test.ts",
    "test/unit/tokenizer/llamacpp-vectors.test.ts",
    "test/unit/tokenizer/offthread.test.ts",
    "test/unit/tokenizer/vocab.test.ts",
    "test/unit/tokenizer/detokenize.test.ts",
    "test/unit/tokenizer/unicode.test.ts",
    "test/unit/tokenizer/thread.test.ts",
    "test/unit/tokenizer/api.test.ts",
  ],
};

// `--mutate a.ts,b.ts` (or `-m`) on the command line picks the tests of those modules.
const argv = process.argv;
const i = argv.findIndex((a) => a === "--mutate" || a === "-m");
const asked = i >= 0 && argv[i + 1] ? argv[i + 1].split(",").map((s) => s.replace(/:.*$/, "")) : [];
const tests = [
  ...new Set(
    asked.flatMap((m) =>
      Object.hasOwn(TESTS, m)
        ? TESTS[m]
        : Object.entries(TESTS)
            .filter(([k]) => k.endsWith("/") && m.startsWith(k))
            .flatMap(([, v]) => v),
    ),
  ),
];
if (asked.length > 0 && tests.length > 0) process.env.LLMSERVE_MUTATION_TESTS = tests.join(",");
// The tests find ../shared/fixtures beside the repository; the sandbox (.stryker-tmp/sandbox-*) has
// none beside it, so point them at the real one (test/helpers.ts reads LLMSERVE_FIXTURES).
process.env.LLMSERVE_FIXTURES ??= resolve(dirname(fileURLToPath(import.meta.url)), "..", "shared", "fixtures");

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: "vitest",
  vitest: { configFile: "vitest.mutation.config.ts", related: false },
  plugins: ["@stryker-mutator/vitest-runner"],
  mutate: MODULES,
  coverageAnalysis: "perTest",
  concurrency: 2,
  incremental: true,
  incrementalFile: "reports/stryker-incremental.json",
  reporters: ["clear-text", "progress", "html", "json"],
  htmlReporter: { fileName: "reports/mutation/mutation.html" },
  jsonReporter: { fileName: "reports/mutation/mutation.json" },
  tempDirName: ".stryker-tmp",
  cleanTempDir: "always",
  // The sandbox needs the built addon (prebuilds/ is gitignored, so Stryker would skip it).
  ignorePatterns: ["/build", "/build-*", "/bench/results", "/docs/api", "/reports", "!/prebuilds", "!/dist"],
  timeoutMS: 60_000,
  timeoutFactor: 2,
  thresholds: { high: 80, low: 60, break: null },
};
