/**
 * Loads the native addon. Order:
 *  1. `LLMSERVE_ADDON` (a path to an llmserve.node), when set;
 *  2. `prebuilds/<platform>-<arch>/llmserve.node`, the portable CPU build shipped in the package;
 *  3. local builds: `build/Release/llmserve.node`, `build/Debug/llmserve.node`, `build/llmserve.node`.
 * A local build newer than the CPU prebuild is tried before it (a checkout where only
 * `npm run build:native` ran since the last `npm run build` must not load a stale copy).
 * The prebuild folders follow prebuildify's layout (what node-gyp-build also reads); the loader is
 * our own because it also has to honour LLMSERVE_ADDON and prefer a fresher local build.
 * When nothing loads, the error names the platform (and C library), the platforms the package has
 * prebuilds for, every path tried with its reason, and how to build from source.
 * Internal: not part of the public API.
 */
import { createRequire } from "node:module";
import { existsSync, readdirSync, statSync } from "node:fs";
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

/**
 * Where the loader runs: a source checkout (has `.git` or `lib/`, so `npm run build` works there) or an
 * installed package (only dist/, prebuilds/ and the native sources), and which C library a Linux
 * process uses (the Linux prebuilds link against glibc; Alpine's musl cannot load them).
 */
export interface LoadContext {
  platform?: string;
  arch?: string;
  root?: string;
  /** True in a source checkout; default: `.git` or `lib/` exists under root. */
  checkout?: boolean;
  /** "glibc" or "musl" on Linux (default: from process.report), undefined elsewhere. */
  libc?: "glibc" | "musl";
  /** The `<platform>-<arch>` folders under prebuilds/ (default: read from root). */
  shipped?: string[];
}

/** "glibc" or "musl" for this Linux process, undefined on other systems. */
export function detectLibc(): "glibc" | "musl" | undefined {
  if (process.platform !== "linux") return undefined;
  // Node's report names the glibc it runs on; a musl build of Node has no such field.
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return header?.glibcVersionRuntime ? "glibc" : "musl";
}

function shippedPrebuilds(root: string): string[] {
  try {
    return readdirSync(join(root, "prebuilds"), { withFileTypes: true })
      .filter((e) => e.isDirectory() && existsSync(join(root, "prebuilds", e.name, "llmserve.node")))
      .map((e) => e.name)
      .sort();
  } catch {
    return [];
  }
}

/** How to get a working addon, for error messages: a source build, or LLMSERVE_ADDON. */
export function buildHint(root: string = packageRoot, checkout?: boolean): string {
  const isCheckout = checkout ?? (existsSync(join(root, ".git")) || existsSync(join(root, "lib")));
  const build = isCheckout
    ? `run \`npm run build\` in ${root}`
    : `run \`npx llmserve build-from-source\` in the project that installed llmserve (\`llmserve build-from-source\` ` +
      `for a global install), which compiles ${join(root, "build", "Release", "llmserve.node")}`;
  return (
    `Build it from source: ${build} (needs cmake and a C++20 compiler, e.g. \`apt-get install cmake g++\`), ` +
    `or set LLMSERVE_ADDON to the path of a built llmserve.node.`
  );
}

/** The first lines of ERR_NATIVE_LOAD: which platform, what the package ships, what does not fit. */
function platformNote(ctx: LoadContext, root: string): string {
  const plat = `${ctx.platform ?? process.platform}-${ctx.arch ?? process.arch}`;
  const libc = ctx.libc ?? ((ctx.platform ?? process.platform) === "linux" ? detectLibc() : undefined);
  const shipped = ctx.shipped ?? shippedPrebuilds(root);
  let note = `llmserve could not load its native addon for ${plat}${libc ? ` (${libc})` : ""}. `;
  if (shipped.length === 0) note += "This package has no prebuilt binaries.";
  else
    note += `This package has prebuilt binaries for ${shipped.join(", ")}${shipped.includes(plat) ? "" : `, none for ${plat}`}.`;
  if (libc === "musl" && shipped.includes(plat))
    note += ` The ${plat} prebuild needs glibc; on musl (e.g. Alpine) build from source or use a glibc-based image (e.g. node:20-bookworm-slim).`;
  return note;
}

/**
 * Tries each candidate in order with `load` and returns the first that loads. Throws an
 * {@link LlmserveError} `ERR_NATIVE_LOAD` naming the platform, the prebuilt platforms the package
 * has, every candidate with its reason, and how to build from source, when none loads.
 */
export function loadFirst<T>(
  candidates: AddonCandidate[],
  load: (path: string) => T,
  exists: (path: string) => boolean = existsSync,
  context: LoadContext = {},
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
  const root = context.root ?? packageRoot;
  throw new LlmserveError(
    "ERR_NATIVE_LOAD",
    `${platformNote(context, root)} Tried:\n  ${tried.join("\n  ")}\n${buildHint(root, context.checkout)}`,
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
