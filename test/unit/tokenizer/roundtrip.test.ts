/**
 * Round trips and streaming on the real vocabularies of the fixtures (SentencePiece and byte-level
 * BPE), with text that exercises byte fallback and multi-byte characters split across tokens.
 */
import { describe, expect, it } from "vitest";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { readGguf } from "../../../lib/gguf.js";
import { Tokenizer } from "../../../lib/tokenizer/index.js";
import { fixture } from "../../helpers.js";

const vocabDir = fixture("vocab");
const VOCABS = ["llama-spm", "phi-3", "gpt-2", "deepseek-coder", "falcon", "starcoder"].filter((n) =>
  existsSync(join(vocabDir, `ggml-vocab-${n}.gguf`)),
);

const SAMPLES = [
  "Hello world",
  "   leading and trailing spaces   ",
  "emoji: 🦙🚀 👍🏽 🇺🇸 👨‍👩‍👧‍👦 😶‍🌫️ ✅",
  "CJK: 我想在apple工作1314151天～ 日本語のテキスト 한국어 텍스트",
  "combining: e\u0301 a\u0308 n\u0303 \u0915\u093f \u0e01\u0e34 Z\u0351\u0352\u0353",
  "mixed scripts: нещо на Български, العربية, ελληνικά, ქართული, កាន់តែពិសេស",
  "whitespace:\t\n\r\n\u00a0\u3000\u2028 end",
  "code: for (int i = 0; i < n; ++i) { x[i] = y[i] * 2; } // done\n",
  "digits 3 33 333 3333 1234567890 ½ ① ٣",
  "rare: \u{1d49c}\u{1f9ec}\u{10348} \u0000\u0007\u007f",
];

describe.skipIf(VOCABS.length === 0)("round trips on fixture vocabularies", () => {
  if (VOCABS.length === 0) it.skip(`no vocabularies found in ${vocabDir}`, () => {});

  for (const name of VOCABS) {
    describe(name, () => {
      let tok: Tokenizer | undefined;
      const get = async () => (tok ??= await Tokenizer.fromGguf(join(vocabDir, `ggml-vocab-${name}.gguf`)));

      it("decode(encode(x)) === x, with and without BOS/EOS", async () => {
        const t = await get();
        for (const s of SAMPLES) {
          expect(t.decode(t.encode(s, { addSpecial: false })), s).toBe(s);
          expect(t.decode(t.encode(s, { addSpecial: true })), s).toBe(s);
        }
      });

      it("streams every sample to the same text without U+FFFD", async () => {
        const t = await get();
        let splitChars = 0;
        for (const s of SAMPLES) {
          const ids = t.encode(s, { addSpecial: true });
          const d = t.createDecoder();
          let out = "";
          for (const id of ids) {
            const piece = d.push(id);
            expect(piece).not.toContain("\uFFFD");
            if (piece === "" && t.tokenBytes(id).length > 0) splitChars++;
            out += piece;
          }
          out += d.flush();
          const expected = t.addBos ? s : t.decode(ids, { stripLeadingSpace: false });
          expect(out, s).toBe(expected);
        }
        expect(splitChars).toBeGreaterThan(0); // some character did span several tokens
      });

      it("adds BOS/EOS as the vocabulary says and marks EOS as end of generation", async () => {
        const t = await get();
        const ids = t.encode("Hello", { addSpecial: true });
        expect(ids[0] === t.bos).toBe(t.addBos);
        expect(ids.at(-1) === t.eos).toBe(t.addEos);
        if (t.eos !== undefined) expect(t.isEog(t.eos)).toBe(true);
        expect(t.isEog(t.encode("Hello", { addSpecial: false })[0])).toBe(false);
      });
    });
  }

  it.skipIf(!VOCABS.includes("phi-3"))(
    "phi-3: chat markers parse only as special, with llama.cpp's rstrip",
    async () => {
      const t = Tokenizer.fromMetadata((await readGguf(join(vocabDir, "ggml-vocab-phi-3.gguf"))).metadata);
      const user = t.tokenId("<|user|>")!;
      const end = t.tokenId("<|end|>")!;
      const ids = t.encode("<|user|>\nHi<|end|>\n", { addSpecial: false, parseSpecial: true });
      // phi-3 special tokens swallow the whitespace after them (RSTRIP), as llama.cpp sets for Phi-3
      expect(ids[0]).toBe(user);
      expect(ids).toContain(end);
      expect(t.decode(ids, { special: true })).toBe("<|user|> Hi<|end|>");
      expect(t.encode("<|user|>", { addSpecial: false })).not.toContain(user);
      expect(t.isEog(end)).toBe(true);
      expect(t.isEog(t.tokenId("<|endoftext|>")!)).toBe(true);
      expect(t.isEog(user)).toBe(false);
    },
  );
});
