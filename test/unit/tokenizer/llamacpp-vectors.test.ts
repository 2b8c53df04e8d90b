/**
 * llama.cpp's tokenizer test vectors (models/ggml-vocab-*.gguf{,.inp,.out}), run the way
 * llama.cpp's tests/test-tokenizer-0.cpp runs them:
 * - the .inp file is split on "\n__ggml_vocab_test__\n" (so a case keeps its own leading and
 *   trailing newlines, and the text after the last separator is not a case when empty);
 * - line i of .out holds case i's ids, separated by spaces (string_strip'ed; an empty line = no ids);
 * - tokenization uses add_special = false, parse_special = false (common_tokenize(ctx, text, false, false)).
 * The vocabulary comes from the GGUF file through readGguf (the native addon).
 */
import { describe, expect, it } from "vitest";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { readGguf } from "../../../lib/gguf.js";
import { Tokenizer } from "../../../lib/tokenizer/index.js";
import { fixture } from "../../helpers.js";

const vocabDir = fixture("vocab");
const haveVocabDir = existsSync(vocabDir);

const VOCABS = ["llama-spm", "phi-3", "gpt-2", "deepseek-coder", "falcon", "starcoder", "llama-bpe", "qwen2"];

interface Case {
  index: number;
  text: string;
  ids: number[];
}

/** Parses .inp/.out exactly like test-tokenizer-0.cpp's read_tests. */
function readCases(base: string): Case[] {
  const raw = readFileSync(`${base}.inp`, "utf8");
  const outLines = readFileSync(`${base}.out`, "utf8").split("\n");
  if (outLines.at(-1) === "") outLines.pop(); // std::getline does not yield the empty text after the final "\n"
  const sep = "\n__ggml_vocab_test__\n";
  const inputs: string[] = [];
  let pos = 0;
  while (pos < raw.length) {
    const next = raw.indexOf(sep, pos);
    if (next < 0) {
      inputs.push(raw.slice(pos));
      break;
    }
    inputs.push(raw.slice(pos, next));
    pos = next + sep.length;
  }
  if (inputs.length !== outLines.length)
    throw new Error(`${base}: ${inputs.length} inputs but ${outLines.length} expected lines`);
  // test-tokenizer-0 keys its cases by text (std::map): a repeated text keeps the last expectation
  const byText = new Map<string, Case>();
  inputs.forEach((text, index) => {
    const o = outLines[index].trim();
    byText.set(text, { index, text, ids: o === "" ? [] : o.split(" ").map((x) => parseInt(x, 10)) });
  });
  return [...byText.values()].sort((a, b) => a.index - b.index);
}

const label = (s: string) => JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);

describe.skipIf(!haveVocabDir)("llama.cpp test vectors (test-tokenizer-0)", () => {
  if (!haveVocabDir) it.skip(`fixtures not found at ${vocabDir}`, () => {});

  for (const name of VOCABS) {
    const base = join(vocabDir, `ggml-vocab-${name}.gguf`);
    if (!existsSync(`${base}.inp`)) continue;
    if (!existsSync(base)) {
      // llama-bpe (Llama 3) and qwen2 ship .inp/.out only: their vocabularies are too large for the
      // fixtures. Their pre-tokenizers are covered against llama.cpp's splitter in pretokenize.test.ts.
      it.skip(`${name}: no ggml-vocab-${name}.gguf in the fixtures (vocabulary too large to ship); ${readCases(base).length} vectors not run`, () => {});
      continue;
    }
    describe(name, () => {
      const cases = readCases(base);
      let tok: Tokenizer | undefined;
      const get = async () => (tok ??= Tokenizer.fromMetadata((await readGguf(base)).metadata));

      it.each(cases.map((c) => [c.index, label(c.text), c] as const))("case %i %s", async (_i, _l, c) => {
        const t = await get();
        expect(t.encode(c.text, { addSpecial: false, parseSpecial: false })).toEqual(c.ids);
      });

      it("decodes every expected id sequence back to its input, whole and streamed", async () => {
        const t = await get();
        for (const c of cases) {
          expect(t.decode(c.ids), label(c.text)).toBe(c.text);
          const d = t.createDecoder({ stripLeadingSpace: true });
          let streamed = "";
          for (const id of c.ids) streamed += d.push(id);
          streamed += d.flush();
          expect(streamed, label(c.text)).toBe(c.text);
        }
      });
    });
  }
});
