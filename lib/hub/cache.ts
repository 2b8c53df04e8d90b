/** The model cache folder: where each spec's files live, listing, removal, and the download lock. */
import { createHash } from "node:crypto";
import { open, readdir, readFile, rm, stat, unlink } from "node:fs/promises";
import { homedir } from "node:os";
import { join, relative, sep } from "node:path";
import { LlmserveError } from "../errors.js";
import { splitParts } from "./spec.js";

/**
 * The cache folder: `LLMSERVE_MODELS`, else the platform's user cache folder plus
 * `llmserve/models` (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on macOS,
 * `%LOCALAPPDATA%` on Windows).
 */
export function defaultCacheDir(
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
  home: string = homedir(),
): string {
  if (env.LLMSERVE_MODELS) return env.LLMSERVE_MODELS;
  let base: string;
  if (platform === "win32") base = env.LOCALAPPDATA || join(home, "AppData", "Local");
  else if (platform === "darwin") base = join(home, "Library", "Caches");
  else base = env.XDG_CACHE_HOME || join(home, ".cache");
  return join(base, "llmserve", "models");
}

/** Where a Hub file lives in the cache: `hf/OWNER/REPO/REVISION/PATH`. */
export function hubCachePath(root: string, repo: string, revision: string, file: string): string {
  return join(root, "hf", ...repo.split("/"), revision, ...file.split("/"));
}

/** Where a URL's file lives in the cache: `url/HOST/HASH/NAME` (the hash of the whole URL). */
export function urlCachePath(root: string, url: URL): string {
  const hash = createHash("sha256").update(url.href).digest("hex").slice(0, 16);
  const last = decodeURIComponent(url.pathname.split("/").pop() ?? "");
  const name = last.replace(/[^A-Za-z0-9._-]/g, "_").replace(/^\.+/, "") || "model.gguf";
  return join(root, "url", url.host.replace(/[^A-Za-z0-9.-]/g, "_"), hash, name);
}

/** A model in the cache, as `listModels()` reports it. */
export interface CachedModel {
  /** The name `removeModel()` takes: `hf:OWNER/REPO[@REV]/FILE` (also a spec for `-m` and `Model.load`) or `url/...`. */
  name: string;
  /** The local path of the file (the first part of a split model). */
  path: string;
  /** Bytes on disk, all parts of a split model together. */
  size: number;
  /** Parts of a split model present (1 otherwise). */
  parts: number;
}

const INTERNAL = /\.(part|lock|part\.json)$/;

async function walk(dir: string, out: string[]): Promise<void> {
  let entries: import("node:fs").Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await walk(p, out);
    else if (e.isFile() && !INTERNAL.test(e.name)) out.push(p);
  }
}

/** The name of a cached file (see {@link CachedModel.name}), from its path under `root`. */
function nameOf(root: string, path: string): string {
  const rel = relative(root, path).split(sep);
  if (rel[0] === "hf" && rel.length >= 5) {
    const rev = rel[3] === "main" ? "" : `@${rel[3]}`;
    return `hf:${rel[1]}/${rel[2]}${rev}/${rel.slice(4).join("/")}`;
  }
  return rel.join("/");
}

/** The models in the cache (split parts grouped under their first part), sorted by name. */
export async function listCachedModels(root: string): Promise<CachedModel[]> {
  const files: string[] = [];
  await walk(root, files);
  const byFirst = new Map<string, CachedModel>();
  for (const f of files.sort()) {
    const first = splitParts(f)[0];
    const { size } = await stat(f);
    const m = byFirst.get(first);
    if (m) {
      m.size += size;
      m.parts++;
    } else byFirst.set(first, { name: nameOf(root, first), path: first, size, parts: 1 });
  }
  return [...byFirst.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The cached files of one Hub repository and revision, as paths relative to the repository. */
export async function cachedRepoFiles(root: string, repo: string, revision: string): Promise<string[]> {
  const dir = hubCachePath(root, repo, revision, ".");
  const files: string[] = [];
  await walk(dir, files);
  return files.map((f) => relative(dir, f).split(sep).join("/"));
}

/**
 * Removes cached models: a name as {@link listCachedModels} gives it (all parts of a split model),
 * or `hf:OWNER/REPO` (every file of the repository). Returns the names removed; none is
 * ERR_MODEL_NOT_FOUND listing what the cache holds.
 */
export async function removeCachedModel(root: string, name: string): Promise<string[]> {
  const all = await listCachedModels(root);
  const repoPrefix = /^hf:[^/]+\/[^/@]+(@[^/]+)?$/.test(name) ? `${name}/` : undefined;
  const hits = all.filter((m) => m.name === name || (repoPrefix !== undefined && m.name.startsWith(repoPrefix)));
  if (hits.length === 0) {
    const have = all.length ? all.map((m) => `  ${m.name}`).join("\n") : "  (none)";
    throw new LlmserveError(
      "ERR_MODEL_NOT_FOUND",
      `No cached model is named ${JSON.stringify(name)} in ${root}. Cached models:\n${have}`,
    );
  }
  for (const m of hits) {
    for (const p of splitParts(m.path)) {
      for (const f of [p, `${p}.part`, `${p}.part.json`]) await rm(f, { force: true });
    }
  }
  return hits.map((m) => m.name);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM"; // exists, owned by someone else
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Takes `path` (a lock file holding our pid) for the download of one cache file, so two processes
 * never write the same `.part`. A lock whose process is gone is taken over. Returns the release.
 * `onWait` is called once when another process holds it.
 */
export async function acquireLock(
  path: string,
  opts: { signal?: AbortSignal; onWait?: (pid: number) => void } = {},
): Promise<() => Promise<void>> {
  let told = false;
  for (;;) {
    opts.signal?.throwIfAborted();
    try {
      const fh = await open(path, "wx");
      try {
        await fh.writeFile(String(process.pid));
      } finally {
        await fh.close();
      }
      return () => unlink(path).catch(() => {});
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = Number.parseInt(await readFile(path, "utf8").catch(() => ""), 10);
    if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && !alive(owner)) {
      await unlink(path).catch(() => {}); // its process died mid-download: the .part is resumable
      continue;
    }
    if (!Number.isInteger(owner)) {
      // Just created and not yet written, or left empty by a crash: wait a little, then take it.
      const age = Date.now() - (await stat(path).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs;
      if (age > 10_000) await unlink(path).catch(() => {});
    } else if (!told) {
      told = true;
      opts.onWait?.(owner);
    }
    await sleep(100);
  }
}
