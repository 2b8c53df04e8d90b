/**
 * Loads the native addon. Order:
 *  1. `LLMSERVE_ADDON` (a path to an llmserve.node), when set;
 *  2. `prebuilds/<platform>-<arch>/llmserve.node`, the portable CPU build shipped in the package;
 *  3. local builds: `build/Release/llmserve.node`, `build/Debug/llmserve.node`, `build/llmserve.node`.
 * A local build newer than the CPU prebuild is tried before it (a checkout where only
 * `npm run build:native` ran since the last `npm run build` must not load a stale copy).
 * When nothing loads, the error lists every path tried with its reason and how to build locally.
 * Internal: not part of the public API.
 */
import { createRequire } from "node:module";
import { existsSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { LlmserveError } from "./errors.js";
import type { NativeAddon } from "./native.js";

const require = createRequire(import.meta.url);

/** The package folder (the one holding package.json, dist/, prebuilds/). */
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Where a candidate binary comes from. */
export type AddonSource = "env" | "prebuild" | "local";

/** One path the loader may try. */
export interface AddonCandidate {
  path: string;
  source: AddonSource;
}

/** Inputs of {@link addonCandidates}; every field defaults to this process and file system. */
export interface CandidateOptions {
  root?: string;
  platform?: string;
  arch?: string;
  env?: NodeJS.ProcessEnv;
  /** Modification time in ms, or undefined when the file is missing. */
  mtime?: (path: string) => number | undefined;
}

function mtimeOf(path: string): number | undefined {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/** The paths the loader tries, in order (see the file comment). */
export function addonCandidates(o: CandidateOptions = {}): AddonCandidate[] {
  const root = o.root ?? packageRoot;
  const env = o.env ?? process.env;
  const mtime = o.mtime ?? mtimeOf;
  const plat = `${o.platform ?? process.platform}-${o.arch ?? process.arch}`;
  const list: AddonCandidate[] = [];
  if (env.LLMSERVE_ADDON) list.push({ path: resolve(env.LLMSERVE_ADDON), source: "env" });

  const prebuild: AddonCandidate = { path: join(root, "prebuilds", plat, "llmserve.node"), source: "prebuild" };
  const locals: AddonCandidate[] = [
    join(root, "build", "Release", "llmserve.node"),
    join(root, "build", "Debug", "llmserve.node"),
    join(root, "build", "llmserve.node"),
  ].map((path) => ({ path, source: "local" }));
  const prebuildTime = mtime(prebuild.path);
  const localNewer = prebuildTime !== undefined && locals.some((l) => (mtime(l.path) ?? -Infinity) > prebuildTime);
  if (localNewer) list.push(...locals, prebuild);
  else list.push(prebuild, ...locals);
  return list;
}

/** How to build the addon locally, for error messages. */
export function buildHint(root: string = packageRoot): string {
  return (
    `Build it locally: run \`npx cmake-js compile --CDLLMSERVE_BUILD_TESTS=OFF\` in ${root} ` +
    `(needs cmake and a C++20 compiler, e.g. \`apt-get install cmake g++\`), ` +
    `or set LLMSERVE_ADDON to the path of a built llmserve.node.`
  );
}

/**
 * Tries each candidate in order with `load` and returns the first that loads. Throws an
 * {@link LlmserveError} `ERR_NATIVE_LOAD` listing every candidate with its reason when none does.
 */
export function loadFirst<T>(
  candidates: AddonCandidate[],
  load: (path: string) => T,
  exists: (path: string) => boolean = existsSync,
  context: { platform?: string; arch?: string; root?: string } = {},
): { addon: T; path: string } {
  const tried: string[] = [];
  for (const c of candidates) {
    if (!exists(c.path)) {
      tried.push(`${c.path} (not found${c.source === "env" ? ", from LLMSERVE_ADDON" : ""})`);
      continue;
    }
    try {
      return { addon: load(c.path), path: c.path };
    } catch (err) {
      tried.push(`${c.path} (${String((err as Error)?.message ?? err).split("\n")[0]})`);
    }
  }
  const plat = `${context.platform ?? process.platform}-${context.arch ?? process.arch}`;
  throw new LlmserveError(
    "ERR_NATIVE_LOAD",
    `llmserve could not load its native addon for ${plat}. Tried:\n  ` +
      tried.join("\n  ") +
      `\n${buildHint(context.root ?? packageRoot)}`,
  );
}

let cached: { addon: NativeAddon; path: string } | undefined;

/** Loads the addon once per process (see the file comment for the order). */
export function loadAddon(): NativeAddon {
  if (!cached) cached = loadFirst(addonCandidates(), (p) => require(p) as NativeAddon);
  return cached.addon;
}

/** The path of the loaded addon binary (loads it first if needed). */
export function loadedAddonPath(): string {
  loadAddon();
  return cached!.path;
}
