/**
 * Byte-level BPE pre-tokenization: splitting text into words before merging, selected by the GGUF
 * key `tokenizer.ggml.pre`, with the same regexes and the same splitting rules as llama.cpp
 * (src/llama-vocab.cpp, src/unicode.cpp).
 *
 * llama.cpp applies a pre-tokenizer's regexes one after another: each regex splits every fragment
 * left by the previous one into its matches and the unmatched text between them (both kept).
 * Its Unicode classes come from its own tables (Unicode 15.1) and `\s` means the Unicode
 * White_Space property; `\p{Lu}`/`\p{Ll}`/... are treated as `\p{L}`. The regexes below are
 * compiled to JavaScript `u`-flag regexes with exactly those meanings.
 */
import { maskNewerCodePoints } from "./unicode.js";

export interface PreTokenizer {
  /** canonical name (llama.cpp's pre-type family) */
  type: string;
  regexes: readonly string[];
  /** emit a word as one token when the whole word is in the vocabulary */
  ignoreMerges?: boolean;
  /** llama.cpp's default for clean_spaces (detokenizer clean-up); BPE default is true */
  cleanSpaces?: boolean;
  /** overrides the default add_bos (before tokenizer.ggml.add_bos_token is applied) */
  addBos?: boolean;
  /** BOS id is not set by default */
  noDefaultBos?: boolean;
}

// --- regexes (as written in llama.cpp, adapted forms where it adapts them) ---------------------
const CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
const RE_GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const RE_LLAMA3 = `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;
const RE_QWEN2 = `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;
const RE_QWEN35 = `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;
const RE_PORO = " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+";
const RE_CJK_DEEPSEEK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+";
const RE_DEEPSEEK3_MAIN =
  "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
const CASED_WORDS =
  "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?";

const DEFAULT: PreTokenizer = {
  type: "default",
  regexes: ["[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"],
};
const LLAMA3: PreTokenizer = { type: "llama3", regexes: [RE_LLAMA3], ignoreMerges: true, addBos: true };
const GPT2: PreTokenizer = { type: "gpt-2", regexes: [RE_GPT2] };
const STARCODER: PreTokenizer = { type: "starcoder", regexes: ["\\p{N}", RE_GPT2] };
const QWEN2: PreTokenizer = { type: "qwen2", regexes: [RE_QWEN2], cleanSpaces: false };
const PORO: PreTokenizer = { type: "poro", regexes: [RE_PORO] };
const GPT4O: PreTokenizer = {
  type: "gpt-4o",
  regexes: [`${CASED_WORDS}|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`],
  cleanSpaces: false,
};
const DEEPSEEK3: PreTokenizer = {
  type: "deepseek-v3",
  regexes: ["\\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+", RE_DEEPSEEK3_MAIN],
  cleanSpaces: false,
};

const noClean = (p: PreTokenizer, extra: Partial<PreTokenizer> = {}): PreTokenizer => ({
  ...p,
  cleanSpaces: false,
  ...extra,
});

/** `tokenizer.ggml.pre` value -> pre-tokenizer (the names llama.cpp accepts for BPE vocabularies). */
const TABLE: Record<string, PreTokenizer> = {
  default: DEFAULT,
  // Llama 3 family
  ...Object.fromEntries(
    ["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"].map(
      (n) => [n, LLAMA3],
    ),
  ),
  dbrx: { type: "dbrx", regexes: [RE_LLAMA3] },
  "smaug-bpe": { type: "smaug", regexes: [RE_LLAMA3] },
  "jais-2": {
    type: "jais-2",
    regexes: [
      `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}`,
    ],
  },
  "deepseek-llm": {
    type: "deepseek-llm",
    regexes: [
      "[\r\n]",
      "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+",
      "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
      "\\s+$",
      RE_CJK_DEEPSEEK,
      "\\p{N}+",
    ],
    cleanSpaces: false,
  },
  "deepseek-coder": {
    type: "deepseek-coder",
    regexes: ["[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK_DEEPSEEK, "\\p{N}"],
    cleanSpaces: false,
  },
  "deepseek-v3": DEEPSEEK3,
  "hunyuan-dense": { ...DEEPSEEK3, type: "hunyuan-dense" },
  "joyai-llm": { ...DEEPSEEK3, type: "joyai-llm" },
  youtu: {
    type: "youtu",
    regexes: [
      "[\uac00-\ud7a3\u3131-\u318e]+|[\uff01\u2026\u201c\u201d\u2018\u2019\u2014\uff1a\uff1b\uff0c\u3001-\u303f\ufe30-\ufe4f]+|[\u3105-\u312f]+|[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
      "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ],
    cleanSpaces: false,
    ignoreMerges: true,
  },
  falcon: {
    type: "falcon",
    regexes: ["[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"],
  },
  starcoder: STARCODER,
  refact: { ...STARCODER, type: "refact" },
  "command-r": noClean(STARCODER, { type: "command-r" }),
  smollm: noClean(STARCODER, { type: "smollm" }),
  codeshell: { ...STARCODER, type: "codeshell" },
  exaone: { ...STARCODER, type: "exaone" },
  "minerva-7b": { ...STARCODER, type: "minerva" },
  mellum2: { ...STARCODER, type: "mellum2" },
  // GPT-2 family
  ...Object.fromEntries(
    [
      "gpt-2",
      "phi-2",
      "jina-es",
      "jina-de",
      "gigachat",
      "jina-v2-es",
      "jina-v2-de",
      "a.x-4.0",
      "mellum",
      "modern-bert",
      "jina-v1-en",
      "jina-v2-code",
      "roberta-bpe",
      "mpt",
      "olmo",
      "jais",
      "exaone4",
    ].map((n) => [n, GPT2]),
  ),
  trillion: noClean(GPT2, { type: "trillion" }),
  "granite-docling": noClean(GPT2, { type: "granite-docling" }),
  // Qwen 2 family
  qwen2: QWEN2,
  "deepseek-r1-qwen": QWEN2,
  kormo: QWEN2,
  f2llmv2: QWEN2,
  hunyuan: QWEN2,
  "solar-open": QWEN2,
  stablelm2: { type: "stablelm2", regexes: [RE_QWEN2] },
  megrez: { type: "qwen2", regexes: [RE_QWEN2] },
  qwen35: { type: "qwen35", regexes: [RE_QWEN35], cleanSpaces: false },
  "poro-chat": noClean(PORO, { type: "poro" }),
  bloom: { ...PORO, type: "bloom" },
  "gpt3-finnish": { ...PORO, type: "gpt3-finnish" },
  glm4: { type: "chatglm4", regexes: [RE_LLAMA3], noDefaultBos: true },
  "chatglm-bpe": { type: "chatglm4", regexes: [RE_LLAMA3], noDefaultBos: true },
  viking: { type: "viking", regexes: [RE_PORO, "\\p{N}"], cleanSpaces: false },
  tekken: {
    type: "tekken",
    regexes: [
      "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ],
    cleanSpaces: false,
    ignoreMerges: true,
    addBos: true,
  },
  chameleon: {
    type: "chameleon",
    regexes: [
      "<sentinel:[0-9]+>",
      "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
      "([\\t\\n]|    |  )",
      "\\p{N}",
      "[\\p{P}!-/:-@\\[-`{-~]",
      RE_GPT2,
    ],
    cleanSpaces: false,
    addBos: true,
  },
  "gpt-4o": GPT4O,
  llama4: GPT4O,
  kanana2: GPT4O,
  talkie: GPT4O,
  "minimax-m2": GPT4O,
  "granite-embed-multi-97m": {
    type: "granite-embed-multi",
    regexes: [
      "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    ],
    cleanSpaces: false,
    ignoreMerges: true,
  },
  superbpe: { type: "superbpe", regexes: ["\\p{N}+", "(?=(\\d{3})+(?!\\d))"], cleanSpaces: false },
  ...Object.fromEntries(
    ["bailingmoe", "bailingmoe2", "llada-moe"].map((n) => [
      n,
      {
        type: "bailingmoe",
        regexes: [
          "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
        ],
        cleanSpaces: false,
      },
    ]),
  ),
  "seed-coder": {
    type: "seed-coder",
    regexes: [
      `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`,
    ],
    cleanSpaces: false,
  },
  "grok-2": { type: "grok-2", regexes: [RE_QWEN2], cleanSpaces: false },
  laguna: { type: "laguna", regexes: ["[^\\n]+|[\\n]+", RE_QWEN2], cleanSpaces: false },
  "exaone-moe": {
    type: "exaone-moe",
    regexes: [
      `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+`,
    ],
  },
  minicpm5: {
    type: "minicpm5",
    regexes: [
      "\\p{N}{1,3}",
      `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`,
    ],
    ignoreMerges: true,
  },
};

/**
 * Pre-tokenizers that llama.cpp implements with custom code this port does not reproduce
 * (or that are not byte-level BPE). Naming them gives a specific error instead of "unknown".
 */
const KNOWN_UNSUPPORTED = new Set([
  "kimi-k2",
  "afmoe",
  "tiny_aya",
  "cohere2moe",
  "gemma4",
  "granite-embed-multi-311m",
  "sarvam-moe",
  "whitespace",
]);

/** The names accepted for `tokenizer.ggml.pre` (for error messages and tests). */
export const SUPPORTED_PRE_TOKENIZERS: readonly string[] = Object.keys(TABLE);

/** Looks up a pre-tokenizer; `undefined` or "" means llama.cpp's "default". Returns an error text when unsupported. */
export function findPreTokenizer(name: string | undefined): PreTokenizer | { error: string } {
  const key = name === undefined || name === "" ? "default" : name;
  const p = Object.hasOwn(TABLE, key) ? TABLE[key] : undefined;
  if (p) return p;
  if (KNOWN_UNSUPPORTED.has(key)) {
    return {
      error: `the BPE pre-tokenizer '${key}' (tokenizer.ggml.pre) needs custom splitting code that llmserve does not implement yet`,
    };
  }
  return {
    error: `unknown BPE pre-tokenizer '${key}' (tokenizer.ggml.pre); supported: ${SUPPORTED_PRE_TOKENIZERS.join(", ")}`,
  };
}

// --- regex translation --------------------------------------------------------------------------

/**
 * Translates one llama.cpp regex to a JavaScript `gu` regex with llama.cpp's meanings:
 * `\s` / `\S` -> Unicode White_Space (what llama.cpp's tables say), `\p{Lu}`... -> `\p{L}`.
 * Also reports whether the regex uses Unicode classes (llama.cpp's "collapsed" mode).
 */
export function compileRegex(src: string): { re: RegExp; usesClasses: boolean } {
  let out = "";
  let usesClasses = false;
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (c !== "\\" || i + 1 >= src.length) {
      out += c;
      continue;
    }
    const n = src[i + 1];
    if (n === "s") {
      out += "\\p{White_Space}";
      i++;
    } else if (n === "S") {
      out += "\\P{White_Space}";
      i++;
    } else if (n === "p" && src[i + 2] === "{") {
      const close = src.indexOf("}", i + 3);
      const name = src.slice(i + 3, close);
      usesClasses = true;
      out += `\\p{${/^L[ultmo]$/.test(name) ? "L" : name}}`;
      i = close;
    } else {
      out += c + n;
      i++;
    }
  }
  return { re: new RegExp(out, "gu"), usesClasses };
}

const NON_ASCII_SPACE = /[\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/g;

export interface CompiledSplitter {
  split(text: string): string[];
}

/** Builds a splitter for a pre-tokenizer: text -> words, exactly as llama.cpp's unicode_regex_split. */
export function buildSplitter(regexes: readonly string[]): CompiledSplitter {
  const compiled = regexes.map(compileRegex);
  return {
    split(text: string): string[] {
      if (text.length === 0) return [];
      // llama.cpp matches with every non-ASCII whitespace character replaced by "\v" (so literal
      // ranges such as [\u0800-\u4e00] do not match U+3000), and regexes with Unicode classes
      // also see code points its tables do not know as unassigned
      const plain = text.replace(NON_ASCII_SPACE, "\v");
      const masked = maskNewerCodePoints(plain);
      // fragments as [start, end) UTF-16 offsets into text
      let frags: number[] = [0, text.length];
      for (const { re, usesClasses } of compiled) {
        const subject = usesClasses ? masked : plain;
        const next: number[] = [];
        for (let f = 0; f < frags.length; f += 2) {
          const start = frags[f];
          const end = frags[f + 1];
          if (end === start) continue;
          const piece = start === 0 && end === subject.length ? subject : subject.slice(start, end);
          re.lastIndex = 0;
          let prev = 0;
          let m: RegExpExecArray | null;
          while ((m = re.exec(piece)) !== null) {
            const ms = m.index;
            const me = ms + m[0].length;
            if (ms > prev) next.push(start + prev, start + ms);
            if (me > ms) next.push(start + ms, start + me);
            else re.lastIndex = me + (piece.codePointAt(me)! > 0xffff ? 2 : 1); // empty match: step one code point
            prev = me;
          }
          if (prev < piece.length) next.push(start + prev, end);
        }
        frags = next;
      }
      const words: string[] = new Array(frags.length / 2);
      for (let f = 0; f < frags.length; f += 2) words[f / 2] = text.slice(frags[f], frags[f + 1]);
      return words;
    },
  };
}
