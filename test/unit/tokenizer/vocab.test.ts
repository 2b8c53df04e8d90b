/**
 * Vocab on its own: what llama.cpp's llama_vocab::load derives from the metadata (src/llama-vocab.cpp
 * in the tree node-llama-cpp 3.21.1 bundles): special ids and their defaults, the texts it
 * recognises as end-of-turn / FIM / end-of-generation tokens, the gpt-oss, harmony and gemma4
 * exceptions, per-model strip attributes, the special-token partition, and the metadata errors.
 */
import { describe, expect, it } from "vitest";
import { LlmserveError } from "../../../lib/errors.js";
import type { GgufMetaValue } from "../../../lib/native.js";
import { Attr, Vocab } from "../../../lib/tokenizer/vocab.js";

type Md = Record<string, GgufMetaValue>;
const NORMAL = 1,
  CONTROL = 3,
  USER_DEFINED = 4;

/** A byte-level BPE vocabulary of the given texts (all NORMAL unless typed), no merges needed. */
function bpe(tokens: string[], extra: Md = {}, types?: number[]): Md {
  return {
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.pre": "gpt-2",
    "tokenizer.ggml.tokens": tokens,
    "tokenizer.ggml.token_type": Int32Array.from(types ?? tokens.map(() => NORMAL)),
    "tokenizer.ggml.merges": [],
    ...extra,
  };
}

/** Twelve filler tokens first, so llama.cpp's BPE default BOS/EOS id 11 is in range. */
const FILL = Array.from({ length: 12 }, (_, i) => `f${i}`);

function vocabError(md: Md): LlmserveError {
  try {
    new Vocab(md);
  } catch (e) {
    expect(e).toBeInstanceOf(LlmserveError);
    expect((e as LlmserveError).code).toBe("ERR_TOKENIZER");
    return e as LlmserveError;
  }
  throw new Error("expected the vocabulary to be rejected");
}

const isControl = (v: Vocab, id: number) => (v.attrs[id] & Attr.CONTROL) !== 0;

describe("tokens llama.cpp recognises by their text", () => {
  const EOT = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
  ];
  it.each(EOT)("%s is the end-of-turn token, control and end of generation", (t) => {
    const v = new Vocab(bpe(["a", t]));
    expect(v.eot).toBe(1);
    expect(isControl(v, 1)).toBe(true);
    expect(v.eog.has(1)).toBe(true);
  });

  it("<|eom_id|> is the end-of-message token", () => {
    const v = new Vocab(bpe(["a", "<|eom_id|>"]));
    expect(v.eom).toBe(1);
    expect(v.eot).toBeUndefined();
    expect(isControl(v, 1) && v.eog.has(1)).toBe(true);
  });

  // prefix / suffix / middle: control, but not end of generation
  it.each([
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
  ])("FIM %s becomes a control token", (t) => {
    const v = new Vocab(bpe(["a", t]));
    expect(isControl(v, 1)).toBe(true);
    expect(v.specialTokens).toEqual([1]);
    expect(v.eog.has(1)).toBe(false);
  });

  // pad / repo / file separator: control and end of generation
  it.each([
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
  ])("FIM %s is control and ends generation", (t) => {
    const v = new Vocab(bpe(["a", t]));
    expect(isControl(v, 1)).toBe(true);
    expect([...v.eog]).toEqual([1]);
  });

  it.each([
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "</s>",
    "[EOS]",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "[e~[",
  ])("%s ends generation (and is made control)", (t) => {
    const v = new Vocab(bpe(["a", t]));
    expect([...v.eog]).toEqual([1]);
    expect(isControl(v, 1)).toBe(true);
    expect(v.eot).toBeUndefined();
  });

  // with the end-of-turn / end-of-message ids given in the metadata, these end generation by their text alone
  it.each([
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<｜end▁of▁sentence｜>",
  ])("%s ends generation even when another token is the end of turn", (t) => {
    const v = new Vocab(bpe(["a", t], { "tokenizer.ggml.eot_token_id": 0, "tokenizer.ggml.eom_token_id": 0 }));
    expect(v.eot).toBe(0);
    expect(v.eog.has(1)).toBe(true);
    expect(isControl(v, 1)).toBe(true);
  });

  it.each([
    "tokenizer.ggml.prefix_token_id",
    "tokenizer.ggml.fim_pre_token_id",
    "tokenizer.ggml.suffix_token_id",
    "tokenizer.ggml.fim_suf_token_id",
    "tokenizer.ggml.middle_token_id",
    "tokenizer.ggml.fim_mid_token_id",
  ])("%s in the metadata: no FIM token is detected by text", (key) => {
    const v = new Vocab(bpe(["a", "<PRE>", "<SUF>", "<MID>"], { [key]: 0 }));
    const marked = [1, 2, 3].filter((id) => isControl(v, id)).length;
    expect(marked).toBe(2); // the other two are still detected
  });

  it("a metadata id wins over detection by text", () => {
    const v = new Vocab(bpe(["a", "<|eot_id|>", "<|im_end|>"], { "tokenizer.ggml.eot_token_id": 2 }));
    expect(v.eot).toBe(2);
    expect(isControl(v, 1)).toBe(true); // still end of generation by its text
    expect([...v.eog].sort()).toEqual([1, 2]);
  });

  it.each(["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"])(
    "gpt-oss %s is always rendered (user-defined)",
    (t) => {
      const v = new Vocab(bpe(["a", t], {}, [NORMAL, CONTROL]));
      expect(v.attrs[1]).toBe(Attr.USER_DEFINED);
    },
  );

  it("harmony / solar-open: <|end|> is not end of generation next to <|call|> and <|return|> or <|flush|>", () => {
    for (const set of [
      ["<|end|>", "<|call|>", "<|return|>"],
      ["<|end|>", "<|calls|>", "<|flush|>"],
      ["<|end|>", "<|call|>", "<|flush|>"],
    ]) {
      const v = new Vocab(bpe(["a", ...set]));
      expect(v.eog.has(1), set.join()).toBe(false);
      expect(v.attrs[1], set.join()).toBe(Attr.USER_DEFINED);
      expect(v.eog.has(2) && v.eog.has(3), set.join()).toBe(true);
    }
    for (const set of [
      ["<|end|>", "<|call|>"],
      ["<|end|>", "<|return|>"],
      ["<|end|>", "<|flush|>"],
    ]) {
      expect(new Vocab(bpe(["a", ...set])).eog.has(1), set.join()).toBe(true);
    }
  });

  it("gemma4 / paddleocr: </s> is a normal token when <|tool_response> exists", () => {
    const v = new Vocab(bpe(["a", "</s>", "<|tool_response>"], {}, [NORMAL, CONTROL, NORMAL]));
    expect(v.eog.has(1)).toBe(false);
    expect(v.attrs[1]).toBe(Attr.NORMAL);
    expect(v.eog.has(2)).toBe(true);
    expect(new Vocab(bpe(["a", "</s>"])).eog.has(1)).toBe(true);
  });

  it("control tokens that say 'unused' are unused; normal ones are not", () => {
    const v = new Vocab(bpe(["unused", "<unused0>"], {}, [NORMAL, CONTROL]));
    expect(v.attrs[1] & Attr.UNUSED).toBe(Attr.UNUSED);
    expect(v.attrs[0] & Attr.UNUSED).toBe(0);
  });
});

describe("special ids and defaults", () => {
  it("SentencePiece: BOS 1, EOS 2, UNK 0, add BOS, space prefix, no clean-up", () => {
    const v = new Vocab({ "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>"] });
    expect([v.kind, v.bos, v.eos, v.unk, v.pad]).toEqual(["spm", 1, 2, 0, undefined]);
    expect([v.addBos, v.addEos, v.addSpacePrefix, v.cleanSpaces, v.ignoreMerges]).toEqual([
      true,
      false,
      true,
      false,
      false,
    ]);
    expect(v.attrs[0]).toBe(Attr.NORMAL); // no token_type: every token normal
    expect(v.pre).toBeUndefined();
  });

  it("byte-level BPE: BOS = EOS = 11 unless the pre-tokenizer has none; flags from the pre-tokenizer", () => {
    const v = new Vocab(bpe(FILL));
    expect([v.kind, v.bos, v.eos, v.unk]).toEqual(["bpe", 11, 11, undefined]);
    expect([v.addBos, v.addEos, v.addSpacePrefix, v.cleanSpaces, v.ignoreMerges]).toEqual([
      false,
      false,
      false,
      true,
      false,
    ]);
    const l3 = new Vocab(bpe(FILL, { "tokenizer.ggml.pre": "llama3" }));
    expect([l3.addBos, l3.ignoreMerges, l3.cleanSpaces]).toEqual([true, true, true]);
    expect(new Vocab(bpe(FILL, { "tokenizer.ggml.pre": "qwen2" })).cleanSpaces).toBe(false);
    expect(new Vocab(bpe(FILL, { "tokenizer.ggml.pre": "glm4" })).bos).toBeUndefined();
    // 11 out of range for a smaller vocabulary: no BOS/EOS
    const small = new Vocab(bpe(["a"]));
    expect([small.bos, small.eos]).toEqual([undefined, undefined]);
    expect(small.eog.size).toBe(0);
  });

  it("reads every id key; ids out of range are ignored", () => {
    const keys = {
      "tokenizer.ggml.bos_token_id": 1,
      "tokenizer.ggml.eos_token_id": 2,
      "tokenizer.ggml.eot_token_id": 3,
      "tokenizer.ggml.eom_token_id": 4,
      "tokenizer.ggml.unknown_token_id": 5,
      "tokenizer.ggml.padding_token_id": 6,
    };
    const v = new Vocab(bpe(FILL, keys));
    expect([v.bos, v.eos, v.eot, v.eom, v.unk, v.pad]).toEqual([1, 2, 3, 4, 5, 6]);
    expect([...v.eog].sort((a, b) => a - b)).toEqual([2, 3, 4]);
    const out = new Vocab(bpe(FILL, { "tokenizer.ggml.bos_token_id": 12, "tokenizer.ggml.eos_token_id": -1 }));
    expect([out.bos, out.eos]).toEqual([11, 11]);
    expect(new Vocab(bpe(FILL, { "tokenizer.ggml.bos_token_id": 2n })).bos).toBe(2);
    // the FIM pad / repo / separator ids from metadata end generation
    const fim = new Vocab(
      bpe(FILL, {
        "tokenizer.ggml.fim_pad_token_id": 7,
        "tokenizer.ggml.fim_rep_token_id": 8,
        "tokenizer.ggml.fim_sep_token_id": 9,
        "tokenizer.ggml.eos_token_id": 10,
      }),
    );
    expect([...fim.eog].sort((a, b) => a - b)).toEqual([7, 8, 9, 10]);
  });

  it("add_bos / add_eos / add_space_prefix from metadata, as booleans or numbers", () => {
    const v = new Vocab(
      bpe(FILL, {
        "tokenizer.ggml.add_bos_token": true,
        "tokenizer.ggml.add_eos_token": 1,
        "tokenizer.ggml.add_space_prefix": 1n,
      }),
    );
    expect([v.addBos, v.addEos, v.addSpacePrefix]).toEqual([true, true, true]);
    const off = new Vocab(bpe(FILL, { "tokenizer.ggml.pre": "llama3", "tokenizer.ggml.add_bos_token": 0 }));
    expect(off.addBos).toBe(false);
  });

  it("merges: 'left right' -> rank, the first occurrence wins; an empty token text gets a placeholder", () => {
    const v = new Vocab(bpe(["a", "b", "ab", ""], { "tokenizer.ggml.merges": ["a b", "x y", "a b", "ab"] }));
    expect([...v.mergeRanks]).toEqual([
      ["a b", 0],
      ["x y", 1],
      [" ", 3],
    ]);
    expect(v.texts[3]).toBe("[EMPTY_3]");
    expect(v.textToId.get("[EMPTY_3]")).toBe(3);
  });

  it("scores and token types are read per token", () => {
    const v = new Vocab({
      "tokenizer.ggml.model": "llama",
      "tokenizer.ggml.tokens": ["<unk>", "x", "y"],
      "tokenizer.ggml.scores": [0, -1.5, 2],
      "tokenizer.ggml.token_type": BigInt64Array.from([2n, 5n, 99n]),
    });
    expect([...v.scores]).toEqual([0, -1.5, 2]);
    expect([...v.attrs]).toEqual([Attr.UNKNOWN, Attr.UNUSED, Attr.UNDEFINED]);
  });
});

describe("per-model attributes", () => {
  it("jina-v2 pre-tokenizers and nomic/jina-bert architectures: <mask> strips spaces on its left", () => {
    const extras: Md[] = [
      { "tokenizer.ggml.pre": "jina-v2-de" },
      { "tokenizer.ggml.pre": "jina-v2-es" },
      { "tokenizer.ggml.pre": "jina-v2-code" },
      { "general.architecture": "nomic-bert-moe" },
      { "general.architecture": "jina-bert-v3" },
    ];
    for (const extra of extras) {
      const v = new Vocab(bpe(["a", "<mask>"], extra, [NORMAL, USER_DEFINED]));
      expect(v.attrs[1] & Attr.LSTRIP, JSON.stringify(extra)).toBe(Attr.LSTRIP);
    }
    expect(new Vocab(bpe(["a", "<mask>"], {}, [NORMAL, USER_DEFINED])).attrs[1] & Attr.LSTRIP).toBe(0);
  });

  it("phi-3: special tokens and </s> strip spaces on their right, except <unk>, <s>, <|endoftext|>", () => {
    for (const name of ["Phi-3 mini", "phi3"]) {
      const v = new Vocab(
        bpe(["<unk>", "<s>", "</s>", "<|endoftext|>", "<|user|>", "x"], { "general.name": name }, [
          2,
          CONTROL,
          CONTROL,
          CONTROL,
          CONTROL,
          NORMAL,
        ]),
      );
      const rstrip = [0, 1, 2, 3, 4, 5].map((id) => (v.attrs[id] & Attr.RSTRIP) !== 0);
      expect(rstrip, name).toEqual([false, false, true, false, true, false]);
    }
  });

  it("modern-bert: [MASK] strips spaces on its left", () => {
    const v = new Vocab(bpe(["a", "[MASK]"], { "general.name": "modern-bert-base" }, [NORMAL, USER_DEFINED]));
    expect(v.attrs[1] & Attr.LSTRIP).toBe(Attr.LSTRIP);
  });
});

describe("partition around special tokens", () => {
  it("longest special token first (by UTF-8 length, then id); control ones only with parseSpecial", () => {
    const v = new Vocab(bpe(["a", "<x>", "<x>y", "<é>", "<u>"], {}, [NORMAL, CONTROL, CONTROL, CONTROL, USER_DEFINED]));
    expect(v.specialTokens).toEqual([2, 3, 1, 4]); // "<é>" is 4 bytes, "<x>" 3
    expect(v.partition("a<x>y<x>b<u>", true)).toEqual(["a", 2, 1, "b", 4]);
    expect(v.partition("a<x>y<u>", false)).toEqual(["a<x>y", 4]);
    expect(v.partition("plain", true)).toEqual(["plain"]);
    expect(v.partition("", true)).toEqual([]);
    expect(v.partition("<x><x>", true)).toEqual([1, 1]);
  });

  it("LSTRIP / RSTRIP swallow ASCII spaces beside the token", () => {
    const v = new Vocab(bpe(["a", "<mask>"], { "tokenizer.ggml.pre": "jina-v2-de" }, [NORMAL, USER_DEFINED]));
    expect(v.partition("a  <mask>  b", false)).toEqual(["a", 1, "  b"]);
    expect(v.partition("  <mask>", false)).toEqual([1]);
    const p = new Vocab(bpe(["a", "<|user|>"], { "general.name": "phi3" }, [NORMAL, CONTROL]));
    expect(p.partition("a <|user|>  b", true)).toEqual(["a ", 1, "b"]);
    expect(p.partition("<|user|>  ", true)).toEqual([1]);
  });

  it("byteToken: SentencePiece <0xNN>, else the ASCII character itself; BPE the mapped character", () => {
    const s = new Vocab({ "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["<unk>", "<0x0A>", "A", "é"] });
    expect(s.byteToken(0x0a)).toBe(1);
    expect(s.byteToken(0x41)).toBe(2);
    expect(s.byteToken(0xc3)).toBeUndefined();
    expect(s.byteToken(0x42)).toBeUndefined();
    const b = new Vocab(bpe(["!", "Ġ"]));
    expect(b.byteToken(0x21)).toBe(0);
    expect(b.byteToken(0x20)).toBe(1);
    expect(b.size).toBe(2);
  });
});

describe("metadata errors name the key and what to do", () => {
  it.each([
    ["bert", "WordPiece \\(BERT\\)"],
    ["t5", "Unigram \\(T5\\)"],
    ["rwkv", "RWKV"],
    ["plamo2", "PLaMo-2"],
    ["gemma4", "Gemma 4 BPE"],
    ["no_vocab", "no vocabulary"],
    ["none", "no vocabulary"],
  ])("unsupported model %s", (model, what) => {
    const e = vocabError({ "tokenizer.ggml.model": model, "tokenizer.ggml.tokens": ["a"] });
    expect(e.message).toMatch(
      new RegExp(
        `^unsupported tokenizer model '${model}' \\(${what}\\) in tokenizer\\.ggml\\.model; llmserve supports 'llama' \\(SentencePiece\\) and 'gpt2' \\(byte-level BPE\\) vocabularies$`,
      ),
    );
    expect(vocabError({ "tokenizer.ggml.model": "zzz" }).message).toMatch(/^unsupported tokenizer model 'zzz' in/);
  });

  it("wrong types and sizes", () => {
    const base = bpe(["a", "b"]);
    const cases: Array<[Md, RegExp]> = [
      [
        { ...base, "tokenizer.ggml.model": 5 },
        /^GGUF key tokenizer\.ggml\.model should be a string but is number; .*re-convert/,
      ],
      [
        { ...base, "tokenizer.ggml.add_bos_token": "yes" },
        /^GGUF key tokenizer\.ggml\.add_bos_token should be a boolean but is string$/,
      ],
      [
        { ...base, "tokenizer.ggml.bos_token_id": 1.5 },
        /^GGUF key tokenizer\.ggml\.bos_token_id should be an integer but is 1\.5; the file is corrupt/,
      ],
      [
        { ...base, "tokenizer.ggml.bos_token_id": "1" },
        /^GGUF key tokenizer\.ggml\.bos_token_id should be an integer but is string$/,
      ],
      [
        { ...base, "tokenizer.ggml.token_type": ["x"] as unknown as number[] },
        /^GGUF key tokenizer\.ggml\.token_type should be a numeric array but is an array$/,
      ],
      [
        { ...base, "tokenizer.ggml.token_type": new DataView(new ArrayBuffer(8)) as unknown as number[] },
        /should be a numeric array but is DataView$/,
      ],
      [
        { ...base, "tokenizer.ggml.token_type": Int32Array.from([1]) },
        /^GGUF key tokenizer\.ggml\.token_type has 1 entries for 2 tokens; .*re-convert/,
      ],
      [
        { ...base, "tokenizer.ggml.merges": [1] as unknown as string[] },
        /^GGUF key tokenizer\.ggml\.merges should be an array of strings but is an array$/,
      ],
      [
        { ...base, "tokenizer.ggml.merges": Int32Array.from([1]) as unknown as string[] },
        /merges should be an array of strings but is Int32Array$/,
      ],
      [
        {
          ...base,
          "tokenizer.ggml.tokens": { type: "array", elementType: "string", length: 2 } as unknown as string[],
        },
        /is an array summary \(length 2\); read the GGUF without maxArrayLength/,
      ],
      [{ ...base, "tokenizer.ggml.tokens": [] }, /^GGUF key tokenizer\.ggml\.tokens is missing or empty/],
      [
        { ...base, "tokenizer.ggml.tokens": undefined as unknown as string[] },
        /^GGUF key tokenizer\.ggml\.tokens is missing or empty/,
      ],
      [
        { ...base, "tokenizer.ggml.merges": undefined as unknown as string[] },
        /^GGUF key tokenizer\.ggml\.merges is missing; a byte-level BPE vocabulary needs its merges/,
      ],
      [
        { ...base, "tokenizer.ggml.model": undefined as unknown as string },
        /^this GGUF file has no tokenizer \(tokenizer\.ggml\.model is missing\)/,
      ],
      [{ ...base, "tokenizer.ggml.pre": "nope" }, /^unknown BPE pre-tokenizer 'nope'/],
    ];
    for (const [md, re] of cases) {
      for (const k of Object.keys(md)) if (md[k] === undefined) delete md[k];
      expect(vocabError(md).message).toMatch(re);
    }
  });
});
