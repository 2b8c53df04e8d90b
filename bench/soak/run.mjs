#!/usr/bin/env node
// Soak benchmark: the real server (`node dist/cli.js serve`, a child process on 127.0.0.1) under a
// long mixed load of well-behaved and badly-behaved clients, then checks that it is back where it
// started.
//
//   npm run bench:soak                                  # 10 minutes, 32 clients (>= 2,000 requests)
//   npm run bench:soak -- --duration 90s --clients 32   # a short run
//   node bench/soak/run.mjs --help
//
// Load (scenarios.mjs): completions and chat completions, streaming and not, random prompt and
// max_tokens lengths; client aborts mid-stream; abrupt socket disconnects (RST, half-sent requests);
// slow readers and readers that stop reading (past the server's stream write timeout too); slow
// senders and stalled headers; bad payloads (invalid JSON, wrong types, schema maxima, missing or
// wrong API and metrics keys, unknown routes, oversized bodies and headers, malformed HTTP).
// Every request has a client-side timeout (a hang is a failure); every loop is bounded in time and
// count. Each request's outcome is recorded: completed with output / typed error (HTTP status and
// OpenAI error code) / cut off by the server's write timeout / aborted by the client / failed
// (classify.mjs).
//
// Checks (exit 1 when one fails): no failed or hung request; no 5xx for a client fault (and no 500
// at all); KV blocks used back to the baseline measured before the load (GET /metrics); RSS growth
// of the server process < 5% between a warm point (after the warm-up) and the end (/proc/<pid>/status);
// /health always answered; the streams the server cut off match the clients that stopped reading;
// the server drains and exits 0 on SIGTERM (report.mjs). See bench/README.md ("Soak").
//
// This file: the options and the run (server up, baseline, monitors, client loops, quiescence, RSS,
// shutdown). The server process is in server.mjs, the HTTP and raw-socket clients in client.mjs, the
// scenarios in scenarios.mjs, a request's outcome in classify.mjs, the report and checks in report.mjs.

import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, renameSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { checkBuild, loadLlmserve, machine, machineLine, makeDie, parseCli, percentile, repoRoot } from "../common.mjs";
import { AUTH, METRICS_AUTH, closeAgent, request, setTarget } from "./client.mjs";
import { report } from "./report.mjs";
import { makeRandom, scenarios } from "./scenarios.mjs";
import { collectGarbage, readRssKiB, startServer } from "./server.mjs";

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
  --stream-write-timeout <t>  server --stream-write-timeout: a stream whose client has not read
                        for this long is cut off (default 5s, shorter than the server's 30 s so
                        that the readers that stop reading for longer get cut off in a short run)
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
  const r = spawnSync(
    process.execPath,
    [
      "--experimental-websocket",
      "--disable-warning=ExperimentalWarning",
      ...process.execArgv,
      fileURLToPath(import.meta.url),
      ...process.argv.slice(2),
    ],
    {
      stdio: "inherit",
      env: { ...process.env, LLMSERVE_SOAK_REEXEC: "1" },
    },
  );
  process.exit(r.status ?? 1);
}
// The server's keys: the API key for everything, a scrape-only key for /metrics (the monitor uses it).
const KEYS = {
  apiKey: `soak-${randomBytes(12).toString("hex")}`,
  metricsKey: `soak-metrics-${randomBytes(12).toString("hex")}`,
};

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
      "stream-write-timeout": { type: "string" },
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
  if (!(rssGrowth > 0))
    die(`Expected a positive number for --rss-growth but received ${JSON.stringify(p["rss-growth"])}`);
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
    streamWriteTimeoutS: seconds("stream-write-timeout", p["stream-write-timeout"], 5),
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
    await llmserve.synth(tmp, {
      dim: 256,
      layers: 4,
      heads: 8,
      kvHeads: 2,
      ffn: 768,
      vocabSize: 2048,
      type: "q8_0",
      seed: 7,
    });
    renameSync(tmp, path);
  }
  return { path, synthesized: true };
}

// ---------------------------------------------------------------- monitoring

function parseProm(text) {
  const out = {};
  for (const line of text.split("\n")) {
    const m = /^(llmserve_[a-z_]+)(\{[^}]*\})? ([-+0-9.eE]+|NaN)$/.exec(line);
    if (m && !m[2]) out[m[1]] = Number(m[3]);
  }
  return out;
}

// Scraped with the scrape-only metrics key, as a Prometheus server would be configured.
async function scrape() {
  const res = await request({
    method: "GET",
    path: "/metrics",
    headers: METRICS_AUTH(),
    timeoutMs: 10_000,
    useAgent: false,
  });
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
  return {
    ok: res.status === 200 && j?.status === "ok",
    ms: res.ms,
    status: res.status,
    body: j,
    error: res.timedOut ? "timeout" : res.error,
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : "-");

// ---------------------------------------------------------------- main

async function main() {
  let modelName = "";
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
      `server --threads ${opts.threads} --ctx ${opts.ctx} --kv-cache-tokens ${opts.kvCacheTokens} --max-queue ${opts.maxQueue} --stream-write-timeout ${opts.streamWriteTimeoutS}`,
  );

  const stamp = new Date()
    .toISOString()
    .replace(/:/g, "-")
    .replace(/\.\d+Z$/, "Z");
  mkdirSync(join(repoRoot, "bench", "results"), { recursive: true });
  const logPath = join(repoRoot, "bench", "results", `soak-${stamp}.server.log`);
  const server = startServer(opts, model.path, logPath, KEYS);
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
  setTarget({ host: u.hostname, port: Number(u.port), ...KEYS });
  const pid = server.child.pid;
  const inspectorUrl = await server.inspector;
  console.log(`server  : pid ${pid} at ${url} (log: ${relative(process.cwd(), logPath)})`);
  {
    const m = await request({ method: "GET", path: "/v1/models", headers: AUTH(), timeoutMs: 10_000 });
    modelName = JSON.parse(m.body).data[0].id;
  }

  // Baseline before any load.
  const base = await scrape();
  // No metric, no check: the write-timeout check compares this counter before and after the load.
  if (!Number.isFinite(base.llmserve_stream_write_timeouts_total))
    die("GET /metrics has no llmserve_stream_write_timeouts_total: is dist/ older than the server sources?");
  const rssStart = readRssKiB(pid);
  console.log(
    `baseline: KV blocks used ${base.llmserve_kv_blocks_used} of ${base.llmserve_kv_blocks_total} (cached ${base.llmserve_kv_blocks_cached}), RSS ${fmt(rssStart.rss / 1024, 1)} MiB`,
  );

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
      healthSamples.push({
        t: +since().toFixed(2),
        ms: +h.ms.toFixed(2),
        ok: h.ok,
        status: h.status,
        error: h.error,
        running: h.body?.running,
        waiting: h.body?.waiting,
        inFlight: h.body?.inFlight,
      });
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
        metricSamples.push({
          t: +since().toFixed(1),
          kvUsed: m.llmserve_kv_blocks_used,
          kvCached: m.llmserve_kv_blocks_cached,
          queue: m.llmserve_queue_depth,
          running: m.llmserve_running_sequences,
          inFlight: m.llmserve_requests_in_flight,
          heapUsed: m.llmserve_nodejs_heap_size_used_bytes,
          heapTotal: m.llmserve_nodejs_heap_size_total_bytes,
          external: m.llmserve_nodejs_external_memory_bytes,
          loopLagP99: m.llmserve_nodejs_eventloop_lag_p99_seconds,
          loopLagMax: m.llmserve_nodejs_eventloop_lag_max_seconds,
        });
      } catch (err) {
        metricSamples.push({ t: +since().toFixed(1), error: err.message });
      }
    }
  })();

  // Load.
  const SC = scenarios(opts, () => modelName);
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
    console.log(
      `warm    : at ${fmt(warm.t, 1)} s, RSS ${fmt(warm.rssKiB / 1024, 1)} MiB${gcDone ? ` after a full GC (${fmt(before / 1024, 1)} MiB before)` : ""}, ${records.length} requests done`,
    );
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
        console.log(
          `  ${fmt(since(), 0)} s: ${records.length} requests, ${records.filter((r) => r.outcome === "failed").length} failed; health ${fmt(h?.ms, 1)} ms, running ${h?.running}, waiting ${h?.waiting}; RSS ${fmt((rssSamples.at(-1)?.rssKiB ?? NaN) / 1024, 1)} MiB`,
        );
      }
      if (opts.thinkMs > 0) await sleep(R.int(0, opts.thinkMs));
    }
  };
  await Promise.all(Array.from({ length: opts.clients }, (_, c) => client(c)));
  clearTimeout(warmTimer);
  const loadEnd = since();
  loadDone = true;
  await Promise.all([healthLoop, rssLoop, metricsLoop]);
  closeAgent();
  console.log(`load    : done at ${fmt(loadEnd, 1)} s (${records.length} requests)`);

  // Quiescence: wait (up to 30 s) for the engine to be idle and the KV blocks to come back.
  let after;
  let afterHealth;
  const q0 = performance.now();
  for (;;) {
    after = await scrape().catch((err) => ({ error: err.message }));
    afterHealth = await health();
    const idle =
      after.llmserve_kv_blocks_used === base.llmserve_kv_blocks_used &&
      after.llmserve_requests_in_flight === 0 &&
      afterHealth.body?.running === 0 &&
      afterHealth.body?.waiting === 0;
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

  const ok = report({
    opts,
    machine: mach,
    build,
    model: { path: model.path, synthesized: model.synthesized, name: modelName },
    serverLog: relative(repoRoot, logPath),
    records,
    healthSamples,
    rssSamples,
    metricSamples,
    gcWindows,
    clientLag,
    warm,
    rssStart,
    rssEnd,
    rssEndBeforeGc,
    endGc,
    hwm,
    base,
    after,
    afterHealth,
    settleS,
    exit,
    shutdownS,
    server,
    loadEnd,
  });
  clearTimeout(overall);
  console.log(ok ? "soak    : all checks passed" : "soak    : SOME CHECKS FAILED");
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.error(`bench:soak: ${err?.stack ?? err}`);
  process.exit(1);
});
