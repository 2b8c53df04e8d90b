/**
 * Text <-> token ids for GGUF vocabularies, reproducing llama.cpp's tokenizer exactly:
 * SentencePiece ("llama") and byte-level BPE ("gpt2", with llama.cpp's pre-tokenizers).
 *
 * ```ts
 * const tok = await Tokenizer.fromGguf("model.gguf");
 * const ids = tok.encode("Hello world");             // [BOS, ...] when the vocabulary adds BOS
 * tok.decode(ids);                                     // "Hello world"
 * const d = tok.createDecoder();                       // streaming: d.push(id) -> text, d.flush()
 * ```
 */
import { readGguf } from "../gguf.js";
import { LlmserveError } from "../errors.js";
import type { GgufMetaValue } from "../native.js";
import { BpeTokenizer } from "./bpe.js";
import { Detokenizer, type DecodeOptions, type StreamOptions, type TokenDecoder } from "./detokenize.js";
import { spmTokenize } from "./spm.js";
import { OFFTHREAD_MIN_CHARS, TokenizerThread } from "./thread.js";
import { toWellFormed, utf8Decode } from "./unicode.js";
import { Attr, Vocab } from "./vocab.js";

export type { DecodeOptions, StreamOptions, TokenDecoder } from "./detokenize.js";
export { SUPPORTED_PRE_TOKENIZERS } from "./pretokenize.js";
export { OFFTHREAD_MIN_CHARS } from "./thread.js";

/** Options of {@link Tokenizer.encode}. */
export interface EncodeOptions {
  /** add BOS / EOS as the vocabulary asks (tokenizer.ggml.add_bos_token / add_eos_token); default true */
  addSpecial?: boolean;
  /**
   * recognise the texts of control tokens (e.g. "<|im_start|>", "<s>") in the input and emit those
   * tokens; default false, so user text cannot inject them. User-defined tokens are always recognised.
   */
  parseSpecial?: boolean;
  /**
   * The text continues an earlier one (tokenizing a stream in pieces): SentencePiece's space
   * prefix, which llama.cpp adds only at the start of a text, is not added; default false.
   * BOS/EOS still follow `addSpecial`.
   */
  continuation?: boolean;
}

/**
 * A GGUF vocabulary's tokenizer, matching llama.cpp token for token. Build one with
 * {@link Tokenizer.fromGguf} or {@link Tokenizer.fromMetadata}; a loaded model has one as
 * {@link Model.tokenizer}.
 */
export class Tokenizer {
  /** tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE) */
  readonly model: string;
  /** "spm" (SentencePiece) or "bpe" (byte-level BPE) */
  readonly kind: "spm" | "bpe";
  /** tokenizer.ggml.pre for BPE vocabularies ("" when absent) */
  readonly preTokenizer: string;
  /** Number of tokens in the vocabulary; valid ids are [0, nVocab). */
  readonly nVocab: number;
  /** BOS token id (tokenizer.ggml.bos_token_id, else the vocabulary type's default); undefined when there is none. */
  readonly bos: number | undefined;
  /** EOS token id (tokenizer.ggml.eos_token_id, else the vocabulary type's default); undefined when there is none. */
  readonly eos: number | undefined;
  /** End-of-turn token id (tokenizer.ggml.eot_token_id, else detected by text such as "<|eot_id|>"); undefined when there is none. */
  readonly eot?: number;
  /** Whether {@link encode} prepends BOS when `addSpecial` is on (tokenizer.ggml.add_bos_token, else the vocabulary type's default). */
  readonly addBos: boolean;
  /** Whether {@link encode} appends EOS when `addSpecial` is on (tokenizer.ggml.add_eos_token, default false). */
  readonly addEos: boolean;

  private readonly vocab: Vocab;
  private readonly bpe: BpeTokenizer | undefined;
  private readonly detok: Detokenizer;
  private readonly thread: TokenizerThread;
  private maxChars: number | undefined;

  private constructor(vocab: Vocab, metadata: () => Promise<Record<string, GgufMetaValue>>) {
    this.vocab = vocab;
    this.model = vocab.model;
    this.kind = vocab.kind;
    this.preTokenizer = vocab.preName;
    this.nVocab = vocab.size;
    this.bos = vocab.bos;
    this.eos = vocab.eos;
    this.eot = vocab.eot;
    this.addBos = vocab.addBos;
    this.addEos = vocab.addEos;
    this.bpe = vocab.kind === "bpe" ? new BpeTokenizer(vocab) : undefined;
    this.detok = new Detokenizer(vocab);
    this.thread = new TokenizerThread(metadata);
  }

  /**
   * Builds a tokenizer from GGUF metadata (as returned by readGguf). Throws LlmserveError
   * ERR_TOKENIZER when the vocabulary is missing, malformed, or of an unsupported kind.
   */
  static fromMetadata(md: Record<string, GgufMetaValue>): Tokenizer {
    if (md === null || typeof md !== "object") {
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        `Expected a GGUF metadata object but received ${md === null ? "null" : typeof md}`,
      );
    }
    return new Tokenizer(new Vocab(md), async () => md);
  }

  /** Reads the vocabulary of a GGUF file (tensor data is not read; only `tokenizer.*` and two `general.*` keys are converted). */
  static async fromGguf(path: string): Promise<Tokenizer> {
    const keyPrefix = ["tokenizer.", "general.name", "general.architecture"];
    const { metadata } = await readGguf(path, { keyPrefix });
    // The worker thread of encodeAsync reads the file again when it first starts (no copy is kept).
    return new Tokenizer(new Vocab(metadata), async () => (await readGguf(path, { keyPrefix })).metadata);
  }

  /**
   * The most UTF-16 code units of input text one token can stand for (the longest token text of the
   * vocabulary, at least 2): a text longer than `n * maxTokenChars` cannot encode to n tokens or fewer.
   */
  get maxTokenChars(): number {
    if (this.maxChars === undefined) {
      let m = 2;
      for (const t of this.vocab.texts) if (t.length > m) m = t.length;
      this.maxChars = m;
    }
    return this.maxChars;
  }

  /** Is this an end-of-generation token (EOS, EOT, EOM, <|im_end|>, ... as llama.cpp marks them)? */
  isEog(id: number): boolean {
    return this.vocab.eog.has(id);
  }

  /** All end-of-generation token ids. */
  get eogTokens(): number[] {
    return [...this.vocab.eog].sort((a, b) => a - b);
  }

  /** Is this a control token (BOS, EOS, chat markers, ...), i.e. one that decodes to "" by default? */
  isControl(id: number): boolean {
    return id >= 0 && id < this.nVocab && (this.vocab.attrs[id] & Attr.CONTROL) !== 0;
  }

  /** The token's text as stored in the vocabulary (e.g. "▁Hello", "Ġworld", "<0x0A>"). */
  tokenText(id: number): string {
    this.checkId(id);
    return this.vocab.texts[id];
  }

  /** The id of a token given its exact vocabulary text, if any. */
  tokenId(text: string): number | undefined {
    return this.vocab.textToId.get(text);
  }

  /**
   * Text -> token ids. BOS/EOS are added as the vocabulary asks unless `addSpecial` is false;
   * control-token texts are plain text unless `parseSpecial` is true. Throws ERR_INVALID_ARGUMENT
   * if `text` is not a string.
   * @example
   * const ids = tok.encode("Hello world");                               // [BOS, ...] if addBos
   * const raw = tok.encode("<|im_start|>user", { addSpecial: false, parseSpecial: true });
   */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== "string") {
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        `Expected a string for text but received ${text === null ? "null" : typeof text}`,
      );
    }
    const addSpecial = opts.addSpecial ?? true;
    const parseSpecial = opts.parseSpecial ?? false;
    const v = this.vocab;
    const out: number[] = [];
    if (addSpecial && v.addBos) {
      if (v.bos === undefined)
        throw new LlmserveError(
          "ERR_TOKENIZER",
          "the vocabulary asks for a BOS token but defines none (tokenizer.ggml.bos_token_id)",
        );
      out.push(v.bos);
    }
    const pieces = v.partition(toWellFormed(text), parseSpecial);
    if (this.kind === "spm") {
      // The first fragment gets the space prefix (like one after a special token), unless the text
      // continues another.
      let prevSpecial = opts.continuation !== true;
      for (const p of pieces) {
        if (typeof p === "number") {
          out.push(p);
          prevSpecial = true;
          continue;
        }
        const t = v.addSpacePrefix && prevSpecial ? ` ${p}` : p;
        spmTokenize(v, t.replaceAll(" ", "\u2581"), out);
        prevSpecial = false;
      }
    } else {
      for (const p of pieces) {
        if (typeof p === "number") out.push(p);
        else this.bpe!.tokenize(p, out);
      }
    }
    if (addSpecial && v.addEos) {
      if (v.eos === undefined)
        throw new LlmserveError(
          "ERR_TOKENIZER",
          "the vocabulary asks for an EOS token but defines none (tokenizer.ggml.eos_token_id)",
        );
      out.push(v.eos);
    }
    return out;
  }

  /**
   * {@link encode} without holding the event loop: texts of at least {@link OFFTHREAD_MIN_CHARS}
   * characters are encoded on a worker thread of this tokenizer (started on first use; it never
   * keeps the process alive while idle); shorter ones at once. The ids are the same.
   */
  async encodeAsync(
    text: string,
    opts: EncodeOptions & {
      /** Encode on the worker thread whatever the length (for many short texts that are long together). */
      offThread?: boolean;
    } = {},
  ): Promise<number[]> {
    if (typeof text !== "string" || (text.length < OFFTHREAD_MIN_CHARS && opts.offThread !== true))
      return this.encode(text, opts);
    return this.thread.encode(text, opts);
  }

  /** Stops the worker thread of {@link encodeAsync}, if one runs (a later call starts a new one). */
  async closeThread(): Promise<void> {
    await this.thread.close();
  }

  /** The raw bytes this token contributes to output text (control tokens: empty unless `special`). */
  tokenBytes(id: number, opts: { special?: boolean } = {}): Uint8Array {
    this.checkId(id);
    return this.detok.tokenBytes(id, opts.special ?? false);
  }

  /**
   * One token's text on its own, leading space included (e.g. " Hello" for "▁Hello"): for logprob
   * listings and debugging. A token holding part of a multi-byte character gives U+FFFD.
   */
  piece(id: number, opts: { special?: boolean } = {}): string {
    return utf8Decode(this.tokenBytes(id, opts));
  }

  /**
   * Token ids -> text. Control tokens give "" unless `special`; the SentencePiece space prefix of
   * the first word is removed (see {@link DecodeOptions}). Throws ERR_INVALID_ARGUMENT on an id
   * outside [0, nVocab).
   * @example
   * tok.decode(tok.encode("Hello world"));                  // "Hello world"
   * tok.decode([tok.eos!], { special: true });              // the EOS token's text, e.g. "</s>"
   */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    for (const id of ids) this.checkId(id);
    return this.detok.decode(ids, opts);
  }

  /** A streaming decoder: `push(id)` returns the newly completed text; `flush()` ends the stream. */
  createDecoder(opts: StreamOptions = {}): TokenDecoder {
    return this.detok.createDecoder(opts);
  }

  /** llama.cpp's BPE word split for a text (for debugging pre-tokenizers). */
  preTokenize(text: string): string[] {
    if (!this.bpe) return [text];
    return this.bpe.words(toWellFormed(text));
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.nVocab) {
      throw new LlmserveError("ERR_INVALID_ARGUMENT", `Expected a token id in [0, ${this.nVocab}) but received ${id}`);
    }
  }
}
