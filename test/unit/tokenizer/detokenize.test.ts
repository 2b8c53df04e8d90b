/**
 * Detokenizer on its own: llama.cpp's clean_spaces passes (llama_vocab::impl::detokenize in the
 * bundled llama.cpp, traced by hand for each case below), what each token attribute contributes,
 * the per-attribute caches, and the leading-space strip of whole and streamed sequences.
 */
import { describe, expect, it } from "vitest";
import type { GgufMetaValue } from "../../../lib/native.js";
import { Detokenizer } from "../../../lib/tokenizer/detokenize.js";
import { BYTE_TO_CHAR, utf8Encode } from "../../../lib/tokenizer/unicode.js";
import { Vocab } from "../../../lib/tokenizer/vocab.js";

const NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
  UNDEFINED = 0;

/** Byte-level BPE with one token per byte (ids = byte values): any text decodes byte for byte. */
function byteVocab(pre = "gpt-2"): Vocab {
  return new Vocab({
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.pre": pre,
    "tokenizer.ggml.tokens": [...BYTE_TO_CHAR],
    "tokenizer.ggml.merges": [],
  });
}

const ids = (s: string) => Array.from(utf8Encode(s));

describe("llama.cpp's clean_spaces", () => {
  const d = new Detokenizer(byteVocab());
  it.each([
    ["Hello , world . Yes ! No ?", "Hello, world. Yes! No?"],
    [" ,x", ",x"], // the first byte is kept as is, the space before "," still goes
    ["a ' b", "a'b"],
    ["a '", "a '"], // nothing after the apostrophe
    ["a ' ", "a'"], // both spaces go, the trailing one too
    ["it 's I 'm we 're you 've", "it's I'm we're you've"],
    ["don 't he 'd we 'll", "don 't he 'd we 'll"], // llama.cpp keeps these spaces
    ["a 'r", "a 'r"], // " 'r" at the end: too short for 're
    ["a 'rx a 'vx", "a 'rx a 'vx"],
    ["x 's", "x's"],
    ["", ""],
    ["?", "?"],
    // nothing changes without the space before
    ["a.b c,d", "a.b c,d"],
    ["a' b", "a' b"],
    ["it's don't", "it's don't"],
    ["a sm", "a sm"],
  ])("%j -> %j", (input, want) => {
    expect(d.decode(ids(input), { cleanSpaces: true })).toBe(want);
    expect(d.decode(ids(input))).toBe(input); // off by default
  });

  it("only for vocabularies that ask for it", () => {
    const qwen = new Detokenizer(byteVocab("qwen2")); // clean_spaces = false in llama.cpp
    expect(qwen.decode(ids("a , b 's"), { cleanSpaces: true })).toBe("a , b 's");
  });
});

describe("what each token contributes", () => {
  function vocab(kind: "spm" | "bpe") {
    const tokens = ["<unk>", "<s>", "</s>", "<0x41>", "<0xZZ>", "▁hi", "<tool>", "<unused>", "odd", "Ġx"];
    const types = [UNKNOWN, CONTROL, CONTROL, BYTE, BYTE, NORMAL, USER_DEFINED, UNUSED, UNDEFINED, NORMAL];
    // malformed byte tokens, and a byte-looking text on a token that is not a byte token
    tokens.push("x<0x42>", "<0x43>x", "<0x44>");
    types.push(BYTE, BYTE, UNDEFINED);
    const md: Record<string, GgufMetaValue> =
      kind === "spm"
        ? { "tokenizer.ggml.model": "llama" }
        : { "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.merges": [] };
    return new Vocab({ ...md, "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": Int32Array.from(types) });
  }
  const text = (b: Uint8Array) => new TextDecoder().decode(b);

  it("SentencePiece: ▁ is a space, <0xNN> one byte, control/unknown only with special", () => {
    const d = new Detokenizer(vocab("spm"));
    expect(text(d.tokenBytes(5))).toBe(" hi");
    expect([...d.tokenBytes(3)]).toEqual([0x41]);
    expect([...d.tokenBytes(4)]).toEqual([]); // malformed byte token
    expect(text(d.tokenBytes(6))).toBe("<tool>"); // user-defined: always
    expect(text(d.tokenBytes(0))).toBe("");
    expect(text(d.tokenBytes(0, true))).toBe("<unk>");
    expect(text(d.tokenBytes(1))).toBe(""); // cached per mode: the plain result does not leak
    expect(text(d.tokenBytes(1, true))).toBe("<s>");
    expect(text(d.tokenBytes(1))).toBe("");
    expect(text(d.tokenBytes(7, true))).toBe(""); // unused: never
    expect(text(d.tokenBytes(8, true))).toBe(""); // undefined type: never
    expect([...d.tokenBytes(10)]).toEqual([]);
    expect([...d.tokenBytes(11)]).toEqual([]);
    expect([...d.tokenBytes(12, true)]).toEqual([]);
    for (const bad of [-1, 13, 1.5, Number.NaN]) expect([...d.tokenBytes(bad)], String(bad)).toEqual([]);
  });

  it("byte-level BPE: normal tokens through the byte mapping", () => {
    const d = new Detokenizer(vocab("bpe"));
    expect(text(d.tokenBytes(9))).toBe(" x");
    expect(text(d.tokenBytes(5))).not.toBe(" hi"); // no ▁ replacement for BPE
  });

  it("strips the space prefix from the first token that has text, once", () => {
    const d = new Detokenizer(vocab("spm"));
    expect(d.decode([1, 5, 5])).toBe("hi hi"); // BOS gives nothing, so ▁hi is first
    expect(d.decode([1, 5], { special: true })).toBe("<s> hi"); // BOS text is first: nothing stripped
    expect(d.decode([5, 5], { stripLeadingSpace: false })).toBe(" hi hi");
    expect(d.decode([3, 5])).toBe("A hi"); // the first text has no space: nothing stripped later
    const bpe = new Detokenizer(vocab("bpe")); // no space prefix: never stripped
    expect(bpe.decode([9, 9])).toBe(" x x");
  });

  it("a stream strips only after BOS unless told; flush starts over", () => {
    const v = vocab("spm");
    const d = new Detokenizer(v);
    const s = d.createDecoder();
    expect(s.push(1) + s.push(5) + s.push(5)).toBe("hi hi");
    expect(s.flush()).toBe("");
    expect(s.push(5)).toBe(" hi"); // after flush: a new stream, not started with BOS
    s.flush();
    expect(s.push(1) + s.push(5)).toBe("hi");
    const never = d.createDecoder({ stripLeadingSpace: false });
    expect(never.push(1) + never.push(5)).toBe(" hi");
    const always = d.createDecoder({ stripLeadingSpace: true });
    expect(always.push(5) + always.push(5)).toBe("hi hi");
    always.flush();
    expect(always.push(5)).toBe("hi");
    const special = d.createDecoder({ special: true });
    expect(special.push(1) + special.push(5)).toBe("<s> hi");
    // a leading U+FEFF is text, not a byte-order mark to drop (also after flush)
    const bom = new Detokenizer(byteVocab()).createDecoder();
    expect([0xef, 0xbb, 0xbf, 0x61].map((b) => bom.push(b)).join("")).toBe("\ufeffa");
    bom.flush();
    expect([0xef, 0xbb, 0xbf].map((b) => bom.push(b)).join("")).toBe("\ufeff");
    const bpe = new Detokenizer(vocab("bpe")).createDecoder({ stripLeadingSpace: true });
    expect(bpe.push(9)).toBe(" x"); // no space prefix in the vocabulary
    bpe.flush();
    expect(bpe.push(9)).toBe(" x");
  });
});
