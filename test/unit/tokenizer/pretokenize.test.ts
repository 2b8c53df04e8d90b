/**
 * BPE pre-tokenizers. The expected word splits below were produced by llama.cpp's own
 * unicode_regex_split (src/unicode.cpp compiled from the llama.cpp tree that node-llama-cpp
 * 3.21.1 bundles), for pre-tokenizers whose vocabularies are not in the fixtures (llama3, qwen2)
 * and for the places where llama.cpp's matching differs from plain JavaScript regexes.
 */
import { describe, expect, it } from "vitest";
import {
  buildSplitter,
  compileRegex,
  findPreTokenizer,
  SUPPORTED_PRE_TOKENIZERS,
} from "../../../lib/tokenizer/pretokenize.js";

function split(pre: string, text: string): string[] {
  const p = findPreTokenizer(pre);
  if ("error" in p) throw new Error(p.error);
  return buildSplitter(p.regexes).split(text);
}

const LLAMA_CPP_SPLITS: Record<string, Array<[string, string[]]>> = {
  "llama-bpe": [
    [
      "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～",
      [
        "Hello",
        ",",
        " y",
        "'all",
        "!",
        " How",
        " are",
        " you",
        " 😁",
        " ?",
        "我想在apple工作",
        "131",
        "415",
        "1",
        "天",
        "～",
      ],
    ],
    ["   Hello\n\n  \n\tworld  ", ["  ", " Hello", "\n\n  \n", "\tworld", "  "]],
    ["3333333 12345", ["333", "333", "3", " ", "123", "45"]],
    ["'S 'LL 've I'M", ["'S", " '", "LL", " '", "ve", " I", "'M"]],
    ["\r\n\r\n  x", ["\r\n\r\n", " ", " x"]],
    [' (\n =" 🦙.cpp', [" (\n", ' ="', " 🦙.", "cpp"]],
  ],
  qwen2: [
    [
      "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～",
      [
        "Hello",
        ",",
        " y",
        "'all",
        "!",
        " How",
        " are",
        " you",
        " 😁",
        " ?",
        "我想在apple工作",
        "1",
        "3",
        "1",
        "4",
        "1",
        "5",
        "1",
        "天",
        "～",
      ],
    ],
    ["   Hello\n\n  \n\tworld  ", ["  ", " Hello", "\n\n  \n", "\tworld", "  "]],
    ["3333333 12345", ["3", "3", "3", "3", "3", "3", "3", " ", "1", "2", "3", "4", "5"]],
    ["'S 'LL 've I'M", ["'S", " '", "LL", " '", "ve", " I", "'M"]],
  ],
  "gpt-2": [
    // U+16100 is a letter since Unicode 16; llama.cpp's tables (Unicode 15.1) say unassigned
    ["a\u{16100}b c", ["a", "\u{16100}", "b", " c"]],
    ["x\u3000y", ["x", "\u3000", "y"]],
    ["  \u00a0 z", ["  \u00a0", " z"]],
  ],
  "deepseek-coder": [
    // literal ranges do not match non-ASCII whitespace: llama.cpp replaces it before matching
    ["2 \u3000\u200b'E", ["2", " \u3000", "\u200b", "'", "E"]],
    ["中文\u3000字", ["中文", "\u3000", "字"]],
  ],
  default: [
    ["Hello!!! 1234567 <b>$+^~|", ["Hello", "!!!", " ", "123", "456", "7", " ", "<", "b", ">$+^~|"]],
    ["x==>y", ["x", "==>", "y"]],
  ],
  falcon: [
    ["Hello!!! 1234567 `x`", ["Hello", "!!!", " ", "123", "456", "7", " ", "`", "x", "`"]],
    ["a 12 345", ["a", " 12", " ", "345"]],
  ],
};

describe("pre-tokenizer splits match llama.cpp", () => {
  for (const [pre, cases] of Object.entries(LLAMA_CPP_SPLITS)) {
    it.each(cases)(`${pre}: %j`, (text, words) => {
      expect(split(pre, text)).toEqual(words);
    });
  }

  it("splits into pieces that concatenate back to the input", () => {
    const text = "Hi  there!\n\n  Ünïcödé 123456 🦙‍🔥 中文 ' x";
    for (const name of SUPPORTED_PRE_TOKENIZERS) {
      const words = split(name, text);
      expect(words.join(""), name).toBe(text);
      expect(
        words.every((w) => w.length > 0),
        name,
      ).toBe(true);
    }
  });
});

describe("pre-tokenizer table", () => {
  it("compiles every supported pre-tokenizer's regexes", () => {
    for (const name of SUPPORTED_PRE_TOKENIZERS) {
      const p = findPreTokenizer(name);
      expect("error" in p, name).toBe(false);
      if (!("error" in p)) for (const r of p.regexes) expect(() => compileRegex(r), `${name}: ${r}`).not.toThrow();
    }
  });

  it("knows the pre-tokenizers the project targets", () => {
    for (const name of [
      "default",
      "llama3",
      "llama-bpe",
      "qwen2",
      "gpt-2",
      "deepseek-coder",
      "falcon",
      "starcoder",
      "phi-2",
    ]) {
      expect(SUPPORTED_PRE_TOKENIZERS).toContain(name);
    }
    expect(findPreTokenizer(undefined)).toMatchObject({ type: "default" });
    expect(findPreTokenizer("")).toMatchObject({ type: "default" });
    expect(findPreTokenizer("llama3")).toMatchObject({ ignoreMerges: true, addBos: true });
    expect(findPreTokenizer("qwen2")).toMatchObject({ cleanSpaces: false });
  });

  it("names unknown and unsupported pre-tokenizers in the error", () => {
    expect(findPreTokenizer("brand-new")).toEqual({
      error: expect.stringMatching(/unknown BPE pre-tokenizer 'brand-new'/),
    });
    expect(findPreTokenizer("afmoe")).toEqual({ error: expect.stringMatching(/'afmoe'/) });
    // not an own property of the table
    expect(findPreTokenizer("constructor")).toEqual({ error: expect.stringMatching(/unknown/) });
    // the supported names, listed for the user
    const e = findPreTokenizer("brand-new") as { error: string };
    expect(e.error).toContain(`; supported: ${SUPPORTED_PRE_TOKENIZERS.join(", ")}`);
    expect(e.error).toContain("supported: default, llama3, llama-v3,");
  });

  it("translates \\s to Unicode White_Space and \\p{Lu} to \\p{L} (llama.cpp's meanings)", () => {
    const { re, usesClasses } = compileRegex("\\s+|\\p{Lu}+");
    expect(usesClasses).toBe(true);
    expect("\u0085\ufeffA".match(re)).toEqual(["\u0085", "A"]); // NEL is whitespace, BOM is not; \p{Lu} matches any letter
    expect("ab".match(re)).toEqual(["ab"]);
    expect(compileRegex("[\r\n]").usesClasses).toBe(false);
    // \S is "not White_Space": U+FEFF is not White_Space (JavaScript's own \s counts it)
    expect("a\ufeffb c".match(compileRegex("\\S+").re)).toEqual(["a\ufeffb", "c"]);
    // only the two-letter letter categories collapse to \p{L}
    expect("aB".match(compileRegex("\\p{Lowercase_Letter}+").re)).toEqual(["a"]);
  });

  it("a regex that matches empty steps one code point at a time (surrogate pairs and U+FFFF included)", () => {
    expect(buildSplitter(["(?:)"]).split("ab\u{1F600}\uffffc")).toEqual(["a", "b", "\u{1F600}", "\uffff", "c"]);
  });
});
