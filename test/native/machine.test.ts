/** lib/machine.ts: the read-bandwidth probe and the bytes one decode step reads (the decode roofline). */
import { describe, expect, it } from "vitest";
import { readGguf } from "../../lib/gguf.js";
import { decodeReadBytes, measureReadBandwidth } from "../../lib/machine.js";
import { join } from "node:path";
import { synthLora } from "../../lib/synth.js";
import { errorText, synthModel, tmpRoot } from "../helpers.js";

// llama, dim 64, 2 layers, 4 heads (2 KV heads) of 16, FFN 96, vocabulary 320, f32: per layer two
// norms (64 each), q and o (64x64), k and v (64x32), gate, up and down (64x96); then the output norm
// and the output projection (320x64). The token embeddings (320x64) are looked up, not read whole.
const SHAPE = { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 96, vocabSize: 320 };
const LAYER = 2 * 64 + 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 96;
const OUTPUT = 64 + 320 * 64;
const EMBED = 320 * 64;
// K and V, f16, 2 layers x 2 KV heads x 16: bytes per token of context.
const KV_F16 = 2 * 2 * 2 * 16 * 2;

describe("decodeReadBytes", () => {
  it("counts every weight but the embedding lookup, plus the KV cache at the context", async () => {
    const path = await synthModel("machine-dense", SHAPE);
    const r = await decodeReadBytes(path);
    expect(r.weights).toBe(4 * (2 * LAYER + OUTPUT));
    expect(r.kvCache).toBe(0);
    expect(r.total).toBe(r.weights);
    const at = await decodeReadBytes(path, { context: 1000 });
    expect(at.weights).toBe(r.weights);
    expect(at.kvCache).toBe(1000 * KV_F16);
    expect(at.total).toBe(r.weights + 1000 * KV_F16);
    expect((await decodeReadBytes(path, { context: 1000, kvType: "f32" })).kvCache).toBe(2000 * KV_F16);
    expect((await decodeReadBytes(path, { context: 1024, kvType: "q8_0" })).kvCache).toBe((1024 * KV_F16 * 34) / 64);
  });

  it("a tied output projection reads the embeddings whole; of a mixture of experts, only the routed share", async () => {
    const tied = await synthModel("machine-tied", { ...SHAPE, tiedOutput: true });
    expect((await decodeReadBytes(tied)).weights).toBe(4 * (2 * LAYER + 64 + EMBED));
    // 4 experts, 1 routed: the expert tensors count a quarter, everything else whole.
    const moe = await synthModel("machine-moe", { ...SHAPE, experts: 4, expertsUsed: 1 });
    const g = await readGguf(moe, { maxArrayLength: 0 });
    let exps = 0;
    let rest = 0;
    for (const t of g.tensors) {
      if (t.name === "token_embd.weight") continue;
      if (t.name.includes("_exps.")) exps += t.nbytes;
      else rest += t.nbytes;
    }
    expect(exps).toBeGreaterThan(0);
    expect((await decodeReadBytes(moe)).weights).toBe(rest + exps / 4);
  });

  it("sliding-window layers read at most their window", async () => {
    // gemma2, 4 layers: 0 and 2 local (window 16), 1 and 3 global; 128 bytes per layer and token.
    const path = await synthModel("machine-gemma2", { ...SHAPE, arch: "gemma2", layers: 4, slidingWindow: 16 });
    const base = (await decodeReadBytes(path)).weights;
    const r = await decodeReadBytes(path, { context: 100 });
    expect(r.weights).toBe(base);
    expect(r.kvCache).toBe(2 * 128 * 100 + 2 * 128 * 16);
  });

  it("rejects bad options with typed errors", async () => {
    const path = await synthModel("machine-dense", SHAPE);
    expect(await errorText(decodeReadBytes(path, { context: -1 }))).toMatch(/ERR_INVALID_ARGUMENT.*context/);
    expect(await errorText(decodeReadBytes(path, { kvType: "f8" as "f16" }))).toMatch(/ERR_INVALID_ARGUMENT.*kvType/);
    expect(await errorText(decodeReadBytes(path, { ctx: 1 } as never))).toMatch(/ERR_INVALID_ARGUMENT.*ctx/);
    expect(await errorText(decodeReadBytes(`${path}.missing`))).toMatch(/ERR_FILE_NOT_FOUND/);
    // A file without an attention shape (a LoRA adapter) has no KV cache to count at a context.
    const adapter = join(tmpRoot, `machine-adapter-${process.pid}.gguf`);
    await synthLora(path, adapter, { rank: 4 });
    expect((await decodeReadBytes(adapter)).kvCache).toBe(0);
    expect(await errorText(decodeReadBytes(adapter, { context: 8 }))).toMatch(/ERR_BAD_SHAPE.*pass context 0/);
  });
});

describe("measureReadBandwidth", () => {
  it("measures a plausible bandwidth off the JS thread", async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const gbs = await measureReadBandwidth({ threads: 1, megabytes: 256 });
    clearInterval(timer);
    // Any machine that runs the tests reads faster than 0.2 GB/s and slower than 10 TB/s.
    expect(gbs).toBeGreaterThan(0.2);
    expect(gbs).toBeLessThan(10_000);
    expect(ticks).toBeGreaterThan(0);
  });

  it("rejects bad options with typed errors, in the addon's words too", async () => {
    expect(await errorText(measureReadBandwidth({ threads: 0 }))).toMatch(
      /ERR_INVALID_ARGUMENT.*Expected an integer in \[1, 512\] for threads/,
    );
    expect(await errorText(measureReadBandwidth({ megabytes: 1e9 }))).toMatch(/ERR_INVALID_ARGUMENT.*megabytes/);
    expect(await errorText(measureReadBandwidth({ bytes: 1 } as never))).toMatch(/ERR_INVALID_ARGUMENT.*bytes/);
  });
});

describe("addon.readBandwidth", () => {
  it("checks its numbers itself (a caller that bypasses lib/machine.ts)", async () => {
    const { loadAddon } = await import("../../lib/binding.js");
    const addon = loadAddon();
    expect(() => addon.readBandwidth({ threads: 0, megabytes: 16 })).toThrow(/\[1, 512\] for threads/);
    expect(() => addon.readBandwidth({ threads: 1, megabytes: 0.5 })).toThrow(/megabytes/);
    expect(() => addon.readBandwidth(undefined as never)).toThrow(/options object/);
    await expect(addon.readBandwidth({ threads: 1, megabytes: 16 })).resolves.toBeGreaterThan(0);
  });
});
