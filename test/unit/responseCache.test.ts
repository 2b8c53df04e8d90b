/**
 * ResponseCache: LRU within a byte budget. Each test fails if its feature is switched off: a cache
 * that never evicts, evicts the newest, does not refresh on a hit, ignores the budget, or stores
 * entries larger than the budget.
 */
import { describe, expect, it } from "vitest";
import type { Chunk, FinalChunk } from "../../lib/generate.js";
import { ResponseCache } from "../../lib/responseCache.js";

const chunk = (text: string, extra: Partial<FinalChunk> = {}): Chunk =>
  ({ text, tokens: [text.length], ...extra }) as Chunk;
/** The bytes set() charges for an entry: UTF-16 code units of the key and of the stored chunks' JSON. */
const cost = (key: string, chunks: Chunk[]) => key.length * 2 + JSON.stringify(chunks).length * 2;

describe("ResponseCache", () => {
  it("key separates model, tokens and parameters", () => {
    const k = ResponseCache.key("m.gguf", [1, 2, 3], "p");
    expect(k).toBe("m.gguf\u00001,2,3\u0000p");
    expect(ResponseCache.key("m.gguf", [1, 23], "p")).not.toBe(ResponseCache.key("m.gguf", [12, 3], "p"));
    expect(ResponseCache.key("a", [1], "p")).not.toBe(ResponseCache.key("b", [1], "p"));
    expect(ResponseCache.key("a", [1], "p")).not.toBe(ResponseCache.key("a", [1], "q"));
  });

  it("stores and replays chunks without their timings, counting hits and misses", () => {
    const c = new ResponseCache(1 << 20);
    expect(c.get("k")).toBeUndefined();
    expect(c.misses).toBe(1);
    expect(c.hits).toBe(0);
    const timings = {
      promptMs: 1,
      generateMs: 2,
      promptTokens: 3,
      generatedTokens: 4,
      reusedTokens: 0,
      promptTokensPerSecond: 3000,
      generateTokensPerSecond: 2000,
    };
    c.set("k", [chunk("ab"), chunk("c", { done: true, finishReason: "length", timings })]);
    const hit = c.get("k");
    expect(hit).toEqual([chunk("ab"), chunk("c", { done: true, finishReason: "length" })]);
    expect(hit?.[1]).not.toHaveProperty("timings");
    expect(c.hits).toBe(1);
    expect(c.misses).toBe(1);
    expect(c.entries).toBe(1);
    expect(c.usedBytes).toBe(cost("k", [chunk("ab"), chunk("c", { done: true, finishReason: "length" })]));
  });

  it("evicts the least recently used entry first, and a hit refreshes an entry", () => {
    const one = cost("a", [chunk("x")]);
    const c = new ResponseCache(3 * one); // room for exactly three same-sized entries
    c.set("a", [chunk("x")]);
    c.set("b", [chunk("x")]);
    c.set("c", [chunk("x")]);
    expect(c.entries).toBe(3);
    expect(c.usedBytes).toBe(3 * one);
    expect(c.get("a")).toBeDefined(); // a is now the most recently used; b is the oldest
    c.set("d", [chunk("x")]);
    expect(c.entries).toBe(3);
    expect(c.get("b")).toBeUndefined();
    expect(c.get("a")).toBeDefined();
    expect(c.get("c")).toBeDefined();
    expect(c.get("d")).toBeDefined();
    // Order now (oldest first): a, c, d. Two more evict a then c.
    c.set("e", [chunk("x")]);
    expect(c.get("a")).toBeUndefined();
    c.set("f", [chunk("x")]);
    expect(c.get("c")).toBeUndefined();
    expect(c.get("d")).toBeDefined();
    expect(c.usedBytes).toBe(3 * one);
  });

  it("never holds more than its byte budget, evicting as many entries as a large one needs", () => {
    const small = cost("a", [chunk("x")]);
    const c = new ResponseCache(4 * small);
    for (const k of ["a", "b", "c", "d"]) c.set(k, [chunk("x")]);
    expect(c.usedBytes).toBe(4 * small);
    const big = [chunk("y".repeat(Math.floor(small / 2) + 8))]; // more than two small entries' worth, under the budget
    const bigCost = cost("z", big);
    expect(bigCost).toBeGreaterThan(2 * small);
    expect(bigCost).toBeLessThanOrEqual(3 * small);
    c.set("z", big);
    expect(c.usedBytes).toBeLessThanOrEqual(c.maxBytes);
    expect(c.usedBytes).toBe(small + bigCost); // a, b and c went; d stays
    expect(c.entries).toBe(2);
    expect(c.get("a")).toBeUndefined();
    expect(c.get("c")).toBeUndefined();
    expect(c.get("d")).toBeDefined();
    expect(c.get("z")).toEqual(big);
  });

  it("an entry larger than the whole budget is not stored and evicts nothing", () => {
    const c = new ResponseCache(200);
    c.set("a", [chunk("x")]);
    const before = c.usedBytes;
    c.set("huge", [chunk("y".repeat(200))]);
    expect(c.get("huge")).toBeUndefined();
    expect(c.get("a")).toBeDefined();
    expect(c.usedBytes).toBe(before);
    // Exactly the budget fits.
    const exact = new ResponseCache(cost("k", [chunk("x")]));
    exact.set("k", [chunk("x")]);
    expect(exact.entries).toBe(1);
  });

  it("replacing a key charges its new size once", () => {
    const c = new ResponseCache(1 << 20);
    c.set("k", [chunk("short")]);
    c.set("k", [chunk("a longer text")]);
    expect(c.entries).toBe(1);
    expect(c.usedBytes).toBe(cost("k", [chunk("a longer text")]));
    expect(c.get("k")).toEqual([chunk("a longer text")]);
  });

  it("a budget of 0 stores nothing", () => {
    const c = new ResponseCache(0);
    c.set("k", [chunk("x")]);
    expect(c.entries).toBe(0);
    expect(c.usedBytes).toBe(0);
    expect(c.get("k")).toBeUndefined();
  });
});
