/** Option validation (lib/validate.ts) and limit descriptions (lib/limits.ts): values and messages. */
import { describe, expect, it } from "vitest";
import { LlmserveError } from "../../lib/errors.js";
import { describeLimit, GENERATE_LIMITS, LIMITS, LOAD_LIMITS } from "../../lib/limits.js";
import {
  checkBool,
  checkInt,
  checkKeys,
  checkLimit,
  checkNumber,
  checkObject,
  checkPath,
  checkString,
} from "../../lib/validate.js";

/** The message of the ERR_INVALID_ARGUMENT error f throws (fails if it throws nothing else). */
function message(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(LlmserveError);
    expect((e as LlmserveError).code).toBe("ERR_INVALID_ARGUMENT");
    return (e as Error).message;
  }
  throw new Error("expected a throw");
}

describe("checkInt", () => {
  it("returns integers in range, bounds included", () => {
    expect(checkInt("n", 0, 0)).toBe(0);
    expect(checkInt("n", 5, 1, 5)).toBe(5);
    expect(checkInt("n", 1, 1, 5)).toBe(1);
    expect(checkInt("n", Number.MAX_SAFE_INTEGER, 0)).toBe(Number.MAX_SAFE_INTEGER);
  });
  it("names the range in words", () => {
    expect(message(() => checkInt("n", -1, 0))).toBe("Expected non-negative integer for n but received -1");
    expect(message(() => checkInt("n", 0, 1))).toBe("Expected positive integer for n but received 0");
    expect(message(() => checkInt("n", 2, 3))).toBe("Expected integer >= 3 for n but received 2");
    expect(message(() => checkInt("n", 6, 1, 5))).toBe("Expected an integer in [1, 5] for n but received 6");
    expect(message(() => checkInt("n", 0, 1, 5))).toBe("Expected an integer in [1, 5] for n but received 0");
    expect(message(() => checkInt("n", 1.5, 0))).toBe("Expected non-negative integer for n but received 1.5");
    expect(message(() => checkInt("n", "3", 0))).toBe('Expected non-negative integer for n but received "3"');
    expect(message(() => checkInt("n", [1], 0))).toBe("Expected non-negative integer for n but received an array");
    expect(message(() => checkInt("n", {}, 0))).toBe("Expected non-negative integer for n but received object");
    expect(message(() => checkInt("n", null, 0))).toBe("Expected non-negative integer for n but received null");
    expect(message(() => checkInt("n", undefined, 0))).toBe(
      "Expected non-negative integer for n but received undefined",
    );
    expect(message(() => checkInt("n", true, 0))).toBe("Expected non-negative integer for n but received true");
    expect(message(() => checkInt("n", NaN, 0))).toBe("Expected non-negative integer for n but received NaN");
  });
});

describe("checkLimit and describeLimit", () => {
  it("accepts the bounds of a closed range and rejects just outside", () => {
    const l = GENERATE_LIMITS.logprobs;
    expect(checkLimit("logprobs", 0, l)).toBe(0);
    expect(checkLimit("logprobs", 20, l)).toBe(20);
    expect(message(() => checkLimit("logprobs", 21, l))).toBe(
      "Expected an integer in [0, 20] for logprobs but received 21",
    );
    expect(message(() => checkLimit("logprobs", -1, l))).toBe(
      "Expected an integer in [0, 20] for logprobs but received -1",
    );
    expect(message(() => checkLimit("logprobs", 1.5, l))).toBe(
      "Expected an integer in [0, 20] for logprobs but received 1.5",
    );
  });
  it("an exclusive minimum excludes only the minimum", () => {
    const l = GENERATE_LIMITS.topP;
    expect(message(() => checkLimit("topP", 0, l))).toBe("Expected a number in (0, 1] for topP but received 0");
    expect(checkLimit("topP", 1e-9, l)).toBe(1e-9);
    expect(checkLimit("topP", 1, l)).toBe(1);
    expect(checkLimit("minP", 0, GENERATE_LIMITS.minP)).toBe(0);
    expect(checkLimit("temperature", 0.5, GENERATE_LIMITS.temperature)).toBe(0.5); // a non-integer where allowed
  });
  it("rejects non-finite numbers and non-numbers", () => {
    const l = LOAD_LIMITS.threads;
    expect(message(() => checkLimit("threads", Infinity, { ...l, max: Infinity }))).toMatch(/received Infinity$/);
    expect(message(() => checkLimit("threads", NaN, l))).toBe(
      "Expected an integer in [1, 512] for threads but received NaN",
    );
    expect(message(() => checkLimit("threads", "2", l))).toBe(
      'Expected an integer in [1, 512] for threads but received "2"',
    );
  });
  it("describes ranges in the words the addon uses", () => {
    expect(describeLimit({ min: 0, max: 20, integer: true, minExclusive: false })).toBe("an integer in [0, 20]");
    expect(describeLimit({ min: 0, max: 1, integer: false, minExclusive: true })).toBe("a number in (0, 1]");
    expect(LIMITS.generate.topK).toEqual({ min: 0, max: 2147483647, integer: true, minExclusive: false });
    expect(LIMITS.load.maxSequences).toEqual({ min: 1, max: 65536, integer: true, minExclusive: false });
  });
});

describe("checkNumber", () => {
  it("checks closed and half-open ranges", () => {
    expect(checkNumber("x", 0, 0, 1)).toBe(0);
    expect(checkNumber("x", 1, 0, 1)).toBe(1);
    expect(message(() => checkNumber("x", 1.01, 0, 1))).toBe("Expected a number in [0, 1] for x but received 1.01");
    expect(message(() => checkNumber("x", -0.5, 0, 1))).toBe("Expected a number in [0, 1] for x but received -0.5");
    expect(message(() => checkNumber("x", 0, 0, 1, { minExclusive: true }))).toBe(
      "Expected a number in (0, 1] for x but received 0",
    );
    expect(checkNumber("x", 0.1, 0, 1, { minExclusive: true })).toBe(0.1);
    expect(message(() => checkNumber("x", -1, 0, Number.MAX_VALUE))).toBe(
      "Expected a number in [0, inf) for x but received -1",
    );
    expect(message(() => checkNumber("x", Infinity, 0, Number.MAX_VALUE))).toBe(
      "Expected a number in [0, inf) for x but received Infinity",
    );
    expect(message(() => checkNumber("x", "1", 0, 2))).toBe('Expected a number in [0, 2] for x but received "1"');
  });
});

describe("checkBool, checkString, checkObject, checkKeys, checkPath", () => {
  it("checkBool", () => {
    expect(checkBool("b", false)).toBe(false);
    expect(checkBool("b", true)).toBe(true);
    expect(message(() => checkBool("b", 1))).toBe("Expected true or false for b but received 1");
  });
  it("checkString with and without allowed values", () => {
    expect(checkString("s", "")).toBe("");
    expect(checkString("kvType", "f16", ["f16", "q8_0"])).toBe("f16");
    expect(message(() => checkString("s", 3))).toBe("Expected a string for s but received 3");
    expect(message(() => checkString("kvType", "q4", ["f16", "q8_0"]))).toBe(
      'Expected one of "f16", "q8_0" for kvType but received "q4"',
    );
  });
  it("checkObject", () => {
    expect(checkObject("o", undefined)).toEqual({});
    const o = { a: 1 };
    expect(checkObject("o", o)).toBe(o);
    expect(message(() => checkObject("o", null))).toBe("Expected an options object for o but received null");
    expect(message(() => checkObject("o", [1]))).toBe("Expected an options object for o but received an array");
    expect(message(() => checkObject("o", "x"))).toBe('Expected an options object for o but received "x"');
  });
  it("checkKeys lists the known options", () => {
    expect(() => checkKeys("opts", { a: 1, b: 2 }, ["a", "b", "c"])).not.toThrow();
    expect(message(() => checkKeys("opts", { a: 1, maxToken: 2 }, ["a", "maxTokens"]))).toBe(
      'Unknown option "maxToken" in opts; known options: a, maxTokens',
    );
  });
  it("checkPath", () => {
    expect(checkPath("path", "/a/b.gguf")).toBe("/a/b.gguf");
    expect(message(() => checkPath("path", ""))).toBe('Expected a file path string for path but received ""');
    expect(message(() => checkPath("path", 7))).toBe("Expected a file path string for path but received 7");
    expect(message(() => checkPath("path", "ab\0c"))).toBe(
      'Expected a file path without NUL characters for path but the string contains "\\0" at index 2',
    );
  });
});
