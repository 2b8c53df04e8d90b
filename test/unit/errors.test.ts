/** lib/errors.ts: LlmserveError, and fromNative / wrapNative re-typing errors from the addon. */
import { describe, expect, it } from "vitest";
import { ERROR_CODES, LlmserveError, fromNative, wrapNative } from "../../lib/errors.js";

describe("LlmserveError", () => {
  it("carries its code, message, name and cause", () => {
    const cause = new Error("inner");
    const e = new LlmserveError("ERR_IO", "could not read", { cause });
    expect(e).toBeInstanceOf(Error);
    expect([e.name, e.code, e.message, e.cause]).toEqual(["LlmserveError", "ERR_IO", "could not read", cause]);
    expect(new LlmserveError("ERR_INTERNAL", "x").cause).toBeUndefined();
  });

  it("ERROR_CODES lists distinct ERR_ codes", () => {
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
    for (const c of ERROR_CODES) expect(c).toMatch(/^ERR_[A-Z_]+$/);
    expect(ERROR_CODES).toContain("ERR_INTERNAL");
  });
});

describe("fromNative", () => {
  it("returns an LlmserveError as it is", () => {
    const e = new LlmserveError("ERR_QUEUE_FULL", "full");
    expect(fromNative(e)).toBe(e);
  });

  it("keeps an ERR_ code and the message, with the original as the cause", () => {
    const native = Object.assign(new Error("file is truncated"), { code: "ERR_GGUF_TRUNCATED" });
    const e = fromNative(native);
    expect(e).toBeInstanceOf(LlmserveError);
    expect([e.code, e.message, e.cause]).toEqual(["ERR_GGUF_TRUNCATED", "file is truncated", native]);
  });

  it("a code that is not an ERR_ string becomes ERR_INTERNAL", () => {
    expect(fromNative(Object.assign(new Error("m"), { code: "EACCES" })).code).toBe("ERR_INTERNAL");
    expect(fromNative(Object.assign(new Error("m"), { code: 12 })).code).toBe("ERR_INTERNAL");
    expect(fromNative(new Error("m")).code).toBe("ERR_INTERNAL");
    expect(fromNative(Object.assign(new Error("m"), { code: "XERR_IO" })).code).toBe("ERR_INTERNAL");
  });

  it("without a message: 'native error' and the code, or the value", () => {
    expect(fromNative({ code: "ERR_IO" }).message).toBe("native error ERR_IO");
    expect(fromNative({ code: "ERR_IO", message: "" }).message).toBe("native error ERR_IO");
    expect(fromNative({ code: "ERR_IO", message: 5 }).message).toBe("native error ERR_IO");
    expect(fromNative("text")).toMatchObject({ code: "ERR_INTERNAL", message: "native error text" });
    expect(fromNative(undefined)).toMatchObject({ code: "ERR_INTERNAL", message: "native error undefined" });
    expect(fromNative(null)).toMatchObject({ code: "ERR_INTERNAL", message: "native error null" });
  });
});

describe("wrapNative", () => {
  it("resolves with the value, and re-types a rejection", async () => {
    await expect(wrapNative(Promise.resolve(42))).resolves.toBe(42);
    const native = Object.assign(new Error("no such file"), { code: "ERR_FILE_NOT_FOUND" });
    const err = await wrapNative(Promise.reject(native)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LlmserveError);
    expect(err).toMatchObject({ code: "ERR_FILE_NOT_FOUND", message: "no such file", cause: native });
  });
});
