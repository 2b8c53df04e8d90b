/** resolveOptions (lib/generate.ts): defaults, validation, and the response-cache key. */
import { describe, expect, it } from "vitest";
import { LlmserveError } from "../../lib/errors.js";
import { resolveOptions } from "../../lib/generate.js";

const EOG = [2, 7];

function invalid(raw: unknown): string {
  try {
    resolveOptions(raw, EOG);
  } catch (e) {
    expect(e).toBeInstanceOf(LlmserveError);
    expect((e as LlmserveError).code).toBe("ERR_INVALID_ARGUMENT");
    return (e as Error).message;
  }
  throw new Error("expected ERR_INVALID_ARGUMENT");
}

describe("resolveOptions", () => {
  it("fills llama.cpp's defaults (every field the addon requires) and stops at the end-of-generation tokens", () => {
    const r = resolveOptions(undefined, EOG);
    // No seed given: a random one in [0, 2^32) per call (checked below), reported on the last chunk.
    expect(Number.isInteger(r.params.seed) && r.params.seed >= 0 && r.params.seed < 2 ** 32).toBe(true);
    expect(r.params).toEqual({
      maxTokens: 256,
      temperature: 0.8,
      topK: 40,
      topP: 0.95,
      minP: 0.05,
      repeatPenalty: 1,
      repeatLastN: 64,
      frequencyPenalty: 0,
      presencePenalty: 0,
      seed: r.params.seed,
      logprobs: 0,
      wantLogprobs: false,
      priority: 0,
      session: 0,
      pin: false,
      adapter: 0,
      stopTokens: [2, 7],
      logitBias: [],
      grammar: "",
    });
    expect(r.stop).toEqual([]);
    expect(r.wantLogprobs).toBe(false);
    expect(r.parseSpecial).toBe(true);
    expect(r.addSpecial).toBe(true);
    expect(r.signal).toBeUndefined();
    expect(r.cacheKey).toBeUndefined();
  });

  it("passes given values through", () => {
    const signal = new AbortController().signal;
    const r = resolveOptions(
      {
        maxTokens: 3,
        temperature: 0,
        topK: 5,
        topP: 0.5,
        minP: 0.1,
        repeatPenalty: 1.1,
        repeatLastN: -1,
        frequencyPenalty: 0.5,
        presencePenalty: -0.5,
        seed: 9,
        logprobs: 2,
        stop: ["\n", "END"],
        stopAtEos: false,
        parseSpecial: false,
        addSpecial: false,
        signal,
        priority: 3,
      },
      EOG,
    );
    expect(r.params).toEqual({
      maxTokens: 3,
      temperature: 0,
      topK: 5,
      topP: 0.5,
      minP: 0.1,
      repeatPenalty: 1.1,
      repeatLastN: -1,
      frequencyPenalty: 0.5,
      presencePenalty: -0.5,
      seed: 9,
      logprobs: 2,
      wantLogprobs: true,
      stopTokens: [],
      priority: 3,
      session: 0,
      pin: false,
      adapter: 0,
      logitBias: [],
      grammar: "",
    });
    expect(r.stop).toEqual(["\n", "END"]);
    expect(r.wantLogprobs).toBe(true);
    expect(r.parseSpecial).toBe(false);
    expect(r.addSpecial).toBe(false);
    expect(r.signal).toBe(signal);
    expect(resolveOptions({ logprobs: 0 }, EOG).wantLogprobs).toBe(true);
    expect(resolveOptions({ stopAtEos: true }, EOG).params.stopTokens).toEqual([2, 7]);
  });

  it("an absent seed is drawn at random per call (not a fixed 0); a given one is kept", () => {
    const seeds = new Set(Array.from({ length: 8 }, () => resolveOptions({}, EOG).params.seed));
    expect(seeds.size).toBeGreaterThan(1);
    expect(resolveOptions({ seed: 0 }, EOG).params.seed).toBe(0);
    expect(resolveOptions({ seed: 2 ** 40 }, EOG).params.seed).toBe(2 ** 40);
  });

  it("logitBias: an object or a Map of token id -> bias becomes [token, bias] pairs sorted by token", () => {
    expect(resolveOptions({ logitBias: { 7: -100, 3: 2.5 } }, EOG).params.logitBias).toEqual([
      [3, 2.5],
      [7, -100],
    ]);
    expect(resolveOptions({ logitBias: new Map([[9, 100]]) }, EOG).params.logitBias).toEqual([[9, 100]]);
    expect(resolveOptions({ logitBias: {} }, EOG).params.logitBias).toEqual([]);
    expect(invalid({ logitBias: { 3: 101 } })).toBe(
      "Expected a number in [-100, 100] for logitBias[3] but received 101",
    );
    expect(invalid({ logitBias: { 3: "1" } })).toBe(
      'Expected a number in [-100, 100] for logitBias[3] but received "1"',
    );
    expect(invalid({ logitBias: { "-1": 1 } })).toBe('Expected token ids as the keys of logitBias but received "-1"');
    expect(invalid({ logitBias: { "01": 1 } })).toBe('Expected token ids as the keys of logitBias but received "01"');
    expect(invalid({ logitBias: new Map([[1.5, 1]]) })).toBe(
      "Expected an integer in [0, 2147483647] for logitBias token id but received 1.5",
    );
    expect(invalid({ logitBias: [[1, 2]] })).toBe(
      "Expected an object or a Map of token id -> bias in [-100, 100] for logitBias",
    );
    // The response cache keys on the bias: a different bias is a different request.
    const key = (logitBias: Record<number, number>) =>
      resolveOptions({ cache: true, temperature: 0, logitBias }, EOG).cacheKey;
    expect(key({ 1: 5 })).not.toBe(key({ 1: 6 }));
  });

  it("refuses bad values with messages naming the option", () => {
    expect(invalid({ maxToken: 3 })).toMatch(/^Unknown option "maxToken" in generate options/);
    expect(invalid({ stop: "x" })).toBe("Expected an array of non-empty strings for stop");
    expect(invalid({ stop: ["a", ""] })).toBe("Expected an array of non-empty strings for stop");
    expect(invalid({ stop: ["a", 3] })).toBe("Expected an array of non-empty strings for stop");
    expect(invalid({ signal: {} })).toBe("Expected an AbortSignal for signal");
    expect(invalid({ stopAtEos: 1 })).toBe("Expected true or false for stopAtEos but received 1");
    expect(invalid({ logprobs: 21 })).toBe("Expected an integer in [0, 20] for logprobs but received 21");
    expect(invalid({ topK: -1 })).toBe("Expected an integer in [0, 2147483647] for topK but received -1");
    expect(invalid({ priority: 0.5 })).toBe("Expected an integer in [-1000000, 1000000] for priority but received 0.5");
    expect(invalid({ cache: "yes" })).toBe('Expected true or false for cache but received "yes"');
    expect(invalid({ parseSpecial: 0 })).toBe("Expected true or false for parseSpecial but received 0");
    expect(invalid({ addSpecial: null })).toBe("Expected true or false for addSpecial but received null");
    expect(invalid("x")).toBe('Expected an options object for generate options but received "x"');
  });

  it("cache: true needs greedy or a seed; its key holds the sampling parameters and stops, not the priority", () => {
    expect(invalid({ cache: true })).toBe(
      "cache: true needs a deterministic request: set temperature to 0 or pass a seed",
    );
    expect(invalid({ cache: true, temperature: 0.5 })).toMatch(/deterministic/);
    expect(resolveOptions({ cache: false }, EOG).cacheKey).toBeUndefined();
    const greedy = resolveOptions({ cache: true, temperature: 0, stop: ["x"] }, EOG);
    const seeded = resolveOptions({ cache: true, seed: 0 }, EOG);
    expect(typeof seeded.cacheKey).toBe("string");
    expect(JSON.parse(seeded.cacheKey!).seed).toBe(0);
    expect(resolveOptions({ cache: true, seed: 1 }, EOG).cacheKey).not.toBe(seeded.cacheKey);
    // Greedy output does not depend on the (random) seed: two unseeded greedy requests share a key.
    expect(resolveOptions({ cache: true, temperature: 0 }, EOG).cacheKey).toBe(
      resolveOptions({ cache: true, temperature: 0 }, EOG).cacheKey,
    );
    expect(JSON.parse(greedy.cacheKey!)).toEqual({
      ...greedy.params,
      seed: undefined,
      priority: undefined,
      session: undefined,
      pin: undefined,
      stop: ["x"],
    });
    const a = resolveOptions({ cache: true, temperature: 0, priority: 1 }, EOG).cacheKey;
    const b = resolveOptions({ cache: true, temperature: 0, priority: 2 }, EOG).cacheKey;
    expect(a).toBe(b);
    expect(a).not.toMatch(/priority/);
    expect(resolveOptions({ cache: true, temperature: 0, maxTokens: 5 }, EOG).cacheKey).not.toBe(a);
    expect(resolveOptions({ cache: true, temperature: 0, stop: ["y"] }, EOG).cacheKey).not.toBe(greedy.cacheKey);
  });
});
