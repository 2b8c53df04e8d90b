/**
 * Model resolution: `hf:OWNER/REPO/FILE.gguf`, `hf:OWNER/REPO:QUANT` and `https://` URLs become
 * files in the model cache (downloaded once, resumably, checked, renamed into place); local paths
 * pass through.
 */
import { access, mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import { HUB_DEFAULTS } from "../defaults.js";
import { LlmserveError } from "../errors.js";
import { readGguf } from "../gguf.js";
import type { ProgressCallback } from "../progress.js";
import { checkBool, checkInt, checkKeys, checkObject, checkString } from "../validate.js";
import {
  acquireLock,
  cachedRepoFiles,
  defaultCacheDir,
  hubCachePath,
  listCachedModels,
  removeCachedModel,
  urlCachePath,
  type CachedModel,
} from "./cache.js";
import { downloadFile, getJson, headFile, type HttpOptions } from "./download.js";
import { isRemoteSpec, parseModelSpec, pickModelFile, splitParts } from "./spec.js";

export { defaultCacheDir, isRemoteSpec, type CachedModel };

/** Options of {@link resolveModel} (and `Model.load`'s `download`); every field is optional. */
export interface ResolveOptions {
  /** The model cache folder (default: `LLMSERVE_MODELS`, else the user's cache folder + `llmserve/models`). */
  cacheDir?: string;
  /**
   * Never touch the network: use the cache or fail with ERR_OFFLINE (default: true when
   * `LLMSERVE_OFFLINE` or `HF_HUB_OFFLINE` is 1/true/yes/on).
   */
  offline?: boolean;
  /** Hugging Face access token for gated and private repositories (default: `HF_TOKEN`). */
  token?: string;
  /** The Hub's base URL (default: `HF_ENDPOINT`, else https://huggingface.co). */
  endpoint?: string;
  /** Milliseconds without an answer or a byte before a request is retried (default 30000). */
  timeoutMs?: number;
  /** Retries of a dropped or failed request before ERR_DOWNLOAD (default 5; progress resets the count). */
  retries?: number;
  /** First wait before a retry, doubling each time (default 1000 ms). */
  retryDelayMs?: number;
  /** Cancels the download (ERR_CANCELLED); the partial file is kept and resumed next time. */
  signal?: AbortSignal;
  /** Download progress: bytes done and total, rate, ETA (see {@link ProgressCallback}). */
  onProgress?: ProgressCallback;
}

const ENV_TRUE = /^(1|true|yes|on)$/i;

interface Resolved {
  root: string;
  offline: boolean;
  endpoint: string;
  http: HttpOptions;
}

function resolveOptions(options: unknown): Resolved {
  const o = checkObject("download options", options) as ResolveOptions & Record<string, unknown>;
  checkKeys("download options", o, [
    "cacheDir",
    "offline",
    "token",
    "endpoint",
    "timeoutMs",
    "retries",
    "retryDelayMs",
    "signal",
    "onProgress",
  ]);
  const env = process.env;
  const root = o.cacheDir === undefined ? defaultCacheDir() : checkString("cacheDir", o.cacheDir);
  const offline =
    o.offline === undefined
      ? ENV_TRUE.test(env.LLMSERVE_OFFLINE ?? "") || ENV_TRUE.test(env.HF_HUB_OFFLINE ?? "")
      : checkBool("offline", o.offline);
  const endpointText = o.endpoint === undefined ? env.HF_ENDPOINT || HUB_DEFAULTS.endpoint : o.endpoint;
  checkString("endpoint", endpointText);
  let endpoint: URL;
  try {
    endpoint = new URL(endpointText);
  } catch {
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `Expected a URL for the Hub endpoint (HF_ENDPOINT) but received ${JSON.stringify(endpointText)}`,
    );
  }
  const token = o.token === undefined ? env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN || undefined : o.token;
  if (token !== undefined) checkString("token", token);
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal))
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected an AbortSignal for signal");
  if (o.onProgress !== undefined && typeof o.onProgress !== "function")
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a function for onProgress");
  const D = HUB_DEFAULTS;
  return {
    root,
    offline,
    endpoint: endpoint.href.replace(/\/+$/, ""),
    http: {
      token,
      tokenOrigin: endpoint.origin,
      timeoutMs: o.timeoutMs === undefined ? D.timeoutMs : checkInt("timeoutMs", o.timeoutMs, 1),
      retries: o.retries === undefined ? D.retries : checkInt("retries", o.retries, 0, 100),
      retryDelayMs: o.retryDelayMs === undefined ? D.retryDelayMs : checkInt("retryDelayMs", o.retryDelayMs, 0),
      signal: o.signal,
      onProgress: o.onProgress,
    },
  };
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

function offlineError(spec: string, root: string, detail = ""): LlmserveError {
  return new LlmserveError(
    "ERR_OFFLINE",
    `${spec} is not in the model cache (${root}) and offline mode is on (LLMSERVE_OFFLINE, HF_HUB_OFFLINE or the offline option), so it cannot be downloaded.${detail} Download it while online first: llmserve pull ${spec}`,
  );
}

/** Downloads in flight in this process, by destination: concurrent callers share one. */
const inflight = new Map<string, Promise<void>>();

/** Makes sure `dest` holds the file at `url`: downloads it under the lock unless it is there. */
function fetchToCache(url: string, dest: string, trustEtag: boolean, http: HttpOptions, label: string): Promise<void> {
  let p = inflight.get(dest);
  if (!p) {
    p = (async () => {
      await mkdir(dirname(dest), { recursive: true });
      const release = await acquireLock(`${dest}.lock`, { signal: http.signal });
      try {
        if (await exists(dest)) return; // another process finished it while we waited
        const remote = await headFile(url, http, trustEtag);
        await downloadFile(remote, dest, http, label);
      } finally {
        await release();
      }
    })().finally(() => inflight.delete(dest));
    inflight.set(dest, p);
  }
  return p;
}

/** The Hub's file list of a repository at a revision. */
async function listRepoFiles(r: Resolved, repo: string, revision: string): Promise<string[]> {
  const rev = revision === HUB_DEFAULTS.revision ? "" : `/revision/${encodeURIComponent(revision)}`;
  const body = (await getJson(`${r.endpoint}/api/models/${repo}${rev}`, r.http)) as {
    siblings?: { rfilename?: unknown }[];
  };
  if (!body || !Array.isArray(body.siblings))
    throw new LlmserveError("ERR_DOWNLOAD", `The Hub's answer for ${repo} has no file list (siblings).`);
  return body.siblings.map((s) => s.rfilename).filter((f): f is string => typeof f === "string");
}

/**
 * The local path of a model: a path as it is; `hf:OWNER/REPO/FILE.gguf`, `hf:OWNER/REPO:QUANT`
 * (the repository's GGUF file whose name has that tag, e.g. Q4_K_M), `hf:OWNER/REPO` (its only
 * GGUF file, or Q4_K_M) and `https://` URLs from the model cache, downloaded first when missing.
 * `@REVISION` after the repository picks a branch, tag or commit. A split model
 * (`...-00001-of-00003.gguf`) is downloaded whole; the path of its first part is returned.
 *
 * Errors: ERR_INVALID_ARGUMENT (a spec it cannot read), ERR_MODEL_NOT_FOUND (no such repository,
 * file or quantization; lists the candidates), ERR_MODEL_AMBIGUOUS (several files match),
 * ERR_HUB_AUTH (a gated or private repository: set HF_TOKEN), ERR_OFFLINE, ERR_CHECKSUM,
 * ERR_DOWNLOAD (the network failed after retries), ERR_CANCELLED.
 * @example
 * const path = await resolveModel("hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:Q4_K_M", {
 *   onProgress: (e) => console.log(e.phase, e.done, e.total, e.rate, e.etaSeconds),
 * });
 */
export async function resolveModel(spec: string, options: ResolveOptions = {}): Promise<string> {
  checkString("model", spec);
  const s = parseModelSpec(spec);
  if (s.kind === "path") return s.path;
  const r = resolveOptions(options);
  if (s.kind === "url") {
    const dest = urlCachePath(r.root, s.url);
    if (await exists(dest)) return dest;
    if (r.offline) throw offlineError(spec, r.root);
    // The token goes to a URL only when it is on the Hub's own host.
    await fetchToCache(s.url.href, dest, s.url.origin === r.http.tokenOrigin, r.http, dest.split(/[\\/]/).pop() ?? "");
    return dest;
  }
  const { repo, revision } = s;
  const http: HttpOptions = {
    ...r.http,
    authHint: `If ${repo} is gated or private, accept its licence on ${r.endpoint}/${repo} and set HF_TOKEN to an access token (${r.endpoint}/settings/tokens).`,
  };
  let file = s.file;
  if (file === undefined) {
    // A cached file that matches is used without asking the Hub.
    const cached = await cachedRepoFiles(r.root, repo, revision);
    try {
      const f = pickModelFile(cached, s.quant, repo);
      const parts = splitParts(f);
      if (parts.every((p) => cached.includes(p))) file = f;
    } catch (err) {
      if (r.offline && cached.length > 0) throw err; // ambiguous among the cached files
    }
    if (file === undefined) {
      if (r.offline) {
        const have = cached.length ? ` Cached files of ${repo}: ${cached.join(", ")}.` : "";
        throw offlineError(spec, r.root, have);
      }
      file = pickModelFile(await listRepoFiles(r, repo, revision), s.quant, repo);
    }
  }
  const paths: string[] = [];
  for (const part of splitParts(file)) {
    const dest = hubCachePath(r.root, repo, revision, part);
    paths.push(dest);
    if (await exists(dest)) continue;
    if (r.offline) throw offlineError(spec, r.root);
    const url = `${r.endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/${part.split("/").map(encodeURIComponent).join("/")}`;
    await fetchToCache(url, dest, true, http, part.split("/").pop() ?? part);
  }
  return paths[0];
}

/** The models in the cache folder (default: see {@link ResolveOptions.cacheDir}), with sizes. */
export function listModels(options: { cacheDir?: string } = {}): Promise<CachedModel[]> {
  return listCachedModels(options.cacheDir ?? defaultCacheDir());
}

/**
 * Deletes a cached model by the name {@link listModels} gives (every part of a split model), or
 * every file of `hf:OWNER/REPO`. Returns the names removed; ERR_MODEL_NOT_FOUND when none matches.
 */
export function removeModel(name: string, options: { cacheDir?: string } = {}): Promise<string[]> {
  checkString("name", name);
  return removeCachedModel(options.cacheDir ?? defaultCacheDir(), name);
}

/** ERR_SPLIT_GGUF for the first part of a split model (the loader reads one file). */
async function checkNotSplit(path: string): Promise<void> {
  let count: unknown;
  try {
    count = (await readGguf(path, { keyPrefix: "split.", maxArrayLength: 0 })).metadata["split.count"];
  } catch {
    return; // not readable as GGUF: the loader reports why, with its own code
  }
  if (typeof count === "number" && count > 1) {
    throw new LlmserveError(
      "ERR_SPLIT_GGUF",
      `${path} is part of a model split into ${count} files; llmserve loads single-file GGUF models only. Merge the parts into one file first (llama.cpp: llama-gguf-split --merge FIRST-PART OUT.gguf) and load that.`,
    );
  }
}

/**
 * @internal Model.load's first step: the local file of a spec (downloaded first when it names a
 * remote one), refused with ERR_SPLIT_GGUF when it is one part of a split model.
 */
export async function modelFile(
  spec: string,
  download: ResolveOptions | undefined,
  onProgress: ProgressCallback | undefined,
): Promise<string> {
  const path = isRemoteSpec(spec) ? await resolveModel(spec, { ...download, onProgress }) : spec;
  await checkNotSplit(path);
  return path;
}
