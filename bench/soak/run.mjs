#!/usr/bin/env node
// Soak benchmark: the real server (`node dist/cli.js serve`, a child process on 127.0.0.1) under a
// long mixed load of well-behaved and badly-behaved clients, then checks that it is back where it
// started.
//
//   npm run bench:soak                                  # 10 minutes, 32 clients (>= 2,000 requests)
//   npm run bench:soak -- --duration 90s --clients 32   # a short run
//   node bench/soak/run.mjs --help
//
// Load: completions and chat completions, streaming and not, random prompt and max_tokens lengths;
// client aborts mid-stream; abrupt socket disconnects (RST, half-sent requests); slow readers and
// readers that stop reading; slow senders; bad payloads (invalid JSON, wrong types, huge values,
// missing or wrong API key, unknown routes, oversized bodies and headers, malformed HTTP).
// Every request has a client-side timeout (a hang is a failure); every loop is bounded in time and
// count. Each request's outcome is recorded: completed with output / typed error (HTTP status and
// OpenAI error code) / aborted by the client / failed.
//
// Checks (exit 1 when one fails): no failed or hung request; no 5xx for a client fault (and no 500
// at all); KV blocks used back to the baseline measured before the load (GET /metrics); RSS growth
// of the server process < 5% between a warm point (after the warm-up) and the end (/proc/<pid>/status);
// /health always answered; the server drains and exits 0 on SIGTERM. See bench/README.md ("Soak").

import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import {
  checkBuild,
  loadLlmserve,
  machine,
  machineLine,
  makeDie,
  parseCli,
  percentile,
  repoRoot,
  rng,
  table,
  writeResults,
} from "../common.mjs";

const HELP = `Usage: node bench/soak/run.mjs [options]   (or: npm run bench:soak -- [options])

  --duration <t>        load duration: 600, 600s, 10m, 90s (default 10m)
  --clients <n>         concurrent client loops (default 32)
  --warmup <t>          the RSS warm point, from the start of the load (default 20% of the
                        duration, 10 s..60 s)
  --max-requests <n>    stop issuing after this many requests (default 200 per second of duration)
  --min-requests <n>    fail when fewer requests were made (default 2000 for 10 minutes, scaled
                        to the duration)
  --request-timeout <t> client-side limit of one request; past it the request counts as hung
                        (default 60s)
  --think <ms>          random pause of 0..ms between a client's requests (default 50)
  --model <path>        GGUF to serve (default ../shared/fixtures/models/aidreams260K.gguf when
                        present, else a small synthesized model in bench/.cache)
  --threads <n>         server compute threads (default 2)
  --ctx <n>             server context size per sequence (default 1024)
  --kv-cache-tokens <n> server KV cache size in tokens (default 32768)
  --max-queue <n>       server --max-queue (default 256)
  --rss-growth <pct>    RSS growth limit in percent (default 5)
  --no-gc               measure RSS as it is; by default the server runs with --inspect on a
                        random loopback port and a full GC (HeapProfiler.collectGarbage) runs
                        just before the warm and the end RSS readings
  --huge-prompt-kib <n> size of the "huge prompt under the body limit" bad payload, in KiB
                        (default 256; 0 leaves it out): the server tokenizes it on its event loop
  --seed <n>            seed of the clients' choices (default 1)
  --timeout <s>         overall limit of the run in seconds; the server is killed past it
                        (default: duration + warm-up + 300)
  --verbose             echo the server's output
  -h, --help            this text`;

const die = makeDie("bench:soak");

// The forced GC talks to the server's inspector over a WebSocket: Node 20 has the client behind a flag.
if (typeof WebSocket === "undefined" && !process.argv.includes("--no-gc") && !process.env.LLMSERVE_SOAK_REEXEC) {
  const r = spawnSync(process.execPath, ["--experimental-websocket", "--disable-warning=ExperimentalWarning", ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: "inherit", env: { ...process.env, LLMSERVE_SOAK_REEXEC: "1" },
  });
  process.exit(r.status ?? 1);
}
const API_KEY = `soak-${randomBytes(12).toString("hex")}`;

// ---------------------------------------------------------------- options

function seconds(name, v, def) {
  if (v === undefined) return def;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(v).trim());
  if (!m) die(`Expected a duration like 90s, 10m or 600 for --${name} but received ${JSON.stringify(v)}`);
  const x = Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] ?? "s"];
  if (!(x > 0)) die(`Expected a positive duration for --${name} but received ${JSON.stringify(v)}`);
  return x;
}

function parseOptions() {
  const { values: p, int } = parseCli(
    {
      duration: { type: "string" },
      clients: { type: "string" },
      warmup: { type: "string" },
      "max-requests": { type: "string" },
      "min-requests": { type: "string" },
      "request-timeout": { type: "string" },
      think: { type: "string" },
      ctx: { type: "string" },
      "kv-cache-tokens": { type: "string" },
      "max-queue": { type: "string" },
      "rss-growth": { type: "string" },
      "huge-prompt-kib": { type: "string" },
      "no-gc": { type: "boolean" },
    },
    HELP,
    die,
  );
  const durationS = seconds("duration", p.duration, 600);
  const warmupS = seconds("warmup", p.warmup, Math.min(60, Math.max(10, durationS * 0.2)));
  if (warmupS >= durationS) die(`--warmup (${warmupS} s) must be shorter than --duration (${durationS} s)`);
  const rssGrowth = p["rss-growth"] === undefined ? 5 : Number(p["rss-growth"]);
  if (!(rssGrowth > 0)) die(`Expected a positive number for --rss-growth but received ${JSON.stringify(p["rss-growth"])}`);
  return {
    durationS,
    warmupS,
    clients: int("clients", p.clients, 32, 1),
    maxRequests: int("max-requests", p["max-requests"], Math.ceil(durationS * 200), 1),
    minRequests: int("min-requests", p["min-requests"], Math.ceil((2000 * durationS) / 600), 0),
    requestTimeoutS: seconds("request-timeout", p["request-timeout"], 60),
    thinkMs: int("think", p.think, 50, 0),
    model: p.model,
    threads: int("threads", p.threads, 2, 1),
    ctx: int("ctx", p.ctx, 1024, 64),
    kvCacheTokens: int("kv-cache-tokens", p["kv-cache-tokens"], 32768, 16),
    maxQueue: int("max-queue", p["max-queue"], 256, 0),
    rssGrowthPct: rssGrowth,
    gc: p["no-gc"] !== true,
    hugePromptKiB: int("huge-prompt-kib", p["huge-prompt-kib"], 256, 0),
    seed: int("seed", p.seed, 1, 0),
    timeoutS: int("timeout", p.timeout, Math.ceil(durationS + warmupS + 300), 1),
    verbose: p.verbose === true,
  };
}

async function resolveModel(opts, llmserve) {
  if (opts.model) {
    if (!existsSync(opts.model)) die(`--model ${opts.model} does not exist`);
    return { path: opts.model, synthesized: false };
  }
  const fixture = join(repoRoot, "..", "shared", "fixtures", "models", "aidreams260K.gguf");
  if (existsSync(fixture)) return { path: fixture, synthesized: false };
  const dir = process.env.LLMSERVE_BENCH_DIR ?? join(repoRoot, "bench", ".cache");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, "soak-llama-256-q8_0.gguf");
  if (!existsSync(path)) {
    console.log(`Synthesizing a small random-weight model (once) -> ${path}`);
    const tmp = `${path}.partial-${process.pid}`;
    await llmserve.synth(tmp, { dim: 256, layers: 4, heads: 8, kvHeads: 2, ffn: 768, vocabSize: 2048, type: "q8_0", seed: 7 });
    (await import("node:fs")).renameSync(tmp, path);
  }
  return { path, synthesized: true };
}

// ---------------------------------------------------------------- the server process

function readRssKiB(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, "utf8");
    return { rss: Number(/^VmRSS:\s+(\d+)/m.exec(s)?.[1]), hwm: Number(/^VmHWM:\s+(\d+)/m.exec(s)?.[1]) };
  } catch {
    return undefined;
  }
}

/** Starts `node dist/cli.js serve` on 127.0.0.1, port 0; resolves once it prints its URL. */
function startServer(opts, modelPath, logPath) {
  const args = [
    join(repoRoot, "dist", "cli.js"), "serve", "-m", modelPath, "--host", "127.0.0.1", "--port", "0", "--api-key", API_KEY,
    "--threads", String(opts.threads), "--ctx", String(opts.ctx), "--kv-cache-tokens", String(opts.kvCacheTokens),
    "--max-queue", String(opts.maxQueue), "--shutdown-timeout", "10",
  ];
  if (opts.gc) args.unshift("--inspect=127.0.0.1:0");
  const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"], env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== "LLMSERVE_API_KEY")) });
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
    exited.then((e) => rej(new Error(`the server exited (${e.signal ?? e.code}) before listening:\n${lines.tail.join("\n")}`)));
    setTimeout(() => rej(new Error("the server did not start listening within 120 s")), 120_000).unref();
  });
  const inspector = !opts.gc ? Promise.resolve(undefined) : new Promise((res) => {
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
async function collectGarbage(wsUrl) {
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

// ---------------------------------------------------------------- HTTP helpers

let BASE; // { host, port }
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const AUTH = () => ({ authorization: `Bearer ${API_KEY}` });

/**
 * One HTTP request with node:http. Resolves { status, headers, body, events, ttftMs, error, timedOut,
 * aborted }; never rejects. `stream`: parse the body as Server-Sent Events as it arrives (events:
 * parsed `data:` payloads, "[DONE]" kept as the string). `abortAfter`: { events | ms } -> destroy the
 * request then (a client abort). `timeoutMs`: past it the request is destroyed and marked timedOut.
 */
function request({ method = "POST", path, headers = {}, body, stream = false, abortAfter, timeoutMs, useAgent = true }) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const out = { status: 0, headers: {}, body: "", events: [], ttftMs: undefined, error: undefined, timedOut: false, aborted: false, ms: 0 };
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(abortTimer);
      out.ms = performance.now() - t0;
      resolve(out);
    };
    const payload = body === undefined ? undefined : typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const h = { ...headers };
    if (payload !== undefined) {
      h["content-type"] ??= "application/json";
      h["content-length"] = Buffer.byteLength(payload);
    }
    const req = http.request({ host: BASE.host, port: BASE.port, method, path, headers: h, agent: useAgent ? agent : false });
    const abort = () => {
      if (settled) return;
      out.aborted = true;
      req.destroy();
      finish();
    };
    const timer = setTimeout(() => {
      out.timedOut = true;
      req.destroy();
      finish();
    }, timeoutMs);
    let abortTimer;
    if (abortAfter?.ms !== undefined) abortTimer = setTimeout(abort, abortAfter.ms);
    req.on("error", (err) => {
      out.error ??= err.code ?? err.message;
      finish();
    });
    req.on("response", (res) => {
      out.status = res.statusCode;
      out.headers = res.headers;
      res.setEncoding("utf8");
      let sseBuf = "";
      res.on("data", (d) => {
        if (!stream || out.status !== 200) {
          out.body += d;
          return;
        }
        sseBuf += d;
        let i;
        while ((i = sseBuf.indexOf("\n\n")) >= 0) {
          const ev = sseBuf.slice(0, i);
          sseBuf = sseBuf.slice(i + 2);
          for (const line of ev.split("\n")) {
            if (!line.startsWith("data: ")) continue;
            const data = line.slice(6);
            if (data === "[DONE]") out.events.push("[DONE]");
            else {
              try {
                const j = JSON.parse(data);
                if (out.ttftMs === undefined && hasText(j)) out.ttftMs = performance.now() - t0;
                out.events.push(j);
              } catch {
                out.events.push({ unparsable: data.slice(0, 200) });
              }
            }
          }
          if (abortAfter?.events !== undefined && out.events.length >= abortAfter.events) {
            abort();
            return;
          }
        }
      });
      res.on("end", finish);
      res.on("error", (err) => {
        out.error ??= err.code ?? err.message;
        finish();
      });
      res.on("close", () => {
        if (!res.complete) out.error ??= "response closed before its end";
        finish();
      });
    });
    if (payload !== undefined) req.end(payload);
    else req.end();
  });
}

const hasText = (j) => Array.isArray(j?.choices) && j.choices.some((c) => (c.text ?? c.delta?.content ?? "").length > 0);

/**
 * A raw TCP client: writes `chunks` (strings/Buffers, `gapMs` apart), then reads per `mode`:
 *   "read"            read everything (until the server closes or `untilDone` sees [DONE]);
 *   "slow"            pause the socket; every `gapMs` read one chunk; give up after budgetMs;
 *   "stall"           read the first `events` SSE events, then stop reading; destroy after stallMs;
 *   "rst-after"       read `events` SSE events (0: right after writing), then reset the connection (RST);
 *   "destroy-after-ms" destroy after `ms` whatever happened.
 * Resolves { raw, status, events, closedByServer, clientClosed, timedOut, error, ms }.
 */
function raw({ chunks, gapMs = 0, mode = "read", events: nEvents = 0, ms = 0, budgetMs = 0, stallMs = 0, timeoutMs }) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const out = { raw: "", status: 0, events: 0, done: false, closedByServer: false, clientClosed: false, timedOut: false, error: undefined, ms: 0, bytes: 0 };
    let settled = false;
    const timers = [];
    const later = (f, t) => timers.push(setTimeout(f, t));
    const sock = net.connect({ host: BASE.host, port: BASE.port });
    const finish = () => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      out.ms = performance.now() - t0;
      sock.destroy();
      resolve(out);
    };
    const clientClose = (how) => {
      if (settled) return;
      out.clientClosed = true;
      if (how === "rst" && typeof sock.resetAndDestroy === "function") sock.resetAndDestroy();
      else sock.destroy();
      finish();
    };
    later(() => {
      out.timedOut = true;
      finish();
    }, timeoutMs);
    sock.on("error", (err) => {
      out.error ??= err.code ?? err.message;
      finish();
    });
    sock.on("close", () => {
      out.closedByServer = !out.clientClosed;
      finish();
    });
    sock.setEncoding("latin1");
    let head = true;
    let tail = "";
    let bodyStart = -1;
    let contentLength = -1;
    let chunked = false;
    sock.on("data", (d) => {
      out.bytes += d.length;
      if (out.raw.length < 1 << 16) out.raw += d.slice(0, (1 << 16) - out.raw.length);
      if (head) {
        const m = /^HTTP\/1\.1 (\d{3})/.exec(out.raw);
        if (m) {
          out.status = Number(m[1]);
          head = false;
        }
      }
      out.events += (d.match(/\ndata: /g) ?? []).length + (d.startsWith("data: ") ? 1 : 0);
      tail = (tail + d).slice(-16);
      if (bodyStart < 0 && out.raw.includes("\r\n\r\n")) {
        const headEnd = out.raw.indexOf("\r\n\r\n");
        bodyStart = headEnd + 4;
        const cl = /\r\ncontent-length:\s*(\d+)/i.exec(out.raw.slice(0, headEnd));
        contentLength = cl ? Number(cl[1]) : -1;
        chunked = /\r\ntransfer-encoding:\s*chunked/i.test(out.raw.slice(0, headEnd));
      }
      const complete = bodyStart >= 0 && ((contentLength >= 0 && out.bytes - bodyStart >= contentLength) || (chunked && tail.endsWith("\r\n0\r\n\r\n")));
      if (complete || d.includes("data: [DONE]")) {
        out.done = true;
        if (mode === "read" || mode === "slow") clientClose("end"); // keep-alive: we are done
      }
      if (mode === "rst-after" && out.events >= nEvents && nEvents > 0) clientClose("rst");
      if (mode === "stall" && out.events >= nEvents && !out.stalled) {
        out.stalled = true;
        sock.pause();
        later(() => clientClose("destroy"), stallMs);
      }
    });
    if (mode === "slow") {
      sock.pause();
      const tick = () => {
        if (settled) return;
        sock.resume();
        setImmediate(() => {
          sock.pause();
          later(tick, gapMs);
        });
      };
      later(tick, gapMs);
      later(() => clientClose("destroy"), budgetMs);
    }
    sock.on("connect", async () => {
      for (let i = 0; i < chunks.length && !settled; i++) {
        if (i > 0 && gapMs > 0 && mode !== "slow") await new Promise((r) => later(r, gapMs));
        if (!settled) sock.write(chunks[i]);
      }
      if (mode === "rst-after" && nEvents === 0) later(() => clientClose("rst"), ms);
      if (mode === "destroy-after-ms") later(() => clientClose("destroy"), ms);
    });
  });
}

/** An HTTP/1.1 request as text (for the raw clients). */
function rawRequest(method, path, body, headers = {}) {
  const payload = body === undefined ? "" : typeof body === "string" ? body : JSON.stringify(body);
  const h = { host: `${BASE.host}:${BASE.port}`, connection: "close", ...AUTH(), ...headers };
  if (payload) {
    h["content-type"] ??= "application/json";
    h["content-length"] = Buffer.byteLength(payload);
  }
  return `${method} ${path} HTTP/1.1\r\n${Object.entries(h).map(([k, v]) => `${k}: ${v}`).join("\r\n")}\r\n\r\n${payload}`;
}

// ---------------------------------------------------------------- workload

const WORDS = ("I dream of the quiet sea and the stars above neurons whisper in the dark a gentle wave " +
  "of thought drifts through the lattice of memory light bends around the edges of time").split(" ");

function makeRandom(seed) {
  const r = rng(seed);
  const int = (a, b) => a + Math.floor(r() * (b - a + 1));
  const pick = (xs) => xs[Math.floor(r() * xs.length)];
  const words = (n) => Array.from({ length: n }, () => pick(WORDS)).join(" ");
  const chance = (p) => r() < p;
  return { r, int, pick, words, chance };
}

/** Random generation parameters: prompt length, max_tokens (sometimes absent), sampling. */
function genParams(R, ctx) {
  const p = {};
  const m = R.r();
  if (m < 0.45) p.max_tokens = R.int(1, 16);
  else if (m < 0.8) p.max_tokens = R.int(17, 128);
  else if (m < 0.95) p.max_tokens = R.int(129, Math.min(512, ctx / 2));
  // else: no max_tokens (chat: up to the context; completions: 16)
  if (R.chance(0.5)) p.temperature = R.pick([0, 0.3, 0.8, 1.2]);
  if (R.chance(0.2)) p.seed = R.int(0, 1e6);
  if (R.chance(0.1)) p.top_p = 0.9;
  if (R.chance(0.1)) p.stop = [R.pick(WORDS)];
  if (R.chance(0.15)) p.ignore_eos = true;
  if (R.chance(0.1)) p.n = R.int(2, 4);
  return p;
}

function promptWords(R, ctx) {
  const m = R.r();
  return m < 0.6 ? R.int(1, 20) : m < 0.9 ? R.int(21, 80) : R.int(81, Math.max(82, Math.floor(ctx / 8)));
}

function chatMessages(R, ctx) {
  const msgs = [];
  if (R.chance(0.3)) msgs.push({ role: "system", content: R.words(R.int(3, 30)) });
  const turns = R.int(0, 2);
  for (let i = 0; i < turns; i++) msgs.push({ role: "user", content: R.words(R.int(1, 20)) }, { role: "assistant", content: R.words(R.int(1, 20)) });
  msgs.push({ role: "user", content: R.chance(0.2) ? [{ type: "text", text: R.words(promptWords(R, ctx)) }] : R.words(promptWords(R, ctx)) });
  return msgs;
}

/** Checks a 200 response of a generation request; returns undefined or what is wrong. */
function checkCompletion(kind, body, n, maxTokens) {
  const want = kind === "chat" ? "chat.completion" : "text_completion";
  if (body?.object !== want) return `object is ${JSON.stringify(body?.object)}, expected ${want}`;
  if (!Array.isArray(body.choices) || body.choices.length !== n) return `${body.choices?.length} choices, expected ${n}`;
  for (const c of body.choices) {
    const text = kind === "chat" ? c.message?.content : c.text;
    if (typeof text !== "string") return "a choice has no text";
    if (c.finish_reason !== "stop" && c.finish_reason !== "length") return `finish_reason ${JSON.stringify(c.finish_reason)}`;
  }
  const u = body.usage;
  if (!u || !(u.prompt_tokens > 0) || !(u.completion_tokens >= 0)) return `bad usage ${JSON.stringify(u)}`;
  if (maxTokens !== undefined && u.completion_tokens > maxTokens * n) return `${u.completion_tokens} completion tokens > max_tokens ${maxTokens} x n ${n}`;
  return undefined;
}

/** Checks an SSE stream that ran to its end; returns undefined or what is wrong. */
function checkStream(kind, events, n) {
  if (events.at(-1) !== "[DONE]") return "the stream did not end with [DONE]";
  const want = kind === "chat" ? "chat.completion.chunk" : "text_completion";
  const finished = new Set();
  for (const e of events.slice(0, -1)) {
    if (e.unparsable !== undefined) return `unparsable event ${e.unparsable}`;
    if (e.error) continue;
    if (e.object !== want) return `event object ${JSON.stringify(e.object)}`;
    for (const c of e.choices ?? []) if (c.finish_reason) finished.add(c.index);
  }
  if (finished.size !== n) return `${finished.size} of ${n} choices got a finish_reason`;
  return undefined;
}

const isOpenAIError = (j) => j && typeof j === "object" && j.error && typeof j.error.message === "string" && typeof j.error.type === "string" && "code" in j.error;

/**
 * Classifies an HTTP-level result: completed / typed_error / aborted / failed.
 * `expect`: allowed statuses (200 means a completed generation is fine); `kind`: chat|completion|get.
 */
function classify(res, { kind, stream, n = 1, maxTokens, expect = [200], clientFault = false, aborting = false }) {
  const rec = { status: res.status, ms: Math.round(res.ms), ttftMs: res.ttftMs === undefined ? undefined : Math.round(res.ttftMs) };
  if (res.timedOut) return { ...rec, outcome: "failed", failure: `hung: no end within the client timeout (status ${res.status || "none"}, ${res.events.length} events)` };
  if (res.aborted) return { ...rec, outcome: "aborted" };
  if (res.error && res.status === 0) return { ...rec, outcome: "failed", failure: `connection error before a response: ${res.error}` };
  if (res.status >= 500 && clientFault) return { ...rec, outcome: "failed", failure: `5xx for a client fault: ${res.body.slice(0, 300)}` };
  if (res.status !== 200) {
    let j;
    try {
      j = JSON.parse(res.body);
    } catch {
      /* not JSON */
    }
    if (!isOpenAIError(j)) return { ...rec, outcome: "failed", failure: `status ${res.status} without an OpenAI error body: ${res.body.slice(0, 200)}` };
    rec.code = j.error.code;
    rec.type = j.error.type;
    if (res.status === 500) return { ...rec, outcome: "failed", failure: `500: ${j.error.message.slice(0, 300)}` };
    if (!expect.includes(res.status) && !(res.status === 503 && !clientFault)) {
      return { ...rec, outcome: "failed", failure: `status ${res.status} (${j.error.code}), expected ${expect.join("/")}: ${j.error.message.slice(0, 200)}` };
    }
    return { ...rec, outcome: "typed_error" };
  }
  if (!expect.includes(200)) return { ...rec, outcome: "failed", failure: `status 200, expected ${expect.join("/")}: ${res.body.slice(0, 200)}` };
  if (kind === "get") return { ...rec, outcome: res.error ? "failed" : "completed", failure: res.error };
  if (res.error && !aborting) return { ...rec, outcome: "failed", failure: `response cut: ${res.error}` };
  if (stream) {
    const err = res.events.find((e) => e && typeof e === "object" && e.error);
    if (err) {
      // An error event mid-stream: typed when it is an OpenAI error object.
      if (!isOpenAIError(err)) return { ...rec, outcome: "failed", failure: `untyped error event ${JSON.stringify(err).slice(0, 200)}` };
      return { ...rec, status: "200+sse", code: err.error.code, outcome: clientFault ? "failed" : "typed_error", failure: clientFault ? `error event for a client fault: ${err.error.message}` : undefined };
    }
    const bad = checkStream(kind, res.events, n);
    if (bad) return { ...rec, outcome: "failed", failure: bad };
    rec.chars = res.events.reduce((a, e) => a + (e?.choices ?? []).reduce((b, c) => b + (c.text ?? c.delta?.content ?? "").length, 0), 0);
    return { ...rec, outcome: "completed" };
  }
  let j;
  try {
    j = JSON.parse(res.body);
  } catch {
    return { ...rec, outcome: "failed", failure: `200 with a body that is not JSON: ${res.body.slice(0, 200)}` };
  }
  const bad = checkCompletion(kind, j, n, maxTokens);
  if (bad) return { ...rec, outcome: "failed", failure: bad };
  rec.tokens = j.usage.completion_tokens;
  rec.chars = j.choices.reduce((a, c) => a + (kind === "chat" ? c.message.content : c.text).length, 0);
  return { ...rec, outcome: "completed" };
}

/** Classifies a raw-socket result. `expect`: statuses that are fine when a response came. */
function classifyRaw(res, { expect = [200], clientFault = false, bare = false, completedIfDone = true }) {
  const rec = { status: res.status || undefined, ms: Math.round(res.ms) };
  if (res.timedOut) return { ...rec, outcome: "failed", failure: `hung: no end within the client timeout (status ${res.status || "none"}, ${res.bytes} bytes)` };
  if (res.status >= 500 && clientFault) return { ...rec, outcome: "failed", failure: `5xx for a client fault: ${res.raw.slice(0, 300)}` };
  if (res.status >= 500) return { ...rec, outcome: "failed", failure: `${res.status}: ${res.raw.slice(0, 300)}` };
  if (res.status && !expect.includes(res.status)) return { ...rec, outcome: "failed", failure: `status ${res.status}, expected ${expect.join("/")}: ${res.raw.slice(0, 300)}` };
  if (res.status >= 400) {
    const bodyText = res.raw.slice(res.raw.indexOf("\r\n\r\n") + 4);
    let j;
    try {
      j = JSON.parse(/^[0-9a-f]+\r\n/.test(bodyText) ? bodyText.replace(/^[0-9a-f]+\r\n/, "").replace(/\r\n0\r\n\r\n$/, "") : bodyText);
    } catch {
      /* not JSON */
    }
    if (isOpenAIError(j)) return { ...rec, outcome: "typed_error", code: j.error.code, type: j.error.type };
    if (bare) return { ...rec, outcome: "http_error" }; // answered by Node's HTTP parser / fastify's clientError handler
    return { ...rec, outcome: "failed", failure: `status ${res.status} without an OpenAI error body: ${bodyText.slice(0, 200)}` };
  }
  if (res.clientClosed) return { ...rec, outcome: res.done && completedIfDone ? "completed" : "aborted" };
  if (res.done) return { ...rec, outcome: "completed" };
  if (res.status === 200 && res.closedByServer && !res.done) return { ...rec, outcome: "failed", failure: "the server closed a 200 stream before [DONE]" };
  if (!res.status && res.closedByServer) return { ...rec, outcome: "failed", failure: `the server closed the connection without a response${res.error ? ` (${res.error})` : ""}` };
  return { ...rec, outcome: "completed" };
}

/** The scenarios: [name, weight, run(R, ctx) -> record]. */
function scenarios(opts) {
  const T = opts.requestTimeoutS * 1000;
  const ctx = opts.ctx;
  const gen = (kind, stream) => async (R) => {
    const p = genParams(R, ctx);
    const body = kind === "chat" ? { messages: chatMessages(R, ctx), ...p } : { prompt: R.chance(0.1) ? [R.words(5), R.words(9)] : R.words(promptWords(R, ctx)), ...p };
    if (stream) {
      body.stream = true;
      if (R.chance(0.3)) body.stream_options = { include_usage: true };
    }
    if (kind === "completion" && R.chance(0.1)) body.logprobs = R.int(0, 5);
    if (kind === "chat" && R.chance(0.1)) Object.assign(body, { logprobs: true, top_logprobs: R.int(0, 5) });
    if (R.chance(0.2)) body.model = null;
    const n = (body.n ?? 1) * (Array.isArray(body.prompt) ? body.prompt.length : 1);
    const path = kind === "chat" ? "/v1/chat/completions" : "/v1/completions";
    const res = await request({ path, headers: AUTH(), body, stream, timeoutMs: T });
    // 429 (queue full) and 503 (engine overloaded) are typed answers a valid request may get under load.
    return { sub: `${kind}${stream ? "-stream" : ""}`, ...classify(res, { kind, stream, n, maxTokens: body.max_tokens, expect: [200, 429] }) };
  };

  // Client aborts mid-stream (node:http request destroyed) and during a non-streaming request.
  const abort = async (R) => {
    const kind = R.pick(["chat", "completion"]);
    const path = kind === "chat" ? "/v1/chat/completions" : "/v1/completions";
    const stream = R.chance(0.75);
    const body = { ...(kind === "chat" ? { messages: chatMessages(R, ctx) } : { prompt: R.words(promptWords(R, ctx)) }), max_tokens: R.int(64, 512), ignore_eos: true, stream };
    const abortAfter = stream && R.chance(0.7) ? { events: R.int(1, 20) } : { ms: R.int(0, 400) };
    const res = await request({ path, headers: AUTH(), body, stream, abortAfter, timeoutMs: T });
    return { sub: `abort-${stream ? "stream" : "json"}-${abortAfter.events !== undefined ? "events" : "ms"}`, ...classify(res, { kind, stream, maxTokens: body.max_tokens, aborting: true, expect: [200, 429] }) };
  };

  // Abrupt disconnects on raw sockets.
  const disconnect = async (R) => {
    const stream = R.chance(0.6);
    const body = { prompt: R.words(promptWords(R, ctx)), max_tokens: R.int(64, 512), ignore_eos: true, stream };
    const req = rawRequest("POST", "/v1/completions", body);
    const v = R.int(0, 4);
    let res;
    let sub;
    if (v === 0) {
      sub = "rst-mid-stream";
      res = await raw({ chunks: [rawRequest("POST", "/v1/completions", { ...body, stream: true })], mode: "rst-after", events: R.int(1, 10), timeoutMs: T });
    } else if (v === 1) {
      sub = "rst-after-send";
      res = await raw({ chunks: [req], mode: "rst-after", events: 0, ms: R.int(0, 300), timeoutMs: T });
    } else if (v === 2) {
      sub = "half-sent-body";
      const cut = R.int(Math.floor(req.length / 2), req.length - 1);
      res = await raw({ chunks: [req.slice(0, cut)], mode: "destroy-after-ms", ms: R.int(0, 500), timeoutMs: T });
    } else if (v === 3) {
      sub = "half-sent-headers";
      res = await raw({ chunks: [req.slice(0, R.int(5, req.indexOf("\r\n\r\n")))], mode: "destroy-after-ms", ms: R.int(0, 500), timeoutMs: T });
    } else {
      sub = "destroy-mid-response";
      res = await raw({ chunks: [req], mode: "destroy-after-ms", ms: R.int(5, 300), timeoutMs: T });
    }
    return { sub, ...classifyRaw(res, { expect: [200, 429] }) };
  };

  // Slow readers: read the SSE stream in small sips, or stop reading; big outputs so the server's
  // socket buffer fills (logprobs make every event ~1 KB per choice).
  const slow = async (R) => {
    const v = R.int(0, 2);
    const body = {
      messages: chatMessages(R, ctx), max_tokens: R.int(200, 600), ignore_eos: true, stream: true, n: R.int(2, 8), logprobs: true, top_logprobs: 20,
    };
    const req = rawRequest("POST", "/v1/chat/completions", body);
    let res;
    let sub;
    if (v === 0) {
      sub = "slow-reader";
      const budgetMs = R.int(5_000, 20_000);
      res = await raw({ chunks: [req], mode: "slow", gapMs: R.int(20, 200), budgetMs, timeoutMs: budgetMs + T });
    } else if (v === 1) {
      sub = "stopped-reader";
      const stallMs = R.int(3_000, 15_000);
      res = await raw({ chunks: [req], mode: "stall", events: R.int(1, 5), stallMs, timeoutMs: stallMs + T });
    } else {
      sub = "slow-sender";
      const pieces = [];
      const small = rawRequest("POST", "/v1/completions", { prompt: R.words(R.int(5, 40)), max_tokens: R.int(1, 32), stream: R.chance(0.5) });
      for (let i = 0; i < small.length; i += 40) pieces.push(small.slice(i, i + 40));
      res = await raw({ chunks: pieces, gapMs: Math.ceil(R.int(1_000, 4_000) / pieces.length), mode: "read", timeoutMs: 5_000 + T });
    }
    return { sub, ...classifyRaw(res, { expect: [200, 429] }) };
  };

  // Bad payloads and requests that are the client's fault; `expect` is the status(es) they must get.
  const j = (path, body, expect, sub, headers = AUTH()) => ({ path, body, expect, sub, headers });
  const bads = [
    j("/v1/completions", '{"prompt": "x",', [400], "invalid-json"),
    j("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi"}]', [400], "invalid-json-chat"),
    j("/v1/completions", "", [400], "empty-body"),
    j("/v1/completions", "null", [400], "null-body"),
    j("/v1/completions", "[1,2,3]", [400], "array-body"),
    j("/v1/completions", { prompt: 42 }, [400], "prompt-number"),
    j("/v1/completions", { prompt: [1, 2.5] }, [400], "prompt-float-ids"),
    j("/v1/completions", { prompt: [1, 1e9] }, [400], "prompt-id-out-of-vocab"),
    j("/v1/completions", { prompt: [-5] }, [400], "prompt-id-negative"),
    j("/v1/completions", {}, [400], "prompt-missing"),
    j("/v1/completions", { prompt: "x", max_tokens: "10" }, [400], "max-tokens-string"),
    j("/v1/completions", { prompt: "x", max_tokens: 0 }, [400], "max-tokens-zero"),
    j("/v1/completions", { prompt: "x", max_tokens: -1 }, [400], "max-tokens-negative"),
    j("/v1/completions", '{"prompt":"x","max_tokens":1e400}', [400], "max-tokens-1e400"),
    j("/v1/completions", { prompt: "x", temperature: "hot" }, [400], "temperature-string"),
    j("/v1/completions", { prompt: "x", temperature: 1e308 }, [400], "temperature-huge"),
    j("/v1/completions", { prompt: "x", top_p: -1 }, [400], "top-p-negative"),
    j("/v1/completions", { prompt: "x", n: 0 }, [400], "n-zero"),
    j("/v1/completions", { prompt: "x", n: 1000 }, [400], "n-huge"),
    j("/v1/completions", { prompt: "x", logprobs: 21 }, [400], "logprobs-21"),
    j("/v1/completions", { prompt: "x", stop: Array(17).fill("a") }, [400], "stop-17"),
    j("/v1/completions", { prompt: "x", stream: "yes" }, [400], "stream-string"),
    j("/v1/completions", { prompt: "x", model: "gpt-4" }, [404], "unknown-model"),
    j("/v1/completions", { prompt: ["a", "b", "c"], n: 128, max_tokens: 2 }, [429], "too-many-sequences"),
    j("/v1/completions", { prompt: "dream ".repeat(ctx * 2) }, [400], "prompt-over-context"),
    j("/v1/completions", { prompt: Array(ctx + 10).fill(5) }, [400], "ids-over-context"),
    ...(opts.hugePromptKiB > 0 ? [j("/v1/completions", { prompt: "dream ".repeat(Math.ceil((opts.hugePromptKiB * 1024) / 6)), max_tokens: 1 }, [400], `prompt-${opts.hugePromptKiB}KiB`)] : []),
    j("/v1/completions", '{"prompt":"x","__proto__":{"polluted":1}}', [400], "proto-poisoning"),
    j("/v1/completions", '{"prompt":"x","constructor":{"prototype":{"polluted":1}}}', [400], "constructor-poisoning"),
    j("/v1/completions", "[".repeat(50_000) + "]".repeat(50_000), [400], "deep-nesting"),
    j("/v1/completions", `{"prompt":"${"a".repeat(9 << 20)}"}`, [413], "body-9MiB"),
    j("/v1/chat/completions", { messages: [] }, [400], "messages-empty"),
    j("/v1/chat/completions", { messages: "hi" }, [400], "messages-string"),
    j("/v1/chat/completions", { messages: [{ role: "wizard", content: "hi" }] }, [400], "role-unknown"),
    j("/v1/chat/completions", { messages: [{ content: "hi" }] }, [400], "role-missing"),
    j("/v1/chat/completions", { messages: [{ role: "user", content: 5 }] }, [400], "content-number"),
    j("/v1/chat/completions", { messages: [{ role: "user", content: [{ text: "x" }] }] }, [400], "content-part-no-type"),
    j("/v1/chat/completions", { messages: [{ role: "user", content: "hi" }], top_logprobs: 99, logprobs: true }, [400], "top-logprobs-99"),
    j("/v1/chat/completions", { messages: [{ role: "user", content: "dream ".repeat(ctx * 2) }] }, [400], "chat-over-context"),
    j("/v1/completions", { prompt: "x" }, [401], "auth-missing", {}),
    j("/v1/completions", { prompt: "x" }, [401], "auth-wrong-key", { authorization: "Bearer wrong-key" }),
    j("/v1/chat/completions", { messages: [{ role: "user", content: "x" }] }, [401], "auth-basic", { authorization: "Basic dXNlcjpwYXNz" }),
    j("/v1/completions", { prompt: "x" }, [401], "auth-empty-bearer", { authorization: "Bearer " }),
    j("/v1/completions", { prompt: "x" }, [401], "auth-key-prefix", { authorization: `Bearer ${API_KEY.slice(0, -1)}` }),
    { path: "/v1/models", method: "GET", expect: [401], sub: "auth-missing-get", headers: {} },
    { path: "/v1/nope", method: "GET", expect: [404], sub: "unknown-route" },
    { path: "/v1/nope", method: "GET", expect: [401, 404], sub: "unknown-route-no-auth", headers: {} },
    { path: "/v2/completions", method: "POST", body: { prompt: "x" }, expect: [404], sub: "unknown-prefix" },
    { path: "/v1/completions", method: "GET", expect: [404, 405], sub: "wrong-method" },
    { path: "/v1/models", method: "DELETE", expect: [404, 405], sub: "wrong-method-delete" },
    { path: "/v1/models/not-this-one", method: "GET", expect: [404], sub: "unknown-model-id" },
    { path: `/v1/${"x".repeat(8000)}`, method: "GET", expect: [404], sub: "long-url" },
    j("/v1/completions", "prompt=x", [400, 415], "form-content-type", { ...AUTH(), "content-type": "application/x-www-form-urlencoded" }),
    j("/v1/completions", "hello", [400, 415], "text-content-type", { ...AUTH(), "content-type": "text/plain" }),
  ];
  const bad = async (R) => {
    const b = R.pick(bads);
    const res = await request({ method: b.method ?? "POST", path: b.path, headers: b.headers ?? AUTH(), body: b.body, timeoutMs: T });
    if (b.expect.includes(413) && res.status === 0 && /EPIPE|ECONNRESET/.test(res.error ?? "")) {
      // The server may answer 413 and close before the whole body is written.
      return { sub: b.sub, status: 413, ms: Math.round(res.ms), outcome: "typed_error", code: "(closed while the body was sent)" };
    }
    return { sub: b.sub, ...classify(res, { kind: "get", expect: b.expect, clientFault: true }) };
  };

  // HTTP-level garbage on raw sockets: answered by Node's parser (fastify's clientError handler).
  const rawBad = [
    { sub: "garbage-request-line", chunks: ["HELLO THERE\r\n\r\n"], expect: [400] },
    { sub: "binary-garbage", chunks: [Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 37 + 11) % 256))], expect: [400] },
    { sub: "cl-and-te", chunks: [`POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n`], expect: [400] },
    { sub: "bad-content-length", chunks: [`POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n`], expect: [400] },
    { sub: "huge-header", chunks: () => [rawRequest("GET", "/v1/models", undefined, { authorization: `Bearer ${"k".repeat(20_000)}` })], expect: [431] },
    { sub: "many-headers", chunks: () => [rawRequest("GET", "/v1/models", undefined, Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`x-h${i}`, "v"])))], expect: [431, 400, 200] },
    { sub: "http-0.9", chunks: ["GET /\r\n\r\n"], expect: [400, 404, 505] },
    { sub: "chunked-bad-size", chunks: () => [`POST /v1/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${API_KEY}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`], expect: [400] },
  ];
  const rawBadRun = async (R) => {
    const b = R.pick(rawBad);
    const res = await raw({ chunks: typeof b.chunks === "function" ? b.chunks() : b.chunks, mode: "read", timeoutMs: T });
    const c = classifyRaw(res, { expect: b.expect, clientFault: true, bare: true });
    if (c.outcome === "completed" && !res.status) return { sub: b.sub, ...c, outcome: "failed", failure: "no HTTP response" };
    return { sub: b.sub, ...c };
  };

  const gets = async (R) => {
    const g = R.pick(["/v1/models", "/v1/models/:id", "/health", "/metrics"]);
    const path = g === "/v1/models/:id" ? `/v1/models/${encodeURIComponent(MODEL_NAME)}` : g;
    const res = await request({ method: "GET", path, headers: g === "/health" ? {} : AUTH(), timeoutMs: T });
    return { sub: `get ${g}`, ...classify(res, { kind: "get", expect: [200] }) };
  };

  return [
    ["completion", 13, gen("completion", false)],
    ["completion-stream", 13, gen("completion", true)],
    ["chat", 13, gen("chat", false)],
    ["chat-stream", 13, gen("chat", true)],
    ["client-abort", 8, abort],
    ["disconnect", 8, disconnect],
    ["slow-client", 3, slow],
    ["bad-payload", 20, bad],
    ["bad-http", 4, rawBadRun],
    ["get", 5, gets],
  ];
}

let MODEL_NAME = "";

// ---------------------------------------------------------------- monitoring

function parseProm(text) {
  const out = {};
  for (const line of text.split("\n")) {
    const m = /^(llmserve_[a-z_]+)(\{[^}]*\})? ([-+0-9.eE]+|NaN)$/.exec(line);
    if (m && !m[2]) out[m[1]] = Number(m[3]);
  }
  return out;
}

async function scrape() {
  const res = await request({ method: "GET", path: "/metrics", headers: AUTH(), timeoutMs: 10_000, useAgent: false });
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status || res.error}`);
  return parseProm(res.body);
}

async function health() {
  const res = await request({ method: "GET", path: "/health", headers: AUTH(), timeoutMs: 10_000, useAgent: false });
  let j;
  try {
    j = JSON.parse(res.body);
  } catch {
    /* */
  }
  return { ok: res.status === 200 && j?.status === "ok", ms: res.ms, status: res.status, body: j, error: res.timedOut ? "timeout" : res.error };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : "-");

// ---------------------------------------------------------------- main

async function main() {
  const opts = parseOptions();
  const build = checkBuild(die);
  const llmserve = await loadLlmserve(die);
  const mach = machine(llmserve.kernelIsa(), llmserve.physicalCores());
  const model = await resolveModel(opts, llmserve);
  console.log(machineLine(mach));
  console.log(`cpu     : ${mach.cpu}; SIMD ${mach.simdFlags || "none"}`);
  console.log(`model   : ${relative(process.cwd(), model.path)}${model.synthesized ? " (synthesized)" : ""}`);
  console.log(
    `run     : ${opts.durationS} s, ${opts.clients} clients, warm point at ${opts.warmupS} s, request timeout ${opts.requestTimeoutS} s, ` +
      `server --threads ${opts.threads} --ctx ${opts.ctx} --kv-cache-tokens ${opts.kvCacheTokens} --max-queue ${opts.maxQueue}`,
  );

  const stamp = new Date().toISOString().replace(/:/g, "-").replace(/\.\d+Z$/, "Z");
  mkdirSync(join(repoRoot, "bench", "results"), { recursive: true });
  const logPath = join(repoRoot, "bench", "results", `soak-${stamp}.server.log`);
  const server = startServer(opts, model.path, logPath);
  const killServer = () => {
    if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill("SIGKILL");
  };
  process.on("exit", killServer);
  const overall = setTimeout(() => {
    console.error(`bench:soak: the run passed --timeout ${opts.timeoutS} s; killing the server`);
    killServer();
    process.exit(1);
  }, opts.timeoutS * 1000);
  overall.unref();

  let url;
  try {
    url = await server.url;
  } catch (err) {
    die(err.message);
  }
  const u = new URL(url);
  BASE = { host: u.hostname, port: Number(u.port) };
  const pid = server.child.pid;
  const inspectorUrl = await server.inspector;
  console.log(`server  : pid ${pid} at ${url} (log: ${relative(process.cwd(), logPath)})`);
  {
    const m = await request({ method: "GET", path: "/v1/models", headers: AUTH(), timeoutMs: 10_000 });
    MODEL_NAME = JSON.parse(m.body).data[0].id;
  }

  // Baseline before any load.
  const base = await scrape();
  const rssStart = readRssKiB(pid);
  console.log(`baseline: KV blocks used ${base.llmserve_kv_blocks_used} of ${base.llmserve_kv_blocks_total} (cached ${base.llmserve_kv_blocks_cached}), RSS ${fmt(rssStart.rss / 1024, 1)} MiB`);

  // Monitors: /health latency, RSS and /metrics over time.
  const t0 = performance.now();
  const since = () => (performance.now() - t0) / 1000;
  let loadDone = false;
  const healthSamples = [];
  const rssSamples = [];
  const metricSamples = [];
  const healthLoop = (async () => {
    while (!loadDone) {
      const h = await health();
      healthSamples.push({ t: +since().toFixed(2), ms: +h.ms.toFixed(2), ok: h.ok, status: h.status, error: h.error, running: h.body?.running, waiting: h.body?.waiting, inFlight: h.body?.inFlight });
      await sleep(250);
    }
  })();
  const rssLoop = (async () => {
    while (!loadDone) {
      const r = readRssKiB(pid);
      if (r) rssSamples.push({ t: +since().toFixed(2), rssKiB: r.rss });
      await sleep(1000);
    }
  })();
  const metricsLoop = (async () => {
    while (!loadDone) {
      await sleep(5000);
      try {
        const m = await scrape();
        metricSamples.push({ t: +since().toFixed(1), kvUsed: m.llmserve_kv_blocks_used, kvCached: m.llmserve_kv_blocks_cached, queue: m.llmserve_queue_depth, running: m.llmserve_running_sequences, inFlight: m.llmserve_requests_in_flight, heapUsed: m.llmserve_nodejs_heap_size_used_bytes, heapTotal: m.llmserve_nodejs_heap_size_total_bytes, external: m.llmserve_nodejs_external_memory_bytes, loopLagP99: m.llmserve_nodejs_eventloop_lag_p99_seconds, loopLagMax: m.llmserve_nodejs_eventloop_lag_max_seconds });
      } catch (err) {
        metricSamples.push({ t: +since().toFixed(1), error: err.message });
      }
    }
  })();

  // Load.
  const SC = scenarios(opts);
  const totalWeight = SC.reduce((a, s) => a + s[1], 0);
  const records = [];
  let issued = 0;
  const deadline = t0 + opts.durationS * 1000;
  let warm;
  const gcWindows = []; // [start, end] of the forced GC at the warm point: /health samples overlapping it are left out
  const clientLag = monitorEventLoopDelay({ resolution: 10 });
  clientLag.enable();
  const warmTimer = setTimeout(async () => {
    const before = readRssKiB(pid)?.rss;
    const g0 = since();
    const gcDone = await collectGarbage(inspectorUrl);
    gcWindows.push([g0, since()]);
    const r = readRssKiB(pid);
    warm = { t: since(), rssKiB: r?.rss, rssBeforeGcKiB: before, gc: gcDone };
    console.log(`warm    : at ${fmt(warm.t, 1)} s, RSS ${fmt(warm.rssKiB / 1024, 1)} MiB${gcDone ? ` after a full GC (${fmt(before / 1024, 1)} MiB before)` : ""}, ${records.length} requests done`);
  }, opts.warmupS * 1000);
  let lastProgress = performance.now();
  const client = async (c) => {
    const R = makeRandom(opts.seed * 1000 + c);
    while (performance.now() < deadline && issued < opts.maxRequests) {
      issued++;
      let x = R.r() * totalWeight;
      const sc = SC.find((s) => (x -= s[1]) < 0) ?? SC[0];
      const start = since();
      let rec;
      try {
        rec = await sc[2](R);
      } catch (err) {
        rec = { outcome: "failed", failure: `client error: ${err?.stack ?? err}` };
      }
      records.push({ scenario: sc[0], client: c, t: +start.toFixed(3), ...rec });
      if (rec.outcome === "failed" && records.filter((r) => r.outcome === "failed").length <= 10) {
        console.log(`  FAILED ${sc[0]}/${rec.sub}: ${String(rec.failure).replace(/\s+/g, " ").slice(0, 300)}`);
      }
      if (performance.now() - lastProgress > 15_000) {
        lastProgress = performance.now();
        const h = healthSamples.at(-1);
        console.log(`  ${fmt(since(), 0)} s: ${records.length} requests, ${records.filter((r) => r.outcome === "failed").length} failed; health ${fmt(h?.ms, 1)} ms, running ${h?.running}, waiting ${h?.waiting}; RSS ${fmt((rssSamples.at(-1)?.rssKiB ?? NaN) / 1024, 1)} MiB`);
      }
      if (opts.thinkMs > 0) await sleep(R.int(0, opts.thinkMs));
    }
  };
  await Promise.all(Array.from({ length: opts.clients }, (_, c) => client(c)));
  clearTimeout(warmTimer);
  const loadEnd = since();
  loadDone = true;
  await Promise.all([healthLoop, rssLoop, metricsLoop]);
  agent.destroy();
  console.log(`load    : done at ${fmt(loadEnd, 1)} s (${records.length} requests)`);

  // Quiescence: wait (up to 30 s) for the engine to be idle and the KV blocks to come back.
  let after;
  let afterHealth;
  const q0 = performance.now();
  for (;;) {
    after = await scrape().catch((err) => ({ error: err.message }));
    afterHealth = await health();
    const idle = after.llmserve_kv_blocks_used === base.llmserve_kv_blocks_used && after.llmserve_requests_in_flight === 0 && afterHealth.body?.running === 0 && afterHealth.body?.waiting === 0;
    if (idle || performance.now() - q0 > 30_000) break;
    await sleep(500);
  }
  const settleS = (performance.now() - q0) / 1000;
  await sleep(2000);
  const rssEndBeforeGc = readRssKiB(pid)?.rss;
  const endGc = await collectGarbage(inspectorUrl);
  if (endGc) await sleep(1000);
  const rssEndSamples = [];
  for (let i = 0; i < 3; i++) {
    rssEndSamples.push(readRssKiB(pid)?.rss);
    await sleep(1000);
  }
  const rssEnd = percentile(rssEndSamples.filter(Number.isFinite), 0.5);
  const hwm = readRssKiB(pid)?.hwm;

  // Graceful shutdown.
  const s0 = performance.now();
  server.child.kill("SIGTERM");
  const exit = await Promise.race([server.exited, sleep(30_000).then(() => undefined)]);
  const shutdownS = (performance.now() - s0) / 1000;
  if (!exit) killServer();
  await new Promise((r) => server.log.end(r));

  // ---------------------------------------------------------------- report
  const byScenario = new Map();
  for (const r of records) {
    const k = r.scenario;
    if (!byScenario.has(k)) byScenario.set(k, []);
    byScenario.get(k).push(r);
  }
  const count = (rs, o) => rs.filter((r) => r.outcome === o).length;
  const lat = (rs) => rs.filter((r) => r.outcome === "completed").map((r) => r.ms);
  const rows = [...byScenario.entries()].map(([k, rs]) => {
    const l = lat(rs);
    return [k, rs.length, count(rs, "completed"), count(rs, "typed_error"), count(rs, "http_error"), count(rs, "aborted"), count(rs, "failed"), fmt(percentile(l, 0.5)), fmt(percentile(l, 0.99))];
  });
  const allLat = lat(records);
  rows.push(["all", records.length, count(records, "completed"), count(records, "typed_error"), count(records, "http_error"), count(records, "aborted"), count(records, "failed"), fmt(percentile(allLat, 0.5)), fmt(percentile(allLat, 0.99))]);
  console.log("");
  console.log(table(rows, ["scenario", "requests", "completed", "typed error", "HTTP-layer error", "aborted", "FAILED", "p50 ms", "p99 ms"]));

  const streams = records.filter((r) => r.ttftMs !== undefined && r.outcome === "completed");
  console.log(`\nstreams : time to first text p50 ${fmt(percentile(streams.map((r) => r.ttftMs), 0.5))} ms, p99 ${fmt(percentile(streams.map((r) => r.ttftMs), 0.99))} ms (${streams.length} completed streams with text)`);
  const emptyOut = records.filter((r) => r.outcome === "completed" && r.chars === 0).length;
  if (emptyOut) console.log(`          ${emptyOut} completed generations had empty text (EOS first, or a stop string at once)`);

  const statusCount = new Map();
  for (const r of records) {
    if (r.outcome !== "typed_error" && r.outcome !== "http_error") continue;
    const k = `${r.status} ${r.code ?? (r.outcome === "http_error" ? "(no OpenAI body)" : "null")}`;
    statusCount.set(k, (statusCount.get(k) ?? 0) + 1);
  }
  console.log(`\nerrors by status and code: ${[...statusCount.entries()].sort().map(([k, v]) => `${k}: ${v}`).join(", ") || "none"}`);
  const validBusy = records.filter((r) => !["bad-payload", "bad-http"].includes(r.scenario) && (r.status === 429 || r.status === 503)).length;
  if (validBusy) console.log(`          valid requests answered 429/503 (busy): ${validBusy}`);
  const subs = new Map();
  for (const r of records) subs.set(`${r.scenario}/${r.sub}`, (subs.get(`${r.scenario}/${r.sub}`) ?? 0) + 1);

  clientLag.disable();
  const duringGc = (h) => gcWindows.some(([a, b]) => h.t - h.ms / 1000 <= b && h.t >= a);
  const hLat = healthSamples.filter((h) => h.status === 200 && !duringGc(h)).map((h) => h.ms);
  const hGc = healthSamples.filter(duringGc).map((h) => h.ms);
  const hFail = healthSamples.filter((h) => !h.ok);
  console.log(`health  : ${healthSamples.length} samples during the load: p50 ${fmt(percentile(hLat, 0.5), 1)} ms, p99 ${fmt(percentile(hLat, 0.99), 1)} ms, max ${fmt(Math.max(...hLat), 1)} ms; ${hFail.length} not ok${hGc.length ? ` (${hGc.length} samples during the forced GC left out: max ${fmt(Math.max(...hGc), 0)} ms)` : ""}`);
  console.log(`          (includes this process's own event-loop delay: p99 ${fmt(clientLag.percentile(99) / 1e6, 0)} ms, max ${fmt(clientLag.max / 1e6, 0)} ms)`);
  const maxRss = Math.max(...rssSamples.map((s) => s.rssKiB));
  const growth = warm?.rssKiB ? ((rssEnd - warm.rssKiB) / warm.rssKiB) * 100 : NaN;
  const gcNote = warm?.gc && endGc ? ` (after a full GC; before it: warm ${fmt(warm.rssBeforeGcKiB / 1024, 1)}, end ${fmt(rssEndBeforeGc / 1024, 1)} MiB)` : " (no forced GC)";
  console.log(`RSS     : start ${fmt(rssStart.rss / 1024, 1)} MiB, warm ${fmt(warm?.rssKiB / 1024, 1)} MiB (at ${fmt(warm?.t, 0)} s), end ${fmt(rssEnd / 1024, 1)} MiB: ${growth >= 0 ? "+" : ""}${fmt(growth, 2)}%${gcNote}; max during load ${fmt(maxRss / 1024, 1)} MiB, high-water ${fmt(hwm / 1024, 1)} MiB`);
  const heapAt = (t) => metricSamples.filter((m) => m.heapUsed !== undefined).reduce((best, m) => (best === undefined || Math.abs(m.t - t) < Math.abs(best.t - t) ? m : best), undefined);
  const hw = heapAt(warm?.t ?? 0);
  const he = metricSamples.filter((m) => m.heapUsed !== undefined).at(-1);
  const lagMax = Math.max(...metricSamples.map((m) => m.loopLagMax ?? 0));
  const heapLows = (a, b) => Math.min(...metricSamples.filter((m) => m.heapUsed !== undefined && m.t >= a && m.t < b).map((m) => m.heapUsed));
  const lowWarm = heapLows(warm?.t ?? 0, (warm?.t ?? 0) + (loadEnd - (warm?.t ?? 0)) / 2);
  const lowEnd = heapLows((warm?.t ?? 0) + (loadEnd - (warm?.t ?? 0)) / 2, Infinity);
  if (hw && he) console.log(`heap    : lowest V8 heap used (~after a GC) ${fmt(lowWarm / 2 ** 20, 1)} MiB in the first half after the warm point, ${fmt(lowEnd / 2 ** 20, 1)} MiB in the second half`);
  if (hw && he) console.log(`heap    : V8 heap used ${fmt(hw.heapUsed / 2 ** 20, 1)} MiB at ${fmt(hw.t, 0)} s, ${fmt(he.heapUsed / 2 ** 20, 1)} MiB at ${fmt(he.t, 0)} s (total ${fmt(he.heapTotal / 2 ** 20, 1)} MiB, external ${fmt(he.external / 2 ** 20, 1)} MiB); event-loop lag max ${fmt(lagMax * 1000, 0)} ms (prom-client, per 5 s scrape)`);
  console.log(`KV      : blocks used ${base.llmserve_kv_blocks_used} before, ${after.llmserve_kv_blocks_used} after (settled in ${fmt(settleS, 1)} s; cached ${after.llmserve_kv_blocks_cached}, free ${after.llmserve_kv_blocks_free} of ${after.llmserve_kv_blocks_total}); max used during load ${Math.max(...metricSamples.map((m) => m.kvUsed ?? 0))}; preemptions ${after.llmserve_engine_preemptions}`);
  console.log(`engine  : after the load: in flight ${after.llmserve_requests_in_flight}, running ${afterHealth.body?.running}, waiting ${afterHealth.body?.waiting}; max sequences in one step ${after.llmserve_max_batch_sequences_seen}`);
  console.log(`shutdown: SIGTERM -> ${exit ? `exit ${exit.signal ?? exit.code}` : "no exit within 30 s (killed)"} in ${fmt(shutdownS, 1)} s; server log: ${server.lines.error} error and ${server.lines.warn} warning lines`);

  const failures = records.filter((r) => r.outcome === "failed");
  if (failures.length) {
    const kinds = new Map();
    for (const f of failures) {
      const k = `${f.scenario}/${f.sub}: ${String(f.failure).replace(/\s+/g, " ").replace(/\d+/g, "N").slice(0, 140)}`;
      kinds.set(k, (kinds.get(k) ?? 0) + 1);
    }
    console.log(`\nfailures (${failures.length}):`);
    for (const [k, v] of [...kinds.entries()].sort((a, b) => b[1] - a[1]).slice(0, 20)) console.log(`  ${v} x ${k}`);
  }

  const clientFault = new Set(["bad-payload", "bad-http"]);
  const fiveXXClient = records.filter((r) => clientFault.has(r.scenario) && (r.status >= 500 || /5xx/.test(r.failure ?? ""))).length;
  const any500 = records.filter((r) => r.status === 500 || /^500/.test(r.failure ?? "")).length;
  const hung = failures.filter((f) => /^hung/.test(f.failure)).length;
  const checks = [
    ["every request ended with output, a typed error or a client abort", failures.length === 0, `${failures.length} failed (${hung} hung)`],
    ["no 5xx for a client fault, no 500 at all", fiveXXClient === 0 && any500 === 0, `${fiveXXClient} 5xx for client faults, ${any500} x 500`],
    [`at least ${opts.minRequests} requests`, records.length >= opts.minRequests, `${records.length}`],
    ["KV blocks used back to the baseline", after.llmserve_kv_blocks_used === base.llmserve_kv_blocks_used, `${base.llmserve_kv_blocks_used} -> ${after.llmserve_kv_blocks_used}`],
    ["engine idle after the load (nothing running, queued or in flight)", after.llmserve_requests_in_flight === 0 && afterHealth.body?.running === 0 && afterHealth.body?.waiting === 0, `in flight ${after.llmserve_requests_in_flight}, running ${afterHealth.body?.running}, waiting ${afterHealth.body?.waiting}`],
    [`RSS growth warm -> end < ${opts.rssGrowthPct}%`, Number.isFinite(growth) && growth < opts.rssGrowthPct, `${fmt(growth, 2)}%`],
    ["/health answered 200 throughout", hFail.length === 0 && healthSamples.length > 0, `${hFail.length} of ${healthSamples.length} not ok; max ${fmt(Math.max(...hLat), 1)} ms`],
    ["SIGTERM: drained and exited 0", exit?.code === 0, exit ? `exit ${exit.signal ?? exit.code} after ${fmt(shutdownS, 1)} s` : "killed"],
  ];
  console.log("\nchecks:");
  for (const [name, ok, detail] of checks) console.log(`  ${ok ? "PASS" : "FAIL"}  ${name} (${detail})`);

  writeResults("soak", {
    machine: mach, build, options: opts, model: { path: model.path, synthesized: model.synthesized, name: MODEL_NAME }, serverLog: relative(repoRoot, logPath),
    summary: {
      requests: records.length, loadSeconds: loadEnd,
      outcomes: Object.fromEntries(["completed", "typed_error", "http_error", "aborted", "failed"].map((o) => [o, count(records, o)])),
      latencyMs: { p50: percentile(allLat, 0.5), p99: percentile(allLat, 0.99) },
      health: { samples: healthSamples.length, p50: percentile(hLat, 0.5), p99: percentile(hLat, 0.99), max: Math.max(...hLat), notOk: hFail.length, duringForcedGc: hGc, gcWindows },
      clientEventLoopDelayMs: { p99: clientLag.percentile(99) / 1e6, max: clientLag.max / 1e6 },
      rssKiB: { start: rssStart.rss, warm: warm?.rssKiB, end: rssEnd, warmBeforeGc: warm?.rssBeforeGcKiB, endBeforeGc: rssEndBeforeGc, forcedGc: Boolean(warm?.gc && endGc), maxDuringLoad: maxRss, highWater: hwm, growthPct: growth },
      kv: { before: base, after },
      shutdown: { exit, seconds: shutdownS }, serverLogLines: { error: server.lines.error, warn: server.lines.warn },
      errorsByStatusAndCode: Object.fromEntries(statusCount), subScenarios: Object.fromEntries(subs),
      checks: checks.map(([name, ok, detail]) => ({ name, ok, detail })),
    },
    healthSamples, rssSamples, metricSamples, records,
  });
  clearTimeout(overall);
  const ok = checks.every((c) => c[1]);
  console.log(ok ? "soak    : all checks passed" : "soak    : SOME CHECKS FAILED");
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.error(`bench:soak: ${err?.stack ?? err}`);
  process.exit(1);
});
