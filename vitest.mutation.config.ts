// vitest settings for Stryker (stryker.config.mjs): the test files of the modules being mutated,
// from LLMSERVE_MUTATION_TESTS (comma-separated), else the whole suite.
import { defineConfig } from "vitest/config";
import base from "./vitest.config.js";

const only = process.env.LLMSERVE_MUTATION_TESTS?.split(",").filter(Boolean);

export default defineConfig({
  test: {
    ...base.test,
    include: only && only.length > 0 ? only : base.test!.include,
    poolOptions: { forks: { maxForks: 1, minForks: 1 } }, // Stryker runs two of these at once
  },
});
