/** Model: load a GGUF file and stream generations from it. */
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { loadAddon } from "./binding.js";
import { LlmserveError, wrapNative } from "./errors.js";
import { resolveOptions, streamGeneration, type Chunk, type GenerateOptions, type Prompt } from "./generate.js";
import type { NativeModel, NativeModelInfo } from "./native.js";
import { Tokenizer } from "./tokenizer/index.js";
import { checkInt, checkKeys, checkObject, checkString } from "./validate.js";

export interface LoadOptions {
  /** Compute threads (default: the number of physical cores). */
  threads?: number;
  /** KV cache size in tokens (default 4096; 0 = the model's training context). */
  contextSize?: number;
  /** KV cache element type (default "f16", as llama.cpp). */
  kvType?: "f16" | "f32";
  /** Called with a fraction in [0, 1] while weights are mapped and paged in. */
  onProgress?: (fraction: number) => void;
}

export interface ModelInfo extends NativeModelInfo {
  path: string;
  /** Tokenizer model from the file ("llama" = SentencePiece, "gpt2" = byte-level BPE). */
  tokenizer: string;
  bos?: number;
  eos?: number;
}

/** Physical cores on Linux (hyperthreads share a core's SIMD units); logical CPUs elsewhere. */
export function physicalCores(): number {
  try {
    const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
    const cores = new Set<string>();
    let phys = "0";
    for (const line of cpuinfo.split("\n")) {
      const [k, v] = line.split(":").map((s) => s?.trim());
      if (k === "physical id") phys = v;
      if (k === "core id") cores.add(`${phys}:${v}`);
    }
    if (cores.size > 0) return cores.size;
  } catch {
    /* not Linux */
  }
  return availableParallelism();
}

export class Model {
  readonly path: string;
  readonly tokenizer: Tokenizer;
  private native: NativeModel | undefined;
  private readonly eog: number[];
  private readonly nativeInfo: NativeModelInfo;

  private constructor(path: string, native: NativeModel, tokenizer: Tokenizer) {
    this.path = path;
    this.native = native;
    this.tokenizer = tokenizer;
    this.nativeInfo = native.info();
    this.eog = tokenizer.eogTokens;
  }

  /**
   * Loads a GGUF model. Weights stay memory-mapped; loading runs off the JS thread.
   * @example
   * const model = await Model.load("model.gguf", { threads: 2, contextSize: 4096 });
   */
  static async load(path: string, options: LoadOptions = {}): Promise<Model> {
    checkString("path", path);
    const o = checkObject("load options", options) as LoadOptions & Record<string, unknown>;
    checkKeys("load options", o, ["threads", "contextSize", "kvType", "onProgress"]);
    const threads = o.threads === undefined ? physicalCores() : checkInt("threads", o.threads, 1, 512);
    const contextSize = o.contextSize === undefined ? 4096 : checkInt("contextSize", o.contextSize, 0, 1 << 24);
    const kvType = o.kvType === undefined ? "f16" : checkString("kvType", o.kvType, ["f16", "f32"]);
    if (o.onProgress !== undefined && typeof o.onProgress !== "function") {
      throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a function for onProgress");
    }
    const addon = loadAddon();
    const native = await wrapNative(addon.loadModel(path, { threads, contextSize, kvF16: kvType === "f16" }, o.onProgress));
    try {
      const tokenizer = await Tokenizer.fromGguf(path);
      const info = native.info();
      if (tokenizer.nVocab !== info.nVocab) {
        throw new LlmserveError("ERR_GGUF_CORRUPT", `The vocabulary has ${tokenizer.nVocab} tokens but the model's embedding has ${info.nVocab} rows; the file is inconsistent.`);
      }
      return new Model(path, native, tokenizer);
    } catch (err) {
      await native.dispose();
      throw err;
    }
  }

  private live(): NativeModel {
    if (!this.native) throw new LlmserveError("ERR_DISPOSED", "This model has been disposed; load it again with Model.load().");
    return this.native;
  }

  /** Architecture, shapes, weight types, kernels in use. */
  get info(): ModelInfo {
    this.live();
    return { ...this.nativeInfo, path: this.path, tokenizer: this.tokenizer.model, bos: this.tokenizer.bos, eos: this.tokenizer.eos };
  }

  /** Text -> token ids (BOS added when the vocabulary asks for it, unless addSpecial is false). */
  tokenize(text: string, opts: { addSpecial?: boolean; parseSpecial?: boolean } = {}): number[] {
    checkString("text", text);
    return this.tokenizer.encode(text, opts);
  }

  detokenize(tokens: number[], opts: { special?: boolean } = {}): string {
    return this.tokenizer.decode(tokens, opts);
  }

  private promptTokens(prompt: Prompt, addSpecial: boolean, parseSpecial: boolean): number[] {
    if (typeof prompt === "string") return this.tokenizer.encode(prompt, { addSpecial, parseSpecial });
    if (typeof prompt === "object" && prompt !== null && Array.isArray(prompt.tokens)) {
      const n = this.nativeInfo.nVocab;
      for (const t of prompt.tokens) {
        if (!Number.isInteger(t) || t < 0 || t >= n) {
          throw new LlmserveError("ERR_INVALID_ARGUMENT", `Expected token ids in [0, ${n}) but received ${t}`);
        }
      }
      return prompt.tokens.slice();
    }
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "Expected a string or { tokens: number[] } for prompt");
  }

  /**
   * Streams a completion. Each chunk carries the text and token ids it adds; the last has `done`.
   * @example
   * for await (const chunk of model.generate("Once upon a time", { maxTokens: 64, seed: 1 })) {
   *   process.stdout.write(chunk.text);
   * }
   */
  generate(prompt: Prompt, options: GenerateOptions = {}): AsyncGenerator<Chunk, void, undefined> {
    const native = this.live();
    const opts = resolveOptions(options, this.eog);
    const tokens = this.promptTokens(prompt, opts.addSpecial, opts.parseSpecial);
    if (tokens.length === 0) throw new LlmserveError("ERR_INVALID_ARGUMENT", "The prompt is empty (it has no tokens).");
    if (tokens.length >= this.nativeInfo.contextSize) {
      throw new LlmserveError(
        "ERR_CONTEXT_OVERFLOW",
        `The prompt has ${tokens.length} tokens but the context holds ${this.nativeInfo.contextSize} (and at least one must be generated). Shorten the prompt or load the model with a larger contextSize.`,
      );
    }
    return streamGeneration(native, this.tokenizer, tokens, opts);
  }

  /** Runs the whole generation and returns its text, tokens and finish reason. */
  async complete(prompt: Prompt, options: GenerateOptions = {}): Promise<{ text: string; tokens: number[]; finishReason: string; timings?: Chunk["timings"] }> {
    let text = "";
    const tokens: number[] = [];
    let last: Chunk | undefined;
    for await (const c of this.generate(prompt, options)) {
      text += c.text;
      tokens.push(...c.tokens);
      last = c;
    }
    return { text, tokens, finishReason: last?.finishReason ?? "length", timings: last?.timings };
  }

  /**
   * Next-token logits for a token sequence evaluated from scratch: [nVocab] for the last token,
   * or [n * nVocab] for every position with `all`. Used for parity checks and scoring.
   */
  async evaluate(tokens: number[], opts: { all?: boolean } = {}): Promise<Float32Array> {
    const native = this.live();
    return wrapNative(native.evaluate(Int32Array.from(this.promptTokens({ tokens }, false, false)), opts.all === true));
  }

  /** Stops the engine thread (pending requests end with "abort") and unmaps the weights. */
  async dispose(): Promise<void> {
    const n = this.native;
    this.native = undefined;
    if (n) await n.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
