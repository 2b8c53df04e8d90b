/**
 * Token ids back to text: the bytes each token contributes (llama.cpp's token_to_piece), whole
 * sequence decoding, and a streaming decoder that never emits half a UTF-8 character.
 */
import { byteLevelDecode, utf8Decode, utf8Encode } from "./unicode.js";
import { Attr, type Vocab } from "./vocab.js";

const EMPTY = new Uint8Array(0);
const SPACE = 0x20;

export class Detokenizer {
  private readonly plain: Array<Uint8Array | undefined>;
  private readonly withSpecial: Array<Uint8Array | undefined>;

  constructor(private readonly vocab: Vocab) {
    this.plain = new Array(vocab.size);
    this.withSpecial = new Array(vocab.size);
  }

  /**
   * The raw bytes token `id` contributes to output text. Control and unknown tokens give nothing
   * unless `special`; unused/undefined tokens never give anything (as llama.cpp).
   */
  tokenBytes(id: number, special = false): Uint8Array {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocab.size) return EMPTY;
    const cache = special ? this.withSpecial : this.plain;
    let b = cache[id];
    if (b === undefined) cache[id] = b = this.compute(id, special);
    return b;
  }

  private compute(id: number, special: boolean): Uint8Array {
    const attr = this.vocab.attrs[id];
    const text = this.vocab.texts[id];
    if (attr & (Attr.CONTROL | Attr.UNKNOWN)) return special ? utf8Encode(text) : EMPTY;
    if (attr & Attr.USER_DEFINED) return utf8Encode(text);
    if (attr & Attr.NORMAL) {
      return this.vocab.kind === "spm" ? utf8Encode(text.replaceAll("\u2581", " ")) : byteLevelDecode(text);
    }
    if (attr & Attr.BYTE) {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(text);
      return m ? Uint8Array.of(parseInt(m[1], 16)) : EMPTY;
    }
    return EMPTY;
  }

  /** Concatenated bytes of a sequence (see DecodeOptions). */
  bytes(ids: readonly number[], opts: DecodeOptions = {}): Uint8Array {
    const special = opts.special ?? false;
    let strip = (opts.stripLeadingSpace ?? true) && this.vocab.addSpacePrefix;
    const parts: Uint8Array[] = [];
    let total = 0;
    for (const id of ids) {
      let b = this.tokenBytes(id, special);
      if (b.length === 0) continue;
      if (strip) {
        if (b[0] === SPACE) b = b.subarray(1);
        strip = false;
      }
      parts.push(b);
      total += b.length;
    }
    const out = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return opts.cleanSpaces && this.vocab.cleanSpaces ? cleanSpaces(out) : out;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    return utf8Decode(this.bytes(ids, opts));
  }

  createDecoder(opts: StreamOptions = {}): TokenDecoder {
    return new TokenDecoder(this, this.vocab, opts);
  }
}

/** Options of {@link Tokenizer.decode}. */
export interface DecodeOptions {
  /** render control/unknown tokens (e.g. "<|im_end|>") as their text; default false */
  special?: boolean;
  /**
   * SentencePiece vocabularies with add_space_prefix put a "▁" before the first word at encode
   * time; remove that one space from the first token that produces text (a BOS before it produces
   * none unless `special`). Default true; no effect when the vocabulary has no space prefix.
   */
  stripLeadingSpace?: boolean;
  /**
   * apply llama.cpp's detokenizer clean-up (" ," -> ",", " 's" -> "'s", ...) for vocabularies that
   * ask for it (most byte-level BPE ones). Default false: the text is the exact concatenation of
   * the tokens, which keeps decode(encode(x)) === x and matches the streaming decoder.
   */
  cleanSpaces?: boolean;
}

/** Options of {@link Tokenizer.createDecoder}. */
export interface StreamOptions {
  /** render control/unknown tokens (e.g. "<|im_end|>") as their text; default false */
  special?: boolean;
  /**
   * Remove the space prefix of the first text token. Default: only when the stream starts with
   * BOS (a whole sequence); a stream of generated tokens continues earlier text and keeps it.
   */
  stripLeadingSpace?: boolean;
}

/** Streaming decoder: push ids, get text; a character split across tokens is held back until complete. */
export class TokenDecoder {
  private decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  private strip: boolean | undefined;
  private started = false;

  constructor(
    private readonly detok: Detokenizer,
    private readonly vocab: Vocab,
    private readonly opts: StreamOptions,
  ) {
    this.strip = vocab.addSpacePrefix ? opts.stripLeadingSpace : false;
  }

  /** Text completed by this token (possibly "", when it ends inside a multi-byte character). */
  push(id: number): string {
    if (!this.started) {
      this.started = true;
      if (this.strip === undefined) this.strip = id === this.vocab.bos;
    }
    let b = this.detok.tokenBytes(id, this.opts.special ?? false);
    if (b.length === 0) return "";
    if (this.strip) {
      if (b[0] === SPACE) b = b.subarray(1);
      this.strip = false;
    }
    return this.decoder.decode(b, { stream: true });
  }

  /** Ends the stream: returns held-back bytes (an incomplete character becomes U+FFFD) and resets. */
  flush(): string {
    const s = this.decoder.decode();
    this.decoder = new TextDecoder("utf-8", { ignoreBOM: true });
    this.started = false;
    this.strip = this.vocab.addSpacePrefix ? this.opts.stripLeadingSpace : false;
    return s;
  }
}

/** llama.cpp's clean_spaces passes (llama_vocab::impl::detokenize), on UTF-8 bytes. */
function cleanSpaces(input: Uint8Array): Uint8Array {
  const t = input.slice();
  const Q = 0x3f,
    EX = 0x21,
    DOT = 0x2e,
    COMMA = 0x2c,
    AP = 0x27;
  // pass 1: " ?", " !", " .", " ," lose the space
  let n = t.length;
  let total = n ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i];
    if (t[i - 1] === SPACE && (x === Q || x === EX || x === DOT || x === COMMA)) total--;
    t[total++] = x;
  }
  // pass 2: a single apostrophe between spaces loses both spaces
  n = total;
  total = n ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i];
    if (x === AP && i + 1 < n && t[i - 1] === SPACE && t[i + 1] === SPACE) {
      total--;
      t[++i] = 0;
    }
    t[total++] = x;
  }
  // pass 3: " 's", " 'm", " 're", " 've" lose the space
  n = total;
  total = n ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i];
    if (t[i - 1] === SPACE && x === AP && i + 1 < n) {
      const x1 = t[i + 1];
      if (x1 === 0x73 /* s */ || x1 === 0x6d /* m */) total--;
      else if (i + 2 < n) {
        const x2 = t[i + 2];
        if ((x1 === 0x72 /* r */ && x2 === 0x65) || (x1 === 0x76 /* v */ && x2 === 0x65)) total--;
      }
    }
    t[total++] = x;
  }
  return t.subarray(0, total);
}
