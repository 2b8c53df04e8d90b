/**
 * LoRA adapters through the library: Model.loadAdapter / unloadAdapter / adapters, generate({adapter}),
 * the typed errors (unknown names list the loaded ones), the N-API's strict argument checks, batch
 * invariance across adapters (12 concurrent requests over 3 adapters and the base model give exactly
 * the tokens each gives alone), unloading while a stream runs (the stream finishes with its
 * adapter), the response cache keyed by adapter, sessions under an adapter, and the stats.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadAddon } from "../../lib/binding.js";
import { LlmserveError, LIMITS, Model, synthLora, type Chunk } from "../../lib/index.js";
import type { NativeModel } from "../../lib/native.js";
import { collectTokens, synthModel, tmpRoot } from "../helpers.js";

let m: Model;
let base: string;
const adapters: string[] = [];
const fixed = { temperature: 0, stopAtEos: false } as const;

beforeAll(async () => {
  base = await synthModel("lora-lib", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 400 });
  for (let i = 0; i < 3; i++) {
    const p = join(tmpRoot, `lora-lib-${i}-${process.pid}.gguf`);
    await synthLora(base, p, { rank: 4 + 2 * i, seed: 10 + i, alpha: i === 2 ? 8 : 0 });
    adapters.push(p);
  }
  m = await Model.load(base, { threads: 1, contextSize: 256, kvType: "f32", maxBatchTokens: 96 });
});
afterAll(async () => {
  await m?.dispose();
});

async function errorOf(f: () => unknown): Promise<LlmserveError> {
  try {
    await f();
  } catch (err) {
    expect(err).toBeInstanceOf(LlmserveError);
    return err as LlmserveError;
  }
  throw new Error("expected an error");
}

const prompt = (i: number) => ({ tokens: [1, 300 + i, 301 + ((i * 7) % 50), 302 + i] });

describe("LoRA adapters", () => {
  it("load, list, unload; names are checked; unknown names list the loaded ones", async () => {
    expect(m.adapters()).toEqual([]);
    expect(m.stats().adapters).toBe(0);
    expect(m.stats().adapterBytes).toBe(0);
    const a = await m.loadAdapter("x", adapters[0]);
    expect(a).toMatchObject({ name: "x", path: adapters[0], scale: 1 });
    expect(m.adapters()).toEqual([a]);
    expect(m.stats().adapters).toBe(1);
    // rank 4, f32: A [64 -> 4] and B [4 -> n_out] for q, k, v, o, gate, up, down in 2 layers
    const perLayer =
      4 * 4 * (64 + 64) + 4 * 4 * (64 + 32) * 2 + 4 * 4 * (64 + 64) + 4 * 4 * (64 + 128) * 2 + 4 * 4 * (128 + 64);
    // plus the transposed copy of each B (f32 and f16 pairs run through the batched low-rank kernels)
    const transposedB = 4 * 4 * (64 + 32 + 32 + 64 + 128 + 128 + 64);
    expect(m.stats().adapterBytes).toBe(2 * (perLayer + transposedB));
    expect((await errorOf(() => m.loadAdapter("x", adapters[1]))).code).toBe("ERR_INVALID_ARGUMENT");
    expect((await errorOf(() => m.loadAdapter("", adapters[1]))).code).toBe("ERR_INVALID_ARGUMENT");
    expect((await errorOf(() => m.loadAdapter("y", adapters[1], { scale: 1000 }))).message).toBe(
      "Expected a number in [-100, 100] for scale but received 1000",
    );
    expect((await errorOf(() => m.loadAdapter("y", adapters[1], { sacle: 1 } as never))).code).toBe(
      "ERR_INVALID_ARGUMENT",
    );
    expect((await errorOf(() => m.loadAdapter("y", join(tmpRoot, "missing.gguf")))).code).toBe("ERR_FILE_NOT_FOUND");
    // A model file is not an adapter.
    expect((await errorOf(() => m.loadAdapter("y", base))).code).toBe("ERR_INVALID_ARGUMENT");
    expect(m.adapters().map((x) => x.name)).toEqual(["x"]);
    const e = await errorOf(() => m.generate(prompt(0), { adapter: "nope" }));
    expect(e.code).toBe("ERR_ADAPTER_NOT_FOUND");
    expect(e.message).toContain('No adapter named "nope" is loaded (loaded: "x")');
    expect((await errorOf(() => m.generate(prompt(0), { adapter: 5 as never }))).code).toBe("ERR_INVALID_ARGUMENT");
    expect((await errorOf(() => m.unloadAdapter("nope"))).message).toContain('(loaded: "x")');
    m.unloadAdapter("x");
    expect(m.adapters()).toEqual([]);
    expect(m.stats().adapterBytes).toBe(0);
    const gone = await errorOf(() => m.generate(prompt(0), { adapter: "x" }));
    expect(gone.code).toBe("ERR_ADAPTER_NOT_FOUND");
    expect(gone.message).toContain("(loaded: none)");
    // Loaded again under the same name: a new id.
    const again = await m.loadAdapter("x", adapters[0]);
    expect(again.id).not.toBe(a.id);
    m.unloadAdapter("x");
  });

  it("the N-API checks every argument's type and range", async () => {
    const native = (m as unknown as { native: NativeModel }).native;
    const code = async (f: () => unknown) => {
      try {
        await f();
      } catch (err) {
        return (err as { code?: string }).code;
      }
      return undefined;
    };
    expect(await code(() => native.loadAdapter(5 as never, adapters[0], 1))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(() => native.loadAdapter("n", 5 as never, 1))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(() => native.loadAdapter("n", `${adapters[0]}\0x`, 1))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(() => native.loadAdapter("n", adapters[0], "1" as never))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(() => native.loadAdapter("n", adapters[0], Number.NaN))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(() => native.loadAdapter("n", adapters[0], LIMITS.lora.scale.max + 1))).toBe(
      "ERR_INVALID_ARGUMENT",
    );
    expect(await code(() => native.loadAdapter("x".repeat(257), adapters[0], 1))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(() => native.unloadAdapter(undefined as never))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(() => native.unloadAdapter("n"))).toBe("ERR_ADAPTER_NOT_FOUND");
    const addon = loadAddon();
    const opts = { ...addon.defaults.synthLora };
    const out = join(tmpRoot, `lora-napi-${process.pid}.gguf`);
    expect(await code(() => addon.synthLora(base, { ...opts, rank: 0 }, out))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(() => addon.synthLora(base, { ...opts, targets: ["attn_x"] }, out))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(() => addon.synthLora(base, { ...opts, type: "q4_0" }, out))).toBe("ERR_INVALID_ARGUMENT");
    expect(await code(() => addon.synthLora(base, { ...opts, seed: undefined } as never, out))).toBe(
      "ERR_INVALID_ARGUMENT",
    );
    expect(await code(() => addon.synthLora(base, opts, out))).toBeUndefined();
    expect(native.adapters()).toEqual([]);
  });

  it("12 concurrent requests over 3 adapters and the base give exactly the tokens each gives alone", async () => {
    for (let i = 0; i < 3; i++) await m.loadAdapter(`a${i}`, adapters[i], { scale: i === 1 ? 0.7 : 1 });
    const which = (i: number) => (i % 4 === 3 ? undefined : `a${i % 4}`);
    const solo: number[][] = [];
    for (let i = 0; i < 12; i++)
      solo.push(await collectTokens(m.generate(prompt(i), { ...fixed, maxTokens: 16, adapter: which(i) })));
    // The adapters matter: the same prompt under each gives other tokens.
    const same = await Promise.all(
      [undefined, "a0", "a1", "a2"].map((adapter) =>
        collectTokens(m.generate(prompt(0), { ...fixed, maxTokens: 16, adapter })),
      ),
    );
    expect(new Set(same.map((t) => t.join(","))).size).toBe(4);
    const seqsBefore = m.stats().maxBatchSequencesSeen;
    const together = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        collectTokens(m.generate(prompt(i), { ...fixed, maxTokens: 16, adapter: which(i) })),
      ),
    );
    expect(together).toEqual(solo);
    expect(Math.max(seqsBefore, m.stats().maxBatchSequencesSeen)).toBeGreaterThanOrEqual(4);
    for (let i = 0; i < 3; i++) m.unloadAdapter(`a${i}`);
  });

  it("unloading during a stream lets the stream finish with its adapter; new requests are refused", async () => {
    await m.loadAdapter("u", adapters[2]);
    const alone = await collectTokens(m.generate(prompt(5), { ...fixed, maxTokens: 48, adapter: "u" }));
    const bytes = m.stats().adapterBytes;
    expect(bytes).toBeGreaterThan(0);
    const stream = m.generate(prompt(5), { ...fixed, maxTokens: 48, adapter: "u" });
    const tokens: number[] = [];
    let unloaded = false;
    for await (const c of stream) {
      tokens.push(...c.tokens);
      if (!unloaded && tokens.length >= 2) {
        m.unloadAdapter("u");
        unloaded = true;
        expect(m.adapters()).toEqual([]);
        expect((await errorOf(() => m.generate(prompt(5), { adapter: "u" }))).code).toBe("ERR_ADAPTER_NOT_FOUND");
        expect(m.stats().adapters).toBe(0);
      }
    }
    expect(unloaded).toBe(true);
    expect(tokens).toEqual(alone);
    // The stream has ended: the adapter's memory is released.
    expect(m.stats().adapterBytes).toBe(0);
  });

  it("the response cache is keyed by adapter", async () => {
    await m.loadAdapter("c", adapters[0]);
    const opts = { ...fixed, maxTokens: 8, cache: true };
    const hits = () => m.stats().responseCacheHits;
    const b = await collectTokens(m.generate(prompt(7), opts));
    const h0 = hits();
    const c = await collectTokens(m.generate(prompt(7), { ...opts, adapter: "c" }));
    expect(hits()).toBe(h0); // not the base model's entry
    expect(c).not.toEqual(b);
    expect(await collectTokens(m.generate(prompt(7), { ...opts, adapter: "c" }))).toEqual(c);
    expect(hits()).toBe(h0 + 1);
    // Reloaded under the same name (maybe another file): a new id, so no stale hit.
    m.unloadAdapter("c");
    await m.loadAdapter("c", adapters[1]);
    const c2 = await collectTokens(m.generate(prompt(7), { ...opts, adapter: "c" }));
    expect(hits()).toBe(h0 + 1);
    expect(c2).not.toEqual(c);
    m.unloadAdapter("c");
  });

  it("sessions: createSession({adapter}) runs every turn under it; switching adapters recomputes", async () => {
    await m.loadAdapter("s", adapters[1]);
    const chat = m.createSession({ adapter: "s", defaults: { ...fixed, maxTokens: 6 } });
    const r1 = await collectTokens(chat.send("Hello there."));
    const history = [...chat.tokens];
    // The same history sent fresh under "s" gives the same reply as a second turn.
    const turn = " And then?";
    const fresh = await collectTokens(
      m.generate(
        { tokens: [...history, ...m.tokenizer.encode(turn, { addSpecial: false })] },
        { ...fixed, maxTokens: 6, adapter: "s" },
      ),
    );
    let last: Chunk | undefined;
    const r2: number[] = [];
    for await (const c of chat.send(turn)) {
      r2.push(...c.tokens);
      last = c;
    }
    expect(r2).toEqual(fresh);
    // The session's KV: every history token but the last reply token (which has no KV yet).
    expect(last?.timings?.reusedTokens).toBeGreaterThanOrEqual(history.length - 1);
    // A turn under the base model: the session's KV (computed under "s") is not adopted.
    const turn3 = " More?";
    const all = [...chat.tokens, ...m.tokenizer.encode(turn3, { addSpecial: false })];
    const freshBase = await collectTokens(m.generate({ tokens: all }, { ...fixed, maxTokens: 6 }));
    let last3: Chunk | undefined;
    const r3: number[] = [];
    for await (const c of chat.send(turn3, { adapter: undefined })) {
      r3.push(...c.tokens);
      last3 = c;
    }
    expect(r3).toEqual(freshBase);
    // At most the prefix cache's full blocks of the base model's own run, never the session's KV.
    expect((last3?.timings?.reusedTokens ?? 0) % 16).toBe(0);
    expect(r1.length).toBe(6);
    chat.dispose();
    m.unloadAdapter("s");
  });
});
