/**
 * `llmserve build-from-source`: compiles the native addon from the package's C++ sources
 * (scripts/build-from-source.mjs) for a platform with no prebuilt binary. What ERR_NATIVE_LOAD
 * tells an installed package's user to run.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import type { Command } from "commander";
import { packageRoot } from "../binding.js";
import { LlmserveError } from "../errors.js";

/** The script the command runs (shipped in the package: package.json `files`). */
export const BUILD_SCRIPT = join(packageRoot, "scripts", "build-from-source.mjs");

async function runBuild(): Promise<void> {
  // A child process: the build takes minutes and its output goes straight to the terminal.
  const child = spawn(process.execPath, [BUILD_SCRIPT], { stdio: "inherit" });
  const code = await new Promise<number>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (c, signal) => resolve(signal ? 1 : (c ?? 1)));
  }).catch((err: unknown) => {
    throw new LlmserveError("ERR_IO", `Cannot run ${BUILD_SCRIPT}: ${(err as Error).message}`, { cause: err });
  });
  // The script has already said what failed and what it needs.
  if (code !== 0) process.exitCode = code;
}

/** Registers the command on the program. */
export function registerBuild(program: Command): void {
  program
    .command("build-from-source")
    .description(
      "compile the native addon from the package's C++ sources (needs cmake and a C++20 compiler) for a platform without a prebuilt binary",
    )
    .action(runBuild);
}
