/**
 * lib/session.ts: option checks, the history a turn leaves (system text and BOS on the first turn
 * only, the reply appended; nothing on an aborted or failed turn), defaults and per-turn overrides,
 * one turn at a time, long turns tokenized off-thread, dispose.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { LlmserveError, Model } from "../../lib/index.js";
import { OFFTHREAD_MIN_CHARS } from "../../lib/tokenizer/index.js";
import { collectTokens, synthModel } from "../helpers.js";

let m: Model;
const fixed = { temperature: 0, stopAtEos: false } as const;

beforeAll(async () => {
  const path = await synthModel("session", { dim: 32, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocabSize: 512 });
  m = await Model.load(path, { threads: 1, contextSize: 8192, kvCacheTokens: 16384 });
});
afterAll(async () => {
  await m?.dispose();
});

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(LlmserveError);
    return (err as LlmserveError).code;
  }
  return undefined;
}

const enc = (text: string, addSpecial: boolean) => m.tokenizer.encode(text, { addSpecial, parseSpecial: true });

describe("Session", () => {
  it("checks its options: an object with only system (a string) and defaults", () => {
    expect(codeOf(() => m.createSession(5 as never))).toBe("ERR_INVALID_ARGUMENT");
    expect(() => m.createSession({ sytem: "x" } as never)).toThrow(
      'Unknown option "sytem" in session options; known options: system, defaults, adapter',
    );
    expect(() => m.createSession({ system: 5 } as never)).toThrow(/system/);
    expect(codeOf(() => m.createSession({ system: "ok", defaults: { maxTokens: 1 } }))).toBeUndefined();
    expect(codeOf(() => m.createSession().send(5 as never))).toBe("ERR_INVALID_ARGUMENT");
    expect(() => m.createSession().send(5 as never)).toThrow(/^Expected a string for text but received/);
  });

  it("history: system text and BOS before the first turn only, each reply appended", async () => {
    const chat = m.createSession({ system: "Be brief. " });
    expect(chat.tokens).toEqual([]);
    const r1 = await collectTokens(chat.send("Hello there.", { ...fixed, maxTokens: 4 }));
    expect(r1).toHaveLength(4);
    const first = enc("Be brief. Hello there.", true);
    expect(first[0]).toBe(m.tokenizer.bos);
    expect(chat.tokens).toEqual([...first, ...r1]);
    const r2 = await collectTokens(chat.send(" And then?", { ...fixed, maxTokens: 3 }));
    expect(chat.tokens).toEqual([...first, ...r1, ...enc(" And then?", false), ...r2]);
    // The reply is what a plain request for the whole history generates.
    expect(r2).toEqual(
      await collectTokens(
        m.generate({ tokens: [...first, ...r1, ...enc(" And then?", false)] }, { ...fixed, maxTokens: 3 }),
      ),
    );
    chat.dispose();
  });

  it("without system the first turn is the text alone; addSpecial: false leaves out BOS", async () => {
    const a = m.createSession();
    const ra = await collectTokens(a.send("Hello", { ...fixed, maxTokens: 1 }));
    expect(a.tokens).toEqual([...enc("Hello", true), ...ra]);
    const b = m.createSession({ defaults: { addSpecial: false } });
    const rb = await collectTokens(b.send("Hello", { ...fixed, maxTokens: 1 }));
    expect(b.tokens).toEqual([...enc("Hello", false), ...rb]);
    expect(b.tokens[0]).not.toBe(m.tokenizer.bos);
  });

  it("defaults apply to every turn; a turn's options override them", async () => {
    const chat = m.createSession({ defaults: { ...fixed, maxTokens: 2 } });
    expect(await collectTokens(chat.send("One"))).toHaveLength(2);
    expect(await collectTokens(chat.send(" two", { maxTokens: 5 }))).toHaveLength(5);
    expect(await collectTokens(chat.send(" three"))).toHaveLength(2);
  });

  it("one turn at a time: a second send before the first ends is refused; the next is fine", async () => {
    const chat = m.createSession();
    const gen = chat.send("Hi", { ...fixed, maxTokens: 3 });
    expect(() => chat.send("again")).toThrow(/still answering/);
    expect(codeOf(() => chat.send("again"))).toBe("ERR_INVALID_ARGUMENT");
    expect(await collectTokens(gen)).toHaveLength(3);
    expect(await collectTokens(chat.send(" more", { ...fixed, maxTokens: 2 }))).toHaveLength(2);
  });

  it("a stream left early (break) frees the session; the unfinished turn is not in the history", async () => {
    const chat = m.createSession();
    await collectTokens(chat.send("Hi", { ...fixed, maxTokens: 2 }));
    const before = [...chat.tokens];
    for await (const c of chat.send(" more", { ...fixed, maxTokens: 50 })) {
      expect(c.tokens.length).toBeGreaterThanOrEqual(0);
      break;
    }
    expect(chat.tokens).toEqual(before);
    expect(await collectTokens(chat.send(" x", { ...fixed, maxTokens: 1 }))).toHaveLength(1);
  });

  it("an aborted turn leaves the history unchanged and frees the session", async () => {
    const chat = m.createSession();
    await collectTokens(chat.send("Hi", { ...fixed, maxTokens: 2 }));
    const before = [...chat.tokens];
    const ac = new AbortController();
    ac.abort();
    await collectTokens(chat.send(" more", { ...fixed, maxTokens: 8, signal: ac.signal })).catch(() => undefined);
    expect(chat.tokens).toEqual(before);
    expect(await collectTokens(chat.send(" x", { ...fixed, maxTokens: 1 }))).toHaveLength(1);
  });

  it("a turn the engine refuses at once (context overflow) frees the session", () => {
    const chat = m.createSession();
    const long = "a".repeat(9000); // < OFFTHREAD_MIN_CHARS characters, > 8192 tokens (one a character each)
    expect(long.length).toBeLessThan(OFFTHREAD_MIN_CHARS);
    expect(codeOf(() => chat.send(long, fixed))).toBe("ERR_CONTEXT_OVERFLOW");
    expect(chat.tokens).toEqual([]);
    expect(codeOf(() => chat.send("short", { ...fixed, maxTokens: 1 }))).toBeUndefined();
  });

  it("a long turn is tokenized off-thread: same history; busy meanwhile; too long for the context is refused before tokenizing", async () => {
    const text = "word ".repeat(Math.ceil(OFFTHREAD_MIN_CHARS / 5) + 10);
    expect(text.length).toBeGreaterThanOrEqual(OFFTHREAD_MIN_CHARS);
    const spy = vi.spyOn(m.tokenizer, "encodeAsync");
    try {
      const chat = m.createSession({ system: "S. " });
      const gen = chat.send(text, { ...fixed, maxTokens: 2 });
      expect(spy).toHaveBeenCalledTimes(1);
      expect(spy.mock.calls[0][1]).toEqual({ addSpecial: true, parseSpecial: true });
      expect(() => chat.send("x")).toThrow(/still answering/);
      const reply = await collectTokens(gen);
      expect(chat.tokens).toEqual([...enc("S. " + text, true), ...reply]);
      // A second long turn: no BOS.
      const gen2 = chat.send(text, { ...fixed, maxTokens: 1 });
      expect(spy.mock.calls[1][1]).toEqual({ addSpecial: false, parseSpecial: true });
      await collectTokens(gen2);
    } finally {
      spy.mockRestore();
    }

    const huge = "x".repeat(m.maxPromptChars + 1);
    const chat = m.createSession();
    expect(() => chat.send(huge)).toThrow(new RegExp(`${huge.length} characters.*at most ${m.maxPromptChars}`));
    expect(codeOf(() => chat.send(huge))).toBe("ERR_CONTEXT_OVERFLOW");
    // Exactly at the limit is tokenized (and then refused by the engine: more tokens than the context).
    const edge = m.createSession();
    const err = await collectTokens(edge.send("x".repeat(m.maxPromptChars), fixed)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: "ERR_CONTEXT_OVERFLOW" });
    expect((err as Error).message).toMatch(/tokens/);
    expect(codeOf(() => edge.send("short", { ...fixed, maxTokens: 1 }))).toBeUndefined(); // not left busy
  });

  it("a long turn whose tokenization fails frees the session", async () => {
    const chat = m.createSession();
    const spy = vi.spyOn(m.tokenizer, "encodeAsync").mockRejectedValueOnce(new LlmserveError("ERR_TOKENIZER", "boom"));
    try {
      await expect(collectTokens(chat.send("y".repeat(OFFTHREAD_MIN_CHARS), fixed))).rejects.toThrow("boom");
    } finally {
      spy.mockRestore();
    }
    expect(chat.tokens).toEqual([]);
    expect(await collectTokens(chat.send("short", { ...fixed, maxTokens: 1 }))).toHaveLength(1);
  });

  it("dispose ends the engine session once; send afterwards is ERR_DISPOSED; `using` disposes", () => {
    const spy = vi.spyOn(m, "endSession");
    try {
      const chat = m.createSession();
      chat.dispose();
      chat.dispose();
      expect(spy.mock.calls).toEqual([[chat.id]]);
      expect(codeOf(() => chat.send("Hi"))).toBe("ERR_DISPOSED");
      expect(() => chat.send("Hi")).toThrow("This session has been disposed; create a new one.");
      const other = m.createSession();
      expect(other.id).not.toBe(chat.id);
      other[Symbol.dispose]();
      expect(spy.mock.calls).toEqual([[chat.id], [other.id]]);
    } finally {
      spy.mockRestore();
    }
  });
});
