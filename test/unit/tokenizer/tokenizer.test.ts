/**
 * Tokenizer behaviour on small in-memory vocabularies (no fixtures, no native addon):
 * SentencePiece merging by score and byte fallback, byte-level BPE merging by rank, BOS/EOS,
 * special-token parsing, end-of-generation tokens, decoding and streaming, and the errors.
 */
import { describe, expect, it } from "vitest";
import { LlmserveError } from "../../../lib/errors.js";
import type { GgufMetaValue } from "../../../lib/native.js";
import { Tokenizer } from "../../../lib/tokenizer/index.js";
import { BYTE_TO_CHAR } from "../../../lib/tokenizer/unicode.js";

type Md = Record<string, GgufMetaValue>;
const NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  BYTE = 6;

/** A tiny SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, a few scored pieces. */
function spmMetadata(extra: Md = {}, more: Array<[string, number, number]> = []): Md {
  const tokens = ["<unk>", "<s>", "</s>"];
  const types = [UNKNOWN, CONTROL, CONTROL];
  const scores = [0, 0, 0];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(BYTE);
    scores.push(0);
  }
  const pieces: Array<[string, number, number]> = [
    ["▁", -1, NORMAL],
    ["H", -5, NORMAL],
    ["e", -5, NORMAL],
    ["l", -5, NORMAL],
    ["o", -5, NORMAL],
    ["w", -5, NORMAL],
    ["r", -5, NORMAL],
    ["d", -5, NORMAL],
    ["▁H", -3, NORMAL],
    ["ll", -2, NORMAL],
    ["llo", -1.5, NORMAL],
    ["▁He", -2.5, NORMAL],
    ["▁Hello", -1, NORMAL],
    ["▁w", -3, NORMAL],
    ["or", -3, NORMAL],
    ["▁wor", -2, NORMAL],
    ["ld", -2.5, NORMAL],
    ["▁world", -1.2, NORMAL],
    ["<|im_start|>", 0, CONTROL],
    ["<|im_end|>", 0, CONTROL],
    ["<|tool|>", 0, USER_DEFINED],
    ...more,
  ];
  for (const [t, s, ty] of pieces) {
    tokens.push(t);
    scores.push(s);
    types.push(ty);
  }
  return {
    "general.architecture": "llama",
    "tokenizer.ggml.model": "llama",
    "tokenizer.ggml.tokens": tokens,
    "tokenizer.ggml.scores": Float32Array.from(scores),
    "tokenizer.ggml.token_type": Int32Array.from(types),
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.eos_token_id": 2,
    "tokenizer.ggml.unknown_token_id": 0,
    ...extra,
  };
}

/** A tiny byte-level BPE vocabulary: the 256 byte characters plus a few merges. */
function bpeMetadata(extra: Md = {}): Md {
  const tokens = [...BYTE_TO_CHAR];
  const merges = ["Ġ t", "l l", "e ll", "h ell", "hell o", "h e", "Ġt he", "i n", "Ġ in"];
  for (const m of merges) tokens.push(m.replace(" ", ""));
  tokens.push("<|endoftext|>", "<|im_start|>");
  const types = tokens.map((t) => (t.startsWith("<|") ? CONTROL : NORMAL));
  return {
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.pre": "gpt-2",
    "tokenizer.ggml.tokens": tokens,
    "tokenizer.ggml.token_type": Int32Array.from(types),
    "tokenizer.ggml.merges": merges,
    "tokenizer.ggml.bos_token_id": tokens.indexOf("<|endoftext|>"),
    "tokenizer.ggml.eos_token_id": tokens.indexOf("<|endoftext|>"),
    ...extra,
  };
}

function expectTokenizerError(md: Md, re: RegExp) {
  let err: unknown;
  try {
    Tokenizer.fromMetadata(md);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(LlmserveError);
  expect((err as LlmserveError).code).toBe("ERR_TOKENIZER");
  expect((err as Error).message).toMatch(re);
}

describe("SentencePiece", () => {
  const tok = Tokenizer.fromMetadata(spmMetadata());
  const id = (t: string) => tok.tokenId(t)!;

  it("merges the highest-scoring pairs and prefixes a space", () => {
    expect(tok.kind).toBe("spm");
    expect(tok.model).toBe("llama");
    expect(tok.encode("Hello world", { addSpecial: false })).toEqual([id("▁Hello"), id("▁world")]);
    // "ll" (-2) merges first, then "▁H" (-3), then "▁He" (-2.5); "▁Hell" is not a piece
    expect(tok.encode("Hell", { addSpecial: false })).toEqual([id("▁He"), id("ll")]);
  });

  it("falls back to byte tokens for characters without a piece", () => {
    expect(tok.encode("é", { addSpecial: false })).toEqual([id("▁"), id("<0xC3>"), id("<0xA9>")]);
    expect(tok.encode("🦙", { addSpecial: false })).toEqual([
      id("▁"),
      id("<0xF0>"),
      id("<0x9F>"),
      id("<0xA6>"),
      id("<0x99>"),
    ]);
  });

  it("adds BOS (and EOS when asked) with addSpecial", () => {
    expect(tok.addBos).toBe(true);
    expect(tok.addEos).toBe(false);
    expect(tok.encode("Hello")).toEqual([1, id("▁Hello")]);
    expect(tok.encode("Hello", { addSpecial: false })).toEqual([id("▁Hello")]);
    expect(tok.encode("", { addSpecial: true })).toEqual([1]);
    expect(tok.encode("", { addSpecial: false })).toEqual([]);
    const both = Tokenizer.fromMetadata(
      spmMetadata({ "tokenizer.ggml.add_eos_token": true, "tokenizer.ggml.add_bos_token": false }),
    );
    expect(both.encode("Hello")).toEqual([id("▁Hello"), 2]);
  });

  it("honours add_space_prefix = false", () => {
    const t = Tokenizer.fromMetadata(spmMetadata({ "tokenizer.ggml.add_space_prefix": false }));
    expect(t.encode("Hello", { addSpecial: false })).toEqual([id("H"), id("e"), id("llo")]);
    expect(t.decode(t.encode("Hello"))).toBe("Hello");
  });

  it("parses control tokens only with parseSpecial, user-defined tokens always", () => {
    const text = "<|im_start|>Hello<|tool|>world";
    const parsed = tok.encode(text, { addSpecial: false, parseSpecial: true });
    // as llama.cpp: text after a special token gets the space prefix again
    expect(parsed).toEqual([id("<|im_start|>"), id("▁Hello"), id("<|tool|>"), id("▁world")]);
    const plain = tok.encode(text, { addSpecial: false, parseSpecial: false });
    expect(plain).not.toContain(id("<|im_start|>"));
    expect(plain).toContain(id("<|tool|>"));
    // llama.cpp re-adds the space prefix after any special token, so the text after one gains a space
    expect(tok.decode(plain)).toBe("<|im_start|>Hello<|tool|> world");
    expect(tok.encode("<s>", { addSpecial: false, parseSpecial: true })).toEqual([1]);
  });

  it("decodes: pieces with ▁ as spaces, control tokens hidden unless special", () => {
    const ids = [1, id("▁Hello"), id("▁world"), id("<|im_end|>"), 2];
    expect(tok.decode(ids)).toBe("Hello world");
    expect(tok.decode(ids, { special: true })).toBe("<s> Hello world<|im_end|></s>");
    expect(tok.decode([id("▁Hello")], { stripLeadingSpace: false })).toBe(" Hello");
    expect(tok.piece(id("▁world"))).toBe(" world");
    expect(Array.from(tok.tokenBytes(id("<0xC3>")))).toEqual([0xc3]);
    expect(Array.from(tok.tokenBytes(1))).toEqual([]);
    expect(new TextDecoder().decode(tok.tokenBytes(1, { special: true }))).toBe("<s>");
    expect(tok.tokenText(id("▁Hello"))).toBe("▁Hello");
  });

  it("streams a character split across byte tokens without U+FFFD", () => {
    const ids = tok.encode("Hello 🦙é", { addSpecial: true });
    const d = tok.createDecoder();
    const outs = ids.map((i) => d.push(i));
    outs.push(d.flush());
    expect(outs.join("")).toBe("Hello 🦙é");
    expect(outs.join("")).not.toContain("\uFFFD");
    const llama = ids.indexOf(id("<0xF0>"));
    expect(outs.slice(llama, llama + 3)).toEqual(["", "", ""]);
    expect(outs[llama + 3]).toBe("🦙");
  });

  it("streaming keeps the leading space of a continuation (no BOS first)", () => {
    const d = tok.createDecoder();
    expect(d.push(id("▁world"))).toBe(" world");
    const s = tok.createDecoder({ stripLeadingSpace: true });
    expect(s.push(id("▁world"))).toBe("world");
    const b = tok.createDecoder();
    expect(b.push(1) + b.push(id("▁Hello")) + b.push(id("▁world"))).toBe("Hello world");
  });

  it("flush emits an incomplete character as U+FFFD and resets", () => {
    const d = tok.createDecoder();
    expect(d.push(id("<0xF0>"))).toBe("");
    expect(d.flush()).toBe("\uFFFD");
    expect(d.push(id("<0xC3>")) + d.push(id("<0xA9>"))).toBe("é");
  });

  it("marks EOS and auto-detected end-of-turn tokens as end of generation", () => {
    expect(tok.eos).toBe(2);
    expect(tok.isEog(2)).toBe(true);
    expect(tok.eot).toBe(id("<|im_end|>"));
    expect(tok.isEog(id("<|im_end|>"))).toBe(true);
    expect(tok.isEog(1)).toBe(false);
    expect(tok.isEog(id("▁Hello"))).toBe(false);
    expect(tok.eogTokens).toEqual([2, id("<|im_end|>")].sort((a, b) => a - b));
    const withEot = Tokenizer.fromMetadata(spmMetadata({ "tokenizer.ggml.eot_token_id": 1 }));
    expect(withEot.eot).toBe(1);
    expect(withEot.isEog(1)).toBe(true);
  });

  it("rejects out-of-range ids when decoding", () => {
    expect(() => tok.decode([tok.nVocab])).toThrow(/token id/);
    expect(() => tok.tokenBytes(-1)).toThrow(LlmserveError);
  });

  it("maps lone surrogates to U+FFFD like a UTF-8 conversion would", () => {
    const a = tok.encode("x\uD800y", { addSpecial: false });
    expect(a).toEqual(tok.encode("x\uFFFDy", { addSpecial: false }));
  });
});

describe("byte-level BPE", () => {
  const tok = Tokenizer.fromMetadata(bpeMetadata());
  const id = (t: string) => tok.tokenId(t)!;

  it("merges by rank within pre-tokenized words", () => {
    expect(tok.kind).toBe("bpe");
    expect(tok.encode(" the", { addSpecial: false })).toEqual([id("Ġthe")]);
    expect(tok.encode("hello the", { addSpecial: false })).toEqual([id("hello"), id("Ġthe")]);
    // "Ġ in" can only apply after "i n" has made "in"
    expect(tok.encode(" in", { addSpecial: false })).toEqual([id("Ġin")]);
    // "h e" (rank 5) wins over nothing else in "the"; "t he" is not a merge; "!" is its own word
    expect(tok.encode("the!", { addSpecial: false })).toEqual([id("t"), id("he"), id("!")]);
    // "hello": "l l" (rank 1) first, then "e ll", "h ell", "hell o"; "h e" (rank 5) never applies
    expect(tok.encode("hello", { addSpecial: false })).toEqual([id("hello")]);
  });

  it("encodes any byte through the GPT-2 byte mapping and decodes it back", () => {
    const text = "naïve 日本 🦙\n\t\u0000";
    const ids = tok.encode(text, { addSpecial: false });
    expect(ids.every((i) => i < 256 + 9)).toBe(true);
    expect(tok.decode(ids)).toBe(text);
    expect(Array.from(tok.tokenBytes(id("Ġ")))).toEqual([0x20]);
  });

  it("does not add BOS unless the vocabulary asks", () => {
    expect(tok.addBos).toBe(false);
    expect(tok.encode("the")).toEqual(tok.encode("the", { addSpecial: false }));
    const withBos = Tokenizer.fromMetadata(bpeMetadata({ "tokenizer.ggml.add_bos_token": true }));
    expect(withBos.encode("the")[0]).toBe(withBos.bos);
  });

  it("parses control tokens only with parseSpecial", () => {
    const eot = id("<|endoftext|>");
    expect(tok.encode("a<|endoftext|>b", { addSpecial: false, parseSpecial: true })).toEqual([id("a"), eot, id("b")]);
    const plain = tok.encode("a<|endoftext|>b", { addSpecial: false });
    expect(plain).not.toContain(eot);
    expect(tok.decode(plain)).toBe("a<|endoftext|>b");
    expect(tok.isEog(eot)).toBe(true);
  });

  it("streams a multi-byte character split across tokens", () => {
    const ids = tok.encode("日", { addSpecial: false });
    expect(ids.length).toBe(3);
    const d = tok.createDecoder();
    expect(ids.map((i) => d.push(i))).toEqual(["", "", "日"]);
    expect(d.flush()).toBe("");
  });

  it("applies llama.cpp's space clean-up only when asked", () => {
    const ids = tok.encode("a , b 's", { addSpecial: false });
    expect(tok.decode(ids)).toBe("a , b 's");
    expect(tok.decode(ids, { cleanSpaces: true })).toBe("a, b's");
  });

  it("uses the llama3 pre-tokenizer rules (ignore_merges, BOS)", () => {
    const t = Tokenizer.fromMetadata(bpeMetadata({ "tokenizer.ggml.pre": "llama-bpe" }));
    expect(t.addBos).toBe(true);
    expect(t.preTokenize("Hello world 12345")).toEqual(["Hello", " world", " ", "123", "45"]);
    const g = Tokenizer.fromMetadata(bpeMetadata({ "tokenizer.ggml.pre": "gpt-2" }));
    expect(g.preTokenize("Hello world 12345")).toEqual(["Hello", " world", " 12345"]);
  });
});

describe("byte-level BPE: whole-word tokens and missing pieces", () => {
  /** bpeMetadata plus tokens (normal ones) and merges, minus the tokens in `drop`. */
  function bpeWith(extra: Md, tokens: string[], merges: string[], drop: string[] = []): Tokenizer {
    const md = bpeMetadata(extra);
    const all = [...(md["tokenizer.ggml.tokens"] as string[]), ...tokens].filter((t) => !drop.includes(t));
    return Tokenizer.fromMetadata({
      ...md,
      "tokenizer.ggml.tokens": all,
      "tokenizer.ggml.token_type": Int32Array.from(all.map((t) => (t.startsWith("<|") ? CONTROL : NORMAL))),
      "tokenizer.ggml.merges": [...(md["tokenizer.ggml.merges"] as string[]), ...merges],
      "tokenizer.ggml.bos_token_id": all.indexOf("<|endoftext|>"),
      "tokenizer.ggml.eos_token_id": all.indexOf("<|endoftext|>"),
    });
  }

  it("llama3 (ignore_merges) takes a whole word that is a token without merging; others merge", () => {
    const llama3 = bpeWith({ "tokenizer.ggml.pre": "llama-bpe" }, ["xyz"], []);
    const x = (t: string) => llama3.tokenId(t)!;
    expect(llama3.encode("xyz", { addSpecial: false })).toEqual([x("xyz")]);
    // a word that is not a token still goes through the merges
    expect(llama3.encode("the", { addSpecial: false })).toEqual([x("t"), x("he")]);
    const gpt2 = bpeWith({}, ["xyz"], []);
    const g = (t: string) => gpt2.tokenId(t)!;
    expect(gpt2.encode("xyz", { addSpecial: false })).toEqual([g("x"), g("y"), g("z")]);
  });

  it("a merged piece missing from the vocabulary falls back to its ASCII characters only (as llama.cpp)", () => {
    const t = bpeWith({}, [], ["x y", "Ã ©"], ["xy", "Ã©"]);
    const id = (s: string) => t.tokenId(s)!;
    expect(t.tokenId("xy")).toBeUndefined();
    expect(t.encode("xy", { addSpecial: false })).toEqual([id("x"), id("y")]);
    expect(t.encode("axy", { addSpecial: false })).toEqual([id("a"), id("x"), id("y")]);
    // "é" is the byte-level "Ã©": not a token, and its characters are not ASCII, so it is dropped
    expect(t.encode("é", { addSpecial: false })).toEqual([]);
    expect(t.encode("xé", { addSpecial: false })).toEqual([id("x")]);
    // a single character missing from the vocabulary is dropped too
    const noZ = bpeWith({}, [], [], ["z"]);
    expect(noZ.encode("z", { addSpecial: false })).toEqual([]);
    expect(noZ.encode("az", { addSpecial: false })).toEqual([noZ.tokenId("a")]);
  });

  it("the same word encodes the same way every time (the per-word cache)", () => {
    const t = bpeWith({}, [], ["x y"], ["xy"]);
    const first = t.encode("xy hello xy", { addSpecial: false });
    expect(t.encode("xy hello xy", { addSpecial: false })).toEqual(first);
    expect(first).toEqual([
      t.tokenId("x"),
      t.tokenId("y"),
      t.tokenId("Ġ"),
      t.tokenId("hello"),
      t.tokenId("Ġ"),
      t.tokenId("x"),
      t.tokenId("y"),
    ]);
  });
});

describe("SentencePiece: characters without a token", () => {
  /** spmMetadata without its 256 byte tokens. */
  function spmWithoutBytes(extra: Md = {}): Tokenizer {
    const md = spmMetadata(extra);
    const tokens = md["tokenizer.ggml.tokens"] as string[];
    const keep = tokens.map((_, i) => i).filter((i) => !/^<0x[0-9A-F]{2}>$/.test(tokens[i]!));
    return Tokenizer.fromMetadata({
      ...md,
      "tokenizer.ggml.tokens": keep.map((i) => tokens[i]!),
      "tokenizer.ggml.scores": Float32Array.from(keep.map((i) => (md["tokenizer.ggml.scores"] as Float32Array)[i]!)),
      "tokenizer.ggml.token_type": Int32Array.from(
        keep.map((i) => (md["tokenizer.ggml.token_type"] as Int32Array)[i]!),
      ),
    });
  }

  it("a supplementary-plane character (up to U+10FFFD, high surrogate DBFF) is one symbol: its 4 UTF-8 bytes become byte tokens", () => {
    const tok = Tokenizer.fromMetadata(spmMetadata());
    const byte = (b: number) => tok.tokenId(`<0x${b.toString(16).toUpperCase()}>`)!;
    // U+10FFFD is the surrogate pair DBFF DFFD: the highest high surrogate still pairs
    expect(tok.encode("\u{10FFFD}", { addSpecial: false })).toEqual([
      tok.tokenId("▁")!,
      byte(0xf4),
      byte(0x8f),
      byte(0xbf),
      byte(0xbd),
    ]);
    expect(tok.encode("\u{1F999}", { addSpecial: false })).toEqual([
      tok.tokenId("▁")!,
      byte(0xf0),
      byte(0x9f),
      byte(0xa6),
      byte(0x99),
    ]);
  });

  it("without byte tokens, each UTF-8 byte of such a character is <unk>", () => {
    const tok = spmWithoutBytes();
    expect(tok.tokenId("<0x41>")).toBeUndefined();
    expect(tok.encode("ß", { addSpecial: false })).toEqual([tok.tokenId("▁")!, 0, 0]);
    expect(tok.encode("Hello", { addSpecial: false })).toEqual([tok.tokenId("▁Hello")!]);
  });
});

describe("errors", () => {
  it("rejects an unsupported tokenizer model, naming it", () => {
    expectTokenizerError(
      { ...spmMetadata(), "tokenizer.ggml.model": "bert" },
      /unsupported tokenizer model 'bert'.*'llama'.*'gpt2'/,
    );
    expectTokenizerError({ ...spmMetadata(), "tokenizer.ggml.model": "t5" }, /'t5'/);
  });

  it("rejects metadata without a tokenizer", () => {
    expectTokenizerError({ "general.architecture": "llama" }, /tokenizer\.ggml\.model is missing/);
    const md = spmMetadata();
    delete md["tokenizer.ggml.tokens"];
    expectTokenizerError(md, /tokenizer\.ggml\.tokens/);
  });

  it("rejects an unknown BPE pre-tokenizer, naming it", () => {
    expectTokenizerError(
      bpeMetadata({ "tokenizer.ggml.pre": "my-new-pre" }),
      /unknown BPE pre-tokenizer 'my-new-pre'.*supported: default/,
    );
    expectTokenizerError(bpeMetadata({ "tokenizer.ggml.pre": "kimi-k2" }), /'kimi-k2'.*not implement/);
  });

  it("rejects BPE without merges and summarised (not loaded) arrays", () => {
    const md = bpeMetadata();
    delete md["tokenizer.ggml.merges"];
    expectTokenizerError(md, /merges/);
    expectTokenizerError(
      { ...spmMetadata(), "tokenizer.ggml.tokens": { type: "array", elementType: "string", length: 300 } },
      /maxArrayLength/,
    );
    expectTokenizerError({ ...spmMetadata(), "tokenizer.ggml.scores": Float32Array.of(0) }, /entries for \d+ tokens/);
  });

  it("rejects non-string input to encode", () => {
    const tok = Tokenizer.fromMetadata(spmMetadata());
    expect(() => tok.encode(42 as unknown as string)).toThrow(/Expected a string/);
  });

  it("missing BPE pre-tokenizer falls back to llama.cpp's default", () => {
    const md = bpeMetadata();
    delete md["tokenizer.ggml.pre"];
    const t = Tokenizer.fromMetadata(md);
    expect(t.preTokenize("a 1234")).toEqual(["a", " ", "123", "4"]);
  });
});
