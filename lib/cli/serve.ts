/**
 * `llmserve serve -m MODEL [--adapter NAME=PATH ...]`: the OpenAI-compatible HTTP server
 * (lib/server) over one loaded model, with its load, server and adapter options; prints how many
 * full-context sequences the KV cache holds.
 */
import { type Command, Option } from "commander";
import { existsSync, readFileSync } from "node:fs";
import { LOAD_DEFAULTS as L, SERVER_DEFAULTS as SV } from "../defaults.js";
import { LlmserveError } from "../errors.js";
import { ADAPTER_TYPES } from "../loadOptions.js";
import { addContextSizeOption, float, int, loadModel, MODEL_HELP } from "./common.js";

interface ServeCliOpts {
  model: string;
  adapter?: string[];
  maxAdapters?: number;
  port: number;
  host: string;
  apiKey?: string;
  metricsKey?: string;
  maxConnections?: number;
  streamWriteTimeout?: number;
  maxQueue: number;
  threads?: number;
  contextSize?: number;
  kvCacheTokens?: number;
  kvMemory?: string;
  maxSequences?: number;
  kvType?: "f16" | "f32" | "q8_0";
  maxBatchTokens?: number;
  prefillChunk?: number;
  targetStepMs?: number;
  batching?: "continuous" | "static" | "fixed";
  fixedBucket?: number;
  repack: boolean;
  adapterType?: (typeof ADAPTER_TYPES)[number];
  modelName?: string;
  chatTemplate?: string;
  shutdownTimeout: number;
  cors?: string[];
}

async function runServe(o: ServeCliOpts): Promise<void> {
  if (o.port < 0 || o.port > 65535)
    throw new LlmserveError("ERR_INVALID_ARGUMENT", `Expected a port in [0, 65535] but received ${o.port}`);
  let chatTemplate = o.chatTemplate;
  if (chatTemplate !== undefined && existsSync(chatTemplate)) chatTemplate = readFileSync(chatTemplate, "utf8");
  const model = await loadModel(o.model, {
    threads: o.threads,
    contextSize: o.contextSize,
    kvCacheTokens: o.kvCacheTokens,
    kvMemory: o.kvMemory,
    maxSequences: o.maxSequences,
    maxQueue: o.maxQueue,
    kvType: o.kvType,
    maxBatchTokens: o.maxBatchTokens,
    prefillChunk: o.prefillChunk,
    targetStepMs: o.targetStepMs,
    batching: o.batching,
    fixedBucket: o.fixedBucket,
    repack: o.repack,
    maxAdapters: o.maxAdapters,
    adapterType: o.adapterType,
  });
  try {
    for (const spec of o.adapter ?? []) {
      const eq = spec.indexOf("=");
      if (eq <= 0 || eq === spec.length - 1)
        throw new LlmserveError(
          "ERR_INVALID_ARGUMENT",
          `Expected --adapter NAME=PATH but received ${JSON.stringify(spec)}`,
        );
      await model.loadAdapter(spec.slice(0, eq), spec.slice(eq + 1));
    }
    const { serve } = await import("../server/index.js"); // loaded only for this command
    const { app, url } = await serve(model, {
      port: o.port,
      host: o.host,
      apiKey: o.apiKey,
      maxQueue: o.maxQueue,
      metricsKey: o.metricsKey,
      maxConnections: o.maxConnections,
      streamWriteTimeoutMs: o.streamWriteTimeout === undefined ? undefined : Math.round(o.streamWriteTimeout * 1000),
      modelName: o.modelName,
      chatTemplate,
      cors: o.cors,
      shutdownTimeoutMs: o.shutdownTimeout * 1000,
      logger: { level: "warn" },
    });
    const t = await app.llmserve.chatTemplate().catch(() => undefined);
    const info = model.info;
    process.stdout.write(
      `llmserve: KV cache ${info.kvCacheTokens} tokens (${(info.kvBytes / 2 ** 20).toFixed(1)} MiB): ` +
        `${Math.floor(info.kvCacheTokens / info.contextSize)} sequence(s) of the full ${info.contextSize}-token context fit at once\n`,
    );
    process.stdout.write(
      `llmserve: serving ${app.llmserve.modelName} at ${url}/v1 (chat template: ${t ? t.name : "unavailable"}${o.apiKey ? ", API key required" : ""}); ` +
        `metrics at ${url}/metrics${o.cors ? `; CORS for ${o.cors.join(", ")}` : ""}; Ctrl+C to stop\n`,
    );
  } catch (err) {
    await model.dispose();
    const code = (err as { code?: unknown })?.code;
    if (code === "EADDRINUSE" || code === "EACCES") {
      throw new LlmserveError(
        "ERR_IO",
        `Cannot listen on ${o.host}:${o.port} (${code === "EADDRINUSE" ? "the address is already in use" : "permission denied"}); pick another with --port or --host.`,
        { cause: err },
      );
    }
    throw err;
  }
}

export function registerServe(program: Command): void {
  const serveCmd = program
    .command("serve")
    .description(
      "serve an OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics",
    )
    .requiredOption("-m, --model <model>", MODEL_HELP)
    // Environment fallbacks for containers (the Dockerfile listens on 0.0.0.0 through LLMSERVE_HOST).
    .addOption(
      new Option("--port <n>", "TCP port (0 = any free port)")
        .env("LLMSERVE_PORT")
        .argParser(int("--port"))
        .default(SV.port),
    )
    .addOption(new Option("--host <host>", "address to listen on").env("LLMSERVE_HOST").default(SV.host))
    .addOption(
      new Option("--api-key <key>", "require Authorization: Bearer KEY on every route but /health").env(
        "LLMSERVE_API_KEY",
      ),
    )
    .addOption(
      new Option("--metrics-key <key>", "a scrape-only key accepted on /metrics (which otherwise needs --api-key)").env(
        "LLMSERVE_METRICS_KEY",
      ),
    )
    .option(
      "--max-connections <n>",
      `most open connections; more are closed at once (default ${SV.maxConnections})`,
      int("--max-connections"),
    )
    .option(
      "--stream-write-timeout <s>",
      `cancel a stream whose client has not read for this long (default ${SV.streamWriteTimeoutMs / 1000})`,
      float("--stream-write-timeout"),
    )
    .option(
      "--max-queue <n>",
      "most requests waiting in the engine before answering 429",
      int("--max-queue"),
      SV.cliMaxQueue,
    )
    .option("-t, --threads <n>", "compute threads (default: physical cores)", int("--threads"))
    .option(
      "--kv-cache-tokens <n>",
      "KV cache size in tokens shared by all sequences (default: half the free memory, 1 to --max-sequences contexts)",
      int("--kv-cache-tokens"),
    )
    .option("--kv-memory <size>", "KV cache size as memory, e.g. 4GiB or 512MiB (instead of --kv-cache-tokens)")
    .option("--max-sequences <n>", `most sequences running at once (default ${L.maxSequences})`, int("--max-sequences"))
    .addOption(
      new Option("--kv-type <type>", "KV cache element type (q8_0 halves its memory)").choices(["f16", "f32", "q8_0"]),
    )
    .option(
      "--max-batch-tokens <n>",
      `most tokens per engine step (default ${L.maxBatchTokens})`,
      int("--max-batch-tokens"),
    )
    .option(
      "--prefill-chunk <n>",
      `most prompt tokens per step while others generate (default ${L.prefillChunk}; 0 = no limit)`,
      int("--prefill-chunk"),
    )
    .option(
      "--target-step-ms <ms>",
      "dynamic batching: a step latency target while requests generate; prompt tokens per step follow the measured step cost instead of --prefill-chunk (default 0 = off)",
      float("--target-step-ms"),
    )
    .addOption(
      new Option(
        "--batching <mode>",
        "continuous (default); static or fixed (benchmark baselines: a batch runs to completion; fixed pads its prompts to one length)",
      ).choices(["continuous", "static", "fixed"]),
    )
    .option(
      "--fixed-bucket <n>",
      "with --batching fixed: pad prompts to the next multiple of N tokens (default 0: the batch's longest prompt)",
      int("--fixed-bucket"),
    )
    .option("--no-repack", "serve weights from the file mapping instead of repacking them at load")
    .option("--model-name <name>", "model id clients pass as `model` (default: the file name)")
    .option(
      "--cors <origin...>",
      'let browser pages of ORIGIN (e.g. https://app.example.com; "*" for any) call the API (default: CORS off)',
    )
    .option(
      "--adapter <name=path...>",
      "LoRA adapter served as model NAME (repeatable; PATH: a GGUF adapter file or a PEFT folder): requests with `model: NAME` use it, /v1/models lists it",
    )
    .option(
      "--max-adapters <n>",
      `most LoRA adapters in memory; the least recently used idle one is evicted and reloaded from its file when requested again (default ${L.maxAdapters}: no limit)`,
      int("--max-adapters"),
    )
    .addOption(
      new Option(
        "--adapter-type <type>",
        "how adapters are kept in memory: as the file stores them, q8_0 (about half the memory of f16; at ranks that are multiples of 32 computed as llama.cpp computes a q8_0 adapter, and faster where a step reads many adapters) or q4_0 (a quarter of f16's memory and faster still, with the output moved about as much as a 10% lower adapter scale)",
      ).choices([...ADAPTER_TYPES]),
    )
    .option(
      "--chat-template <name|file>",
      "built-in chat template (chatml, llama3, llama2, zephyr, phi3, gemma) or a .jinja file, instead of the model's",
    )
    .option(
      "--shutdown-timeout <s>",
      "seconds in-flight requests get to finish on SIGINT/SIGTERM",
      float("--shutdown-timeout"),
      SV.shutdownTimeoutMs / 1000,
    )
    .action(runServe);
  addContextSizeOption(serveCmd, "context size in tokens per sequence");
}
