/** kvMemory (lib/kvMemory.ts): the KV cache sized from a byte budget. */
import { afterEach, describe, expect, it } from "vitest";
import { kvBytesPerToken, kvSplit, kvTokensByDefault, parseBytes } from "../../lib/kvMemory.js";
import { Model } from "../../lib/model.js";
import { synthModel } from "../helpers.js";

let models: Model[] = [];
afterEach(async () => {
  await Promise.all(models.map((m) => m.dispose()));
  models = [];
});
const load = async (path: string, o: Parameters<typeof Model.load>[1]) => {
  const m = await Model.load(path, { threads: 1, ...o });
  models.push(m);
  return m;
};

describe("kvMemory", () => {
  it("parseBytes: numbers and sizes with decimal or binary units", () => {
    expect(parseBytes("x", "4GiB")).toBe(4 * 2 ** 30);
    expect(parseBytes("x", "512 MiB")).toBe(512 * 2 ** 20);
    expect(parseBytes("x", "1.5GB")).toBe(1.5e9);
    expect(parseBytes("x", "10kb")).toBe(10_000);
    expect(parseBytes("x", "1000")).toBe(1000);
    expect(parseBytes("x", 2048)).toBe(2048);
    for (const bad of ["", "4 GiBs", "-1GiB", "GiB", 0, -5, Number.NaN, null, {}])
      expect(() => parseBytes("kvMemory", bad)).toThrow(/Expected a positive byte count .* for kvMemory/);
  });

  it("sizes kvCacheTokens to the whole blocks that fit; the bytes per token are the pool's own", async () => {
    // 2 layers, 2 KV heads of 16: f16 rows of 32 elements -> 2 (K, V) x 2 x 64 bytes = 256 bytes/token.
    const path = await synthModel("kv-memory", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 96, vocabSize: 320 });
    expect(await kvBytesPerToken(path, "f16")).toBe(256);
    const m = await load(path, { contextSize: 256, kvMemory: "1MiB" });
    expect(m.info.kvCacheTokens).toBe(4096);
    expect(m.info.kvBytes).toBe(2 ** 20);
    const odd = await load(path, { contextSize: 256, kvMemory: 256 * 16 * 20 + 255 }); // 20 blocks and change
    expect(odd.info.kvCacheTokens).toBe(320);
    // The formula against what the engine allocates, for each KV type (q8_0 needs 32-wide heads).
    const q = await synthModel("kv-memory-q8", { dim: 64, layers: 3, heads: 2, kvHeads: 1, ffn: 96, vocabSize: 320 });
    for (const kvType of ["f32", "f16", "q8_0"] as const) {
      const n = await load(q, { contextSize: 128, kvCacheTokens: 160, kvType });
      expect(n.info.kvBytes / n.info.kvCacheTokens, kvType).toBe(await kvBytesPerToken(q, kvType));
    }
  });

  it("sliding-window models: the local layers' pool stops at maxSequences windows, so a budget buys more tokens", async () => {
    // gemma2, 4 layers (0 and 2 local, window 16), 2 KV heads of 16: 128 bytes per layer and token.
    const path = await synthModel("kv-memory-gemma2", {
      arch: "gemma2",
      dim: 64,
      layers: 4,
      heads: 4,
      kvHeads: 2,
      ffn: 96,
      vocabSize: 320,
      slidingWindow: 16,
    });
    expect(await kvSplit(path, "f16")).toEqual({ perToken: 256, localPerToken: 256, window: 16 });
    expect(await kvBytesPerToken(path, "f16")).toBe(512);
    // Local cap: 2 sequences x (16 + 2 blocks of 16) + one batch of 64 = 160 tokens; the rest of
    // 1 MiB goes to the global layers: (2^20 - 160 x 256) / 256 = 3936 tokens (a full cache: 2048).
    const m = await load(path, { contextSize: 256, kvMemory: "1MiB", maxSequences: 2, maxBatchTokens: 64 });
    expect(m.info.kvCacheTokens).toBe(3936);
    expect(m.info.kvBytes).toBe(2 ** 20);
    const s = m.stats();
    expect(s.kvBytesLocal).toBe(160 * 256);
    expect(s.kvBytesGlobal).toBe(3936 * 256);
    expect(s.localBlocksTotal).toBe(10);
    expect(s.blocksTotal).toBe(3936 / 16);
  });

  it("refuses a budget below one context, and kvMemory with kvCacheTokens", async () => {
    const path = await synthModel("kv-memory", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 96, vocabSize: 320 });
    await expect(load(path, { contextSize: 256, kvMemory: "32KiB" })).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message:
        "kvMemory of 32768 bytes holds 128 tokens of this model's KV cache (256 bytes each), less than one context of 256 tokens: raise kvMemory to at least 65536 bytes or lower contextSize.",
    });
    await expect(load(path, { kvMemory: "1MiB", kvCacheTokens: 100 })).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: "Pass kvMemory (a byte budget) or kvCacheTokens (a token count), not both",
    });
  });

  it("default (neither kvCacheTokens nor kvMemory): half the free memory, between one and maxSequences contexts", async () => {
    // 256 bytes per token, blocks of 16, contexts of 256, 64 sequences at most.
    expect(kvTokensByDefault(256, 16, 256, 64, 2 ** 30)).toBe(256 * 64); // plenty: maxSequences contexts
    expect(kvTokensByDefault(256, 16, 256, 64, 2 * 2 ** 20)).toBe(4096); // 1 MiB of 2 free
    expect(kvTokensByDefault(256, 16, 256, 64, 2 * 2 ** 20 + 4095)).toBe(4096); // whole blocks only
    expect(kvTokensByDefault(256, 16, 256, 64, 1000)).toBe(256); // never less than one context
    expect(kvTokensByDefault(256, 16, 250, 3, 2 ** 30)).toBe(752); // rounded up to whole blocks
    const path = await synthModel("kv-memory", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 96, vocabSize: 320 });
    const m = await load(path, { contextSize: 256, maxSequences: 4 });
    expect(m.info.kvCacheTokens).toBe(1024); // this machine has 512 KiB free
    const given = await load(path, { contextSize: 256, maxSequences: 4, kvCacheTokens: 300 });
    expect(given.info.kvCacheTokens).toBe(300);
  });
});
