#!/usr/bin/env node
/** The llmserve command line: generate, chat, tokenize, detokenize, embed, pull, models, synth, synth-lora, info, demo, serve, eval, quantize, compress, finetune. */
import { Command, Option } from "commander";
import { existsSync, mkdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { LlmserveError } from "./errors.js";
import { checkModel, readGguf } from "./gguf.js";
import { decodeReadBytes, measureReadBandwidth } from "./machine.js";
import {
  LORA_TARGET_ALIASES,
  LORA_TARGETS,
  LORA_TYPES,
  SYNTH_ARCHS,
  SYNTH_ROPE_SCALINGS,
  synth,
  synthLora,
  SYNTH_TYPES,
  type SynthArch,
} from "./synth.js";
import { Tokenizer } from "./tokenizer/index.js";
import { packageRoot } from "./binding.js";
import { ADAPTER_DEFAULTS as AD, SYNTH_DEFAULTS as SY, SYNTH_LORA_DEFAULTS as SL } from "./defaults.js";
import type { Chunk } from "./generate.js";
import { registerBuild } from "./cli/build.js";
import { registerChat } from "./cli/chat.js";
import {
  addContextSizeOption,
  addQuietOption,
  addSamplingOptions,
  describeTimings,
  float,
  int,
  loadModel,
  localModel,
  MODEL_HELP,
  progressReporter,
  samplingOptions,
  type SamplingCliOptions,
} from "./cli/common.js";
import { registerDetokenize } from "./cli/detokenize.js";
import { registerEmbed } from "./cli/embed.js";
import { registerEval } from "./cli/eval.js";
import { registerHubCommands } from "./cli/hub.js";
import { registerQuantize } from "./cli/quantize.js";
import { registerFinetune } from "./cli/finetune.js";
import { registerCompress } from "./cli/compress.js";
import { CSR_MAX_DENSITY } from "./compress.js";
import { registerServe } from "./cli/serve.js";

// Sampling fields unset (the demo): the library's default (lib/defaults.ts), as for the flags' defaults.
interface GenOpts extends Partial<SamplingCliOptions> {
  model: string;
  prompt?: string;
  tokens?: string;
  threads?: number;
  contextSize?: number;
  json?: boolean;
  adapter?: string;
  adapterScale?: number;
  grammar?: string;
  jsonSchema?: string;
}

function parseJsonFile(flag: string, path: string, text: string): object {
  try {
    return JSON.parse(text) as object;
  } catch (err) {
    throw new LlmserveError("ERR_INVALID_ARGUMENT", `${flag} ${path} is not valid JSON: ${(err as Error).message}`);
  }
}

async function runGenerate(o: GenOpts): Promise<void> {
  if ((o.prompt === undefined) === (o.tokens === undefined)) {
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Pass exactly one of --prompt TEXT or --tokens '[1,2,3]'");
  }
  let prompt: string | { tokens: number[] };
  if (o.tokens !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(o.tokens);
    } catch {
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        `--tokens must be a JSON array of token ids, e.g. "[1,303,281]", but received ${o.tokens}`,
      );
    }
    if (!Array.isArray(parsed))
      throw new LlmserveError("ERR_INVALID_ARGUMENT", "--tokens must be a JSON array of token ids");
    prompt = { tokens: parsed as number[] };
  } else prompt = o.prompt as string;
  const model = await loadModel(o.model, { threads: o.threads, contextSize: o.contextSize });
  try {
    if (o.adapterScale !== undefined && o.adapter === undefined)
      throw new LlmserveError("ERR_INVALID_ARGUMENT", "--adapter-scale needs --adapter PATH");
    if (o.adapter !== undefined) await model.loadAdapter("cli", o.adapter, { scale: o.adapterScale });
    const promptTokens = typeof prompt === "string" ? model.tokenize(prompt) : prompt.tokens;
    if (o.grammar !== undefined && o.jsonSchema !== undefined)
      throw new LlmserveError("ERR_INVALID_ARGUMENT", "Pass at most one of --grammar FILE and --json-schema FILE");
    const constraint =
      o.grammar !== undefined
        ? { grammar: await readFile(o.grammar, "utf8") }
        : o.jsonSchema !== undefined
          ? { jsonSchema: parseJsonFile("--json-schema", o.jsonSchema, await readFile(o.jsonSchema, "utf8")) }
          : {};
    const ac = new AbortController();
    const onSigint = () => ac.abort();
    process.once("SIGINT", onSigint);
    const tokens: number[] = [];
    let text = "";
    let last: Chunk | undefined;
    for await (const c of model.generate(
      { tokens: promptTokens },
      {
        ...samplingOptions(o as SamplingCliOptions),
        ...constraint,
        signal: ac.signal,
        adapter: o.adapter === undefined ? undefined : "cli",
      },
    )) {
      tokens.push(...c.tokens);
      text += c.text;
      last = c;
      if (!o.json) process.stdout.write(c.text);
    }
    process.off("SIGINT", onSigint);
    if (o.json) {
      process.stdout.write(
        `${JSON.stringify({ promptTokens, tokens, text, finishReason: last?.finishReason ?? "length", seed: last?.seed, timings: last?.timings ?? {} })}\n`,
      );
    } else {
      process.stdout.write("\n");
      if (last?.timings) process.stderr.write(`\n${describeTimings(last)}\n`);
    }
  } finally {
    await model.dispose();
  }
}

function describeValue(v: unknown): string {
  if (Array.isArray(v)) return `[${v.length} items]`;
  if (ArrayBuffer.isView(v)) return `[${(v as unknown as { length: number }).length} numbers]`;
  if (typeof v === "object" && v !== null) {
    const s = v as { elementType?: string; length?: number };
    return `[${s.length} ${s.elementType}]`;
  }
  if (typeof v === "string") return v.length > 120 ? JSON.stringify(`${v.slice(0, 117)}...`) : JSON.stringify(v);
  return String(v);
}

/** The storage format of a tensor when it is not a plain ggml tensor (llmserve's 2:4 sparse pair, low-rank factors, CSR). */
function tensorFormat(
  t: { name: string; shape: number[]; type?: string },
  csr: Map<string, CsrInfo>,
): string | undefined {
  const name = t.name;
  const c = csr.get(name.replace(/\.sp_(ptr|col|val)$/, ""));
  if (c && name.endsWith(".sp_ptr"))
    return `CSR sparse (${c.nnz} entries${c.density === undefined ? "" : `, density ${(100 * c.density).toFixed(1)}%: ${c.density <= CSR_MAX_DENSITY ? "runs as CSR" : `expanded to dense at load (above ${100 * CSR_MAX_DENSITY}%)`}`}): row pointers, llmserve only`;
  if (c && name.endsWith(".sp_col")) return "CSR sparse: columns (i32), llmserve only";
  if (c && name.endsWith(".sp_val")) return "CSR sparse: kept values, llmserve only";
  if (name.endsWith(".s24v")) return `2:4 sparse: kept values (${t.type ?? "f16"}), llmserve only`;
  if (name.endsWith(".s24i")) return "2:4 sparse: 2-bit positions, llmserve only";
  if (name.endsWith(".lr_v")) return `low-rank rank ${t.shape[1]}: V factor, llmserve only`;
  if (name.endsWith(".lr_ut")) return `low-rank rank ${t.shape[1]}: U factor (transposed), llmserve only`;
  if (name.endsWith(".sp_ptr")) return "sparse residual (CSR): row pointers, llmserve only";
  if (name.endsWith(".sp_col")) return `sparse residual (CSR): ${t.shape[0]} columns, llmserve only`;
  if (name.endsWith(".sp_val")) return "sparse residual (CSR): values (f16), llmserve only";
  return undefined;
}

interface CsrInfo {
  nnz: number;
  /** nnz / (rows x columns); undefined when the row length is not known from the metadata. */
  density?: number;
}

/**
 * The CSR matrices of a file (NAME.sp_* without low-rank factors), by NAME. The CSR tensors do not
 * record a row's length: it comes from the hyperparameters by the matrix's role.
 */
function csrMatrices(tensors: { name: string; shape: number[] }[], md: Record<string, unknown>): Map<string, CsrInfo> {
  const names = new Set(tensors.map((t) => t.name));
  const arch = String(md["general.architecture"] ?? "");
  const num = (k: string) => (typeof md[`${arch}.${k}`] === "number" ? (md[`${arch}.${k}`] as number) : undefined);
  const embd = num("embedding_length");
  const heads = num("attention.head_count");
  const keyLen = num("attention.key_length") ?? (embd && heads ? embd / heads : undefined);
  const out = new Map<string, CsrInfo>();
  for (const t of tensors) {
    if (!t.name.endsWith(".sp_ptr")) continue;
    const base = t.name.slice(0, -".sp_ptr".length);
    if (names.has(`${base}.lr_v`)) continue;
    const nnz = tensors.find((u) => u.name === `${base}.sp_col`)?.shape[0] ?? 0;
    const role = /\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight$/.exec(base)?.[1];
    const nIn =
      role === "ffn_down"
        ? num("feed_forward_length")
        : role === "attn_output"
          ? heads && keyLen
            ? heads * keyLen
            : undefined
          : role
            ? embd
            : undefined;
    const rows = (t.shape[0] ?? 1) - 1;
    out.set(base, { nnz, density: nIn ? nnz / (nIn * rows) : undefined });
  }
  return out;
}

/** What `info` says about a pruned / sparse file (nothing for a plain one). */
function compressionSummary(
  tensors: { name: string; shape: number[] }[],
  md: Record<string, unknown>,
  csr: Map<string, CsrInfo>,
): Record<string, unknown> {
  const sparse = tensors.filter((t) => t.name.endsWith(".s24v")).length;
  const lowRank = tensors.filter((t) => t.name.endsWith(".lr_v")).length;
  const residual = tensors.filter((t) => t.name.endsWith(".sp_ptr")).length - csr.size;
  const method = md["llmserve.prune.method"];
  const dens = [...csr.values()].map((c) => c.density).filter((d): d is number => d !== undefined);
  const dense = dens.filter((d) => d > CSR_MAX_DENSITY).length;
  if (!sparse && !lowRank && !csr.size && method === undefined) return {};
  return {
    pruned: method === undefined ? undefined : `${String(md["llmserve.prune.pattern"])} ${String(method)}`,
    sparse24Matrices: sparse || undefined,
    csrMatrices: csr.size || undefined,
    csr: csr.size
      ? `${csr.size} matrices${dens.length ? `, density ${(100 * Math.min(...dens)).toFixed(1)}%..${(100 * Math.max(...dens)).toFixed(1)}%` : ""}; ${csr.size - dense} run as CSR, ${dense} expanded to dense at load (denser than ${100 * CSR_MAX_DENSITY}%, where CSR is slower)`
      : undefined,
    lowRankMatrices: lowRank || undefined,
    lowRank: lowRank
      ? `${md["llmserve.lowrank.rank"] !== undefined ? `rank ${String(md["llmserve.lowrank.rank"])}` : `energy ${String(md["llmserve.lowrank.energy"])}`}${residual ? ` + sparse residual ${Number(Number(md["llmserve.lowrank.sparse"]).toPrecision(6))} (${residual} matrices)` : ""}${md["llmserve.lowrank.activation_aware"] === true ? ", activation-aware" : ""}`
      : undefined,
    llamaCpp: sparse
      ? "cannot load this file: it holds llmserve's 2:4 sparse tensors (NAME.s24v/.s24i); write it with --format dense for llama.cpp"
      : csr.size
        ? "cannot load this file: it holds llmserve's CSR sparse tensors (NAME.sp_ptr/.sp_col/.sp_val) in place of the dense matrices; write it with --format dense for llama.cpp"
        : lowRank
          ? "cannot load this file: it holds llmserve's low-rank factored tensors (NAME.lr_v/.lr_ut, NAME.sp_*) in place of the dense matrices"
          : undefined,
  };
}

async function runInfo(o: {
  model: string;
  json?: boolean;
  bandwidth?: boolean;
  context?: number;
  threads?: number;
}): Promise<void> {
  const path = await localModel(o.model);
  const g = await readGguf(path, { maxArrayLength: 64 });
  const md = g.metadata;
  const csr = csrMatrices(g.tensors, md);
  const arch = String(md["general.architecture"] ?? "unknown");
  const types: Record<string, number> = {};
  let params = 0;
  for (const t of g.tensors) {
    types[t.type] = (types[t.type] ?? 0) + 1;
    params += t.shape.reduce((a, b) => a * b, 1);
  }
  const vocabLen = (md["tokenizer.ggml.tokens"] as { length?: number } | undefined)?.length ?? 0;
  // Whether llmserve runs it: the load-time checks, without reading the weights (a LoRA adapter is
  // not a model: loadAdapter checks it against its base).
  type Support = { supported?: boolean; unsupportedReason?: { code: string; message: string } };
  const support: Support =
    md["general.type"] === "adapter"
      ? {}
      : await checkModel(path).then(
          () => ({ supported: true }),
          (e: { code?: string; message?: string }) => ({
            supported: false,
            unsupportedReason: { code: e.code ?? "ERR_INTERNAL", message: String(e.message) },
          }),
        );
  // What one decode step reads, and with --bandwidth this machine's ceiling for one sequence (of a
  // file llmserve runs; an adapter is read along with its base, not alone).
  const runs = md["general.type"] !== "adapter" && support.supported === true;
  const reads = runs ? await decodeReadBytes(path, { context: o.context ?? 0 }) : undefined;
  if (o.bandwidth && !runs)
    process.stderr.write("llmserve: --bandwidth: no decode ceiling for a file llmserve does not run alone\n");
  // Rounded as printed, and the ceiling from the printed value, so the two agree.
  const gbs = reads && o.bandwidth ? +(await measureReadBandwidth({ threads: o.threads })).toFixed(1) : undefined;
  const summary = {
    file: resolve(path),
    ggufVersion: g.version,
    architecture: arch,
    name: md["general.name"],
    contextLength: md[`${arch}.context_length`],
    embeddingLength: md[`${arch}.embedding_length`],
    blockCount: md[`${arch}.block_count`],
    feedForwardLength: md[`${arch}.feed_forward_length`],
    headCount: md[`${arch}.attention.head_count`],
    headCountKv: md[`${arch}.attention.head_count_kv`],
    headDim: md[`${arch}.attention.key_length`],
    ropeFreqBase: md[`${arch}.rope.freq_base`],
    ropeScaling: md[`${arch}.rope.scaling.type`],
    ropeScalingFactor: md[`${arch}.rope.scaling.factor`],
    ropeFreqs: g.tensors.some((t) => t.name === "rope_freqs.weight") || undefined,
    slidingWindow: md[`${arch}.attention.sliding_window`],
    slidingWindowPattern: md[`${arch}.attention.sliding_window_pattern`],
    longRope: g.tensors.some((t) => t.name === "rope_factors_long.weight") || undefined,
    expertCount: md[`${arch}.expert_count`],
    expertUsedCount: md[`${arch}.expert_used_count`],
    expertFeedForwardLength: md[`${arch}.expert_feed_forward_length`],
    tokenizer: md["tokenizer.ggml.model"],
    tokenizerPre: md["tokenizer.ggml.pre"],
    vocabSize: vocabLen,
    tensorCount: g.tensors.length,
    parameters: params,
    tensorTypes: types,
    fileSize: g.fileSize,
    decodeReadBytes: reads?.total,
    readBandwidthGBs: gbs,
    decodeCeiling: gbs === undefined || !reads?.total ? undefined : +((gbs * 1e9) / reads.total).toFixed(2),
    ...support,
    ...compressionSummary(g.tensors, md, csr),
  };
  // An unsupported file is described all the same, then refused: exit code 1 and the reason on stderr.
  const refuse = () => {
    const r = support.unsupportedReason;
    if (!r) return;
    process.stderr.write(`llmserve cannot run this model: ${r.message} (${r.code})\n`);
    process.exitCode = 1;
  };
  if (o.json) {
    process.stdout.write(`${JSON.stringify(summary, (_k, v) => (typeof v === "bigint" ? v.toString() : v))}\n`);
    return refuse();
  }
  const units: Record<string, string> = {
    decodeReadBytes: " bytes per step",
    readBandwidthGBs: " GB/s",
    decodeCeiling: " tok/s (one sequence)",
  };
  for (const [k, v] of Object.entries(summary)) {
    if (v !== undefined)
      process.stdout.write(
        `${k.padEnd(18)} ${typeof v === "object" ? JSON.stringify(v) : String(v)}${units[k] ?? ""}\n`,
      );
  }
  process.stdout.write("\nmetadata:\n");
  for (const [k, v] of Object.entries(md)) process.stdout.write(`  ${k} = ${describeValue(v)}\n`);
  process.stdout.write("\ntensors:\n");
  for (const t of g.tensors.slice(0, 40))
    process.stdout.write(
      `  ${t.name.padEnd(28)} ${t.type.padEnd(6)} [${t.shape.join(", ")}]${tensorFormat(t, csr) ? `  ${tensorFormat(t, csr)}` : ""}\n`,
    );
  if (g.tensors.length > 40) process.stdout.write(`  ... ${g.tensors.length - 40} more\n`);
  refuse();
}

/** The demo: a real small model when the repository's fixtures are present, else a synthesized one. */
async function runDemo(): Promise<void> {
  const fixture = resolve(packageRoot, "..", "shared", "fixtures", "models", "aidreams260K.gguf");
  let path = fixture;
  let prompt = "I dream of";
  if (!existsSync(fixture)) {
    path = join(homedir(), ".cache", "llmserve", "demo-llama-256.gguf");
    if (!existsSync(path)) {
      mkdirSync(dirname(path), { recursive: true });
      process.stderr.write(
        `Synthesizing a small random-weight demo model at ${path} (its text is gibberish; pass -m with a real GGUF to llmserve generate)...\n`,
      );
      const rep = progressReporter();
      await synth(path, {
        dim: 256,
        layers: 4,
        heads: 8,
        kvHeads: 2,
        ffn: 768,
        vocabSize: 2048,
        type: "q8_0",
        onProgress: rep.fraction("synth", path),
      }).finally(() => rep.stop());
    }
    prompt = "Once upon a time";
  }
  process.stderr.write(`model: ${path}\nprompt: ${prompt}\n\n`);
  await runGenerate({ model: path, prompt, maxTokens: 64, seed: 1, contextSize: 512 });
}

// `llmserve info ... | head` closes stdout early: exit quietly instead of throwing EPIPE.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});

const program = new Command();
program.name("llmserve").description("LLM inference for Node.js on llama.cpp GGUF models").version("0.1.0");
program.showHelpAfterError("(run with --help for usage)");
program.showSuggestionAfterError(true); // "(Did you mean --temperature?)" for a misspelled option
addQuietOption(program);

const generate = program
  .command("generate")
  .description("stream a completion for a text or token prompt")
  .requiredOption("-m, --model <model>", MODEL_HELP)
  .option("-p, --prompt <text>", "text prompt (BOS added as the vocabulary asks)")
  .option("--tokens <json>", "token prompt as a JSON array of ids, used as is")
  .option("-t, --threads <n>", "compute threads (default: physical cores)", int("--threads"))
  .option("--json", "print one JSON object at the end instead of streaming text")
  .option(
    "--adapter <path>",
    "LoRA adapter to generate with: a llama.cpp GGUF adapter file or a PEFT folder (adapter_config.json + adapter_model.safetensors)",
  )
  .option("--adapter-scale <s>", `LoRA adapter scale (default ${AD.scale})`, float("--adapter-scale"))
  .option("--grammar <file>", "constrain the output to this GBNF grammar (llama.cpp format, start rule root)")
  .option("--json-schema <file>", "constrain the output to JSON valid for this JSON schema")
  .action(runGenerate);
addSamplingOptions(generate);
addContextSizeOption(generate);
registerChat(program);

program
  .command("tokenize")
  .description("print the token ids of a text as a JSON array")
  .requiredOption("-m, --model <model>", `${MODEL_HELP} (or a vocab-only file)`)
  .requiredOption("-p, --prompt <text>", "text to tokenize")
  .option("--no-bos", "do not add BOS/EOS and do not parse special-token text")
  .action(async (o: { model: string; prompt: string; bos: boolean }) => {
    const tok = await Tokenizer.fromGguf(await localModel(o.model));
    process.stdout.write(`${JSON.stringify(tok.encode(o.prompt, { addSpecial: o.bos, parseSpecial: o.bos }))}\n`);
  });
registerDetokenize(program);
registerEmbed(program);
registerHubCommands(program);

program
  .command("synth")
  .description("write a random-weight llama/qwen2/qwen3/gemma2/gemma3/phi3 GGUF model (llama.cpp loads it too)")
  .addOption(new Option("--arch <arch>", "architecture").choices([...SYNTH_ARCHS]).default(SY.arch))
  .option("--dim <n>", "embedding size", int("--dim"), SY.dim)
  .option("--layers <n>", "transformer blocks", int("--layers"), SY.layers)
  .option("--heads <n>", "attention heads", int("--heads"), SY.heads)
  .option("--head-dim <n>", "size of one attention head (default: dim / heads)", int("--head-dim"))
  .option("--kv-heads <n>", "key/value heads (GQA)", int("--kv-heads"), SY.kvHeads)
  .option("--ffn <n>", "feed-forward size", int("--ffn"), SY.ffn)
  .option("--context <n>", "training context length", int("--context"), SY.context)
  .option("--vocab-from <path>", "copy the tokenizer of this GGUF file")
  .option("--vocab-size <n>", "generated SentencePiece vocabulary size", int("--vocab-size"), SY.vocabSize)
  .option("--tied", "no output.weight (reuse the embedding)")
  .option("--rope-freqs", "llama: write Llama 3's rope_freqs.weight (per-frequency RoPE factors)")
  .addOption(
    new Option("--rope-scaling <type>", "declare RoPE scaling (rope.scaling.type)").choices(
      SYNTH_ROPE_SCALINGS.filter((r) => r !== ""),
    ),
  )
  .option(
    "--rope-scale <f>",
    `RoPE scaling factor written with --rope-scaling (default ${SY.ropeScale})`,
    float("--rope-scale"),
  )
  .option(
    "--sliding-window <n>",
    "gemma/phi3: attention.sliding_window (default: not written)",
    int("--sliding-window"),
  )
  .option("--swa-pattern <n>", "gemma: sliding_window_pattern, every n-th layer global", int("--swa-pattern"))
  .option("--attn-softcap <f>", "gemma2: attn_logit_softcapping (default: not written, 50)", float("--attn-softcap"))
  .option("--final-softcap <f>", "gemma: final_logit_softcapping (default: not written)", float("--final-softcap"))
  .option("--rope-freq-base-swa <f>", "gemma: local layers' RoPE base", float("--rope-freq-base-swa"))
  .option("--long-rope", "phi3: LongRoPE short/long factor tensors, original context = context / 2")
  .option("--experts <n>", "llama/qwen3moe: mixture of experts (default 0 = dense; qwen3moe 8)", int("--experts"))
  .option("--experts-used <n>", "experts chosen per token (default 2)", int("--experts-used"))
  .addOption(new Option("--type <type>", "weight type").choices([...SYNTH_TYPES]).default(SY.type))
  .option("--seed <n>", "weights seed", int("--seed"), SY.seed)
  .requiredOption("-o, --output <path>", "output .gguf path")
  .action(async (o: Record<string, unknown>) => {
    const rep = progressReporter();
    const { notes } = await synth(o.output as string, {
      arch: o.arch as SynthArch,
      dim: o.dim as number,
      layers: o.layers as number,
      heads: o.heads as number,
      kvHeads: o.kvHeads as number,
      ffn: o.ffn as number,
      context: o.context as number,
      vocabFrom: o.vocabFrom as string | undefined,
      vocabSize: o.vocabSize as number,
      type: o.type as never,
      seed: o.seed as number,
      tiedOutput: o.tied === true,
      headDim: o.headDim as number | undefined,
      ropeFreqs: o.ropeFreqs === true,
      ropeScaling: o.ropeScaling as "linear" | undefined,
      ropeScale: o.ropeScale as number | undefined,
      slidingWindow: o.slidingWindow as number | undefined,
      swaPattern: o.swaPattern as number | undefined,
      attnSoftcap: o.attnSoftcap as number | undefined,
      finalSoftcap: o.finalSoftcap as number | undefined,
      ropeFreqBaseSwa: o.ropeFreqBaseSwa as number | undefined,
      longRope: o.longRope === true,
      experts: o.experts as number | undefined,
      expertsUsed: o.expertsUsed as number | undefined,
      onProgress: rep.fraction("synth", String(o.output)),
    }).finally(() => rep.stop());
    for (const n of notes) process.stderr.write(`note: ${n}\n`);
    process.stderr.write(`wrote ${o.output}\n`);
  });

program
  .command("synth-lora")
  .description("write a random LoRA adapter for a model, in llama.cpp's GGUF adapter format")
  .requiredOption("-m, --model <path>", "base GGUF model the adapter is for")
  .option("--rank <n>", "rank of every pair", int("--rank"), SL.rank)
  .option(
    "--targets <list>",
    `comma-separated projections: ${Object.keys(LORA_TARGET_ALIASES).join(",")} (or ${LORA_TARGETS.join(",")})`,
    "q,k,v,o,gate,up,down",
  )
  .option("--alpha <a>", "adapter.lora.alpha (0: scale = user scale)", float("--alpha"), SL.alpha)
  .addOption(new Option("--type <type>", "type of A and B").choices([...LORA_TYPES]).default(SL.type))
  .option("--seed <n>", "weights seed", int("--seed"), SL.seed)
  .requiredOption("-o, --output <path>", "output .gguf path")
  .action(async (o: Record<string, unknown>) => {
    const targets = String(o.targets)
      .split(",")
      .map((t) => t.trim())
      .filter((t) => t.length > 0)
      .map((t) => LORA_TARGET_ALIASES[t] ?? t) as (typeof LORA_TARGETS)[number][];
    await synthLora(await localModel(o.model as string), o.output as string, {
      rank: o.rank as number,
      targets,
      alpha: o.alpha as number,
      type: o.type as "f32",
      seed: o.seed as number,
    });
    process.stderr.write(`wrote ${o.output}\n`);
  });

program
  .command("info")
  .description("print a model's architecture, shapes, weight types and vocabulary")
  .requiredOption("-m, --model <model>", MODEL_HELP)
  .option("--json", "print JSON")
  .option(
    "--bandwidth",
    "also measure this machine's read bandwidth (~1 s) and print the decode ceiling of one sequence: bandwidth / decodeReadBytes",
  )
  .option("--context <n>", "tokens of context whose KV cache decodeReadBytes includes (default 0)", int("--context"))
  .option("-t, --threads <n>", "threads of the bandwidth probe (default: physical cores)", int("--threads"))
  .action(runInfo);

registerServe(program);

program.command("demo").description("stream a short generation from a small built-in model").action(runDemo);

registerEval(program);
registerBuild(program);
registerQuantize(program);
registerFinetune(program);
registerCompress(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  if (e && typeof e.code === "string" && e.code.startsWith("ERR_")) {
    process.stderr.write(`llmserve: ${e.message}\n  (${e.code}; run llmserve --help for usage)\n`);
  } else {
    process.stderr.write(`llmserve: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
  }
  process.exitCode = 1;
});
