// The server under soak: `node dist/cli.js serve` as a child process on 127.0.0.1 (port 0), its
// output counted and logged, its RSS read from /proc, and a full GC forced through its inspector so
// that RSS readings compare what is really held (see bench/README.md, "Reading it").

import { spawn } from "node:child_process";
import { createWriteStream, readFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { repoRoot } from "../common.mjs";

export function readRssKiB(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, "utf8");
    return { rss: Number(/^VmRSS:\s+(\d+)/m.exec(s)?.[1]), hwm: Number(/^VmHWM:\s+(\d+)/m.exec(s)?.[1]) };
  } catch {
    return undefined;
  }
}

/**
 * Starts `node dist/cli.js serve` on 127.0.0.1, port 0, with the API key and a scrape-only metrics
 * key (`keys`); `url` resolves once it prints its URL. The stream write timeout is shorter than the
 * server's 30 s default (--stream-write-timeout) so that the stalled readers of a short run outlast it.
 */
export function startServer(opts, modelPath, logPath, keys) {
  const args = [
    join(repoRoot, "dist", "cli.js"),
    "serve",
    "-m",
    modelPath,
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    "--api-key",
    keys.apiKey,
    "--metrics-key",
    keys.metricsKey,
    "--threads",
    String(opts.threads),
    "--ctx",
    String(opts.ctx),
    "--kv-cache-tokens",
    String(opts.kvCacheTokens),
    "--max-queue",
    String(opts.maxQueue),
    "--shutdown-timeout",
    "10",
    "--stream-write-timeout",
    String(opts.streamWriteTimeoutS),
  ];
  if (opts.gc) args.unshift("--inspect=127.0.0.1:0");
  const child = spawn(process.execPath, args, {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
    env: Object.fromEntries(
      Object.entries(process.env).filter(([k]) => k !== "LLMSERVE_API_KEY" && k !== "LLMSERVE_METRICS_KEY"),
    ),
  });
  const log = createWriteStream(logPath);
  const lines = { error: 0, warn: 0, tail: [] };
  const exited = new Promise((res) => child.on("exit", (code, signal) => res({ code, signal, at: performance.now() })));
  let buf = "";
  const onData = (d) => {
    log.write(d);
    if (opts.verbose) process.stderr.write(d);
    buf += d;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.tail.push(line);
      if (lines.tail.length > 50) lines.tail.shift();
      if (/"level":(50|60)/.test(line) || /unexpected error|Error:/.test(line)) lines.error++;
      else if (/"level":40|Warning/.test(line)) lines.warn++;
    }
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const url = new Promise((res, rej) => {
    let seen = "";
    const look = (d) => {
      seen += d;
      const m = /serving .* at (http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(seen);
      if (m) {
        child.stdout.off("data", look);
        res(m[1]);
      }
    };
    child.stdout.on("data", look);
    exited.then((e) =>
      rej(new Error(`the server exited (${e.signal ?? e.code}) before listening:\n${lines.tail.join("\n")}`)),
    );
    setTimeout(() => rej(new Error("the server did not start listening within 120 s")), 120_000).unref();
  });
  const inspector = !opts.gc
    ? Promise.resolve(undefined)
    : new Promise((res) => {
        let seen = "";
        const look = (d) => {
          seen += d;
          const m = /Debugger listening on (ws:\/\/127\.0\.0\.1:\d+\/[\w-]+)/.exec(seen);
          if (m) {
            child.stderr.off("data", look);
            res(m[1]);
          }
        };
        child.stderr.on("data", look);
        exited.then(() => res(undefined));
      });
  return { child, url, exited, lines, log, inspector };
}

/** A full garbage collection in the server (through its inspector): HeapProfiler.collectGarbage, twice. */
export async function collectGarbage(wsUrl) {
  if (!wsUrl) return false;
  const ws = new WebSocket(wsUrl);
  try {
    await new Promise((res, rej) => {
      ws.onopen = res;
      ws.onerror = () => rej(new Error("cannot connect to the server's inspector"));
      setTimeout(() => rej(new Error("the server's inspector did not answer in 30 s")), 30_000).unref();
    });
    let id = 0;
    const call = (method) =>
      new Promise((res, rej) => {
        const my = ++id;
        const onMessage = (ev) => {
          const m = JSON.parse(ev.data);
          if (m.id !== my) return;
          ws.removeEventListener("message", onMessage);
          if (m.error) rej(new Error(`${method}: ${m.error.message}`));
          else res(m.result);
        };
        ws.addEventListener("message", onMessage);
        ws.send(JSON.stringify({ id: my, method }));
        setTimeout(() => rej(new Error(`${method} did not answer in 30 s`)), 30_000).unref();
      });
    await call("HeapProfiler.collectGarbage");
    await call("HeapProfiler.collectGarbage");
    return true;
  } catch (err) {
    console.warn(`warning: no forced GC (${err.message}); RSS is read as it is.`);
    return false;
  } finally {
    ws.close();
  }
}
