/**
 * The tokenizer's Unicode helpers on their own: the GPT-2 byte mapping both ways, code points
 * llama.cpp's Unicode 15.1 tables do not know, C's isspace, and the lone-surrogate fallback for
 * runtimes without String.prototype.toWellFormed.
 */
import { describe, expect, it } from "vitest";
import {
  BYTE_TO_CHAR,
  byteLevelDecode,
  byteLevelEncode,
  isAsciiSpace,
  maskNewerCodePoints,
  toWellFormed,
  utf8Decode,
} from "../../../lib/tokenizer/unicode.js";

describe("GPT-2 byte mapping", () => {
  it("maps printable Latin-1 to itself and the other 68 bytes to U+0100.. in byte order", () => {
    expect(BYTE_TO_CHAR[0x21]).toBe("!");
    expect(BYTE_TO_CHAR[0x7e]).toBe("~");
    expect(BYTE_TO_CHAR[0xa1]).toBe("¡");
    expect(BYTE_TO_CHAR[0xac]).toBe("¬");
    expect(BYTE_TO_CHAR[0xae]).toBe("®");
    expect(BYTE_TO_CHAR[0xff]).toBe("ÿ");
    expect(BYTE_TO_CHAR[0x00]).toBe("\u0100");
    expect(BYTE_TO_CHAR[0x20]).toBe("Ġ"); // U+0120: the 33rd unprintable byte
    expect(BYTE_TO_CHAR[0x7f]).toBe("\u0121");
    expect(BYTE_TO_CHAR[0xa0]).toBe("\u0142");
    expect(BYTE_TO_CHAR[0xad]).toBe("\u0143");
    expect(new Set(BYTE_TO_CHAR).size).toBe(256);
  });

  it("encodes ASCII and non-ASCII text through UTF-8 bytes and decodes it back", () => {
    expect(byteLevelEncode("a b\n")).toBe("aĠbĊ");
    expect(byteLevelEncode("é€")).toBe("Ã©âĤ¬");
    expect(byteLevelEncode("")).toBe("");
    expect([...byteLevelDecode("aĠbĊ")]).toEqual([0x61, 0x20, 0x62, 0x0a]);
    expect(utf8Decode(byteLevelDecode("Ã©âĤ¬"))).toBe("é€");
  });

  it("keeps code points outside the mapping as their own UTF-8 bytes", () => {
    expect([...byteLevelDecode("Ġ€")]).toEqual([0x20, 0xe2, 0x82, 0xac]);
    expect([...byteLevelDecode("\u0144")]).toEqual([0xc5, 0x84]); // just past the mapped range
    expect([...byteLevelDecode("😀")]).toEqual([0xf0, 0x9f, 0x98, 0x80]);
  });
});

describe("code points newer than llama.cpp's tables", () => {
  it("become noncharacters of the same UTF-16 length; other text is returned as is", () => {
    const s = "a\u088f b\u{16100}c\u{1e5ff}";
    const m = maskNewerCodePoints(s);
    expect(m).toBe("a\ufffe b\u{10fffe}c\u{10fffe}");
    expect(m.length).toBe(s.length);
    expect(maskNewerCodePoints("plain é 😀")).toBe("plain é 😀");
    // the global regex's position does not leak from one call into the next
    expect(maskNewerCodePoints("\u088f")).toBe("\ufffe");
    expect(maskNewerCodePoints("\u088f")).toBe("\ufffe");
  });
});

describe("isAsciiSpace (C isspace)", () => {
  it("is space, \\t \\n \\v \\f \\r and nothing else", () => {
    const yes = [0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d];
    for (let c = 0; c < 0x100; c++) expect(isAsciiSpace(c), c.toString(16)).toBe(yes.includes(c));
  });
});

describe("toWellFormed", () => {
  it("replaces lone surrogates with U+FFFD, with or without String.prototype.toWellFormed", () => {
    const cases: Array<[string, string]> = [
      ["a\ud800b", "a\ufffdb"],
      ["a\udc00b", "a\ufffdb"],
      ["\ud83d\ude00", "\ud83d\ude00"],
      ["\ude00\ud83d", "\ufffd\ufffd"],
      ["x\ud800", "x\ufffd"],
    ];
    for (const [s, want] of cases) expect(toWellFormed(s)).toBe(want);
    const proto = String.prototype as { toWellFormed?: unknown };
    const saved = Object.getOwnPropertyDescriptor(String.prototype, "toWellFormed");
    delete proto.toWellFormed;
    try {
      for (const [s, want] of cases) expect(toWellFormed(s), `fallback ${JSON.stringify(s)}`).toBe(want);
    } finally {
      if (saved) Object.defineProperty(String.prototype, "toWellFormed", saved);
    }
  });
});
