/**
 * Tokenizer parity with llama.cpp on the synth vocabulary, the fixture models and (when present) the
 * fixtures' vocab-only GGUF files.
 *
 * node-llama-cpp's `model.tokenize(text, parseSpecial)` never adds BOS (common_tokenize with
 * add_special = false), so it is compared with llmserve's `tokenize(text, { addSpecial: false })`,
 * and llmserve's default `tokenize(text)` must equal [BOS] + that when the vocabulary asks for BOS
 * (llama.cpp's `shouldPrependBosToken`).
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { Model, Tokenizer } from "../../lib/index.js";
import { fixture, haveFixtures, synthModel } from "../helpers.js";
import { oracleLlama } from "./oracle.js";
import type { LlamaModel } from "node-llama-cpp";

const TEXTS = [
  "Hello world",
  " Hello world",
  "Hello  world",
  "I dream of electric sheep.",
  "Once upon a time, there was a little girl named Lily.",
  "",
  " ",
  "\n\nline one\n\tline two  ",
  "Numbers: 123456789 3.14159 -42",
  "café naïve façade — “quotes” 日本語 🙂",
  "<s>hello</s> <unk>",
  "don't can't I'm we've",
];

interface Case {
  name: string;
  tokenize(text: string, opts: { addSpecial?: boolean; parseSpecial?: boolean }): number[];
  llama: LlamaModel;
}

function checkCase(c: Case, texts: readonly string[] = TEXTS): void {
  const bos = c.llama.tokens.bos;
  const addBos = c.llama.tokens.shouldPrependBosToken;
  const failures: string[] = [];
  for (const text of texts) {
    for (const parseSpecial of [false, true]) {
      const ref = Array.from(c.llama.tokenize(text, parseSpecial));
      const mine = c.tokenize(text, { addSpecial: false, parseSpecial });
      if (JSON.stringify(mine) !== JSON.stringify(ref)) {
        failures.push(
          `${JSON.stringify(text)} (parseSpecial ${parseSpecial}): llmserve ${JSON.stringify(mine)} llama.cpp ${JSON.stringify(ref)}`,
        );
      }
    }
    const withBos = c.tokenize(text, {});
    const refWithBos = [...(addBos && bos !== null ? [bos] : []), ...Array.from(c.llama.tokenize(text, false))];
    if (JSON.stringify(withBos) !== JSON.stringify(refWithBos)) {
      failures.push(
        `${JSON.stringify(text)} (default, BOS ${addBos ? "added" : "not added"} by llama.cpp): llmserve ${JSON.stringify(withBos)} expected ${JSON.stringify(refWithBos)}`,
      );
    }
  }
  console.log(
    `[parity] tokenizer ${c.name}: ${texts.length * 3 - failures.length}/${texts.length * 3} tokenizations equal`,
  );
  expect(failures, `${c.name}:\n${failures.join("\n")}`).toEqual([]);
}

if (!haveFixtures)
  console.log(
    `[parity] skipping fixture tokenizer parity: ${fixture()} is absent (the synth vocabulary is still checked)`,
  );

describe("tokenizer parity vs llama.cpp", () => {
  const disposers: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const d of disposers.reverse()) await d();
  });

  async function modelCase(name: string, path: string): Promise<Case> {
    const m = await Model.load(path, { threads: 1, contextSize: 64 });
    disposers.push(() => m.dispose());
    const llama = await (await oracleLlama()).loadModel({ modelPath: path, gpuLayers: 0, vocabOnly: true });
    disposers.push(() => llama.dispose());
    return { name, tokenize: (t, o) => m.tokenize(t, o), llama };
  }

  // gemma2/gemma3 synth models write add_space_prefix = false (as Gemma's converters do); phi3's
  // name triggers llama.cpp's Phi-3 special-token attributes (RSTRIP) on both sides.
  it("synth vocabulary (llama, qwen2, gemma2, gemma3 and phi3 models)", async () => {
    for (const arch of ["llama", "qwen2", "gemma2", "gemma3", "phi3"] as const) {
      const path = await synthModel(`parity-tok-${arch}`, {
        arch,
        dim: 64,
        layers: 1,
        heads: 2,
        kvHeads: 1,
        ffn: 128,
        vocabSize: 512,
        seed: 3,
      });
      checkCase(await modelCase(`synth ${arch}`, path));
    }
  });

  // Llama 3 files are general.architecture = llama with a BPE vocabulary whose tokenizer.ggml.pre is
  // llama-bpe / llama3. Llama 3's vocabulary is too large for the fixtures, so this model takes the
  // falcon BPE vocabulary with its pre-tokenizer name patched to "llama3" (same length, in place):
  // both engines then split with Llama 3's regex and merge with falcon's ranks, on the texts of
  // llama.cpp's llama-bpe test vectors (written to exercise that regex) and the common ones.
  it.runIf(haveFixtures)(
    "a llama model with Llama 3's pre-tokenizer (llama3 split over the falcon vocabulary)",
    async () => {
      const src = fixture("vocab", "ggml-vocab-falcon.gguf");
      const inp = fixture("vocab", "ggml-vocab-llama-bpe.gguf.inp");
      if (!existsSync(src) || !existsSync(inp)) {
        console.log(`[parity] skipping the llama3 pre-tokenizer model: ${src} or ${inp} is absent`);
        return;
      }
      const base = await synthModel("parity-tok-falcon", {
        dim: 64,
        layers: 1,
        heads: 2,
        kvHeads: 1,
        ffn: 128,
        vocabFrom: src,
        seed: 3,
      });
      const buf = readFileSync(base);
      // key "tokenizer.ggml.pre", then its value: type 8 (string), u64 length 6, "falcon".
      const key = buf.indexOf("tokenizer.ggml.pre");
      const value = key + "tokenizer.ggml.pre".length + 4 + 8;
      expect(key).toBeGreaterThan(0);
      expect(buf.readUInt32LE(value - 12)).toBe(8);
      expect(buf.toString("latin1", value, value + 6)).toBe("falcon");
      buf.write("llama3", value, "latin1");
      const path = base.replace(/\.gguf$/, "-llama3.gguf");
      writeFileSync(path, buf);
      const c = await modelCase("llama + llama3 pre-tokenizer", path);
      const texts = readFileSync(inp, "utf8").split("\n__ggml_vocab_test__\n");
      checkCase(c, [...TEXTS, ...texts]);
    },
  );

  describe.skipIf(!haveFixtures)("fixtures", () => {
    it.each(["aidreams260K", "stories260K-ids"])("model %s", async (name) => {
      checkCase(await modelCase(name, fixture("models", `${name}.gguf`)));
    });

    const vocabs = ["llama-spm", "phi-3", "gpt-2", "deepseek-coder", "falcon", "starcoder"];
    it.each(vocabs)("vocab %s", async (name) => {
      const path = fixture("vocab", `ggml-vocab-${name}.gguf`);
      if (!existsSync(path)) {
        console.log(`[parity] skipping vocab ${name}: ${path} is absent`);
        return;
      }
      const tok = await Tokenizer.fromGguf(path);
      const llama = await (await oracleLlama()).loadModel({ modelPath: path, gpuLayers: 0, vocabOnly: true });
      try {
        checkCase({ name: `vocab ${name}`, tokenize: (t, o) => tok.encode(t, o), llama });
      } finally {
        await llama.dispose();
      }
    });
  });
});
