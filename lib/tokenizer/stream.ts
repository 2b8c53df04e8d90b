/**
 * Tokenizing a text that arrives in pieces (a file of any size) into exactly the ids that
 * tokenizing it whole would give, without ever holding the whole text: the text is cut into parts
 * at line breaks that follow a letter ("word\n..." is cut before the "\n"), and each part is
 * encoded on its own (on the tokenizer's worker thread when long), the parts after the first as
 * continuations (no SentencePiece space prefix).
 *
 * Why such a cut changes nothing: llama.cpp's byte-level BPE splits text into words with its
 * pre-tokenizer regexes before merging, and every supported regex but SuperBPE's ends a match at
 * a letter that a line break follows (letters, contractions and `[^\r\n\p{L}\p{N}]?\p{L}+` never
 * take a "\r" or "\n", whitespace and punctuation runs never take a letter) and has no
 * look-behind, so the words are the same on both sides of the cut (test/unit/tokenizer/stream.test.ts
 * checks each). Merges (BPE) and SentencePiece's bigram merges could still cross the cut through a
 * vocabulary token holding a letter followed by a line break (intermediate merges are vocabulary
 * tokens too), so a vocabulary with such a token, or a pre-tokenizer that keeps words across line
 * breaks (SuperBPE), is never cut: it is tokenized whole (see {@link streamCutsAreSafe}).
 */
import { LlmserveError } from "../errors.js";
import type { Tokenizer } from "./index.js";
import { findPreTokenizer } from "./pretokenize.js";

/** A part is cut off once this many characters are buffered (tests pass smaller values). */
export const STREAM_PART_CHARS = 1 << 20;

/** Buffering more than this without a place to cut is refused rather than running out of string length. */
export const STREAM_MAX_UNCUT_CHARS = 1 << 27;

const LETTER_BREAK = /[\p{L}\uFFFD][\r\n]/u; // U+FFFD: part of a letter's bytes
const LETTER = /^\p{L}$/u;

/** Pre-tokenizers that keep words across line breaks (whose word boundaries a cut would move). */
const UNCUTTABLE_PRE_TOKENIZERS = new Set(["superbpe"]);

/** Whether a BPE pre-tokenizer (tokenizer.ggml.pre) ends every word at a letter that a line break follows. */
export function preTokenizerCutsAtLineBreaks(name: string): boolean {
  const p = findPreTokenizer(name);
  return !("error" in p) && !UNCUTTABLE_PRE_TOKENIZERS.has(p.type);
}

const safety = new WeakMap<Tokenizer, boolean>();

/**
 * Whether tokenization may be cut before line breaks that follow a letter: the pre-tokenizer (BPE)
 * ends words there, and no vocabulary token's text (as bytes, so byte-level BPE's "Ċ" reads as
 * "\n") holds a letter followed by a line break.
 */
export function streamCutsAreSafe(tokenizer: Tokenizer): boolean {
  let ok = safety.get(tokenizer);
  if (ok !== undefined) return ok;
  ok = tokenizer.kind !== "bpe" || preTokenizerCutsAtLineBreaks(tokenizer.preTokenizer);
  const utf8 = new TextDecoder("utf-8");
  for (let id = 0; ok && id < tokenizer.nVocab; id++)
    if (LETTER_BREAK.test(utf8.decode(tokenizer.tokenBytes(id, { special: true })))) ok = false;
  safety.set(tokenizer, ok);
  return ok;
}

/** The last index p > 0 of `text` where a "\r" or "\n" follows a letter, or -1. */
export function lastCut(text: string): number {
  for (let p = text.length - 1; p > 0; p--) {
    const c = text.charCodeAt(p);
    if (c !== 10 && c !== 13) continue;
    // The code point before p (a letter outside the BMP is a surrogate pair).
    const low = text.charCodeAt(p - 1);
    const start = low >= 0xdc00 && low <= 0xdfff && p >= 2 ? p - 2 : p - 1;
    if (LETTER.test(String.fromCodePoint(text.codePointAt(start) ?? 0))) return p;
  }
  return -1;
}

/** A growable Int32Array of token ids. */
class IdBuffer {
  private buf = new Int32Array(1 << 16);
  length = 0;
  push(ids: ArrayLike<number>): void {
    if (this.length + ids.length > this.buf.length) {
      let cap = this.buf.length * 2;
      while (cap < this.length + ids.length) cap *= 2;
      const next = new Int32Array(cap);
      next.set(this.buf.subarray(0, this.length));
      this.buf = next;
    }
    this.buf.set(ids, this.length);
    this.length += ids.length;
  }
  result(): Int32Array {
    return this.buf.slice(0, this.length);
  }
}

/** Options of {@link encodeStream}. */
export interface EncodeStreamOptions {
  /** Add BOS / EOS as the vocabulary asks (default true), as {@link Tokenizer.encode}. */
  addSpecial?: boolean;
  /** Stops reading and encoding (the promise rejects with ERR_CANCELLED). */
  signal?: AbortSignal;
  /** Called after each part is encoded with the ids so far. */
  onPart?: (tokens: number) => void;
  /** Characters buffered before a part is cut off (default 2^20). */
  partChars?: number;
}

function checkAbort(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new LlmserveError("ERR_CANCELLED", "The tokenization was aborted.");
}

/**
 * Encodes the concatenation of `source`'s pieces as {@link Tokenizer.encode} would encode it whole
 * (special-token texts are not parsed, as llama-perplexity's tokenization), holding at most about
 * `partChars` characters (more only while no line break follows a letter).
 */
export async function encodeStream(
  tokenizer: Tokenizer,
  source: AsyncIterable<string> | Iterable<string>,
  opts: EncodeStreamOptions = {},
): Promise<Int32Array> {
  const partChars = opts.partChars ?? STREAM_PART_CHARS;
  const addSpecial = opts.addSpecial ?? true;
  const cuts = streamCutsAreSafe(tokenizer);
  const out = new IdBuffer();
  if (addSpecial && tokenizer.addBos) {
    if (tokenizer.bos === undefined)
      throw new LlmserveError("ERR_TOKENIZER", "the vocabulary asks for a BOS token but defines none");
    out.push([tokenizer.bos]);
  }
  let pending = "";
  let first = true;
  const encode = async (text: string) => {
    checkAbort(opts.signal);
    const ids = await tokenizer.encodeAsync(text, { addSpecial: false, continuation: !first });
    first = false;
    out.push(ids);
    opts.onPart?.(out.length);
  };
  for await (const piece of source) {
    checkAbort(opts.signal);
    pending += piece;
    if (pending.length < partChars || !cuts) {
      if (pending.length > STREAM_MAX_UNCUT_CHARS)
        throw new LlmserveError(
          "ERR_INVALID_ARGUMENT",
          `The text has more than ${STREAM_MAX_UNCUT_CHARS} characters without a line break after a letter${cuts ? "" : " (this vocabulary is tokenized whole)"}; streamed text is tokenized between lines. Split it into lines or pass a shorter text.`,
        );
      continue;
    }
    const p = lastCut(pending);
    if (p <= 0) continue;
    const part = pending.slice(0, p);
    pending = pending.slice(p);
    await encode(part);
  }
  if (pending.length > 0 || first) await encode(pending);
  if (addSpecial && tokenizer.addEos) {
    if (tokenizer.eos === undefined)
      throw new LlmserveError("ERR_TOKENIZER", "the vocabulary asks for an EOS token but defines none");
    out.push([tokenizer.eos]);
  }
  return out.result();
}
