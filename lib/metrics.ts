/**
 * Prometheus metrics for the server (prom-client), one Registry per server so several servers can
 * live in one process. Engine gauges (queue, running sequences, KV blocks, prefix-cache hit rate,
 * LoRA adapters) and the adapter load/eviction counters are read from `model.stats()` at scrape time.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { ModelStats } from "./model.js";

/** Names of the metrics a server exposes (besides prom-client's default process metrics). */
export const METRIC_NAMES = [
  "llmserve_http_requests_total",
  "llmserve_http_request_duration_seconds",
  "llmserve_requests_in_flight",
  "llmserve_prompt_tokens_total",
  "llmserve_completion_tokens_total",
  "llmserve_time_to_first_token_seconds",
  "llmserve_inter_token_latency_seconds",
  "llmserve_queue_depth",
  "llmserve_running_sequences",
  "llmserve_kv_blocks_used",
  "llmserve_kv_blocks_cached",
  "llmserve_kv_blocks_free",
  "llmserve_kv_blocks_total",
  "llmserve_kv_local_blocks_used",
  "llmserve_kv_local_blocks_total",
  "llmserve_kv_bytes_global",
  "llmserve_kv_bytes_local",
  "llmserve_prefix_cache_hit_rate",
  "llmserve_engine_preemptions",
  "llmserve_max_batch_sequences_seen",
  "llmserve_connections_dropped_total",
  "llmserve_stream_write_timeouts_total",
  "llmserve_adapters_registered",
  "llmserve_adapters_resident",
  "llmserve_adapter_bytes",
  "llmserve_adapter_loads_total",
  "llmserve_adapter_evictions_total",
  "llmserve_eval_sequences_total",
  "llmserve_eval_passes_total",
  "llmserve_dynamic_steps_total",
  "llmserve_step_ms_per_token",
  "llmserve_padded_tokens_total",
] as const;

/** Options of {@link ServerMetrics}. */
export interface MetricsOptions {
  /** Also collect prom-client's default process metrics (default true). */
  defaultMetrics?: boolean;
}

/** A server's metrics in their own prom-client Registry (see {@link METRIC_NAMES}). */
export class ServerMetrics {
  /** This server's registry (not prom-client's global one). */
  readonly registry: Registry;
  /** llmserve_http_requests_total{route, method, status} */
  readonly requests: Counter<"route" | "method" | "status">;
  /** llmserve_http_request_duration_seconds{route} */
  readonly requestDuration: Histogram<"route">;
  /** llmserve_requests_in_flight */
  readonly inFlight: Gauge;
  /** llmserve_prompt_tokens_total */
  readonly promptTokens: Counter;
  /** llmserve_completion_tokens_total */
  readonly completionTokens: Counter;
  /** llmserve_time_to_first_token_seconds */
  readonly timeToFirstToken: Histogram;
  /** llmserve_inter_token_latency_seconds */
  readonly interTokenLatency: Histogram;
  /** llmserve_connections_dropped_total: connections refused over the server's maxConnections */
  readonly droppedConnections: Counter;
  /** llmserve_stream_write_timeouts_total: streams cut off because the client stopped reading */
  readonly streamWriteTimeouts: Counter;

  /**
   * @param stats reads the engine state at scrape time (`() => model.stats()`)
   * @param options see {@link MetricsOptions}
   */
  constructor(stats: () => ModelStats | undefined, options: MetricsOptions = {}) {
    const registry = (this.registry = new Registry());
    const registers = [registry];
    this.requests = new Counter({
      name: "llmserve_http_requests_total",
      help: "HTTP requests by route, method and status code",
      labelNames: ["route", "method", "status"],
      registers,
    });
    this.requestDuration = new Histogram({
      name: "llmserve_http_request_duration_seconds",
      help: "HTTP request duration (whole stream for streaming requests)",
      labelNames: ["route"],
      registers,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    });
    this.inFlight = new Gauge({
      name: "llmserve_requests_in_flight",
      help: "Generation requests being served",
      registers,
    });
    this.promptTokens = new Counter({
      name: "llmserve_prompt_tokens_total",
      help: "Prompt tokens of served generation requests",
      registers,
    });
    this.completionTokens = new Counter({
      name: "llmserve_completion_tokens_total",
      help: "Tokens generated for served requests",
      registers,
    });
    this.timeToFirstToken = new Histogram({
      name: "llmserve_time_to_first_token_seconds",
      help: "Time from request arrival to the first generated token",
      registers,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    });
    this.interTokenLatency = new Histogram({
      name: "llmserve_inter_token_latency_seconds",
      help: "Time between consecutive generated tokens of a sequence",
      registers,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    });
    this.droppedConnections = new Counter({
      name: "llmserve_connections_dropped_total",
      help: "Connections closed at once because the server had maxConnections open",
      registers,
    });
    this.streamWriteTimeouts = new Counter({
      name: "llmserve_stream_write_timeouts_total",
      help: "Streams cut off (request cancelled) because the client stopped reading",
      registers,
    });
    const read = (): ModelStats | undefined => {
      try {
        return stats();
      } catch {
        return undefined; // disposed model: report nothing new
      }
    };
    const gauge = (name: string, help: string, get: (s: ModelStats) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const s = read();
          if (s) this.set(get(s));
        },
      });
    // A counter kept by the model (monotonic since load): the metric advances by what it gained.
    const counter = (name: string, help: string, get: (s: ModelStats) => number) => {
      let seen = 0;
      return new Counter({
        name,
        help,
        registers,
        collect() {
          const s = read();
          if (s && get(s) > seen) {
            this.inc(get(s) - seen);
            seen = get(s);
          }
        },
      });
    };
    gauge("llmserve_queue_depth", "Requests waiting in the engine queue", (s) => s.waiting);
    gauge("llmserve_running_sequences", "Sequences the engine is running", (s) => s.running);
    gauge("llmserve_kv_blocks_used", "KV cache blocks held by sequences", (s) => s.blocksUsed);
    gauge("llmserve_kv_blocks_cached", "Free KV cache blocks still holding a reusable prefix", (s) => s.blocksCached);
    gauge("llmserve_kv_blocks_free", "Free KV cache blocks", (s) => s.blocksFree);
    gauge("llmserve_kv_blocks_total", "KV cache blocks in all", (s) => s.blocksTotal);
    gauge(
      "llmserve_kv_local_blocks_used",
      "Sliding-window layers' KV blocks held (bounded by the window)",
      (s) => s.localBlocksUsed,
    );
    gauge("llmserve_kv_local_blocks_total", "Sliding-window layers' KV blocks in all", (s) => s.localBlocksTotal);
    gauge("llmserve_kv_bytes_global", "Bytes of the global layers' KV pool", (s) => s.kvBytesGlobal);
    gauge("llmserve_kv_bytes_local", "Bytes of the sliding-window layers' KV pool", (s) => s.kvBytesLocal);
    gauge("llmserve_prefix_cache_hit_rate", "Fraction of prefix-cache block lookups that hit", (s) => s.prefixHitRate);
    gauge("llmserve_engine_preemptions", "Sequences preempted (recomputed) since load", (s) => s.preemptions);
    gauge(
      "llmserve_max_batch_sequences_seen",
      "Most sequences in one engine step since load",
      (s) => s.maxBatchSequencesSeen,
    );
    gauge("llmserve_adapters_registered", "LoRA adapters loaded (registered), resident or not", (s) => s.adapters);
    gauge(
      "llmserve_adapters_resident",
      "LoRA adapters whose weights are in memory (at most maxAdapters unless more are in use)",
      (s) => s.adaptersResident,
    );
    gauge(
      "llmserve_adapter_bytes",
      "Bytes of LoRA adapter weights in memory (unloaded ones that requests still use included)",
      (s) => s.adapterBytes,
    );
    counter(
      "llmserve_adapter_loads_total",
      "LoRA adapter files read: loadAdapter calls and transparent reloads after evictions",
      (s) => s.adapterLoads,
    );
    counter(
      "llmserve_adapter_evictions_total",
      "LoRA adapters evicted from memory to keep at most maxAdapters resident",
      (s) => s.adapterEvictions,
    );
    counter(
      "llmserve_eval_sequences_total",
      "Whole-text evaluations (embeddings, evaluate calls) run on the engine",
      (s) => s.evalSequences,
    );
    counter(
      "llmserve_eval_passes_total",
      "Forward passes those evaluations took (texts that arrive together share one)",
      (s) => s.evalPasses,
    );
    counter(
      "llmserve_dynamic_steps_total",
      "Steps whose prompt tokens the dynamic batching policy chose (targetStepMs)",
      (s) => s.dynamicSteps,
    );
    gauge("llmserve_step_ms_per_token", "Fitted step cost: milliseconds per token of a step", (s) => s.stepMsPerToken);
    counter(
      "llmserve_padded_tokens_total",
      "Pad tokens computed by fixed-length batching (batching: fixed)",
      (s) => s.paddedTokens,
    );
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: "llmserve_" });
  }

  /** The text exposition and its content type. */
  async scrape(): Promise<{
    /** The exposition format's Content-Type. */
    contentType: string;
    /** The metrics text. */
    body: string;
  }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
