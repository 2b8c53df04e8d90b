import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: "forks",
    // Two cores: run files two at a time so native compute does not starve the timers.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
