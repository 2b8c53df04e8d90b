/**
 * Long tokenizations run on the tokenizer's worker thread: the same ids as encode(), while the
 * event loop keeps turning (a timer's largest gap stays small while megabytes are encoded).
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { OFFTHREAD_MIN_CHARS, Tokenizer } from "../../../lib/tokenizer/index.js";
import { fixture, haveFixtures, maxStall } from "../../helpers.js";

describe.skipIf(!haveFixtures)("Tokenizer.encodeAsync", () => {
  it.each(["ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"])(
    "%s: long texts encode on the worker thread, with the same ids",
    async (name) => {
      const path = fixture("vocab", name);
      const tok = await Tokenizer.fromGguf(path);
      const sample = readFileSync(`${path}.inp`, "utf8").replaceAll("\n__ggml_vocab_test__\n", " ");
      const text = sample.repeat(Math.ceil((OFFTHREAD_MIN_CHARS * 2) / sample.length));
      for (const opts of [{}, { addSpecial: false, parseSpecial: true }]) {
        expect(await tok.encodeAsync(text, opts)).toEqual(tok.encode(text, opts));
      }
      expect(await tok.encodeAsync("Hello world")).toEqual(tok.encode("Hello world")); // short: inline
      await tok.closeThread();
    },
  );

  it("a multi-megabyte text does not hold the event loop", async () => {
    const tok = await Tokenizer.fromGguf(fixture("vocab", "ggml-vocab-llama-spm.gguf"));
    await tok.encodeAsync("x".repeat(OFFTHREAD_MIN_CHARS)); // start the worker
    const text = "The quick brown fox jumps over the lazy dog. ".repeat(15_000); // 675 KB
    const t0 = performance.now();
    const { value, stallMs } = await maxStall(() => tok.encodeAsync(text, { addSpecial: false }));
    const ms = performance.now() - t0;
    expect(value.length).toBeGreaterThan(100_000);
    console.log(
      `encodeAsync of ${text.length} chars: ${ms.toFixed(0)} ms, largest event-loop stall ${stallMs.toFixed(0)} ms`,
    );
    // Encoding took far longer than the largest stall: it ran elsewhere (inline it stalls for all of it).
    expect(stallMs, `largest stall ${stallMs.toFixed(0)} ms of ${ms.toFixed(0)} ms`).toBeLessThan(
      Math.max(500, ms / 3),
    );
    await tok.closeThread();
  });
});
