// Metrics of bench/serving's runs: decode rate per concurrency level, serving latencies
// (TTFT, inter-token gaps, end to end) and KV-cache use, from the children's raw timestamps.
import { mean, median, percentile } from "../common.mjs";

/** Aggregate decode rate of one concurrency level: from the moment every stream has its first token
 *  (all prefills done) to the last token of the last stream, counting tokens in that window. */
export function decodeMetrics(level, tg) {
  const firsts = level.streams.map((s) => s[0]);
  const lasts = level.streams.map((s) => s[s.length - 1]);
  const start = Math.max(...firsts);
  const end = Math.max(...lasts);
  let count = 0;
  for (const s of level.streams) for (const t of s) if (t > start) count++;
  return {
    n: level.n,
    tps: end > start ? (count * 1000) / (end - start) : NaN,
    windowTokens: count,
    windowMs: end - start,
    allFirstTokenMs: start - level.submitted,
    e2eTps: (level.n * tg * 1000) / (end - level.submitted),
    cpu: level.cpu.cpu,
    otherCores: level.cpu.otherCores,
    stats: level.stats,
  };
}

/**
 * Decode levels of several rounds (rounds[r][engine][level], from decodeMetrics) as one level list
 * per engine: the median round's tok/s, every round's tok/s, and for llmserve the per-round ratios
 * to node-llama-cpp (only rounds where both ran; a NaN rate is left out). Contention is the worst
 * round's.
 */
export function decodeSummary(rounds, concurrency) {
  const out = {};
  for (const engine of ["llmserve", "llamacpp"]) {
    const mine = rounds.filter((r) => r[engine]);
    if (!mine.length) continue;
    out[engine] = concurrency.map((_n, i) => {
      const levels = mine.map((r) => r[engine][i]);
      const tps = levels.map((l) => l.tps);
      const mid = median(tps.filter(Number.isFinite)); // a window of no tokens has no rate
      const closest = levels.reduce((a, b) => (Math.abs(b.tps - mid) < Math.abs(a.tps - mid) ? b : a));
      return {
        ...closest,
        tps: mid,
        roundTps: tps,
        otherCores: Math.max(...levels.map((l) => l.otherCores ?? 0)),
        roundRatios:
          engine === "llmserve"
            ? rounds
                .filter((r) => r.llmserve && r.llamacpp)
                .map((r) => r.llmserve[i].tps / r.llamacpp[i].tps)
                .filter(Number.isFinite)
            : [],
      };
    });
  }
  return out;
}

/** Per-token gaps of one stream; k tokens that reached JS together share their gap evenly. */
export function tokenGaps(times) {
  const gaps = [];
  let prev = times[0];
  let i = 1;
  while (i < times.length) {
    let j = i;
    while (j + 1 < times.length && times[j + 1] === times[i]) j++;
    const k = j - i + 1;
    for (let m = 0; m < k; m++) gaps.push((times[i] - prev) / k);
    prev = times[i];
    i = j + 1;
  }
  return gaps;
}

export function servingMetrics(res, workload) {
  const ttft = [];
  const itl = [];
  const e2e = [];
  let out = 0;
  let first = Infinity;
  let last = 0;
  let promptTokens = 0;
  let reused = 0;
  for (const r of res.requests) {
    const w = workload.requests[r.i];
    ttft.push(r.times[0] - r.arrival);
    itl.push(...tokenGaps(r.times));
    e2e.push(r.times[r.times.length - 1] - r.arrival);
    out += r.times.length;
    first = Math.min(first, r.arrival);
    last = Math.max(last, r.times[r.times.length - 1]);
    promptTokens += workload.system.length + w.user.length;
    reused += r.reusedTokens ?? 0;
  }
  return {
    requests: res.requests.length,
    outputTokens: out,
    makespanS: (last - first) / 1000,
    throughput: (out * 1000) / (last - first),
    ttftP50: percentile(ttft, 0.5),
    ttftP99: percentile(ttft, 0.99),
    itlP50: percentile(itl, 0.5),
    itlP99: percentile(itl, 0.99),
    e2eP50: percentile(e2e, 0.5),
    promptTokens,
    reusedPromptTokens: reused,
    cpu: res.cpu.cpu,
    otherCores: res.cpu.otherCores,
  };
}

export function kvMetrics(res, engine) {
  if (engine === "llamacpp") {
    const busy = res.samples.filter((s) => s.busy > 0);
    return {
      samples: busy.length,
      wasteMean: mean(busy.map((s) => s.kvWaste)),
      wasteMax: Math.max(...busy.map((s) => s.kvWaste)),
      poolUseMean: mean(busy.map((s) => s.held / s.allocated)),
      slots: res.slots,
      busySlotsMean: mean(busy.map((s) => s.busy)),
    };
  }
  const used = res.samples.filter((s) => s.blocksUsed > 0 && s.running > 0);
  return {
    samples: used.length,
    wasteMean: mean(used.map((s) => s.kvWaste)),
    wasteMax: Math.max(...used.map((s) => s.kvWaste)),
    poolUseMean: mean(used.map((s) => s.blocksUsed / s.blocksTotal)),
    poolUseMax: Math.max(...used.map((s) => s.blocksUsed / s.blocksTotal)),
    // Tokens the running sequences hold per physical token slot in used blocks: > 1 means shared
    // prefix blocks are counted once in blocksUsed but once per sequence in kvTokensHeld.
    heldPerSlotMean: mean(used.map((s) => s.kvTokensHeld / (s.blocksUsed * s.blockSize))),
    runningMean: mean(used.map((s) => s.running)),
    waitingMean: mean(used.map((s) => s.waiting)),
    prefixHitRate: res.stats.prefixHitRate,
    preemptions: res.stats.preemptions,
  };
}
