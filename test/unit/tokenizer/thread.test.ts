/**
 * TokenizerThread on a small in-memory vocabulary (no fixtures): the worker's ids equal encode()'s,
 * errors keep their code and message across the thread, a worker that cannot start or dies fails
 * its requests with ERR_INTERNAL and the next request starts a new one, close() cancels.
 */
import { describe, expect, it } from "vitest";
import type { GgufMetaValue } from "../../../lib/native.js";
import { Tokenizer } from "../../../lib/tokenizer/index.js";
import { TokenizerThread, tokenizerMetadata } from "../../../lib/tokenizer/thread.js";
import { BYTE_TO_CHAR } from "../../../lib/tokenizer/unicode.js";

type Md = Record<string, GgufMetaValue>;

function metadata(extra: Md = {}): Md {
  const merges = ["h e", "l l", "he ll", "hell o"];
  return {
    "general.architecture": "llama",
    "general.name": "tiny",
    "general.other": "left out",
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.pre": "gpt-2",
    "tokenizer.ggml.tokens": [...BYTE_TO_CHAR, ...merges.map((m) => m.replace(" ", "")), "<|im_end|>"],
    "tokenizer.ggml.merges": merges,
    ...extra,
  };
}

async function rejection(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error("expected a rejection");
}

describe("TokenizerThread", () => {
  it("passes the tokenizer keys and general.name/architecture to the worker, nothing else", () => {
    expect(Object.keys(tokenizerMetadata(metadata())).sort()).toEqual([
      "general.architecture",
      "general.name",
      "tokenizer.ggml.merges",
      "tokenizer.ggml.model",
      "tokenizer.ggml.pre",
      "tokenizer.ggml.tokens",
    ]);
  });

  it("encodes on the worker with encode()'s ids and options", async () => {
    const tok = Tokenizer.fromMetadata(metadata());
    try {
      for (const opts of [{}, { parseSpecial: true }, { parseSpecial: false }]) {
        const text = "hello <|im_end|> héllo";
        expect(await tok.encodeAsync(text, { ...opts, offThread: true })).toEqual(tok.encode(text, opts));
      }
      const both = await Promise.all([
        tok.encodeAsync("hello", { offThread: true }),
        tok.encodeAsync("hell", { offThread: true }),
      ]);
      expect(both).toEqual([tok.encode("hello"), tok.encode("hell")]);
    } finally {
      await tok.closeThread();
    }
  });

  it("an encode error keeps its code and message", async () => {
    // BOS asked for but none defined (glm4 has no default BOS)
    const md = metadata({ "tokenizer.ggml.add_bos_token": true, "tokenizer.ggml.pre": "glm4" });
    const t = new TokenizerThread(async () => md);
    try {
      const e = await rejection(t.encode("hello", { addSpecial: true }));
      expect(e.code).toBe("ERR_TOKENIZER");
      expect(e.message).toBe("the vocabulary asks for a BOS token but defines none (tokenizer.ggml.bos_token_id)");
      expect(await t.encode("hello", { addSpecial: false })).toEqual(
        Tokenizer.fromMetadata(md).encode("hello", { addSpecial: false }),
      );
    } finally {
      await t.close();
    }
  });

  it("a worker that cannot build the tokenizer fails with ERR_INTERNAL, and the next encode tries again", async () => {
    let md: Md = { "tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"] };
    let reads = 0;
    const t = new TokenizerThread(async () => {
      reads++;
      return md;
    });
    try {
      const e = await rejection(t.encode("x", {}));
      expect(e.code).toBe("ERR_INTERNAL");
      expect(e.message).toMatch(/^The tokenizer's worker thread could not start: unsupported tokenizer model 'bert'/);
      md = metadata();
      expect(await t.encode("hello", {})).toEqual(Tokenizer.fromMetadata(md).encode("hello", {}));
      expect(reads).toBe(2);
      await t.encode("hello", {}); // the running worker is reused
      expect(reads).toBe(2);
    } finally {
      await t.close();
    }
  });

  it("a metadata read that fails rejects the encode with that error", async () => {
    const t = new TokenizerThread(async () => {
      throw new Error("file gone");
    });
    expect((await rejection(t.encode("x", {}))).message).toBe("file gone");
    await t.close();
  });

  it("close() cancels pending encodes; a worker that dies fails its requests; both restart on the next encode", async () => {
    const t = new TokenizerThread(async () => metadata());
    const ok = Tokenizer.fromMetadata(metadata()).encode("hello", {});
    expect(await t.encode("hello", {})).toEqual(ok);
    const big = "hello ".repeat(200_000);
    const pending = rejection(t.encode(big, {})); // close() runs while encode() still waits for the worker
    await t.close();
    const e = await pending;
    expect(e).toMatchObject({ code: "ERR_CANCELLED", message: "The tokenizer's worker thread was stopped." });
    expect(await t.encode("hello", {})).toEqual(ok);
    // the worker exits under a running request
    const worker = (t as unknown as { worker: { terminate(): Promise<number> } }).worker;
    const lost = rejection(t.encode(big, {}));
    await new Promise((r) => setTimeout(r, 50)); // the request is on the worker
    await worker.terminate();
    const f = await lost;
    expect(f.code).toBe("ERR_INTERNAL");
    expect(f.message).toMatch(/^The tokenizer's worker thread failed: it exited with code \d+$/);
    expect(await t.encode("hello", {})).toEqual(ok);
    await t.close();
    await t.close(); // twice is fine
  });
});
