/**
 * HTTP for the model cache: redirects followed by hand (so the Hub's own headers are kept and the
 * token never reaches another host), retries with backoff, idle timeouts, and resumable,
 * checksummed, atomic file downloads.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname } from "node:path";
import { HUB_DEFAULTS } from "../defaults.js";
import { LlmserveError } from "../errors.js";
import { ProgressTracker, type ProgressCallback } from "../progress.js";

/** How requests are made: the token and where it may go, limits, cancellation. */
export interface HttpOptions {
  /** Sent as `Authorization: Bearer TOKEN`, only to `tokenOrigin`. */
  token?: string;
  /** The origin (scheme://host:port) the token belongs to. */
  tokenOrigin?: string;
  /** What a 401/403 means to the user (the Hub's advice about HF_TOKEN and licences). */
  authHint?: string;
  timeoutMs: number;
  retries: number;
  retryDelayMs: number;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

/** A failure worth another try: a dropped connection, a timeout, 429 or a 5xx. */
class Retryable extends Error {}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener("abort", stop);
      resolve();
    }
    function stop() {
      clearTimeout(t);
      reject(signal?.reason);
    }
    signal?.addEventListener("abort", stop, { once: true });
  });

function cancelled(signal: AbortSignal | undefined, what: string): LlmserveError {
  return new LlmserveError("ERR_CANCELLED", `The download of ${what} was cancelled.`, { cause: signal?.reason });
}

/** The error for a final HTTP status (429 and 5xx are retried before they get here). */
function httpError(status: number, url: string, o: HttpOptions): LlmserveError {
  if (status === 401 || status === 403) {
    const given = o.token
      ? "The token given (HF_TOKEN) was refused: check that it is valid and has read access, and that you accepted the model's licence."
      : "";
    return new LlmserveError(
      "ERR_HUB_AUTH",
      `${url} answered HTTP ${status}: it needs authorization. ${given || o.authHint || "Pass credentials the server accepts."}`,
    );
  }
  if (status === 404)
    return new LlmserveError("ERR_MODEL_NOT_FOUND", `${url} answered HTTP 404: there is no such file. Check the name.`);
  return new LlmserveError("ERR_DOWNLOAD", `${url} answered HTTP ${status}.`);
}

/**
 * One request with redirects followed by hand: `Authorization` goes only to the token's origin.
 * With `stopAtOtherOrigin` a redirect to another host is returned, not followed (HEAD on the Hub:
 * its 302 carries the file's size and checksum, the CDN's answer does not).
 * `idle` aborts the request; the caller resets its timer.
 */
async function send(
  method: "GET" | "HEAD",
  url: string,
  headers: Record<string, string>,
  o: HttpOptions,
  controller: AbortController,
  stopAtOtherOrigin = false,
): Promise<{ res: Response; url: string; hops: Response[] }> {
  const hops: Response[] = [];
  let current = url;
  for (let i = 0; i <= HUB_DEFAULTS.maxRedirects; i++) {
    const h: Record<string, string> = { "user-agent": "llmserve", ...headers };
    if (o.token && new URL(current).origin === o.tokenOrigin) h.authorization = `Bearer ${o.token}`;
    let res: Response;
    try {
      res = await fetch(current, { method, headers: h, redirect: "manual", signal: controller.signal });
    } catch (err) {
      if (o.signal?.aborted) throw cancelled(o.signal, url);
      // fetch says only "fetch failed"; the reason (ECONNREFUSED, ENOTFOUND, ...) is its cause.
      const why = (err as { cause?: { code?: string; message?: string } }).cause;
      const detail = why?.code ?? why?.message;
      throw new Retryable(`${method} ${current}: ${(err as Error).message}${detail ? ` (${detail})` : ""}`, {
        cause: err,
      });
    }
    const location = res.headers.get("location");
    if (res.status >= 300 && res.status < 400 && location) {
      await res.body?.cancel().catch(() => {});
      const next = new URL(location, current).href;
      if (stopAtOtherOrigin && new URL(next).origin !== new URL(current).origin) return { res, url: next, hops };
      hops.push(res);
      current = next;
      continue;
    }
    return { res, url: current, hops };
  }
  throw new LlmserveError("ERR_DOWNLOAD", `${url} redirected more than ${HUB_DEFAULTS.maxRedirects} times.`);
}

/**
 * Runs `attempt` until it succeeds, retrying {@link Retryable} failures with exponential backoff;
 * an attempt that calls `progressed()` (it received bytes) starts the retry count over, so a slow,
 * flaky connection that keeps moving is never given up on.
 */
async function withRetries<T>(
  what: string,
  o: HttpOptions,
  attempt: (progressed: () => void) => Promise<T>,
): Promise<T> {
  let tries = 0;
  for (;;) {
    let progressed = false;
    try {
      return await attempt(() => {
        progressed = true;
      });
    } catch (err) {
      if (!(err instanceof Retryable)) throw err;
      if (progressed) tries = 0;
      if (tries >= o.retries)
        throw new LlmserveError(
          "ERR_DOWNLOAD",
          `Could not download ${what} after ${tries + 1} attempts: ${err.message}. Check the network (or set LLMSERVE_OFFLINE=1 to use only the cache) and run it again; a partial download resumes where it stopped.`,
          { cause: err },
        );
      await sleep(Math.min(30_000, o.retryDelayMs * 2 ** tries), o.signal).catch(() => {
        throw cancelled(o.signal, what);
      });
      tries++;
    }
  }
}

/** An AbortController that aborts after `ms` without `poke()`, and when the user's signal does. */
function idleController(ms: number, signal?: AbortSignal) {
  const controller = new AbortController();
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  const poke = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new Error(`no data for ${ms} ms`));
    }, ms);
  };
  const onAbort = () => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  poke();
  return {
    controller,
    poke,
    timedOut: () => timedOut,
    done: () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    },
  };
}

/** GET a JSON document (the Hub's API), with retries. */
export async function getJson(url: string, o: HttpOptions): Promise<unknown> {
  return withRetries(url, o, async () => {
    const idle = idleController(o.timeoutMs, o.signal);
    try {
      const { res } = await send("GET", url, { accept: "application/json" }, o, idle.controller);
      if (res.status === 429 || res.status >= 500) throw new Retryable(`HTTP ${res.status}`);
      if (!res.ok) throw httpError(res.status, url, o);
      try {
        return await res.json();
      } catch (err) {
        if (o.signal?.aborted) throw cancelled(o.signal, url);
        if (idle.timedOut()) throw new Retryable(`${url}: no data for ${o.timeoutMs} ms`);
        throw new LlmserveError("ERR_DOWNLOAD", `${url} did not answer with JSON.`, { cause: err });
      }
    } finally {
      idle.done();
    }
  });
}

/** What a HEAD told about a file: where to GET it, its size and sha256 when the server says. */
export interface RemoteFile {
  url: string;
  size?: number;
  sha256?: string;
  /** An identifier of the version (checksum or ETag) a partial download must match to resume. */
  version?: string;
}

/**
 * Asks where a file is and what it is. On the Hub, the resolve URL's redirect carries
 * `X-Linked-Etag` (the sha256 of an LFS file) and `X-Linked-Size`. Servers that refuse HEAD get a
 * plain GET later (no checksum, no resume check).
 */
export async function headFile(url: string, o: HttpOptions, trustEtag: boolean): Promise<RemoteFile> {
  return withRetries(url, o, async () => {
    const idle = idleController(o.timeoutMs, o.signal);
    try {
      const r = await send("HEAD", url, {}, o, idle.controller, true);
      const res = r.res;
      if (res.status === 405 || res.status === 501) return { url };
      if (res.status === 429 || res.status >= 500) throw new Retryable(`HTTP ${res.status}`);
      if (!(res.ok || (res.status >= 300 && res.status < 400))) throw httpError(res.status, url, o);
      const hdr = (k: string) => res.headers.get(k) ?? undefined;
      const linked = hdr("x-linked-etag");
      const etag = (trustEtag ? (linked ?? hdr("etag")) : hdr("etag"))?.replace(/^W\//, "").replace(/"/g, "");
      const sizeText = hdr("x-linked-size") ?? (res.ok ? hdr("content-length") : undefined);
      const size = sizeText !== undefined && /^\d+$/.test(sizeText) ? Number(sizeText) : undefined;
      const sha256 = trustEtag && etag && /^[0-9a-f]{64}$/i.test(etag) ? etag.toLowerCase() : undefined;
      return { url: r.url, size, sha256, version: etag ?? (size === undefined ? undefined : `size:${size}`) };
    } finally {
      idle.done();
    }
  });
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/** Hashes the first `n` bytes of a file (the part of a resumed download written by an earlier run). */
async function hashPrefix(path: string, n: number, o: HttpOptions, label: string): Promise<Hash> {
  const hash = createHash("sha256");
  if (n === 0) return hash;
  const tracker = new ProgressTracker("verify", label, n, "bytes", o.onProgress ?? (() => {}), 200);
  let done = 0;
  for await (const chunk of createReadStream(path, { end: n - 1 })) {
    hash.update(chunk as Buffer);
    done += (chunk as Buffer).length;
    tracker.update(done);
  }
  tracker.finish();
  return hash;
}

/**
 * Downloads `remote` to `dest`: bytes go to `dest.part` (resumed with a Range request after a
 * dropped connection, or in a later run when `dest.part.json` says it is the same version), are
 * checked against the size and sha256 the server gave (a mismatch deletes them), and the file is
 * renamed into place only when complete. The caller holds the lock for `dest`.
 */
export async function downloadFile(remote: RemoteFile, dest: string, o: HttpOptions, label: string): Promise<void> {
  const part = `${dest}.part`;
  const meta = `${part}.json`;
  await mkdir(dirname(dest), { recursive: true });
  const version = JSON.stringify({ version: remote.version ?? null, size: remote.size ?? null });
  if (remote.version === undefined || (await readFile(meta, "utf8").catch(() => "")) !== version)
    await rm(part, { force: true }); // another version's bytes (or unknown): start over
  await writeFile(meta, version);
  const tracker = new ProgressTracker("download", label, remote.size ?? 0, "bytes", o.onProgress ?? (() => {}), 100);
  let hash: Hash | undefined;
  let hashed = 0;
  let total = remote.size;
  await withRetries(remote.url, o, async (progressed) => {
    let offset = await sizeOf(part);
    if (hash === undefined || hashed !== offset) {
      hash = await hashPrefix(part, offset, o, label);
      hashed = offset;
    }
    if (total !== undefined && offset === total) return; // complete already
    const idle = idleController(o.timeoutMs, o.signal);
    try {
      const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
      const { res } = await send("GET", remote.url, headers, o, idle.controller);
      if (res.status === 429 || res.status >= 500) throw new Retryable(`HTTP ${res.status}`);
      if (res.status === 416) {
        // The part is longer than the file (another version): start over.
        await rm(part, { force: true });
        throw new Retryable("HTTP 416 (range not satisfiable)");
      }
      if (!res.ok || !res.body) throw httpError(res.status, remote.url, o);
      const range = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(res.headers.get("content-range") ?? "");
      if (res.status === 206 && range && Number(range[1]) === offset) {
        if (range[2] !== "*") total = Number(range[2]);
      } else {
        // The server sent the whole file (no ranges, or not the one asked for): start over.
        offset = 0;
        hash = createHash("sha256");
        hashed = 0;
        const len = res.headers.get("content-length");
        if (len !== null && /^\d+$/.test(len)) total = Number(len);
      }
      const fh = await open(part, offset > 0 ? "a" : "w");
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          idle.poke();
          await fh.write(chunk);
          hash?.update(chunk);
          offset += chunk.length;
          hashed = offset;
          progressed();
          tracker.update(offset, total ?? 0);
        }
        await fh.sync();
      } catch (err) {
        if (o.signal?.aborted) throw cancelled(o.signal, label);
        const e = err as NodeJS.ErrnoException;
        if (typeof e.syscall === "string")
          throw new LlmserveError("ERR_IO", `Cannot write ${part}: ${e.message}`, { cause: err });
        throw new Retryable(`the connection dropped after ${offset} bytes (${(err as Error).message})`, {
          cause: err,
        });
      } finally {
        await fh.close();
      }
      if (total !== undefined && offset < total) throw new Retryable(`the body ended at ${offset} of ${total} bytes`);
    } finally {
      idle.done();
    }
  });
  const size = await sizeOf(part);
  const digest = hash?.digest("hex");
  const wrongSize = remote.size !== undefined && size !== remote.size;
  if (wrongSize || (remote.sha256 !== undefined && digest !== remote.sha256)) {
    await rm(part, { force: true });
    await rm(meta, { force: true });
    const what = wrongSize
      ? `has ${size} bytes, not the ${remote.size} the server announced`
      : `has sha256 ${digest}, not the ${remote.sha256} the server announced`;
    throw new LlmserveError(
      "ERR_CHECKSUM",
      `The download of ${basename(dest)} ${what}; it was deleted. Run the command again; if it fails again, the file on the server (or a proxy on the way) is corrupt.`,
    );
  }
  await rename(part, dest);
  await rm(meta, { force: true });
  tracker.update(size, size);
  tracker.finish();
}
