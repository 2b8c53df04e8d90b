/**
 * synth / synthLora option resolution on its own (no file is written): every option is passed
 * through, absent ones come from SYNTH_DEFAULTS / SYNTH_LORA_DEFAULTS, and bad values get a typed
 * error naming the option; plus the CLI's target aliases. readGguf's argument checks run before
 * the addon is asked anything.
 */
import { describe, expect, it } from "vitest";
import { SYNTH_DEFAULTS, SYNTH_LORA_DEFAULTS } from "../../lib/defaults.js";
import { readGguf } from "../../lib/gguf.js";
import {
  LORA_TARGET_ALIASES,
  LORA_TARGETS,
  resolveSynthLoraOptions,
  resolveSynthOptions,
  synth,
  synthLora,
} from "../../lib/synth.js";

function errorOf(f: () => unknown): { code: string; message: string } {
  try {
    f();
  } catch (e) {
    return e as { code: string; message: string };
  }
  throw new Error("expected an error");
}

describe("resolveSynthOptions", () => {
  it("fills absent options from SYNTH_DEFAULTS", () => {
    expect(resolveSynthOptions({})).toEqual({ opts: { ...SYNTH_DEFAULTS }, onProgress: undefined });
  });

  it("mixture of experts: qwen3moe defaults to 8 experts, 2 used; expertsUsed defaults to min(2, experts)", () => {
    expect(resolveSynthOptions({ arch: "qwen3moe" }).opts).toMatchObject({ experts: 8, expertsUsed: 2 });
    expect(resolveSynthOptions({ arch: "llama", experts: 1 }).opts).toMatchObject({ experts: 1, expertsUsed: 1 });
    expect(resolveSynthOptions({ experts: 4, expertsUsed: 3 }).opts).toMatchObject({ experts: 4, expertsUsed: 3 });
    expect(resolveSynthOptions({}).opts).toMatchObject({ experts: 0, expertsUsed: 0 });
    expect(errorOf(() => resolveSynthOptions({ experts: 513 })).message).toMatch(/experts/);
  });

  it("passes every given option through (type case-insensitively)", () => {
    const onProgress = () => {};
    const given = {
      arch: "qwen2",
      dim: 64,
      layers: 2,
      heads: 4,
      kvHeads: 1,
      ffn: 96,
      context: 128,
      vocabFrom: "/v.gguf",
      vocabSize: 300,
      type: "Q8_0",
      seed: 9,
      tiedOutput: true,
      headDim: 32,
      ropeFreqs: true,
      ropeScaling: "yarn",
      ropeScale: 2.5,
      slidingWindow: 16,
      swaPattern: 3,
      attnSoftcap: 2,
      finalSoftcap: 5.5,
      ropeFreqBaseSwa: 100,
      longRope: true,
      experts: 6,
      expertsUsed: 3,
    } as const;
    expect(resolveSynthOptions({ ...given, onProgress })).toEqual({
      opts: { ...given, type: "q8_0" },
      onProgress,
    });
  });

  it("names the bad option", () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ arch: "gpt2" }, /arch/],
      [{ type: "q5_x" }, /type/],
      [{ type: 5 }, /type/],
      [{ dim: -1 }, /dim/],
      [{ vocabFrom: 3 }, /vocabFrom/],
      [{ tiedOutput: "yes" }, /tiedOutput/],
      [{ arch: "phi4" }, /arch/],
      [{ longRope: 1 }, /longRope/],
      [{ slidingWindow: -1 }, /slidingWindow/],
      [{ swaPattern: 1.5 }, /swaPattern/],
      [{ attnSoftcap: -2 }, /attnSoftcap/],
      [{ finalSoftcap: Number.NaN }, /finalSoftcap/],
      [{ ropeFreqBaseSwa: -1 }, /ropeFreqBaseSwa/],
      [{ headDim: -2 }, /headDim/],
      [{ headDim: 1.5 }, /headDim/],
      [{ ropeFreqs: 1 }, /ropeFreqs/],
      [{ ropeScaling: "longrope" }, /ropeScaling/],
      [{ ropeScale: 0 }, /ropeScale/],
      [{ ropeScale: 2000 }, /ropeScale/],
      [{ colour: 1 }, /colour/],
      [null, /synth options/],
    ];
    for (const [o, re] of cases) {
      const e = errorOf(() => resolveSynthOptions(o));
      expect(e.code, JSON.stringify(o)).toMatch(/^ERR_/);
      expect(e.message, JSON.stringify(o)).toMatch(re);
    }
  });

  it("synth() and synthLora() reject bad paths and options before touching the addon", async () => {
    await expect(synth("a\0b")).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(synth("/tmp/x.gguf", { dim: -1 })).rejects.toMatchObject({ message: expect.stringMatching(/dim/) });
    await expect(synthLora("a\0b", "/tmp/x.gguf")).rejects.toMatchObject({
      message: expect.stringMatching(/basePath/),
    });
    await expect(synthLora("/tmp/b.gguf", "a\0b")).rejects.toMatchObject({ message: expect.stringMatching(/outPath/) });
    await expect(synthLora("/tmp/b.gguf", "/tmp/x.gguf", { rank: 0 })).rejects.toMatchObject({
      message: expect.stringMatching(/rank/),
    });
  });
});

describe("resolveSynthLoraOptions", () => {
  it("fills absent options from SYNTH_LORA_DEFAULTS and passes given ones through", () => {
    expect(resolveSynthLoraOptions({})).toEqual({ ...SYNTH_LORA_DEFAULTS, targets: [...SYNTH_LORA_DEFAULTS.targets] });
    const given = { rank: 8, targets: ["output", "attn_q"], seed: 3, alpha: 16, type: "q8_0", stdB: 2 } as const;
    expect(resolveSynthLoraOptions(given)).toEqual(given);
  });

  it("accepts 1 to 8 targets, each one of LORA_TARGETS", () => {
    expect(resolveSynthLoraOptions({ targets: [...LORA_TARGETS] }).targets).toEqual([...LORA_TARGETS]);
    for (const targets of [[], [...LORA_TARGETS, "attn_q"], "attn_q"]) {
      const e = errorOf(() => resolveSynthLoraOptions({ targets }));
      expect(e).toMatchObject({ code: "ERR_INVALID_ARGUMENT", message: "Expected 1 to 8 targets for targets" });
    }
    expect(errorOf(() => resolveSynthLoraOptions({ targets: ["attn_q", "lm_head"] })).message).toMatch(/targets\[1\]/);
    expect(errorOf(() => resolveSynthLoraOptions({ type: "q4_1" })).message).toMatch(/type/);
    expect(errorOf(() => resolveSynthLoraOptions({ stdB: 101 })).message).toMatch(/stdB/);
    expect(errorOf(() => resolveSynthLoraOptions({ alpha: -1 })).message).toMatch(/alpha/);
    expect(errorOf(() => resolveSynthLoraOptions({ seed: -1 })).message).toMatch(/seed/);
    expect(errorOf(() => resolveSynthLoraOptions({ bias: 1 })).message).toMatch(/bias/);
  });

  it("the CLI's short target names map onto LORA_TARGETS", () => {
    expect(LORA_TARGET_ALIASES).toEqual({
      q: "attn_q",
      k: "attn_k",
      v: "attn_v",
      o: "attn_output",
      gate: "ffn_gate",
      up: "ffn_up",
      down: "ffn_down",
      output: "output",
    });
    expect(LORA_TARGETS).toEqual([
      "attn_q",
      "attn_k",
      "attn_v",
      "attn_output",
      "ffn_gate",
      "ffn_up",
      "ffn_down",
      "output",
    ]);
  });
});

describe("readGguf arguments", () => {
  it("rejects a bad path, unknown options and a keyPrefix that is not string(s)", async () => {
    await expect(readGguf("a\0b")).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(readGguf("/x.gguf", { nope: 1 } as never)).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: expect.stringMatching(/nope/),
    });
    await expect(readGguf("/x.gguf", null as never)).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    for (const keyPrefix of [5, ["a", 5], { a: 1 }]) {
      await expect(readGguf("/x.gguf", { keyPrefix } as never)).rejects.toMatchObject({
        code: "ERR_INVALID_ARGUMENT",
        message: "Expected a string or an array of strings for keyPrefix",
      });
    }
    await expect(readGguf("/x.gguf", { maxStringBytes: -1 })).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: expect.stringMatching(/maxStringBytes/),
    });
    await expect(readGguf("/x.gguf", { maxMetadataBytes: 0.5 })).rejects.toMatchObject({
      message: expect.stringMatching(/maxMetadataBytes/),
    });
  });
});
