/**
 * Unicode helpers shared by the tokenizers: UTF-8 conversion, the GPT-2 byte <-> unicode mapping,
 * and the character-class corrections needed to match llama.cpp's own Unicode tables.
 */

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { ignoreBOM: true }); // non-fatal: invalid sequences become U+FFFD; a leading U+FEFF is kept

/** UTF-8 bytes of a string (lone surrogates become U+FFFD, as in any UTF-8 conversion). */
export function utf8Encode(s: string): Uint8Array {
  return textEncoder.encode(s);
}

/** Decodes UTF-8; invalid or truncated sequences become U+FFFD. */
export function utf8Decode(bytes: Uint8Array): string {
  return textDecoder.decode(bytes);
}

/** Replaces lone UTF-16 surrogates with U+FFFD (what llama.cpp sees after a UTF-8 conversion). */
export function toWellFormed(s: string): string {
  const f = (s as { toWellFormed?: () => string }).toWellFormed;
  if (typeof f === "function") return f.call(s);
  return s.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
}

// ---------------------------------------------------------------------------------------------
// GPT-2 byte-level encoding: every byte maps to one printable code point.
// Bytes that are printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves; the remaining
// 68 bytes map, in byte order, to U+0100, U+0101, ...

/** BYTE_TO_CHAR[b] is the one-character string that byte b becomes in byte-level BPE. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const out: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    out[b] = String.fromCharCode(printable ? b : 256 + n++);
  }
  return out;
})();

/** Inverse of BYTE_TO_CHAR, indexed by UTF-16 code unit (all mapped chars are below U+0144). */
const CHAR_TO_BYTE: Int16Array = (() => {
  const t = new Int16Array(0x200).fill(-1);
  BYTE_TO_CHAR.forEach((ch, b) => {
    t[ch.charCodeAt(0)] = b;
  });
  return t;
})();

/** Byte-level encoding of a string: its UTF-8 bytes, each replaced by its BYTE_TO_CHAR. */
export function byteLevelEncode(s: string): string {
  // fast path for ASCII-only text
  let ascii = true;
  for (let i = 0; i < s.length; i++) {
    if (s.charCodeAt(i) >= 0x80) {
      ascii = false;
      break;
    }
  }
  let out = "";
  if (ascii) {
    for (let i = 0; i < s.length; i++) out += BYTE_TO_CHAR[s.charCodeAt(i)];
    return out;
  }
  for (const b of utf8Encode(s)) out += BYTE_TO_CHAR[b];
  return out;
}

/**
 * Undoes the byte-level encoding of a token's text. Code points that are not part of the mapping
 * (which a well-formed byte-level vocabulary never contains) are kept as their own UTF-8 bytes.
 */
export function byteLevelDecode(s: string): Uint8Array {
  const out: number[] = [];
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    const b = cp < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[cp] : -1;
    if (b >= 0) out.push(b);
    else for (const x of utf8Encode(ch)) out.push(x);
  }
  return Uint8Array.from(out);
}

// ---------------------------------------------------------------------------------------------
// llama.cpp classifies code points with tables generated from Unicode 15.1; JavaScript's \p{...}
// follows the (newer) Unicode version of the running Node.js. Code points assigned since 15.1
// are "unassigned" for llama.cpp, so for exact parity they must not match \p{L}, \p{N}, ... here
// either. These are the code points added in Unicode 16.0 and 17.0 (from the Unicode Character
// Database, DerivedAge.txt).
const ADDED_AFTER_UNICODE_15_1: ReadonlyArray<number | readonly [number, number]> = [
  0x88f,
  0x897,
  0xc5c,
  0xcdc,
  [0x1acf, 0x1add],
  [0x1ae0, 0x1aeb],
  [0x1b4e, 0x1b4f],
  0x1b7f,
  [0x1c89, 0x1c8a],
  0x20c1,
  [0x2427, 0x2429],
  0x2b96,
  [0x31e4, 0x31e5],
  [0xa7cb, 0xa7cf],
  0xa7d2,
  0xa7d4,
  [0xa7da, 0xa7dc],
  0xa7f1,
  [0xfbc3, 0xfbd2],
  [0xfd90, 0xfd91],
  [0xfdc8, 0xfdce],
  [0x105c0, 0x105f3],
  [0x10940, 0x10959],
  [0x10d40, 0x10d65],
  [0x10d69, 0x10d85],
  [0x10d8e, 0x10d8f],
  [0x10ec2, 0x10ec7],
  [0x10ed0, 0x10ed8],
  [0x10efa, 0x10efc],
  [0x11380, 0x11389],
  0x1138b,
  0x1138e,
  [0x11390, 0x113b5],
  [0x113b7, 0x113c0],
  0x113c2,
  0x113c5,
  [0x113c7, 0x113ca],
  [0x113cc, 0x113d5],
  [0x113d7, 0x113d8],
  [0x113e1, 0x113e2],
  [0x116d0, 0x116e3],
  [0x11b60, 0x11b67],
  [0x11bc0, 0x11be1],
  [0x11bf0, 0x11bf9],
  [0x11db0, 0x11ddb],
  [0x11de0, 0x11de9],
  0x11f5a,
  [0x13460, 0x143fa],
  [0x16100, 0x16139],
  [0x16d40, 0x16d79],
  [0x16ea0, 0x16eb8],
  [0x16ebb, 0x16ed3],
  [0x16ff2, 0x16ff6],
  [0x187f8, 0x187ff],
  0x18cff,
  [0x18d09, 0x18d1e],
  [0x18d80, 0x18df2],
  [0x1cc00, 0x1ccfc],
  [0x1cd00, 0x1ceb3],
  [0x1ceba, 0x1ced0],
  [0x1cee0, 0x1cef0],
  [0x1e5d0, 0x1e5fa],
  0x1e5ff,
  [0x1e6c0, 0x1e6de],
  [0x1e6e0, 0x1e6f5],
  [0x1e6fe, 0x1e6ff],
  0x1f6d8,
  [0x1f777, 0x1f77a],
  [0x1f8b2, 0x1f8bb],
  [0x1f8c0, 0x1f8c1],
  [0x1f8d0, 0x1f8d8],
  [0x1fa54, 0x1fa57],
  [0x1fa89, 0x1fa8a],
  [0x1fa8e, 0x1fa8f],
  0x1fabe,
  0x1fac6,
  0x1fac8,
  0x1facd,
  0x1fadc,
  0x1fadf,
  [0x1fae9, 0x1faea],
  0x1faef,
  [0x1fbcb, 0x1fbef],
  0x1fbfa,
  [0x2b73a, 0x2b73f],
  [0x2cea2, 0x2cead],
  [0x323b0, 0x33479],
];

const hex = (cp: number) => `\\u{${cp.toString(16)}}`;
const NEWER_CHARS = new RegExp(
  `[${ADDED_AFTER_UNICODE_15_1.map((r) => (typeof r === "number" ? hex(r) : `${hex(r[0])}-${hex(r[1])}`)).join("")}]`,
  "gu",
);

/**
 * Replaces code points that llama.cpp considers unassigned (see above) with permanently unassigned
 * noncharacters of the same UTF-16 length (U+FFFE / U+10FFFE), so that offsets stay aligned and
 * Unicode-class regexes treat them as llama.cpp does. Returns the input unchanged when none occur.
 */
export function maskNewerCodePoints(s: string): string {
  NEWER_CHARS.lastIndex = 0;
  if (!NEWER_CHARS.test(s)) return s;
  NEWER_CHARS.lastIndex = 0;
  return s.replace(NEWER_CHARS, (m) => (m.length === 1 ? "\uFFFE" : "\u{10FFFE}"));
}

/** Is this UTF-16 code unit ASCII whitespace as C's isspace() sees it (" \t\n\v\f\r")? */
export function isAsciiSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}
