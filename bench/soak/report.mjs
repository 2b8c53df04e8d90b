// The soak benchmark's report: the per-scenario table, latencies, errors by status and code, /health,
// RSS, heap, KV blocks, the stream write timeout, shutdown, and the checks (see bench/README.md,
// "Outcomes and checks"); writes bench/results/soak-<date>.json. Returns true when every check passed.

import { percentile, table, writeResults } from "../common.mjs";

const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : "-");
const OUTCOMES = ["completed", "typed_error", "cut_off", "aborted", "failed"];

/** Prints the report and the checks, writes the results file; `r` holds everything the run measured. */
export function report(run) {
  const {
    opts,
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
  } = run;
  const { base, after, afterHealth, settleS, exit, shutdownS, server, loadEnd } = run;
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
    return [k, rs.length, ...OUTCOMES.map((o) => count(rs, o)), fmt(percentile(l, 0.5)), fmt(percentile(l, 0.99))];
  });
  const allLat = lat(records);
  rows.push([
    "all",
    records.length,
    ...OUTCOMES.map((o) => count(records, o)),
    fmt(percentile(allLat, 0.5)),
    fmt(percentile(allLat, 0.99)),
  ]);
  console.log("");
  console.log(
    table(rows, [
      "scenario",
      "requests",
      "completed",
      "typed error",
      "cut off",
      "aborted",
      "FAILED",
      "p50 ms",
      "p99 ms",
    ]),
  );

  const streams = records.filter((r) => r.ttftMs !== undefined && r.outcome === "completed");
  console.log(
    `\nstreams : time to first text p50 ${fmt(
      percentile(
        streams.map((r) => r.ttftMs),
        0.5,
      ),
    )} ms, p99 ${fmt(
      percentile(
        streams.map((r) => r.ttftMs),
        0.99,
      ),
    )} ms (${streams.length} completed streams with text)`,
  );
  const emptyOut = records.filter((r) => r.outcome === "completed" && r.chars === 0).length;
  if (emptyOut)
    console.log(`          ${emptyOut} completed generations had empty text (EOS first, or a stop string at once)`);

  const statusCount = new Map();
  for (const r of records) {
    if (r.outcome !== "typed_error") continue;
    const k = `${r.status ?? "-"} ${r.code ?? "null"}`;
    statusCount.set(k, (statusCount.get(k) ?? 0) + 1);
  }
  console.log(
    `\nerrors by status and code: ${
      [...statusCount.entries()]
        .sort()
        .map(([k, v]) => `${k}: ${v}`)
        .join(", ") || "none"
    }`,
  );
  const validBusy = records.filter(
    (r) => !["bad-payload", "bad-http"].includes(r.scenario) && (r.status === 429 || r.status === 503),
  ).length;
  if (validBusy) console.log(`          valid requests answered 429/503 (busy): ${validBusy}`);
  const subs = new Map();
  for (const r of records) subs.set(`${r.scenario}/${r.sub}`, (subs.get(`${r.scenario}/${r.sub}`) ?? 0) + 1);

  clientLag.disable();
  const duringGc = (h) => gcWindows.some(([a, b]) => h.t - h.ms / 1000 <= b && h.t >= a);
  const hLat = healthSamples.filter((h) => h.status === 200 && !duringGc(h)).map((h) => h.ms);
  const hGc = healthSamples.filter(duringGc).map((h) => h.ms);
  const hFail = healthSamples.filter((h) => !h.ok);
  console.log(
    `health  : ${healthSamples.length} samples during the load: p50 ${fmt(percentile(hLat, 0.5), 1)} ms, p99 ${fmt(percentile(hLat, 0.99), 1)} ms, max ${fmt(Math.max(...hLat), 1)} ms; ${hFail.length} not ok${hGc.length ? ` (${hGc.length} samples during the forced GC left out: max ${fmt(Math.max(...hGc), 0)} ms)` : ""}`,
  );
  console.log(
    `          (includes this process's own event-loop delay: p99 ${fmt(clientLag.percentile(99) / 1e6, 0)} ms, max ${fmt(clientLag.max / 1e6, 0)} ms)`,
  );
  const maxRss = Math.max(...rssSamples.map((s) => s.rssKiB));
  const growth = warm?.rssKiB ? ((rssEnd - warm.rssKiB) / warm.rssKiB) * 100 : NaN;
  const gcNote =
    warm?.gc && endGc
      ? ` (after a full GC; before it: warm ${fmt(warm.rssBeforeGcKiB / 1024, 1)}, end ${fmt(rssEndBeforeGc / 1024, 1)} MiB)`
      : " (no forced GC)";
  console.log(
    `RSS     : start ${fmt(rssStart.rss / 1024, 1)} MiB, warm ${fmt(warm?.rssKiB / 1024, 1)} MiB (at ${fmt(warm?.t, 0)} s), end ${fmt(rssEnd / 1024, 1)} MiB: ${growth >= 0 ? "+" : ""}${fmt(growth, 2)}%${gcNote}; max during load ${fmt(maxRss / 1024, 1)} MiB, high-water ${fmt(hwm / 1024, 1)} MiB`,
  );
  const heapAt = (t) =>
    metricSamples
      .filter((m) => m.heapUsed !== undefined)
      .reduce((best, m) => (best === undefined || Math.abs(m.t - t) < Math.abs(best.t - t) ? m : best), undefined);
  const hw = heapAt(warm?.t ?? 0);
  const he = metricSamples.filter((m) => m.heapUsed !== undefined).at(-1);
  const lagMax = Math.max(...metricSamples.map((m) => m.loopLagMax ?? 0));
  const heapLows = (a, b) =>
    Math.min(...metricSamples.filter((m) => m.heapUsed !== undefined && m.t >= a && m.t < b).map((m) => m.heapUsed));
  const lowWarm = heapLows(warm?.t ?? 0, (warm?.t ?? 0) + (loadEnd - (warm?.t ?? 0)) / 2);
  const lowEnd = heapLows((warm?.t ?? 0) + (loadEnd - (warm?.t ?? 0)) / 2, Infinity);
  if (hw && he)
    console.log(
      `heap    : lowest V8 heap used (~after a GC) ${fmt(lowWarm / 2 ** 20, 1)} MiB in the first half after the warm point, ${fmt(lowEnd / 2 ** 20, 1)} MiB in the second half`,
    );
  if (hw && he)
    console.log(
      `heap    : V8 heap used ${fmt(hw.heapUsed / 2 ** 20, 1)} MiB at ${fmt(hw.t, 0)} s, ${fmt(he.heapUsed / 2 ** 20, 1)} MiB at ${fmt(he.t, 0)} s (total ${fmt(he.heapTotal / 2 ** 20, 1)} MiB, external ${fmt(he.external / 2 ** 20, 1)} MiB); event-loop lag max ${fmt(lagMax * 1000, 0)} ms (prom-client, per 5 s scrape)`,
    );
  console.log(
    `KV      : blocks used ${base.llmserve_kv_blocks_used} before, ${after.llmserve_kv_blocks_used} after (settled in ${fmt(settleS, 1)} s; cached ${after.llmserve_kv_blocks_cached}, free ${after.llmserve_kv_blocks_free} of ${after.llmserve_kv_blocks_total}); max used during load ${Math.max(...metricSamples.map((m) => m.kvUsed ?? 0))}; preemptions ${after.llmserve_engine_preemptions}`,
  );
  console.log(
    `engine  : after the load: in flight ${after.llmserve_requests_in_flight}, running ${afterHealth.body?.running}, waiting ${afterHealth.body?.waiting}; max sequences in one step ${after.llmserve_max_batch_sequences_seen}`,
  );
  // The stream write timeout: the server counts the streams it cut off; the clients know which of
  // them stopped reading past it and which saw their stream cut.
  const cutByServer = after.llmserve_stream_write_timeouts_total - base.llmserve_stream_write_timeouts_total;
  const stalled = records.filter((r) => r.sub === "stalled-reader");
  const cutSeen = records.filter((r) => r.outcome === "cut_off").length;
  console.log(
    `writes  : ${stalled.length} readers stopped for longer than the --stream-write-timeout of ${opts.streamWriteTimeoutS} s: ${cutSeen} saw their stream cut off, ${stalled.filter((r) => r.outcome === "completed").length} got it whole (the server never waited on them for the whole timeout: the socket buffers took their output, or filled only late); the server counted ${fmt(cutByServer)} cut off (llmserve_stream_write_timeouts_total)`,
  );
  console.log(
    `shutdown: SIGTERM -> ${exit ? `exit ${exit.signal ?? exit.code}` : "no exit within 30 s (killed)"} in ${fmt(shutdownS, 1)} s; server log: ${server.lines.error} error and ${server.lines.warn} warning lines`,
  );

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
  const fiveXXClient = records.filter(
    (r) => clientFault.has(r.scenario) && (r.status >= 500 || /5xx/.test(r.failure ?? "")),
  ).length;
  const any500 = records.filter((r) => r.status === 500 || /^500/.test(r.failure ?? "")).length;
  const hung = failures.filter((f) => /^hung/.test(f.failure)).length;
  const checks = [
    [
      "every request ended with output, a typed error, a client abort or a write-timeout cut-off",
      failures.length === 0,
      `${failures.length} failed (${hung} hung)`,
    ],
    [
      "no 5xx for a client fault, no 500 at all",
      fiveXXClient === 0 && any500 === 0,
      `${fiveXXClient} 5xx for client faults, ${any500} x 500`,
    ],
    [`at least ${opts.minRequests} requests`, records.length >= opts.minRequests, `${records.length}`],
    // Every cut-off a client saw was counted, and the server cut off no client that was reading.
    [
      "write timeout: cut-offs seen by clients <= counted by the server <= readers that stopped past it",
      Number.isFinite(cutByServer) && cutSeen <= cutByServer && cutByServer <= stalled.length,
      `${cutSeen} <= ${fmt(cutByServer)} <= ${stalled.length}`,
    ],
    [
      "KV blocks used back to the baseline",
      after.llmserve_kv_blocks_used === base.llmserve_kv_blocks_used,
      `${base.llmserve_kv_blocks_used} -> ${after.llmserve_kv_blocks_used}`,
    ],
    [
      "engine idle after the load (nothing running, queued or in flight)",
      after.llmserve_requests_in_flight === 0 && afterHealth.body?.running === 0 && afterHealth.body?.waiting === 0,
      `in flight ${after.llmserve_requests_in_flight}, running ${afterHealth.body?.running}, waiting ${afterHealth.body?.waiting}`,
    ],
    [
      `RSS growth warm -> end < ${opts.rssGrowthPct}%`,
      Number.isFinite(growth) && growth < opts.rssGrowthPct,
      `${fmt(growth, 2)}%`,
    ],
    [
      "/health answered 200 throughout",
      hFail.length === 0 && healthSamples.length > 0,
      `${hFail.length} of ${healthSamples.length} not ok; max ${fmt(Math.max(...hLat), 1)} ms`,
    ],
    [
      "SIGTERM: drained and exited 0",
      exit?.code === 0,
      exit ? `exit ${exit.signal ?? exit.code} after ${fmt(shutdownS, 1)} s` : "killed",
    ],
  ];
  console.log("\nchecks:");
  for (const [name, ok, detail] of checks) console.log(`  ${ok ? "PASS" : "FAIL"}  ${name} (${detail})`);

  writeResults("soak", {
    machine: run.machine,
    build: run.build,
    options: opts,
    model: run.model,
    serverLog: run.serverLog,
    summary: {
      requests: records.length,
      loadSeconds: loadEnd,
      outcomes: Object.fromEntries(OUTCOMES.map((o) => [o, count(records, o)])),
      latencyMs: { p50: percentile(allLat, 0.5), p99: percentile(allLat, 0.99) },
      health: {
        samples: healthSamples.length,
        p50: percentile(hLat, 0.5),
        p99: percentile(hLat, 0.99),
        max: Math.max(...hLat),
        notOk: hFail.length,
        duringForcedGc: hGc,
        gcWindows,
      },
      clientEventLoopDelayMs: { p99: clientLag.percentile(99) / 1e6, max: clientLag.max / 1e6 },
      rssKiB: {
        start: rssStart.rss,
        warm: warm?.rssKiB,
        end: rssEnd,
        warmBeforeGc: warm?.rssBeforeGcKiB,
        endBeforeGc: rssEndBeforeGc,
        forcedGc: Boolean(warm?.gc && endGc),
        maxDuringLoad: maxRss,
        highWater: hwm,
        growthPct: growth,
      },
      kv: { before: base, after },
      streamWriteTimeout: {
        seconds: opts.streamWriteTimeoutS,
        stalledReaders: stalled.length,
        cutOffSeenByClients: cutSeen,
        cutOffByServer: cutByServer,
      },
      shutdown: { exit, seconds: shutdownS },
      serverLogLines: { error: server.lines.error, warn: server.lines.warn },
      errorsByStatusAndCode: Object.fromEntries(statusCount),
      subScenarios: Object.fromEntries(subs),
      checks: checks.map(([name, ok, detail]) => ({ name, ok, detail })),
    },
    healthSamples,
    rssSamples,
    metricSamples,
    records,
  });
  return checks.every((c) => c[1]);
}
