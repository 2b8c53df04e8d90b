#!/usr/bin/env node
// Produces the prebuilt addon shipped in the npm package: prebuilds/<platform>-<arch>/llmserve.node.
//
//   node scripts/prebuild.mjs           build in Release with cmake-js into build-prebuild/ (no native
//                                       test binary: --CDLLMSERVE_BUILD_TESTS=OFF), strip, copy
//   node scripts/prebuild.mjs --reuse   copy build/Release/llmserve.node (what `npm run build:native`
//                                       just made) when it is a Release build newer than every native
//                                       source, so `npm run build` does not compile twice; otherwise
//                                       falls back to the separate build above
//
// The binary is portable: a baseline x86-64 build whose SIMD kernels are picked at run time
// (native/core/quant/dispatch.cpp); a build configured with -march=native is refused.
// The copy is written to a temporary name and renamed into place, so a process that has the old
// binary mapped keeps running. The result is loaded once in a child process as a smoke check.
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const reuse = args.includes("--reuse");
const unknown = args.filter((a) => a !== "--reuse");
if (unknown.length) {
  console.error(`prebuild: unknown argument(s) ${unknown.join(" ")}; usage: node scripts/prebuild.mjs [--reuse]`);
  process.exit(2);
}

const platformDir = `${process.platform}-${process.arch}`;
const target = join(root, "prebuilds", platformDir, "llmserve.node");
const rel = (p) => relative(root, p) || ".";

function fail(msg) {
  console.error(`prebuild: ${msg}`);
  process.exit(1);
}

/** Newest modification time among the sources that go into the addon (not native/tests). */
function newestSourceMtime() {
  let newest = 0;
  const walk = (dir) => {
    if (!existsSync(dir)) return;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(c|cc|cpp|h|hpp)$/.test(e.name)) newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const d of ["core", "napi"]) walk(join(root, "native", d));
  return newest;
}

/** Reads one variable from a CMake cache, or undefined. */
function cacheVar(buildDir, name) {
  const f = join(buildDir, "CMakeCache.txt");
  if (!existsSync(f)) return undefined;
  const m = readFileSync(f, "utf8").match(new RegExp(`^${name}:[A-Z]+=(.*)$`, "m"));
  return m ? m[1] : undefined;
}

/** Why the build in buildDir must not be shipped, or undefined when it is fine. */
function unportable(buildDir) {
  const type = cacheVar(buildDir, "CMAKE_BUILD_TYPE");
  if (type && type !== "Release") return `it is a ${type} build`;
  for (const v of ["CMAKE_CXX_FLAGS", "CMAKE_CXX_FLAGS_RELEASE"]) {
    if (/-march=native|-mtune=native|-mcpu=native/.test(cacheVar(buildDir, v) ?? ""))
      return `${v} has a -m*=native flag`;
  }
  return undefined;
}

function cmakeJsBin() {
  const require = createRequire(join(root, "package.json"));
  let pkgPath;
  try {
    pkgPath = require.resolve("cmake-js/package.json");
  } catch {
    fail("cmake-js is not installed; run `npm install` first");
  }
  const bin = JSON.parse(readFileSync(pkgPath, "utf8")).bin;
  return join(dirname(pkgPath), typeof bin === "string" ? bin : bin["cmake-js"]);
}

function buildFresh() {
  const out = join(root, "build-prebuild");
  const cmd = [cmakeJsBin(), "compile", "--out", out, "--CDLLMSERVE_BUILD_TESTS=OFF", "--CDLLMSERVE_BUILD_BENCH=OFF"];
  console.log(`prebuild: node ${cmd.map((a) => rel(a)).join(" ")}`);
  // cmake-js downloads Node's headers unless told where they are (npm passes npm_config_nodedir
  // from .npmrc only to scripts it runs); use the running Node's own headers when it has them.
  const env = { ...process.env };
  const prefix = dirname(dirname(process.execPath));
  if (!env.npm_config_nodedir && existsSync(join(prefix, "include", "node", "node_api.h")))
    env.npm_config_nodedir = prefix;
  const r = spawnSync(process.execPath, cmd, { cwd: root, stdio: "inherit", env });
  if (r.status !== 0) fail(`cmake-js failed (exit ${r.status ?? r.signal}); it needs cmake and a C++20 compiler`);
  const why = unportable(out);
  if (why) fail(`refusing to ship ${rel(out)}: ${why}`);
  const built = join(out, "Release", "llmserve.node");
  if (!existsSync(built)) fail(`cmake-js succeeded but ${rel(built)} is missing`);
  return built;
}

function pickSource() {
  if (!reuse) return buildFresh();
  const buildDir = join(root, "build");
  const addon = join(buildDir, "Release", "llmserve.node");
  let reason;
  if (!existsSync(addon)) reason = `${rel(addon)} does not exist`;
  else if (statSync(addon).mtimeMs < newestSourceMtime()) reason = `${rel(addon)} is older than the native sources`;
  else reason = unportable(buildDir);
  if (!reason) {
    console.log(`prebuild: reusing ${rel(addon)}`);
    return addon;
  }
  console.log(`prebuild: not reusing the local build (${reason}); building separately`);
  return buildFresh();
}

function strip(file) {
  if (process.platform !== "linux" && process.platform !== "darwin") return;
  const stripArgs = process.platform === "darwin" ? ["-x", file] : ["--strip-all", file];
  const r = spawnSync(process.env.STRIP || "strip", stripArgs, { stdio: "inherit" });
  if (r.error || r.status !== 0)
    console.warn(`prebuild: warning: strip failed (${r.error?.message ?? `exit ${r.status}`}); shipping unstripped`);
}

const source = pickSource();
mkdirSync(dirname(target), { recursive: true });
const tmp = `${target}.tmp-${process.pid}`;
try {
  copyFileSync(source, tmp);
  strip(tmp);
  // Smoke check: the stripped binary loads and answers.
  const check = spawnSync(
    process.execPath,
    [
      "-e",
      "const m = { exports: {} }; process.dlopen(m, process.argv[1]); const a = m.exports; if (typeof a.kernelIsa !== 'function') throw new Error('no kernelIsa export'); console.log(a.kernelIsa());",
      tmp,
    ],
    { encoding: "utf8" },
  );
  if (check.status !== 0) {
    rmSync(tmp, { force: true }); // fail() exits: the finally below would not run
    fail(`the stripped addon does not load:\n${check.stderr}`);
  }
  renameSync(tmp, target);
  const kb = (statSync(target).size / 1024).toFixed(0);
  console.log(`prebuild: wrote ${rel(target)} (${kb} KiB, kernels here: ${check.stdout.trim()})`);
} finally {
  rmSync(tmp, { force: true });
}
