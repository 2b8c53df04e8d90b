/**
 * The Tokenizer class's own edges on tiny in-memory vocabularies: argument errors, the BOS/EOS a
 * vocabulary asks for but lacks, maxTokenChars, isControl bounds, SentencePiece's space prefix after
 * special tokens, and the inline / worker choice of encodeAsync.
 */
import { describe, expect, it } from "vitest";
import { LlmserveError } from "../../../lib/errors.js";
import type { GgufMetaValue } from "../../../lib/native.js";
import { OFFTHREAD_MIN_CHARS, Tokenizer } from "../../../lib/tokenizer/index.js";

type Md = Record<string, GgufMetaValue>;

function spm(extra: Md = {}): Md {
  return {
    "tokenizer.ggml.model": "llama",
    "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", "▁", "a", "▁a", "<sep>", "abcdefg"],
    "tokenizer.ggml.scores": [0, 0, 0, -1, -2, -0.5, 0, -9],
    "tokenizer.ggml.token_type": Int32Array.from([2, 3, 3, 1, 1, 1, 3, 1]),
    ...extra,
  };
}

function errorOf(f: () => unknown): LlmserveError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(LlmserveError);
    return e as LlmserveError;
  }
  throw new Error("expected an error");
}

describe("Tokenizer", () => {
  it("rejects metadata that is not an object, naming what came", () => {
    for (const [md, what] of [
      [null, "null"],
      [5, "number"],
      ["x", "string"],
      [undefined, "undefined"],
    ] as const) {
      const e = errorOf(() => Tokenizer.fromMetadata(md as unknown as Md));
      expect(e.code).toBe("ERR_INVALID_ARGUMENT");
      expect(e.message).toBe(`Expected a GGUF metadata object but received ${what}`);
    }
  });

  it("rejects non-string text, naming what came", () => {
    const tok = Tokenizer.fromMetadata(spm());
    expect(errorOf(() => tok.encode(null as unknown as string)).message).toBe(
      "Expected a string for text but received null",
    );
    expect(errorOf(() => tok.encode(3 as unknown as string)).message).toBe(
      "Expected a string for text but received number",
    );
  });

  it("adds BOS and EOS as the vocabulary asks, and fails when it asks for one it lacks", () => {
    const both = Tokenizer.fromMetadata(spm({ "tokenizer.ggml.add_eos_token": true }));
    expect(both.encode("a")).toEqual([1, 5, 2]);
    expect(both.encode("a", { addSpecial: false })).toEqual([5]);
    const noBos = Tokenizer.fromMetadata(
      spm({
        "tokenizer.ggml.bos_token_id": 99, // out of range: ignored, and the default 1 is too
        "tokenizer.ggml.tokens": ["<unk>"],
        "tokenizer.ggml.scores": [0],
        "tokenizer.ggml.token_type": Int32Array.from([2]),
      }),
    );
    expect(noBos.bos).toBeUndefined();
    const e = errorOf(() => noBos.encode("x"));
    expect(e.code).toBe("ERR_TOKENIZER");
    expect(e.message).toBe("the vocabulary asks for a BOS token but defines none (tokenizer.ggml.bos_token_id)");
    expect(noBos.encode("x", { addSpecial: false }).every((id) => id === 0)).toBe(true);
    const noEos = Tokenizer.fromMetadata(
      spm({
        "tokenizer.ggml.add_bos_token": false,
        "tokenizer.ggml.add_eos_token": true,
        "tokenizer.ggml.tokens": ["<unk>", "x"],
        "tokenizer.ggml.scores": [0, 0],
        "tokenizer.ggml.token_type": Int32Array.from([2, 1]),
      }),
    );
    expect(errorOf(() => noEos.encode("x")).message).toBe(
      "the vocabulary asks for an EOS token but defines none (tokenizer.ggml.eos_token_id)",
    );
  });

  it("puts the space prefix on the first text and on text right after a special token", () => {
    const tok = Tokenizer.fromMetadata(spm());
    expect(tok.encode("a<sep>a a", { addSpecial: false, parseSpecial: true })).toEqual([5, 6, 5, 5]);
    const noPrefix = Tokenizer.fromMetadata(spm({ "tokenizer.ggml.add_space_prefix": false }));
    expect(noPrefix.encode("a<sep>a", { addSpecial: false, parseSpecial: true })).toEqual([4, 6, 4]);
  });

  it("maxTokenChars is the longest token text, at least 2", () => {
    expect(Tokenizer.fromMetadata(spm()).maxTokenChars).toBe(7);
    const short = Tokenizer.fromMetadata(
      spm({
        "tokenizer.ggml.tokens": ["<", "a"],
        "tokenizer.ggml.scores": [0, 0],
        "tokenizer.ggml.token_type": Int32Array.from([2, 1]),
      }),
    );
    expect(short.maxTokenChars).toBe(2);
  });

  it("isControl is false outside the vocabulary; tokenText checks the id", () => {
    const tok = Tokenizer.fromMetadata(spm());
    expect([tok.isControl(1), tok.isControl(6), tok.isControl(5), tok.isControl(-1), tok.isControl(8)]).toEqual([
      true,
      true,
      false,
      false,
      false,
    ]);
    expect(tok.tokenText(7)).toBe("abcdefg");
    for (const bad of [-1, 8, 0.5])
      expect(errorOf(() => tok.tokenText(bad)).message).toBe(`Expected a token id in [0, 8) but received ${bad}`);
    expect(tok.preTokenize("a b")).toEqual(["a b"]); // SentencePiece has no pre-tokenizer
    expect([tok.model, tok.kind, tok.preTokenizer, tok.nVocab, tok.eos, tok.eot]).toEqual([
      "llama",
      "spm",
      "",
      8,
      2,
      undefined,
    ]);
  });

  it("encodeAsync: short texts inline, long ones (or offThread) on the worker, bad input rejected", async () => {
    const tok = Tokenizer.fromMetadata(spm());
    const thread = (tok as unknown as { thread: { encode: (...a: unknown[]) => Promise<number[]> } }).thread;
    const calls: number[] = [];
    const real = thread.encode.bind(thread);
    thread.encode = (text, opts) => {
      calls.push((text as string).length);
      return real(text, opts);
    };
    try {
      expect(await tok.encodeAsync("a a")).toEqual(tok.encode("a a"));
      expect(await tok.encodeAsync("a".repeat(OFFTHREAD_MIN_CHARS - 1))).toHaveLength(OFFTHREAD_MIN_CHARS); // BOS, ▁a, then one per a
      expect(calls).toEqual([]);
      const long = "a ".repeat(OFFTHREAD_MIN_CHARS / 2);
      expect(await tok.encodeAsync(long)).toEqual(tok.encode(long));
      expect(await tok.encodeAsync("a a", { offThread: true })).toEqual(tok.encode("a a"));
      expect(calls).toEqual([OFFTHREAD_MIN_CHARS, 3]);
      await expect(tok.encodeAsync(7 as unknown as string)).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    } finally {
      await tok.closeThread();
    }
  });
});
