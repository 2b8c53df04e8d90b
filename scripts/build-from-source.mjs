#!/usr/bin/env node
// Compiles the native addon from the C++ sources shipped in the package, for a platform with no
// prebuilt binary in prebuilds/ (or to build with a different compiler). Run through the CLI:
//
//   npx llmserve build-from-source
//
// and it writes build/Release/llmserve.node in the package folder, where lib/binding.ts finds it
// (before the prebuild, being newer). Needs cmake and a C++20 compiler. The build tools cmake-js
// and node-addon-api are devDependencies, so an installed package lacks them: they are installed
// into a temporary folder at the versions package.json's devDependencies name (the one place those
// versions live). In a source checkout, where they are installed, `npm run build` is the usual way
// and this script uses the local copies.
//
// Deliberately not an npm `install` script: npm 11 warns about every package with one on each
// install (allowScripts), and installs with --ignore-scripts must work the same.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/** A failure whose message is the whole story (printed without a stack). */
class BuildError extends Error {}

function fail(msg) {
  throw new BuildError(msg);
}

function run(cmd, args, opts = {}) {
  console.log(`llmserve: ${[cmd, ...args].join(" ")}`);
  const r = spawnSync(cmd, args, { stdio: "inherit", ...opts });
  if (r.error) fail(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) fail(`${[cmd, ...args].join(" ")} exited with ${r.status ?? r.signal}`);
}

const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const require = createRequire(join(root, "package.json"));
let tools; // temporary folder holding the build tools, when they are not installed here

/** cmake-js's package.json and node-addon-api's folder: local copies, else fresh ones in `tools`. */
function findTools() {
  try {
    return {
      cmakeJs: require.resolve("cmake-js/package.json"),
      addonApi: dirname(require.resolve("node-addon-api/package.json")),
    };
  } catch {
    // not installed here: an installed package (they are devDependencies)
  }
  tools = mkdtempSync(join(tmpdir(), "llmserve-build-tools-"));
  const want = ["cmake-js", "node-addon-api"].map((n) => `${n}@${pkg.devDependencies?.[n] ?? "latest"}`);
  const args = ["install", "--no-save", "--no-package-lock", "--no-audit", "--no-fund", "--prefer-offline"];
  args.push("--prefix", tools, ...want);
  // npm_execpath: the npm that started this process (npx, npm run), if any; else the npm on PATH.
  const npm = process.env.npm_execpath;
  if (npm && /npm-cli\.js$/.test(npm) && existsSync(npm)) run(process.execPath, [npm, ...args]);
  else run(process.platform === "win32" ? "npm.cmd" : "npm", args, { shell: process.platform === "win32" });
  return {
    cmakeJs: join(tools, "node_modules", "cmake-js", "package.json"),
    addonApi: join(tools, "node_modules", "node-addon-api"),
  };
}

function build() {
  const { cmakeJs, addonApi } = findTools();
  const bin = JSON.parse(readFileSync(cmakeJs, "utf8")).bin;
  const cli = join(dirname(cmakeJs), typeof bin === "string" ? bin : bin["cmake-js"]);
  // Use the running Node's own headers when it has them, so cmake-js does not download them.
  const env = { ...process.env };
  const prefix = dirname(dirname(process.execPath));
  if (!env.npm_config_nodedir && existsSync(join(prefix, "include", "node", "node_api.h")))
    env.npm_config_nodedir = prefix;
  const flags = ["--CDLLMSERVE_BUILD_TESTS=OFF", "--CDLLMSERVE_BUILD_BENCH=OFF", `--CDNODE_ADDON_API_DIR=${addonApi}`];
  run(process.execPath, [cli, "compile", "--out", "build", ...flags], { cwd: root, env });
  const built = join(root, "build", "Release", "llmserve.node");
  if (!existsSync(built)) fail(`cmake-js succeeded but ${built} is missing`);
  // Smoke check: the new binary loads and answers.
  run(process.execPath, [
    "-e",
    "const m = { exports: {} }; process.dlopen(m, process.argv[1]); console.log('llmserve: built ' + process.argv[1] + ' (kernels: ' + m.exports.kernelIsa() + ')');",
    built,
  ]);
}

try {
  build();
} catch (err) {
  const hint = "it needs cmake and a C++20 compiler (e.g. `apt-get install cmake g++`, or Xcode's command line tools)";
  console.error(`llmserve: source build failed: ${err instanceof BuildError ? err.message : err?.stack}; ${hint}`);
  process.exitCode = 1;
} finally {
  if (tools) rmSync(tools, { recursive: true, force: true });
}
