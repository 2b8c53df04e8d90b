// Fuzz harness for the TypeScript tokenizer (lib/tokenizer, run from dist/): seeded random and
// mutated texts and id sequences against every vocabulary in ../shared/fixtures/vocab (read with
// readGguf, when the addon is built) and two synthesized ones (SentencePiece with byte fallback,
// byte-level BPE). Bounded by --runs (executions: one input on one vocabulary) and --max-time.
//
// Invariants checked per execution:
//   - encode(text, {addSpecial, parseSpecial}) never throws and returns integer ids in [0, nVocab);
//   - decode(encode(text, {parseSpecial: false})) === toWellFormed(text) (all these vocabularies
//     can spell every byte), with and without BOS/EOS;
//   - streaming: the pieces of createDecoder({special, stripLeadingSpace}) plus flush() equal
//     decode(ids, the same options), for encoded and for random id sequences;
//   - decode / tokenBytes / piece on an id outside [0, nVocab) (or not an integer) throw
//     LlmserveError ERR_INVALID_ARGUMENT and nothing else; valid random ids never throw.
// Prints "executions: N" and one "FINDING <json>" line per failure (the input is saved under
// build-fuzz/findings/tokenizer/). Exit 1 on any finding.
//
//   node scripts/fuzz/tokenizer.mjs [--runs 200000] [--seed 1] [--max-time 600]
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const { values: opt } = parseArgs({
  options: {
    runs: { type: "string", default: "200000" },
    seed: { type: "string", default: "1" },
    "max-time": { type: "string", default: "1200" },
    "vocab-dir": {
      type: "string",
      default: process.env.LLMSERVE_VOCAB_DIR ?? join(root, "..", "shared", "fixtures", "vocab"),
    },
  },
});
const dist = join(root, "dist");
if (!existsSync(join(dist, "tokenizer", "index.js"))) {
  console.error("tokenizer fuzz: dist/ not built; run `npm run build:ts` (or `npm run build`) first");
  process.exit(2);
}
const { Tokenizer } = await import(pathToFileURL(join(dist, "tokenizer", "index.js")).href);
const { LlmserveError } = await import(pathToFileURL(join(dist, "errors.js")).href);
const { BYTE_TO_CHAR } = await import(pathToFileURL(join(dist, "tokenizer", "unicode.js")).href);

// ---- deterministic PRNG (mulberry32) --------------------------------------------------------
let state = Number(opt.seed) >>> 0 || 1;
function rnd() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (n) => Math.floor(rnd() * n);
const pick = (a) => a[int(a.length)];

// ---- vocabularies ----------------------------------------------------------------------------
const NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  BYTE = 6;

function synthSpm() {
  const tokens = ["<unk>", "<s>", "</s>"],
    types = [UNKNOWN, CONTROL, CONTROL],
    scores = [0, 0, 0];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(BYTE);
    scores.push(0);
  }
  // Pieces whose every prefix is a piece too (SentencePiece merges reach them), in several scripts.
  const alphabet = [..."abcdefghijklmnopqrstuvwxyz▁éü日本語한국🦙0123456789.,'"];
  const seen = new Set(tokens);
  let r = 12345;
  const next = () => (r = (Math.imul(r, 1103515245) + 12345) >>> 0) >>> 8;
  const pieces = [...alphabet];
  for (let i = 0; pieces.length < 1500 && i < 100000; i++) {
    const p = pieces[next() % pieces.length] + alphabet[next() % alphabet.length];
    if (!seen.has(p) && [...p].length <= 8) {
      pieces.push(p);
      seen.add(p);
    }
  }
  pieces.forEach((p, i) => {
    tokens.push(p);
    types.push(NORMAL);
    scores.push(-i / 10);
  });
  for (const [t, ty] of [
    ["<|im_start|>", CONTROL],
    ["<|im_end|>", CONTROL],
    ["<|tool|>", USER_DEFINED],
  ]) {
    tokens.push(t);
    types.push(ty);
    scores.push(0);
  }
  return {
    "general.architecture": "llama",
    "tokenizer.ggml.model": "llama",
    "tokenizer.ggml.tokens": tokens,
    "tokenizer.ggml.scores": Float32Array.from(scores),
    "tokenizer.ggml.token_type": Int32Array.from(types),
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.eos_token_id": 2,
    "tokenizer.ggml.unknown_token_id": 0,
  };
}

function synthBpe() {
  const tokens = [...BYTE_TO_CHAR];
  const have = new Set(tokens);
  const merges = [];
  let r = 777;
  const next = () => (r = (Math.imul(r, 1103515245) + 12345) >>> 0) >>> 8;
  const common = [..."etaoinshrdlu Ġ"].map((c) => (c === " " ? "Ġ" : c));
  for (let i = 0; merges.length < 800 && i < 100000; i++) {
    const a =
      i < 2000 ? common[next() % common.length] : (tokens[256 + (next() % Math.max(1, tokens.length - 256))] ?? "e");
    const b = common[next() % common.length];
    const m = a + b;
    if (have.has(m) || m.length > 10) continue;
    merges.push(`${a} ${b}`);
    tokens.push(m);
    have.add(m);
  }
  tokens.push("<|endoftext|>", "<|im_start|>");
  return {
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.pre": "gpt-2",
    "tokenizer.ggml.tokens": tokens,
    "tokenizer.ggml.token_type": Int32Array.from(tokens.map((t) => (t.startsWith("<|") ? CONTROL : NORMAL))),
    "tokenizer.ggml.merges": merges,
    "tokenizer.ggml.bos_token_id": tokens.indexOf("<|endoftext|>"),
    "tokenizer.ggml.eos_token_id": tokens.indexOf("<|endoftext|>"),
  };
}

const fromMd = (name, md) => ({ name, tok: Tokenizer.fromMetadata(md), md });
const vocabs = [fromMd("synth-spm", synthSpm()), fromMd("synth-bpe", synthBpe())];
if (existsSync(opt["vocab-dir"])) {
  try {
    const { readGguf } = await import(pathToFileURL(join(dist, "gguf.js")).href);
    for (const f of readdirSync(opt["vocab-dir"])
      .filter((f) => f.endsWith(".gguf"))
      .sort()) {
      try {
        vocabs.push(
          fromMd(f.replace(/^ggml-vocab-|\.gguf$/g, ""), (await readGguf(join(opt["vocab-dir"], f))).metadata),
        );
      } catch (e) {
        console.log(`skip ${f}: ${e.code ?? ""} ${e.message}`);
      }
    }
  } catch (e) {
    console.log(`fixture vocabularies skipped (addon not loadable: ${e.message.split("\n")[0]})`);
  }
} else {
  console.log(`no fixture vocabularies at ${opt["vocab-dir"]}; synthesized ones only`);
}
// Bytes a vocabulary cannot spell: no byte token (BPE: the byte's character; SPM: <0xXX>).
for (const v of vocabs) {
  v.missing = new Set();
  for (let b = 0; b < 256; b++) {
    const text = v.tok.kind === "bpe" ? BYTE_TO_CHAR[b] : `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
    if (v.tok.tokenId(text) === undefined) v.missing.add(b);
  }
  // SentencePiece puts a space prefix on the text after a user-defined token (always recognised),
  // as llama.cpp does, so texts containing one do not round-trip exactly.
  const types = v.md["tokenizer.ggml.token_type"],
    texts = v.md["tokenizer.ggml.tokens"];
  v.userDefined = [];
  if (v.tok.kind === "spm" && types && texts)
    for (let i = 0; i < texts.length; i++) if (types[i] === USER_DEFINED) v.userDefined.push(texts[i]);
  if (v.missing.size && v.tok.kind === "spm")
    console.log(`${v.name}: no byte fallback for ${v.missing.size} bytes; round trip not checked`);
}
console.log(`vocabularies: ${vocabs.map((v) => `${v.name}(${v.tok.nVocab})`).join(" ")}`);

// ---- input generation ------------------------------------------------------------------------
const FRAGMENTS = [
  " ",
  "  ",
  "\t",
  "\n",
  "\r\n",
  "\u00a0",
  "\u3000",
  "\u2028",
  "\u200b",
  "\ufeff",
  "\u0000",
  "\u007f",
  "a",
  "Hello",
  " world",
  "'s",
  "'ll",
  "don't",
  "123",
  "4567",
  "3.14",
  "½",
  "①",
  "٣",
  "é",
  "e\u0301",
  "\u0915\u093f",
  "Z\u0351\u0352",
  "我想",
  "日本語",
  "한국어",
  "нещо",
  "العربية",
  "ελληνικά",
  "🦙",
  "👍🏽",
  "🇺🇸",
  "👨‍👩‍👧‍👦",
  "\u{1d49c}",
  "\u{10348}",
  "\ud800",
  "\udfff",
  "\udbff\udfff",
  "<s>",
  "</s>",
  "<unk>",
  "<|im_start|>",
  "<|im_end|>",
  "<|endoftext|>",
  "<|tool|>",
  "<0x41>",
  "▁",
  "Ġ",
  "{",
  "}",
  "(",
  ")",
  "[",
  "]",
  "<",
  ">",
  "/",
  "\\",
  '"',
  "'",
  "`",
  "#",
  "...",
  "—",
  "--",
  "==",
  "=>",
];

function randomText(tok) {
  const parts = [];
  const n = 1 + int(rnd() < 0.9 ? 12 : 200);
  for (let i = 0; i < n; i++) {
    const r = rnd();
    if (r < 0.45) parts.push(pick(FRAGMENTS));
    else if (r < 0.65)
      parts.push(tok.tokenText(int(tok.nVocab))); // vocabulary texts
    else if (r < 0.8)
      parts.push(String.fromCodePoint(int(0x80))); // ASCII incl. controls
    else if (r < 0.92) {
      let c = int(0x110000);
      if (c >= 0xd800 && c < 0xe000 && rnd() < 0.5) c = 0x41;
      parts.push(String.fromCodePoint(c));
    } else parts.push(pick(FRAGMENTS).repeat(1 + int(300))); // long runs
  }
  return parts.join("");
}

function mutate(s) {
  const cps = [...s];
  const k = int(4);
  for (let i = 0; i < 1 + int(3); i++) {
    const at = int(cps.length + 1);
    if (k === 0) cps.splice(at, 1 + int(3));
    else if (k === 1) cps.splice(at, 0, ...pick(FRAGMENTS));
    else if (k === 2 && cps.length) cps.splice(at, 0, ...cps.slice(int(cps.length), int(cps.length) + 8));
    else cps.splice(at, 0, String.fromCharCode(int(0x10000))); // lone surrogates too
  }
  return cps.join("");
}

// ---- checks ----------------------------------------------------------------------------------
const findingsDir = join(root, "build-fuzz", "findings", "tokenizer");
let findings = 0;
const seenFindings = new Set();
function finding(kind, vocab, input, detail) {
  const key = `${kind}:${vocab}:${String(detail).slice(0, 80)}`;
  findings++;
  if (seenFindings.has(key) || seenFindings.size > 20) return;
  seenFindings.add(key);
  const rec = { kind, vocab, input, detail: String(detail).slice(0, 2000) };
  const json = JSON.stringify(rec);
  mkdirSync(findingsDir, { recursive: true });
  const file = join(findingsDir, `${kind}-${createHash("sha1").update(json).digest("hex").slice(0, 12)}.json`);
  writeFileSync(file, json);
  console.log(`FINDING ${JSON.stringify({ kind, vocab, file, detail: rec.detail.slice(0, 300) })}`);
}

// Byte-level BPE vocabularies without a token for some bytes (starcoder, falcon: e.g. 0xC0, 0xF5..0xFF)
// drop those bytes, as llama.cpp does (llm_tokenizer_bpe keeps only bytes that are tokens): the
// output must be the input's UTF-8 with only such bytes removed.
const enc = new TextEncoder();
// (Compared as raw token bytes: decoding would turn the incomplete characters into U+FFFD.)
function concatBytes(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
function droppedOnlyMissing(a, b, missing) {
  let j = 0;
  for (let i = 0; i < a.length; i++) {
    if (j < b.length && a[i] === b[j]) j++;
    else if (!missing.has(a[i])) return false;
  }
  return j === b.length;
}

function stream(tok, ids, o) {
  const d = tok.createDecoder(o);
  let out = "";
  for (const id of ids) out += d.push(id);
  return out + d.flush();
}

function checkText(v, text) {
  const tok = v.tok;
  const addSpecial = rnd() < 0.5,
    parseSpecial = rnd() < 0.3;
  let ids;
  try {
    ids = tok.encode(text, { addSpecial, parseSpecial });
  } catch (e) {
    return finding("encode-throws", v.name, { text, addSpecial, parseSpecial }, e.stack ?? e);
  }
  for (const id of ids)
    if (!Number.isInteger(id) || id < 0 || id >= tok.nVocab)
      return finding("encode-bad-id", v.name, { text, addSpecial, parseSpecial }, id);
  if (!parseSpecial && !v.userDefined.some((u) => text.includes(u))) {
    // SentencePiece writes spaces as U+2581, so an input U+2581 decodes to a space (llama.cpp too).
    const want = v.tok.kind === "spm" ? text.toWellFormed().replaceAll("\u2581", " ") : text.toWellFormed();
    const got = tok.decode(ids);
    const ok =
      v.missing.size === 0
        ? got === want
        : v.tok.kind === "spm" ||
          droppedOnlyMissing(enc.encode(want), concatBytes(ids.map((id) => tok.tokenBytes(id))), v.missing);
    if (!ok) finding("roundtrip", v.name, { text, addSpecial }, JSON.stringify({ want, got, ids: ids.slice(0, 64) }));
  }
  checkStream(v, ids, { text, addSpecial, parseSpecial });
}

function checkStream(v, ids, input) {
  const tok = v.tok;
  const o = { special: rnd() < 0.5, stripLeadingSpace: rnd() < 0.5 };
  try {
    const a = stream(tok, ids, o),
      b = tok.decode(ids, o);
    if (a !== b) finding("stream-vs-decode", v.name, { ...input, ids, o }, JSON.stringify({ stream: a, decode: b }));
  } catch (e) {
    finding("decode-throws", v.name, { ...input, ids, o }, e.stack ?? e);
  }
}

function checkIds(v) {
  const tok = v.tok;
  const n = int(rnd() < 0.9 ? 16 : 400);
  const ids = Array.from({ length: n }, () => int(tok.nVocab));
  checkStream(v, ids, { randomIds: true });
  const id = int(tok.nVocab);
  try {
    tok.tokenBytes(id, { special: rnd() < 0.5 });
    tok.piece(id);
  } catch (e) {
    finding("tokenBytes-throws", v.name, { id }, e.stack ?? e);
  }
  const bad = pick([-1, tok.nVocab, tok.nVocab + int(1000), 1.5, NaN, Infinity, -0.5, 2 ** 53]);
  for (const f of [() => tok.decode([bad]), () => tok.tokenBytes(bad), () => tok.piece(bad)]) {
    try {
      f();
      finding("bad-id-accepted", v.name, { bad }, "no error");
    } catch (e) {
      if (!(e instanceof LlmserveError) || e.code !== "ERR_INVALID_ARGUMENT")
        finding("bad-id-wrong-error", v.name, { bad }, e.stack ?? e);
    }
  }
}

// ---- main loop -------------------------------------------------------------------------------
const runs = Number(opt.runs),
  deadline = Date.now() + Number(opt["max-time"]) * 1000;
const pool = [];
let execs = 0;
const t0 = Date.now();
while (execs < runs && Date.now() < deadline) {
  const v = vocabs[execs % vocabs.length];
  const r = rnd();
  if (r < 0.15) checkIds(v);
  else {
    const text = r < 0.55 && pool.length ? mutate(pick(pool)) : randomText(v.tok);
    if (pool.length < 512) pool.push(text);
    else pool[int(pool.length)] = text;
    checkText(v, text);
  }
  execs++;
  if (execs % 50000 === 0) console.log(`#${execs} ${((Date.now() - t0) / 1000).toFixed(0)}s findings ${findings}`);
}
console.log(
  `executions: ${execs} in ${((Date.now() - t0) / 1000).toFixed(1)}s on ${vocabs.length} vocabularies, findings: ${findings}`,
);
process.exit(findings ? 1 : 0);
