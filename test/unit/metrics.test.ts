/**
 * ServerMetrics on its own (no model, no server): the exposition a Prometheus scrape gets, the
 * engine gauges read from stats() at scrape time, a disposed model, and the default-metrics switch.
 */
import { describe, expect, it } from "vitest";
import { METRIC_NAMES, ServerMetrics } from "../../lib/metrics.js";
import type { ModelStats } from "../../lib/model.js";

/** Distinct values, so a gauge that reads the wrong field shows up. */
const STATS = {
  waiting: 3,
  running: 5,
  blocksUsed: 7,
  blocksCached: 11,
  blocksFree: 13,
  blocksTotal: 31,
  localBlocksUsed: 47,
  localBlocksTotal: 53,
  kvBytesGlobal: 59,
  kvBytesLocal: 61,
  prefixHitRate: 0.25,
  preemptions: 17,
  maxBatchSequencesSeen: 19,
  adapters: 23,
  adaptersResident: 29,
  adapterBytes: 37,
  adapterLoads: 41,
  adapterEvictions: 43,
  evalSequences: 67,
  evalPasses: 71,
  dynamicSteps: 73,
  stepMsPerToken: 0.5,
  paddedTokens: 79,
} as unknown as ModelStats;

/** The `# HELP` / `# TYPE` lines of llmserve's own metrics (the user-visible descriptions). */
const EXPECTED_HEADERS: Array<[string, string, string]> = [
  ["llmserve_http_requests_total", "counter", "HTTP requests by route, method and status code"],
  [
    "llmserve_http_request_duration_seconds",
    "histogram",
    "HTTP request duration (whole stream for streaming requests)",
  ],
  ["llmserve_requests_in_flight", "gauge", "Generation requests being served"],
  ["llmserve_prompt_tokens_total", "counter", "Prompt tokens of served generation requests"],
  ["llmserve_completion_tokens_total", "counter", "Tokens generated for served requests"],
  ["llmserve_time_to_first_token_seconds", "histogram", "Time from request arrival to the first generated token"],
  ["llmserve_inter_token_latency_seconds", "histogram", "Time between consecutive generated tokens of a sequence"],
  [
    "llmserve_connections_dropped_total",
    "counter",
    "Connections closed at once because the server had maxConnections open",
  ],
  [
    "llmserve_stream_write_timeouts_total",
    "counter",
    "Streams cut off (request cancelled) because the client stopped reading",
  ],
  ["llmserve_queue_depth", "gauge", "Requests waiting in the engine queue"],
  ["llmserve_running_sequences", "gauge", "Sequences the engine is running"],
  ["llmserve_kv_blocks_used", "gauge", "KV cache blocks held by sequences"],
  ["llmserve_kv_blocks_cached", "gauge", "Free KV cache blocks still holding a reusable prefix"],
  ["llmserve_kv_blocks_free", "gauge", "Free KV cache blocks"],
  ["llmserve_kv_blocks_total", "gauge", "KV cache blocks in all"],
  ["llmserve_kv_local_blocks_used", "gauge", "Sliding-window layers' KV blocks held (bounded by the window)"],
  ["llmserve_kv_local_blocks_total", "gauge", "Sliding-window layers' KV blocks in all"],
  ["llmserve_kv_bytes_global", "gauge", "Bytes of the global layers' KV pool"],
  ["llmserve_kv_bytes_local", "gauge", "Bytes of the sliding-window layers' KV pool"],
  ["llmserve_prefix_cache_hit_rate", "gauge", "Fraction of prefix-cache block lookups that hit"],
  ["llmserve_engine_preemptions", "gauge", "Sequences preempted (recomputed) since load"],
  ["llmserve_max_batch_sequences_seen", "gauge", "Most sequences in one engine step since load"],
  ["llmserve_adapters_registered", "gauge", "LoRA adapters loaded (registered), resident or not"],
  [
    "llmserve_adapters_resident",
    "gauge",
    "LoRA adapters whose weights are in memory (at most maxAdapters unless more are in use)",
  ],
  [
    "llmserve_adapter_bytes",
    "gauge",
    "Bytes of LoRA adapter weights in memory (unloaded ones that requests still use included)",
  ],
  [
    "llmserve_adapter_loads_total",
    "counter",
    "LoRA adapter files read: loadAdapter calls and transparent reloads after evictions",
  ],
  [
    "llmserve_adapter_evictions_total",
    "counter",
    "LoRA adapters evicted from memory to keep at most maxAdapters resident",
  ],
  ["llmserve_eval_sequences_total", "counter", "Whole-text evaluations (embeddings, evaluate calls) run on the engine"],
  [
    "llmserve_eval_passes_total",
    "counter",
    "Forward passes those evaluations took (texts that arrive together share one)",
  ],
  [
    "llmserve_dynamic_steps_total",
    "counter",
    "Steps whose prompt tokens the dynamic batching policy chose (targetStepMs)",
  ],
  ["llmserve_step_ms_per_token", "gauge", "Fitted step cost: milliseconds per token of a step"],
  ["llmserve_padded_tokens_total", "counter", "Pad tokens computed by fixed-length batching (batching: fixed)"],
];

function sample(body: string, name: string): string | undefined {
  return body.split("\n").find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
}

function buckets(body: string, name: string): string[] {
  return body
    .split("\n")
    .filter((l) => l.startsWith(`${name}_bucket{`))
    .map((l) => /le="([^"]+)"/.exec(l)![1]);
}

describe("ServerMetrics", () => {
  it("exposes every metric of METRIC_NAMES with its type and help text", async () => {
    const m = new ServerMetrics(() => STATS, { defaultMetrics: false });
    const { body, contentType } = await m.scrape();
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    for (const [name, type, help] of EXPECTED_HEADERS) {
      expect(body, name).toContain(`# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`);
    }
    expect(EXPECTED_HEADERS.map(([n]) => n).sort()).toEqual([...METRIC_NAMES].sort());
    expect(body).not.toContain("process_cpu"); // default metrics off
  });

  it("reads each engine gauge from its own stats field at scrape time", async () => {
    let stats: ModelStats | undefined = STATS;
    const m = new ServerMetrics(() => stats, { defaultMetrics: false });
    const body = (await m.scrape()).body;
    expect(sample(body, "llmserve_queue_depth")).toBe("llmserve_queue_depth 3");
    expect(sample(body, "llmserve_running_sequences")).toBe("llmserve_running_sequences 5");
    expect(sample(body, "llmserve_kv_blocks_used")).toBe("llmserve_kv_blocks_used 7");
    expect(sample(body, "llmserve_kv_blocks_cached")).toBe("llmserve_kv_blocks_cached 11");
    expect(sample(body, "llmserve_kv_blocks_free")).toBe("llmserve_kv_blocks_free 13");
    expect(sample(body, "llmserve_kv_blocks_total")).toBe("llmserve_kv_blocks_total 31");
    expect(sample(body, "llmserve_kv_local_blocks_used")).toBe("llmserve_kv_local_blocks_used 47");
    expect(sample(body, "llmserve_kv_local_blocks_total")).toBe("llmserve_kv_local_blocks_total 53");
    expect(sample(body, "llmserve_kv_bytes_global")).toBe("llmserve_kv_bytes_global 59");
    expect(sample(body, "llmserve_kv_bytes_local")).toBe("llmserve_kv_bytes_local 61");
    expect(sample(body, "llmserve_prefix_cache_hit_rate")).toBe("llmserve_prefix_cache_hit_rate 0.25");
    expect(sample(body, "llmserve_engine_preemptions")).toBe("llmserve_engine_preemptions 17");
    expect(sample(body, "llmserve_max_batch_sequences_seen")).toBe("llmserve_max_batch_sequences_seen 19");
    expect(sample(body, "llmserve_adapters_registered")).toBe("llmserve_adapters_registered 23");
    expect(sample(body, "llmserve_adapters_resident")).toBe("llmserve_adapters_resident 29");
    expect(sample(body, "llmserve_adapter_bytes")).toBe("llmserve_adapter_bytes 37");
    expect(sample(body, "llmserve_adapter_loads_total")).toBe("llmserve_adapter_loads_total 41");
    expect(sample(body, "llmserve_adapter_evictions_total")).toBe("llmserve_adapter_evictions_total 43");
    expect(sample(body, "llmserve_eval_sequences_total")).toBe("llmserve_eval_sequences_total 67");
    expect(sample(body, "llmserve_eval_passes_total")).toBe("llmserve_eval_passes_total 71");
    expect(sample(body, "llmserve_dynamic_steps_total")).toBe("llmserve_dynamic_steps_total 73");
    expect(sample(body, "llmserve_step_ms_per_token")).toBe("llmserve_step_ms_per_token 0.5");
    expect(sample(body, "llmserve_padded_tokens_total")).toBe("llmserve_padded_tokens_total 79");
    // read again at the next scrape
    stats = { ...STATS, waiting: 4 } as ModelStats;
    expect(sample((await m.scrape()).body, "llmserve_queue_depth")).toBe("llmserve_queue_depth 4");
    // no stats (model gone): the gauge keeps its last value
    stats = undefined;
    expect(sample((await m.scrape()).body, "llmserve_queue_depth")).toBe("llmserve_queue_depth 4");
  });

  it("keeps serving scrapes when stats() throws (disposed model)", async () => {
    let calls = 0;
    const m = new ServerMetrics(
      () => {
        calls++;
        if (calls > 9) throw new Error("disposed");
        return STATS;
      },
      { defaultMetrics: false },
    );
    await m.scrape(); // 9 gauges, one call each
    const body = (await m.scrape()).body;
    expect(sample(body, "llmserve_running_sequences")).toBe("llmserve_running_sequences 5");
  });

  it("counts and observes with the labels and buckets the dashboards use", async () => {
    const m = new ServerMetrics(() => undefined, { defaultMetrics: false });
    m.requests.inc({ route: "/v1/completions", method: "POST", status: "200" });
    m.requestDuration.observe({ route: "/v1/completions" }, 0.3);
    m.inFlight.inc();
    m.promptTokens.inc(12);
    m.completionTokens.inc(34);
    m.timeToFirstToken.observe(0.02);
    m.interTokenLatency.observe(0.002);
    m.droppedConnections.inc();
    m.streamWriteTimeouts.inc(2);
    const body = (await m.scrape()).body;
    expect(sample(body, "llmserve_http_requests_total")).toBe(
      'llmserve_http_requests_total{route="/v1/completions",method="POST",status="200"} 1',
    );
    expect(sample(body, "llmserve_requests_in_flight")).toBe("llmserve_requests_in_flight 1");
    expect(sample(body, "llmserve_prompt_tokens_total")).toBe("llmserve_prompt_tokens_total 12");
    expect(sample(body, "llmserve_completion_tokens_total")).toBe("llmserve_completion_tokens_total 34");
    expect(sample(body, "llmserve_connections_dropped_total")).toBe("llmserve_connections_dropped_total 1");
    expect(sample(body, "llmserve_stream_write_timeouts_total")).toBe("llmserve_stream_write_timeouts_total 2");
    expect(buckets(body, "llmserve_http_request_duration_seconds")).toEqual([
      "0.005",
      "0.01",
      "0.025",
      "0.05",
      "0.1",
      "0.25",
      "0.5",
      "1",
      "2.5",
      "5",
      "10",
      "30",
      "60",
      "120",
      "+Inf",
    ]);
    expect(body).toContain('llmserve_http_request_duration_seconds_bucket{le="0.5",route="/v1/completions"} 1');
    expect(body).toContain('llmserve_http_request_duration_seconds_bucket{le="0.25",route="/v1/completions"} 0');
    expect(buckets(body, "llmserve_time_to_first_token_seconds")).toEqual([
      "0.001",
      "0.005",
      "0.01",
      "0.025",
      "0.05",
      "0.1",
      "0.25",
      "0.5",
      "1",
      "2.5",
      "5",
      "10",
      "30",
      "+Inf",
    ]);
    expect(buckets(body, "llmserve_inter_token_latency_seconds")).toEqual([
      "0.0005",
      "0.001",
      "0.0025",
      "0.005",
      "0.01",
      "0.025",
      "0.05",
      "0.1",
      "0.25",
      "0.5",
      "1",
      "+Inf",
    ]);
  });

  it("adds prom-client's process metrics, prefixed llmserve_, unless defaultMetrics is false", async () => {
    const on = (await new ServerMetrics(() => undefined).scrape()).body;
    expect(on).toContain("# TYPE llmserve_process_cpu_user_seconds_total counter");
    const explicit = (await new ServerMetrics(() => undefined, { defaultMetrics: true }).scrape()).body;
    expect(explicit).toContain("llmserve_process_cpu_user_seconds_total");
    const off = (await new ServerMetrics(() => undefined, { defaultMetrics: false }).scrape()).body;
    expect(off).not.toContain("process_cpu_user_seconds_total");
  });

  it("gives each server its own registry", async () => {
    const a = new ServerMetrics(() => undefined, { defaultMetrics: false });
    const b = new ServerMetrics(() => undefined, { defaultMetrics: false });
    a.promptTokens.inc(5);
    expect(sample((await b.scrape()).body, "llmserve_prompt_tokens_total")).toBe("llmserve_prompt_tokens_total 0");
    expect(a.registry).not.toBe(b.registry);
  });
});
