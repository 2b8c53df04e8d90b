import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Model, LlmserveError, type Timings } from "../../lib/index.js";
import { synthModel, tmpRoot } from "../helpers.js";

let path: string;
let model: Model;

beforeAll(async () => {
  path = await synthModel("api-f32", {
    dim: 64,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    ffn: 128,
    vocabSize: 400,
    type: "f32",
  });
  model = await Model.load(path, { threads: 2, contextSize: 256 });
});
afterAll(async () => {
  await model?.dispose();
});

async function expectCode(p: Promise<unknown> | (() => unknown), code: string, re?: RegExp) {
  let err: unknown;
  try {
    await (typeof p === "function" ? p() : p);
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${code}`).toBeInstanceOf(LlmserveError);
  expect((err as LlmserveError).code).toBe(code);
  if (re) expect((err as Error).message).toMatch(re);
}

describe("Model.load errors", () => {
  it("missing file", async () => {
    await expectCode(Model.load(join(tmpRoot, "nope.gguf")), "ERR_FILE_NOT_FOUND", /not found/);
  });
  it("not a GGUF file", async () => {
    const p = join(tmpRoot, "not-gguf.gguf");
    writeFileSync(p, "this is a text file, not a model\n");
    await expectCode(Model.load(p), "ERR_NOT_GGUF", /GGUF/);
  });
  it("truncated file", async () => {
    const bytes = readFileSync(path);
    const p = join(tmpRoot, "truncated.gguf");
    writeFileSync(p, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
    await expectCode(Model.load(p), "ERR_GGUF_TRUNCATED", /truncated/);
  });
  it("truncated inside the header", async () => {
    const bytes = readFileSync(path);
    const p = join(tmpRoot, "truncated-header.gguf");
    writeFileSync(p, bytes.subarray(0, 200));
    await expectCode(Model.load(p), "ERR_GGUF_TRUNCATED");
  });
  it("unsupported GGUF version", async () => {
    const bytes = Buffer.from(readFileSync(path));
    bytes.writeUInt32LE(7, 4);
    const p = join(tmpRoot, "v7.gguf");
    writeFileSync(p, bytes);
    await expectCode(Model.load(p), "ERR_GGUF_VERSION", /version 7/);
  });
  it("unsupported architecture names the architecture", async () => {
    const bytes = Buffer.from(readFileSync(path));
    const at = bytes.indexOf(Buffer.from("llama"), bytes.indexOf(Buffer.from("general.architecture")));
    Buffer.from("gemma").copy(bytes, at);
    const p = join(tmpRoot, "gemma.gguf");
    writeFileSync(p, bytes);
    await expectCode(Model.load(p), "ERR_UNSUPPORTED_ARCH", /gemma/);
  });
  it("a directory is not a model", async () => {
    await expectCode(Model.load(tmpRoot), "ERR_IO");
  });
  it("invalid options", async () => {
    await expectCode(Model.load(path, { threads: 0 }), "ERR_INVALID_ARGUMENT", /threads/);
    await expectCode(Model.load(path, { contextSize: -5 }), "ERR_INVALID_ARGUMENT", /contextSize/);
    await expectCode(Model.load(path, { kvType: "q3" as never }), "ERR_INVALID_ARGUMENT", /kvType/);
    await expectCode(Model.load(path, { thread: 2 } as never), "ERR_INVALID_ARGUMENT", /Unknown option "thread"/);
  });
  it("repacked weights give exactly the tokens of the mapped file", async () => {
    const q4 = await synthModel("api-q4_0", {
      dim: 128,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 256,
      vocabSize: 400,
      type: "q4_0",
    });
    const run = async (repack: boolean) => {
      const m = await Model.load(q4, { threads: 2, contextSize: 128, repack });
      try {
        const r = await m.complete({ tokens: [1, 5, 9, 200, 31] }, { maxTokens: 24, temperature: 0, stopAtEos: false });
        return { tokens: r.tokens, bytes: m.info.repackedBytes };
      } finally {
        await m.dispose();
      }
    };
    const packed = await run(true),
      mapped = await run(false);
    expect(packed.bytes).toBeGreaterThan(0);
    expect(mapped.bytes).toBe(0);
    expect(packed.tokens).toEqual(mapped.tokens);
    await expectCode(Model.load(q4, { repack: "yes" as never }), "ERR_INVALID_ARGUMENT", /repack/);
  });
  it("a q8_0 KV cache needs heads of a multiple of 32, and says so", async () => {
    const small = await synthModel("hd16", {
      dim: 64,
      layers: 1,
      heads: 4,
      kvHeads: 2,
      ffn: 96,
      vocabSize: 320,
      type: "f32",
    });
    await expectCode(
      Model.load(small, { kvType: "q8_0", contextSize: 64 }),
      "ERR_INVALID_ARGUMENT",
      /multiple of 32.*16.*kvType f16/,
    );
  });
  it("reports load progress ending at 1", async () => {
    const seen: number[] = [];
    const m = await Model.load(path, { threads: 1, contextSize: 64, onProgress: (f) => seen.push(f) });
    await m.dispose();
    expect(seen.length).toBeGreaterThan(0);
    expect(seen[seen.length - 1]).toBe(1);
  });
});

describe("generate", () => {
  it("streams chunks with text and tokens, ends with done + finishReason", async () => {
    const chunks = [];
    for await (const c of model.generate("Once upon a time", { maxTokens: 12, temperature: 0 })) chunks.push(c);
    const last = chunks[chunks.length - 1];
    expect(last.done).toBe(true);
    expect(["length", "eos"]).toContain(last.finishReason);
    const toks = chunks.flatMap((c) => c.tokens);
    if (last.finishReason === "length") expect(toks.length).toBe(12);
    expect(chunks.map((c) => c.text).join("")).toBe(model.detokenize(toks));
    expect(last.timings?.promptTokens).toBe(model.tokenize("Once upon a time").length);
  });

  it("chunks arrive before generation ends", async () => {
    let firstAt = 0;
    let n = 0;
    const t0 = performance.now();
    let lastTimings: Timings | undefined;
    for await (const c of model.generate(
      { tokens: [1, 300, 301] },
      { maxTokens: 40, temperature: 0, stopAtEos: false },
    )) {
      if (n++ === 0) firstAt = performance.now() - t0;
      lastTimings = c.timings;
    }
    expect(n).toBeGreaterThan(1);
    // The first chunk was delivered while the engine still had tokens to make.
    expect(firstAt).toBeLessThan(performance.now() - t0);
    expect(lastTimings?.generatedTokens).toBe(40);
  });

  it("greedy is deterministic and equals argmax of evaluate()", async () => {
    const prompt = [1, 310, 320, 330];
    const a = await model.complete({ tokens: prompt }, { maxTokens: 8, temperature: 0, stopAtEos: false });
    const b = await model.complete({ tokens: prompt }, { maxTokens: 8, temperature: 0, stopAtEos: false });
    expect(a.tokens).toEqual(b.tokens);
    const logits = await model.evaluate(prompt);
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    expect(a.tokens[0]).toBe(best);
  });

  it("same seed -> same output; different seeds differ", async () => {
    const opts = { maxTokens: 24, temperature: 1.0, topK: 0, topP: 1, minP: 0, stopAtEos: false };
    const a = await model.complete("The", { ...opts, seed: 42 });
    const b = await model.complete("The", { ...opts, seed: 42 });
    const c = await model.complete("The", { ...opts, seed: 43 });
    expect(a.tokens).toEqual(b.tokens);
    expect(c.tokens).not.toEqual(a.tokens);
  });

  it("abort mid-stream ends with finishReason abort and leaves the model usable", async () => {
    // A model big enough that 2000 tokens take far longer than delivering the abort.
    const p = await synthModel("api-dispose", {
      dim: 256,
      layers: 4,
      heads: 8,
      kvHeads: 2,
      ffn: 512,
      vocabSize: 400,
      type: "f32",
    });
    const m = await Model.load(p, { threads: 1, contextSize: 2048 });
    try {
      const ac = new AbortController();
      const chunks = [];
      for await (const c of m.generate("a", { maxTokens: 2000, temperature: 0, stopAtEos: false, signal: ac.signal })) {
        chunks.push(c);
        if (chunks.length === 3) ac.abort();
      }
      const last = chunks[chunks.length - 1];
      expect(last.finishReason).toBe("abort");
      expect(chunks.flatMap((c) => c.tokens).length).toBeLessThan(2000);
      const again = await m.complete("a", { maxTokens: 4, temperature: 0, stopAtEos: false });
      expect(again.tokens.length).toBe(4);
    } finally {
      await m.dispose();
    }
  });

  it("breaking out of for-await cancels the request", async () => {
    let n = 0;
    for await (const c of model.generate("b", { maxTokens: 500, temperature: 0, stopAtEos: false })) {
      n += c.tokens.length;
      if (n >= 2) break;
    }
    // The engine moves on at once: a following request completes normally.
    const r = await model.complete("b", { maxTokens: 3, temperature: 0, stopAtEos: false });
    expect(r.tokens.length).toBe(3);
  });

  it("an already-aborted signal yields a single abort chunk", async () => {
    const ac = new AbortController();
    ac.abort();
    const chunks = [];
    for await (const c of model.generate("x", { signal: ac.signal })) chunks.push(c);
    expect(chunks).toEqual([{ text: "", tokens: [], done: true, finishReason: "abort", seed: chunks[0].seed }]);
    expect(Number.isInteger(chunks[0].seed)).toBe(true);
  });

  it("stop strings end the output before the stop text", async () => {
    const full = await model.complete({ tokens: [1, 305] }, { maxTokens: 30, temperature: 0, stopAtEos: false });
    const text = full.text;
    expect(text.length).toBeGreaterThan(4);
    const stop = text.slice(3, 5);
    const cut = text.indexOf(stop);
    const r = await model.complete(
      { tokens: [1, 305] },
      { maxTokens: 30, temperature: 0, stopAtEos: false, stop: [stop] },
    );
    expect(r.finishReason).toBe("stop");
    expect(r.text).toBe(text.slice(0, cut));
  });

  it("logprobs: chosen token and sorted alternatives", async () => {
    const chunks = [];
    for await (const c of model.generate(
      { tokens: [1, 300] },
      { maxTokens: 3, temperature: 0, logprobs: 3, stopAtEos: false },
    ))
      chunks.push(c);
    const lps = chunks.flatMap((c) => c.logprobs ?? []);
    expect(lps.length).toBe(3);
    for (const lp of lps) {
      expect(lp.top.length).toBe(3);
      expect(lp.top[0].token).toBe(lp.token); // greedy picks the top raw token
      expect(lp.logprob).toBeLessThanOrEqual(0);
      expect(lp.top[0].logprob).toBeGreaterThanOrEqual(lp.top[1].logprob);
    }
  });

  it("reuses the KV of a common prefix (whole 16-token blocks)", async () => {
    const p = Array.from({ length: 40 }, (_, i) => 300 + i);
    const a = await model.complete({ tokens: p }, { maxTokens: 2, temperature: 0, stopAtEos: false });
    const r = await model.complete({ tokens: [...p, 350] }, { maxTokens: 2, temperature: 0, stopAtEos: false });
    expect(r.timings?.reusedTokens).toBe(32);
    // Reuse does not change results: the same prompt again gives the same tokens.
    const b = await model.complete({ tokens: p }, { maxTokens: 2, temperature: 0, stopAtEos: false });
    expect(b.tokens).toEqual(a.tokens);
  });

  it("rejects bad options with typed errors", async () => {
    await expectCode(() => model.generate("x", { maxTokens: -1 }), "ERR_INVALID_ARGUMENT", /maxTokens but received -1/);
    await expectCode(() => model.generate("x", { topP: 1.5 }), "ERR_INVALID_ARGUMENT", /topP/);
    await expectCode(() => model.generate("x", { temperature: -1 }), "ERR_INVALID_ARGUMENT", /temperature/);
    await expectCode(() => model.generate("x", { minP: 2 }), "ERR_INVALID_ARGUMENT", /minP/);
    await expectCode(() => model.generate("x", { logprobs: 50 }), "ERR_INVALID_ARGUMENT", /logprobs/);
    await expectCode(() => model.generate("x", { stop: [""] }), "ERR_INVALID_ARGUMENT", /stop/);
    await expectCode(() => model.generate("x", { maxToken: 3 } as never), "ERR_INVALID_ARGUMENT", /maxToken/);
    await expectCode(() => model.generate({ tokens: [1, 99999] }), "ERR_INVALID_ARGUMENT", /99999/);
    await expectCode(() => model.generate(42 as never), "ERR_INVALID_ARGUMENT", /prompt/);
  });

  it("a prompt longer than the context is a typed error", async () => {
    const long = Array.from({ length: 300 }, (_, i) => 300 + (i % 50));
    await expectCode(() => model.generate({ tokens: long }), "ERR_CONTEXT_OVERFLOW", /contextSize/);
  });

  it("generation stops with length when the context fills", async () => {
    const m = await Model.load(path, { threads: 1, contextSize: 16 });
    try {
      const r = await m.complete({ tokens: [1, 300, 301, 302] }, { maxTokens: 100, temperature: 0, stopAtEos: false });
      expect(r.finishReason).toBe("length");
      expect(r.tokens.length).toBe(16 - 4 + 1);
    } finally {
      await m.dispose();
    }
  });

  it("stop strings: the text ends before the earliest stop, also one that spans tokens", async () => {
    const opts = { maxTokens: 24, temperature: 0, stopAtEos: false } as const;
    const prompt = { tokens: [1, 310, 320] };
    const full = await model.complete(prompt, opts);
    const text = full.text;
    expect(text.length).toBeGreaterThan(12);
    // Boundaries between tokens' texts: a stop made of the last char of one and the first of the next.
    const at = (k: number) => model.detokenize(full.tokens.slice(0, k)).length;
    const b1 = at(3),
      b2 = at(8);
    expect(b1).toBeGreaterThan(0);
    expect(b2).toBeGreaterThan(b1);
    const early = text.slice(b1 - 1, b1 + 1),
      late = text.slice(b2 - 1, b2 + 2);
    const cutEarly = text.indexOf(early),
      cutLate = text.indexOf(late);
    const one = await model.complete(prompt, { ...opts, stop: [late] });
    expect(one.text).toBe(text.slice(0, cutLate));
    expect(one.finishReason).toBe("stop");
    const both = await model.complete(prompt, { ...opts, stop: [late, early] });
    expect(both.text).toBe(text.slice(0, Math.min(cutEarly, cutLate)));
    expect(both.finishReason).toBe("stop");
    // A stop that never occurs (but starts like the text's end) leaves the whole text.
    const none = await model.complete(prompt, { ...opts, stop: [`${text.slice(-1)}\u0001`] });
    expect(none.text).toBe(text);
    expect(none.finishReason).toBe("length");
    // Chunks never carry text past a stop, however the text is split.
    let streamed = "";
    for await (const c of model.generate(prompt, { ...opts, stop: [late] })) streamed += c.text;
    expect(streamed).toBe(text.slice(0, cutLate));
  });

  it("several concurrent generate() calls all complete, batched together", async () => {
    const before = model.stats();
    // 40 tokens each: long enough that the four overlap however fast the engine starts the first.
    const rs = await Promise.all(
      [0, 1, 2, 3].map((k) =>
        model.complete({ tokens: [1, 300 + k] }, { maxTokens: 40, temperature: 0, stopAtEos: false }),
      ),
    );
    for (const r of rs) expect(r.tokens.length).toBe(40);
    const after = model.stats();
    // They shared steps: more sequence-steps than steps (a one-at-a-time engine has exactly as many).
    expect(after.batchSequences - before.batchSequences).toBeGreaterThan(after.steps - before.steps);
    expect(after.requests - before.requests).toBe(4);
    const solo = await model.complete({ tokens: [1, 302] }, { maxTokens: 40, temperature: 0, stopAtEos: false });
    expect(rs[2].tokens).toEqual(solo.tokens);
  });
});

describe("dispose", () => {
  it("ends pending requests with abort and rejects new work", async () => {
    // Big enough that 2000 tokens take far longer than the dispose call.
    const p = await synthModel("api-dispose", {
      dim: 256,
      layers: 4,
      heads: 8,
      kvHeads: 2,
      ffn: 512,
      vocabSize: 400,
      type: "f32",
    });
    const m = await Model.load(p, { threads: 1, contextSize: 2048 });
    const it = m.generate("x", { maxTokens: 2000, temperature: 0, stopAtEos: false });
    const first = await it.next();
    expect(first.done).toBe(false);
    await m.dispose();
    const rest = [];
    for await (const c of it) rest.push(c);
    expect(rest[rest.length - 1]?.finishReason).toBe("abort");
    await expectCode(() => m.generate("x"), "ERR_DISPOSED");
    await m.dispose(); // idempotent
  });
  it("supports await using (Symbol.asyncDispose)", async () => {
    const p = await synthModel("api-f32", {
      dim: 64,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      ffn: 128,
      vocabSize: 400,
      type: "f32",
    });
    const m = await Model.load(p, { threads: 1, contextSize: 64 });
    await m[Symbol.asyncDispose]();
    await expectCode(() => m.generate("x"), "ERR_DISPOSED");
  });
});
