/**
 * The vocabulary as llama.cpp loads it from GGUF metadata (src/llama-vocab.cpp, llama_vocab::load):
 * token texts, scores, attributes, merges, special token ids, end-of-generation tokens, and the
 * partitioning of input text around special tokens.
 */
import { LlmserveError } from "../errors.js";
import type { GgufMetaValue } from "../native.js";
import { findPreTokenizer, type PreTokenizer } from "./pretokenize.js";
import { BYTE_TO_CHAR, isAsciiSpace, utf8Encode } from "./unicode.js";

/** GGUF `tokenizer.ggml.token_type` values. */
export const TokenType = {
  UNDEFINED: 0,
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** llama.cpp token attribute bits (llama_token_attr). */
export const Attr = {
  UNDEFINED: 0,
  UNKNOWN: 1 << 0,
  UNUSED: 1 << 1,
  NORMAL: 1 << 2,
  CONTROL: 1 << 3,
  USER_DEFINED: 1 << 4,
  BYTE: 1 << 5,
  NORMALIZED: 1 << 6,
  LSTRIP: 1 << 7,
  RSTRIP: 1 << 8,
  SINGLE_WORD: 1 << 9,
} as const;

const TYPE_TO_ATTR: Record<number, number> = {
  [TokenType.UNKNOWN]: Attr.UNKNOWN,
  [TokenType.UNUSED]: Attr.UNUSED,
  [TokenType.NORMAL]: Attr.NORMAL,
  [TokenType.CONTROL]: Attr.CONTROL,
  [TokenType.USER_DEFINED]: Attr.USER_DEFINED,
  [TokenType.BYTE]: Attr.BYTE,
};

export type VocabKind = "spm" | "bpe";

// texts llama.cpp recognises as special when the GGUF does not name them (order = our preference)
const EOT_TEXTS = [
  "<|eot_id|>",
  "<|im_end|>",
  "<|end|>",
  "<end_of_turn>",
  "<|endoftext|>",
  "<|end_of_text|>",
  "<EOT>",
  "_<EOT>",
  "[EOT]",
  "<｜end▁of▁sentence｜>",
  "<end_of_utterance>",
];
const EOM_TEXTS = ["<|eom_id|>"];
const FIM_PAD_TEXTS = ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS = ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_TEXTS = ["<|file_sep|>"];
const OTHER_FIM_TEXTS = [
  [
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
  ],
  [
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
  ],
  [
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
  ],
];
const EOG_TEXTS = [
  "<|eot_id|>",
  "<|im_end|>",
  "<|end|>",
  "<|return|>",
  "<|call|>",
  "<|flush|>",
  "<|calls|>",
  "<end_of_turn>",
  "<|endoftext|>",
  "</s>",
  "<|eom_id|>",
  "<EOT>",
  "_<EOT>",
  "[EOT]",
  "[EOS]",
  "<|end_of_text|>",
  "<end_of_utterance>",
  "<eos>",
  "<turn|>",
  "<|tool_response>",
  "<｜end▁of▁sentence｜>",
  "[e~[",
];

function fail(message: string): never {
  throw new LlmserveError("ERR_TOKENIZER", message);
}

function metaString(md: Record<string, GgufMetaValue>, key: string): string | undefined {
  const v = md[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string")
    fail(`GGUF key ${key} should be a string but is ${describe(v)}; the file may be corrupt — re-convert the model`);
  return v;
}

function metaBool(md: Record<string, GgufMetaValue>, key: string): boolean | undefined {
  const v = md[key];
  if (v === undefined) return undefined;
  if (typeof v === "boolean") return v;
  if (typeof v === "number" || typeof v === "bigint") return Number(v) !== 0;
  fail(`GGUF key ${key} should be a boolean but is ${describe(v)}`);
}

function metaInt(md: Record<string, GgufMetaValue>, key: string): number | undefined {
  const v = md[key];
  if (v === undefined) return undefined;
  if (typeof v === "bigint") return Number(v);
  if (typeof v === "number") {
    // a float token id (e.g. eos_token_id 2.5) would make every later request fail with an error
    // blaming the caller; reject the file here instead
    if (!Number.isInteger(v))
      fail(`GGUF key ${key} should be an integer but is ${v}; the file is corrupt — re-convert the model`);
    return v;
  }
  fail(`GGUF key ${key} should be an integer but is ${describe(v)}`);
}

function describe(v: unknown): string {
  if (v && typeof v === "object" && (v as { type?: string }).type === "array") {
    return `an array summary (length ${(v as { length: number }).length}); read the GGUF without maxArrayLength so the tokenizer arrays are loaded`;
  }
  return Array.isArray(v) ? "an array" : ArrayBuffer.isView(v) ? v.constructor.name : typeof v;
}

function metaNumbers(md: Record<string, GgufMetaValue>, key: string, n: number): ArrayLike<number> | undefined {
  const v = md[key];
  if (v === undefined) return undefined;
  let arr: ArrayLike<number>;
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
    if (v instanceof BigInt64Array || v instanceof BigUint64Array) arr = Array.from(v, Number);
    else arr = v as unknown as ArrayLike<number>;
  } else if (Array.isArray(v) && v.every((x) => typeof x === "number")) {
    arr = v as number[];
  } else {
    fail(`GGUF key ${key} should be a numeric array but is ${describe(v)}`);
  }
  if (arr.length < n)
    fail(`GGUF key ${key} has ${arr.length} entries for ${n} tokens; the file is inconsistent — re-convert the model`);
  return arr;
}

function metaStrings(md: Record<string, GgufMetaValue>, key: string): string[] | undefined {
  const v = md[key];
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string"))
    fail(`GGUF key ${key} should be an array of strings but is ${describe(v)}`);
  return v as string[];
}

interface TrieNode {
  next: Map<number, TrieNode>;
  ids: number[];
}

export class Vocab {
  readonly kind: VocabKind;
  readonly model: string;
  readonly preName: string;
  readonly pre: PreTokenizer | undefined;
  readonly texts: string[];
  readonly scores: Float32Array;
  readonly attrs: Uint16Array;
  readonly textToId = new Map<string, number>();
  /** BPE merges: "left right" -> rank (first occurrence wins, as in llama.cpp) */
  readonly mergeRanks = new Map<string, number>();

  bos: number | undefined;
  eos: number | undefined;
  eot: number | undefined;
  eom: number | undefined;
  unk: number | undefined;
  pad: number | undefined;
  readonly eog = new Set<number>();
  addBos: boolean;
  addEos: boolean;
  addSpacePrefix: boolean;
  cleanSpaces: boolean;
  ignoreMerges: boolean;
  /** ids of CONTROL / USER_DEFINED / UNKNOWN tokens, longest text first (llama.cpp's cache_special_tokens) */
  readonly specialTokens: number[] = [];
  /** trie over UTF-16 units of the special token texts (finds every occurrence in one pass) */
  private readonly specialTrie: TrieNode = { next: new Map(), ids: [] };

  constructor(md: Record<string, GgufMetaValue>) {
    const model = metaString(md, "tokenizer.ggml.model");
    if (model === undefined) {
      fail(
        "this GGUF file has no tokenizer (tokenizer.ggml.model is missing); use a model file that includes its vocabulary",
      );
    }
    this.model = model;
    this.preName = metaString(md, "tokenizer.ggml.pre") ?? "";
    if (model === "llama") {
      this.kind = "spm";
      this.pre = undefined;
    } else if (model === "gpt2") {
      this.kind = "bpe";
      const p = findPreTokenizer(this.preName);
      if ("error" in p) fail(p.error);
      this.pre = p;
    } else {
      const what: Record<string, string> = {
        bert: "WordPiece (BERT)",
        t5: "Unigram (T5)",
        rwkv: "RWKV",
        plamo2: "PLaMo-2",
        gemma4: "Gemma 4 BPE",
        no_vocab: "no vocabulary",
        none: "no vocabulary",
      };
      fail(
        `unsupported tokenizer model '${model}'${what[model] ? ` (${what[model]})` : ""} in tokenizer.ggml.model; ` +
          `llmserve supports 'llama' (SentencePiece) and 'gpt2' (byte-level BPE) vocabularies`,
      );
    }

    const texts = metaStrings(md, "tokenizer.ggml.tokens");
    if (!texts || texts.length === 0)
      fail("GGUF key tokenizer.ggml.tokens is missing or empty; the model file has no usable vocabulary");
    const n = texts.length;
    this.texts = texts.slice();
    const scores = metaNumbers(md, "tokenizer.ggml.scores", n);
    this.scores = new Float32Array(n);
    if (scores) for (let i = 0; i < n; i++) this.scores[i] = scores[i];
    const types = metaNumbers(md, "tokenizer.ggml.token_type", n);
    this.attrs = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      if (this.texts[i] === "") this.texts[i] = `[EMPTY_${i}]`;
      this.textToId.set(this.texts[i], i); // last wins, as llama.cpp's token_to_id
      this.attrs[i] = types ? (TYPE_TO_ATTR[types[i]] ?? Attr.UNDEFINED) : Attr.NORMAL;
    }

    if (this.kind === "bpe") {
      const merges = metaStrings(md, "tokenizer.ggml.merges");
      if (!merges)
        fail(
          "GGUF key tokenizer.ggml.merges is missing; a byte-level BPE vocabulary needs its merges — re-convert the model",
        );
      for (let i = 0; i < merges.length; i++) {
        const m = merges[i];
        const sp = m.indexOf(" ", 1);
        const key = sp < 0 ? " " : m; // llama.cpp stores a merge without a space as ("", "")
        if (!this.mergeRanks.has(key)) this.mergeRanks.set(key, i);
      }
    }

    // defaults by vocabulary type
    const p = this.pre;
    if (this.kind === "spm") {
      this.bos = 1;
      this.eos = 2;
      this.unk = 0;
      this.addBos = true;
      this.addEos = false;
      this.addSpacePrefix = true;
      this.cleanSpaces = false;
      this.ignoreMerges = false;
    } else {
      this.bos = p!.noDefaultBos ? undefined : 11;
      this.eos = 11;
      this.unk = undefined;
      this.addBos = p!.addBos ?? false;
      this.addEos = false;
      this.addSpacePrefix = false;
      this.cleanSpaces = p!.cleanSpaces ?? true;
      this.ignoreMerges = p!.ignoreMerges ?? false;
    }
    this.addSpacePrefix = metaBool(md, "tokenizer.ggml.add_space_prefix") ?? this.addSpacePrefix;

    // special token ids from metadata (out-of-range ids are ignored, as llama.cpp does)
    const inRange = (id: number | undefined) => (id !== undefined && id >= 0 && id < n ? id : undefined);
    this.bos = inRange(this.bos);
    this.eos = inRange(this.eos);
    this.unk = inRange(this.unk);
    const readId = (key: string, current: number | undefined) => {
      const v = metaInt(md, key);
      return v !== undefined && v >= 0 && v < n ? v : current;
    };
    this.bos = readId("tokenizer.ggml.bos_token_id", this.bos);
    this.eos = readId("tokenizer.ggml.eos_token_id", this.eos);
    this.eot = readId("tokenizer.ggml.eot_token_id", undefined);
    this.eom = readId("tokenizer.ggml.eom_token_id", undefined);
    this.unk = readId("tokenizer.ggml.unknown_token_id", this.unk);
    this.pad = readId("tokenizer.ggml.padding_token_id", undefined);
    let fimPad = readId("tokenizer.ggml.fim_pad_token_id", undefined);
    let fimRep = readId("tokenizer.ggml.fim_rep_token_id", undefined);
    let fimSep = readId("tokenizer.ggml.fim_sep_token_id", undefined);
    // the deprecated prefix/suffix/middle keys are read last in llama.cpp, so they win
    const fimOthers = [
      readId("tokenizer.ggml.prefix_token_id", readId("tokenizer.ggml.fim_pre_token_id", undefined)),
      readId("tokenizer.ggml.suffix_token_id", readId("tokenizer.ggml.fim_suf_token_id", undefined)),
      readId("tokenizer.ggml.middle_token_id", readId("tokenizer.ggml.fim_mid_token_id", undefined)),
    ];
    this.addBos = metaBool(md, "tokenizer.ggml.add_bos_token") ?? this.addBos;
    this.addEos = metaBool(md, "tokenizer.ggml.add_eos_token") ?? this.addEos;

    // auto-detection by text: missing EOT/EOM/FIM ids; such tokens are forced to CONTROL
    const markControl = (id: number) => (this.attrs[id] |= Attr.CONTROL);
    const detect = (current: number | undefined, candidates: string[]) => {
      if (current !== undefined) return current;
      for (const t of candidates) {
        const id = this.textToId.get(t);
        if (id !== undefined) {
          markControl(id);
          return id;
        }
      }
      return undefined;
    };
    this.eot = detect(this.eot, EOT_TEXTS);
    this.eom = detect(this.eom, EOM_TEXTS);
    for (let k = 0; k < 3; k++) fimOthers[k] = detect(fimOthers[k], OTHER_FIM_TEXTS[k]);
    fimPad = detect(fimPad, FIM_PAD_TEXTS);
    fimRep = detect(fimRep, FIM_REP_TEXTS);
    fimSep = detect(fimSep, FIM_SEP_TEXTS);

    // control tokens whose text mentions "unused" are unused
    for (let i = 0; i < n; i++) {
      if (this.attrs[i] & Attr.CONTROL && this.texts[i].includes("unused")) this.attrs[i] |= Attr.UNUSED;
    }

    // end-of-generation tokens
    for (const id of [fimPad, fimRep, fimSep]) if (id !== undefined) this.eog.add(id);
    for (const t of EOG_TEXTS) {
      const id = this.textToId.get(t);
      if (id !== undefined) {
        this.eog.add(id);
        markControl(id);
      }
    }
    for (const t of ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"]) {
      const id = this.textToId.get(t);
      if (id !== undefined) this.attrs[id] = Attr.USER_DEFINED; // gpt-oss: always rendered
    }
    for (const id of [this.eos, this.eot, this.eom]) if (id !== undefined) this.eog.add(id);
    const eogText = (t: string) => [...this.eog].find((id) => this.texts[id] === t);
    const end = eogText("<|end|>");
    const hasCall = eogText("<|call|>") !== undefined || eogText("<|calls|>") !== undefined;
    if (end !== undefined && hasCall && (eogText("<|return|>") !== undefined || eogText("<|flush|>") !== undefined)) {
      this.eog.delete(end); // o200k_harmony / solar-open: <|end|> is not end-of-generation
      this.attrs[end] = Attr.USER_DEFINED;
    }
    const s = eogText("</s>");
    if (s !== undefined && eogText("<|tool_response>") !== undefined) {
      this.eog.delete(s);
      this.attrs[s] = Attr.NORMAL;
    }

    // special tokens, longest first (ties by id, for determinism)
    for (let i = 0; i < n; i++) {
      if (this.attrs[i] & (Attr.CONTROL | Attr.USER_DEFINED | Attr.UNKNOWN)) this.specialTokens.push(i);
    }
    // llama.cpp sorts by UTF-8 length, longest first (ties by id here, for determinism)
    const byteLen = new Map(this.specialTokens.map((id) => [id, utf8Encode(this.texts[id]).length]));
    this.specialTokens.sort((a, b) => byteLen.get(b)! - byteLen.get(a)! || a - b);
    for (const id of this.specialTokens) {
      const t = this.texts[id];
      let node = this.specialTrie;
      for (let i = 0; i < t.length; i++) {
        const c = t.charCodeAt(i);
        let child = node.next.get(c);
        if (!child) node.next.set(c, (child = { next: new Map(), ids: [] }));
        node = child;
      }
      node.ids.push(id);
    }

    // per-model attribute fixes (llama.cpp sets these by model / tokenizer name)
    const name = (metaString(md, "general.name") ?? "").toLowerCase();
    const arch = metaString(md, "general.architecture") ?? "";
    const setAttr = (id: number | undefined, bit: number, on: boolean) => {
      if (id !== undefined) this.attrs[id] = on ? this.attrs[id] | bit : this.attrs[id] & ~bit;
    };
    if (
      ["jina-v2-de", "jina-v2-es", "jina-v2-code"].some((x) => this.preName.includes(x)) ||
      ["nomic-bert-moe", "jina-bert-v3"].some((x) => arch.includes(x))
    ) {
      setAttr(this.textToId.get("<mask>"), Attr.LSTRIP, true);
    } else if (name.includes("phi-3") || name.includes("phi3")) {
      for (const id of this.specialTokens) setAttr(id, Attr.RSTRIP, true);
      setAttr(this.textToId.get("</s>"), Attr.RSTRIP, true);
      for (const t of ["<unk>", "<s>", "<|endoftext|>"]) setAttr(this.textToId.get(t), Attr.RSTRIP, false);
    } else if (name.includes("modern-bert")) {
      setAttr(this.textToId.get("[MASK]"), Attr.LSTRIP, true);
    }
  }

  get size(): number {
    return this.texts.length;
  }

  /**
   * The token for one raw byte: SentencePiece "<0xNN>" (else the byte's own one-character text),
   * byte-level BPE the byte's mapped character. `undefined` when the vocabulary has none.
   */
  byteToken(b: number): number | undefined {
    if (this.kind === "bpe") return this.textToId.get(BYTE_TO_CHAR[b]);
    const id = this.textToId.get(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    if (id !== undefined || b >= 0x80) return id;
    return this.textToId.get(String.fromCharCode(b));
  }

  /**
   * Splits text around special tokens (llama.cpp's tokenizer_st_partition). CONTROL and UNKNOWN
   * tokens are recognised only when `parseSpecial`; USER_DEFINED tokens always are. Returns
   * alternating pieces: strings (raw text) and numbers (token ids).
   */
  partition(text: string, parseSpecial: boolean): Array<string | number> {
    if (text.length === 0) return [];
    // occurrences of each special token anywhere in the text (tokens absent from it cannot match)
    const occurrences = new Map<number, number[]>();
    for (let i = 0; i < text.length; i++) {
      let node = this.specialTrie.next.get(text.charCodeAt(i));
      for (let j = i + 1; node; j++) {
        for (const id of node.ids) {
          if (!parseSpecial && this.attrs[id] & (Attr.CONTROL | Attr.UNKNOWN)) continue;
          let occ = occurrences.get(id);
          if (!occ) occurrences.set(id, (occ = []));
          occ.push(i);
        }
        node = j < text.length ? node.next.get(text.charCodeAt(j)) : undefined;
      }
    }
    if (occurrences.size === 0) return [text];
    // fragments: raw text as [start, end) pairs into `text`, or a token as [-1, id];
    // each token in priority order splits every remaining raw fragment at its leftmost matches
    let frags: number[] = [0, text.length];
    for (const id of this.specialTokens) {
      const occ = occurrences.get(id);
      if (!occ) continue;
      const len = this.texts[id].length;
      const attr = this.attrs[id];
      const next: number[] = [];
      let k = 0; // index into occ (fragments are in text order)
      for (let f = 0; f < frags.length; f += 2) {
        let start = frags[f];
        const end = frags[f + 1];
        if (start < 0) {
          next.push(start, end);
          continue;
        }
        for (;;) {
          while (k < occ.length && occ[k] < start) k++;
          if (k >= occ.length || occ[k] + len > end) {
            if (end > start) next.push(start, end);
            break;
          }
          const at = occ[k];
          let leftEnd = at;
          if (attr & Attr.LSTRIP) while (leftEnd > start && isAsciiSpace(text.charCodeAt(leftEnd - 1))) leftEnd--;
          if (leftEnd > start) next.push(start, leftEnd);
          next.push(-1, id);
          start = at + len;
          if (attr & Attr.RSTRIP) while (start < end && isAsciiSpace(text.charCodeAt(start))) start++;
          if (start >= end) break;
        }
      }
      frags = next;
    }
    const out: Array<string | number> = [];
    for (let f = 0; f < frags.length; f += 2)
      out.push(frags[f] < 0 ? frags[f + 1] : text.slice(frags[f], frags[f + 1]));
    return out;
  }
}
