/**
 * encodeStream (lib/tokenizer/stream.ts): a text tokenized in parts, cut before line breaks that
 * follow a letter, gives exactly the ids of tokenizing it whole: on every fixture vocabulary
 * (SentencePiece and the byte-level BPE pre-tokenizers), and every supported pre-tokenizer splits
 * the text into the same words with or without such a cut. A vocabulary with a token spanning a
 * letter and a line break is never cut.
 */
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { readGguf } from "../../../lib/gguf.js";
import type { GgufMetaValue } from "../../../lib/native.js";
import { Tokenizer } from "../../../lib/tokenizer/index.js";
import { buildSplitter, findPreTokenizer, SUPPORTED_PRE_TOKENIZERS } from "../../../lib/tokenizer/pretokenize.js";
import {
  encodeStream,
  lastCut,
  preTokenizerCutsAtLineBreaks,
  streamCutsAreSafe,
} from "../../../lib/tokenizer/stream.js";
import { fixture, haveFixtures } from "../../helpers.js";

const TRICKY = [
  "word\n\n  x",
  "abc.\nnext line",
  "end!\r\n\r\nStart",
  "日本\n語の文",
  "ab\r\ncd\ref",
  "x 😁\ny",
  "café\n\tnaïve",
  "12\n34 5\n6",
  "I'm\n'tis it's",
  "tab\t\n  \n \nspaces   \n",
  "𝒜𝒷\n𝒸", // letters outside the BMP (surrogate pairs) before the break
  ' (\n =" 🦙.cpp\nok',
];

/** The fixture vocabularies' test strings, joined by line breaks, plus the tricky ones. */
function corpus(): string {
  const parts = [...TRICKY];
  if (haveFixtures) {
    for (const f of readdirSync(fixture("vocab")).filter((n) => n.endsWith(".inp")))
      parts.push(...readFileSync(fixture("vocab", f), "utf8").split("\n__ggml_vocab_test__\n"));
  }
  return parts.join("\n");
}

/** Pieces of irregular sizes (a stream does not respect lines). */
function* pieces(text: string, seed: number): Generator<string> {
  let i = 0;
  let s = seed;
  while (i < text.length) {
    s = (s * 1103515245 + 12345) % 2147483648;
    const n = 1 + (s % 23);
    yield text.slice(i, i + n);
    i += n;
  }
}

describe("cut points", () => {
  it("lastCut: the last line break that follows a letter", () => {
    expect(lastCut("ab\ncd")).toBe(2);
    expect(lastCut("ab\ncd\nef")).toBe(5);
    expect(lastCut("a.\ncd")).toBe(-1);
    expect(lastCut("a \ncd")).toBe(-1);
    expect(lastCut("\nabc")).toBe(-1);
    expect(lastCut("ab\r\ncd")).toBe(2);
    expect(lastCut("𝒜\nx")).toBe(2);
    expect(lastCut("x\n\n")).toBe(1);
  });

  it("every supported pre-tokenizer splits a text into the same words with or without a cut (SuperBPE: not cut)", () => {
    const text = corpus();
    const cuts: number[] = [];
    for (let p = 1; p < text.length; p++) if (lastCut(text.slice(0, p + 1)) === p) cuts.push(p);
    expect(cuts.length).toBeGreaterThan(10);
    for (const name of SUPPORTED_PRE_TOKENIZERS) {
      const pre = findPreTokenizer(name);
      if ("error" in pre) throw new Error(pre.error);
      const splitter = buildSplitter(pre.regexes);
      const whole = splitter.split(text);
      // Cut the text at every cut point at once: the words of the parts, in order, are the words.
      const parts: string[] = [];
      let from = 0;
      for (const p of cuts) {
        parts.push(...splitter.split(text.slice(from, p)));
        from = p;
      }
      parts.push(...splitter.split(text.slice(from)));
      // SuperBPE keeps words across line breaks: its vocabularies are never cut.
      if (preTokenizerCutsAtLineBreaks(name)) expect(parts, name).toEqual(whole);
      else expect(parts, name).not.toEqual(whole);
    }
  });
});

const VOCABS = ["llama-spm", "phi-3", "gpt-2", "deepseek-coder", "falcon", "starcoder"];

describe.skipIf(!haveFixtures)("encodeStream = encode on the fixture vocabularies", () => {
  it.each(VOCABS)("%s", async (name) => {
    const md = (await readGguf(fixture("vocab", `ggml-vocab-${name}.gguf`))).metadata;
    const tok = Tokenizer.fromMetadata(md);
    expect(streamCutsAreSafe(tok)).toBe(true);
    const text = corpus();
    let parts = 0;
    const streamed = await encodeStream(tok, pieces(text, 7), { partChars: 64, onPart: () => parts++ });
    expect(parts).toBeGreaterThan(20); // it was cut, many times
    expect(Array.from(streamed)).toEqual(tok.encode(text));
    const noSpecial = await encodeStream(tok, pieces(text, 3), { partChars: 200, addSpecial: false });
    expect(Array.from(noSpecial)).toEqual(tok.encode(text, { addSpecial: false }));
    await tok.closeThread();
  });
});

describe("encodeStream on small vocabularies", () => {
  const NORMAL = 1;
  const CONTROL = 3;
  /** SentencePiece with a piece that holds a letter and a line break. */
  function spm(withBreakToken: boolean): Tokenizer {
    const tokens = ["<unk>", "<s>", "</s>", "▁", "a", "b", "\n", "▁a", "ab"];
    if (withBreakToken) tokens.push("a\n");
    const md: Record<string, GgufMetaValue> = {
      "tokenizer.ggml.model": "llama",
      "tokenizer.ggml.tokens": tokens,
      "tokenizer.ggml.scores": Float32Array.from(tokens.map((_, i) => (i === 9 ? 0 : -i))),
      "tokenizer.ggml.token_type": Int32Array.from(tokens.map((_, i) => (i < 3 ? CONTROL : NORMAL))),
    };
    return Tokenizer.fromMetadata(md);
  }

  it("a vocabulary with a letter + line break token is tokenized whole (cutting would change it)", async () => {
    const text = "ba\nab\nba\nab".repeat(8);
    const risky = spm(true);
    expect(streamCutsAreSafe(risky)).toBe(false);
    const whole = risky.encode(text);
    expect(whole).toContain(9); // "a\n" is used across what would be cut points
    expect(Array.from(await encodeStream(risky, pieces(text, 1), { partChars: 4 }))).toEqual(whole);
    const safe = spm(false);
    expect(streamCutsAreSafe(safe)).toBe(true);
    expect(Array.from(await encodeStream(safe, pieces(text, 1), { partChars: 4 }))).toEqual(safe.encode(text));
  });

  it("continuation: no SentencePiece space prefix; an empty text is BOS alone; abort stops", async () => {
    const t = spm(false);
    expect(t.encode("a", { addSpecial: false })).toEqual([7]); // "▁a"
    expect(t.encode("a", { addSpecial: false, continuation: true })).toEqual([4]);
    expect(Array.from(await encodeStream(t, []))).toEqual([1]);
    const ac = new AbortController();
    ac.abort();
    await expect(encodeStream(t, ["a"], { signal: ac.signal })).rejects.toMatchObject({ code: "ERR_CANCELLED" });
  });
});
