/**
 * The LoRA adapter lifecycle under `maxAdapters` (lib/adapters.ts): the least recently used idle
 * adapter is evicted, a request for an evicted adapter reloads it transparently (same tokens as
 * before the eviction, one reload for many concurrent requests), busy adapters are never evicted
 * (when all are busy the bound is exceeded until requests end, never waited on), unloading during a
 * stream or during a reload, typed errors when the file was deleted or changed before a reload,
 * and the caches across an eviction (the response cache still hits; the prefix cache and sessions
 * miss safely).
 */
import { copyFileSync, rmSync, utimesSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AdapterInfo, type Chunk, LlmserveError, Model, synthLora } from "../../lib/index.js";
import { collectTokens, synthModel, tmpRoot, until } from "../helpers.js";

let base: string;
const files: string[] = [];
const fixed = { temperature: 0, stopAtEos: false } as const;
const prompt = { tokens: [1, 300, 301, 302] };
const models: Model[] = [];

beforeAll(async () => {
  base = await synthModel("lora-lru", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 400 });
  for (let i = 0; i < 4; i++) {
    const p = join(tmpRoot, `lora-lru-${i}-${process.pid}.gguf`);
    await synthLora(base, p, { rank: 4, seed: 20 + i });
    files.push(p);
  }
});
afterAll(async () => {
  for (const m of models) await m.dispose();
});

/** A model with adapters A, B, C (files 0..2) loaded in that order under maxAdapters 2. */
async function load(maxAdapters = 2, names = ["A", "B", "C"]): Promise<Model> {
  const m = await Model.load(base, {
    threads: 1,
    contextSize: 8192, // long enough that a held stream (hold()) runs for seconds
    kvCacheTokens: 40_000,
    kvType: "f32",
    maxAdapters,
  });
  models.push(m);
  for (let i = 0; i < names.length; i++) await m.loadAdapter(names[i], files[i]);
  return m;
}

const run = (m: Model, adapter: string | undefined, maxTokens = 12) =>
  collectTokens(m.generate(prompt, { ...fixed, maxTokens, adapter }));

const resident = (m: Model) =>
  m
    .adapters()
    .filter((a) => a.resident)
    .map((a) => a.name)
    .sort();
const find = (m: Model, name: string) => m.adapters().find((a) => a.name === name) as AdapterInfo;

/**
 * Starts a long stream under `adapter` (8000 tokens: seconds on this model) and reads its first
 * chunk; `stop()` cancels it and waits until the engine has ended it (its adapter is released).
 */
async function hold(m: Model, adapter: string) {
  const gen = m.generate(prompt, { ...fixed, maxTokens: 8000, adapter });
  const first = await gen.next();
  expect(first.done).toBe(false);
  return {
    stop: async () => {
      await gen.return(undefined);
      expect(await until(() => find(m, adapter).inUse === 0, 10_000)).toBe(true);
    },
  };
}

async function errorOf(f: () => Promise<unknown>): Promise<LlmserveError> {
  try {
    await f();
  } catch (err) {
    expect(err).toBeInstanceOf(LlmserveError);
    return err as LlmserveError;
  }
  throw new Error("expected an error");
}

describe("LoRA adapters under maxAdapters", () => {
  it("maxAdapters is validated like the other load options", async () => {
    for (const bad of [-1, 1.5, "2", Number.NaN]) {
      const e = await errorOf(() => Model.load(base, { maxAdapters: bad as never }));
      expect(e.code).toBe("ERR_INVALID_ARGUMENT");
      expect(e.message).toContain("for maxAdapters");
    }
  });

  it("evicts the least recently used adapter; a request reloads it (same tokens, a new engine id)", async () => {
    const m = await load(2, ["A", "B"]);
    const before = await run(m, "A");
    const idBefore = find(m, "A").id;
    expect(resident(m)).toEqual(["A", "B"]);
    // A was used after B was loaded: B is the least recently used now.
    await m.loadAdapter("C", files[2]);
    expect(resident(m)).toEqual(["A", "C"]);
    expect(m.adapters().map((a) => a.name)).toEqual(["A", "B", "C"]); // still registered, in load order
    expect(find(m, "B")).toMatchObject({ resident: false, id: 0, loads: 1, inUse: 0 });
    const bTokens = await run(m, "B"); // reloads B, evicting A (C is more recent)
    expect(resident(m)).toEqual(["B", "C"]);
    expect(find(m, "B").loads).toBe(2);
    expect(await run(m, "A")).toEqual(before); // A reloaded: the same tokens as before its eviction
    expect(find(m, "A").id).not.toBe(idBefore);
    expect(find(m, "A").loads).toBe(2);
    expect(resident(m)).toEqual(["A", "B"]);
    expect(bTokens).not.toEqual(before);
    const s = m.stats();
    expect(s).toMatchObject({ adapters: 3, adaptersResident: 2, adapterLoads: 5, adapterEvictions: 3 });
  });

  it("A, B, C with maxAdapters 2: loading C evicts A; requesting A reloads it and evicts B", async () => {
    const m = await load();
    expect(resident(m)).toEqual(["B", "C"]);
    expect(m.stats()).toMatchObject({ adapters: 3, adaptersResident: 2, adapterLoads: 3, adapterEvictions: 1 });
    const bytes2 = m.stats().adapterBytes;
    await run(m, "A");
    expect(resident(m)).toEqual(["A", "C"]);
    expect(m.stats()).toMatchObject({ adaptersResident: 2, adapterLoads: 4, adapterEvictions: 2 });
    expect(m.stats().adapterBytes).toBe(bytes2); // same-shape adapters: memory stays at two
    expect(find(m, "A").lastUsed).toBeGreaterThanOrEqual(find(m, "C").lastUsed);
  });

  it("busy adapters are never evicted; when all are busy the bound is exceeded (no waiting), then restored", async () => {
    const m = await load();
    const a = await hold(m, "A"); // reloads A (evicting B), then holds it
    expect(find(m, "A").inUse).toBe(1);
    await run(m, "C"); // C is now more recently used than A
    const b = await hold(m, "B"); // A is the least recently used but busy: C is evicted
    expect(find(m, "A").inUse).toBe(1);
    expect(resident(m)).toEqual(["A", "B"]);
    // All resident adapters busy: C is loaded anyway and runs at once.
    const t0 = Date.now();
    expect((await run(m, "C", 4)).length).toBe(4);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(find(m, "A").inUse + find(m, "B").inUse).toBe(2); // the premise held throughout
    // C ended: back to two resident, without touching the busy ones.
    expect(resident(m)).toEqual(["A", "B"]);
    expect(m.stats().adapterEvictions).toBe(4); // A (loading C), B (hold A), C (hold B), C (its run ended)
    // While more are in use than allowed, that many stay resident.
    const c = await hold(m, "C");
    expect(resident(m)).toEqual(["A", "B", "C"]);
    expect(m.stats().adaptersResident).toBe(3);
    await a.stop();
    await b.stop();
    await c.stop();
    expect(m.stats().adaptersResident).toBe(2); // evicted back down as the requests ended
    expect(m.adapters().every((x) => x.inUse === 0)).toBe(true);
  });

  it("loading one more while all resident adapters are busy registers it without keeping it resident", async () => {
    const m = await load(2, ["A", "B"]);
    const a = await hold(m, "A");
    const b = await hold(m, "B");
    const info = await m.loadAdapter("C", files[2]);
    expect(info.resident).toBe(false);
    expect(resident(m)).toEqual(["A", "B"]);
    await a.stop();
    await b.stop();
    expect((await run(m, "C", 4)).length).toBe(4);
  });

  it("concurrent requests for an evicted adapter share one reload", async () => {
    const m = await load();
    const solo = await run(m, "A"); // reloads A, evicting B
    await run(m, "B"); // reloads B, evicting C
    await run(m, "C"); // reloads C, evicting A (the least recently used)
    expect(find(m, "A").resident).toBe(false);
    const loads = m.stats().adapterLoads;
    const all = await Promise.all(Array.from({ length: 6 }, () => run(m, "A")));
    expect(m.stats().adapterLoads).toBe(loads + 1);
    for (const t of all) expect(t).toEqual(solo);
    expect(find(m, "A").inUse).toBe(0);
  });

  it("a request aborted or a model disposed while its adapter reloads ends at once and holds nothing", async () => {
    const m = await load();
    expect(find(m, "A").resident).toBe(false);
    const ac = new AbortController();
    const gen = m.generate(prompt, { ...fixed, maxTokens: 8, adapter: "A", signal: ac.signal });
    expect(find(m, "A").inUse).toBe(1);
    ac.abort();
    const chunks: Chunk[] = [];
    for await (const c of gen) chunks.push(c);
    expect(chunks.map((c) => c.finishReason)).toEqual(["abort"]);
    expect(find(m, "A")).toMatchObject({ inUse: 0, resident: true }); // the reload itself completed
    // Disposed during a reload: the waiting request fails with ERR_DISPOSED instead of hanging.
    await run(m, "B");
    await run(m, "C"); // evicts A
    const pending = errorOf(() => run(m, "A"));
    await m.dispose();
    expect((await pending).code).toBe("ERR_DISPOSED");
  });

  it("unloading an adapter while its reload runs: the waiting request finishes with it; then it is gone", async () => {
    const m = await load();
    const solo = await run(m, "A");
    await run(m, "B");
    await run(m, "C");
    expect(find(m, "A").resident).toBe(false);
    const two = m.stats().adapterBytes; // B and C (same shape)
    const pending = run(m, "A"); // starts the reload (which evicts B, the least recently used)
    m.unloadAdapter("A");
    expect(m.adapters().map((x) => x.name)).toEqual(["B", "C"]);
    expect((await errorOf(() => run(m, "A"))).code).toBe("ERR_ADAPTER_NOT_FOUND");
    expect(await pending).toEqual(solo);
    // A's copy is released once its request ended: only C's bytes remain.
    expect(resident(m)).toEqual(["C"]);
    expect(m.stats().adapterBytes).toBe(two / 2);
  });

  it("unloading a resident adapter during its stream: the stream finishes; the slot is free at once", async () => {
    const m = await load();
    const solo = await run(m, "C", 24);
    const stream = m.generate(prompt, { ...fixed, maxTokens: 24, adapter: "C" });
    const tokens: number[] = [];
    for await (const c of stream) {
      tokens.push(...c.tokens);
      if (tokens.length >= 2 && m.adapters().some((x) => x.name === "C")) {
        m.unloadAdapter("C");
        expect(resident(m)).toEqual(["B"]);
        await run(m, "A"); // reloads into the freed slot: B stays
        expect(resident(m)).toEqual(["A", "B"]);
      }
    }
    expect(tokens).toEqual(solo);
  });

  it("a reload of a deleted file is ERR_FILE_NOT_FOUND, of a changed file ERR_ADAPTER_CHANGED; nothing hangs", async () => {
    const copy = join(tmpRoot, `lora-lru-copy-${process.pid}.gguf`);
    copyFileSync(files[3], copy);
    const m = await load(1, []);
    await m.loadAdapter("D", copy);
    const solo = await run(m, "D");
    await m.loadAdapter("A", files[0]); // evicts D
    expect(find(m, "D").resident).toBe(false);
    rmSync(copy);
    const gone = await errorOf(() => run(m, "D"));
    expect(gone.code).toBe("ERR_FILE_NOT_FOUND");
    expect(gone.message).toContain(`Cannot reload the LoRA adapter "D"`);
    expect(gone.message).toContain(copy);
    expect(find(m, "D")).toMatchObject({ resident: false, inUse: 0 }); // still registered, not held
    // Put back as a new file (another inode): not the adapter that was loaded.
    copyFileSync(files[3], copy);
    const changed = await errorOf(() => run(m, "D"));
    expect(changed.code).toBe("ERR_ADAPTER_CHANGED");
    expect(changed.message).toContain('unloadAdapter("D")');
    // Every request sharing a failed reload gets the error; other adapters are unaffected.
    const both = await Promise.allSettled([run(m, "D"), run(m, "D")]);
    expect(both.map((r) => (r.status === "rejected" ? (r.reason as LlmserveError).code : "ok"))).toEqual([
      "ERR_ADAPTER_CHANGED",
      "ERR_ADAPTER_CHANGED",
    ]);
    expect((await run(m, "A", 4)).length).toBe(4);
    // Loaded again: it is served (and reloaded) from the new file.
    m.unloadAdapter("D");
    await m.loadAdapter("D", copy);
    expect(await run(m, "D")).toEqual(solo);
    // A file touched in place (same inode, new mtime) is changed too.
    await run(m, "A"); // evicts D
    utimesSync(copy, new Date(), new Date(Date.now() + 10_000));
    expect((await errorOf(() => run(m, "D"))).code).toBe("ERR_ADAPTER_CHANGED");
    expect(m.stats().adaptersResident).toBe(1);
  });

  it("the response cache hits across an eviction without reloading; the prefix cache and sessions miss safely", async () => {
    const m = await load();
    const long = { tokens: [1, ...Array.from({ length: 40 }, (_, i) => 3 + ((i * 37) % 390))] };
    const opts = { ...fixed, maxTokens: 8, adapter: "B", cache: true };
    const first = await collectTokens(m.generate(long, opts));
    await run(m, "C");
    await run(m, "A"); // reloads A, evicting B (the least recently used)
    expect(find(m, "B").resident).toBe(false);
    const { responseCacheHits: hits, adapterLoads: loads } = m.stats();
    expect(await collectTokens(m.generate(long, opts))).toEqual(first);
    expect(m.stats().responseCacheHits).toBe(hits + 1);
    expect(m.stats().adapterLoads).toBe(loads); // served from the cache: B was not reloaded
    expect(find(m, "B").resident).toBe(false);
    // Without the cache: B is reloaded under a new id; blocks cached under its old id are not reused.
    let last: Chunk | undefined;
    const again: number[] = [];
    for await (const c of m.generate(long, { ...opts, cache: false })) {
      again.push(...c.tokens);
      last = c;
    }
    expect(again).toEqual(first);
    expect(last?.timings?.reusedTokens).toBe(0);
    // A session under B: its KV, computed under B's old id, is recomputed after B's reload.
    const chat = m.createSession({ adapter: "B", defaults: { ...fixed, maxTokens: 6 } });
    await collectTokens(chat.send("Hello there."));
    await run(m, "C"); // reloads C, evicting A
    await run(m, "A"); // reloads A, evicting B
    expect(find(m, "B").resident).toBe(false);
    const turn = " And then?";
    const all = [...chat.tokens, ...m.tokenizer.encode(turn, { addSpecial: false })];
    const reply = await collectTokens(chat.send(turn)); // reloads B for the session's turn
    expect(find(m, "B").resident).toBe(true);
    expect(await collectTokens(m.generate({ tokens: all }, { ...fixed, maxTokens: 6, adapter: "B" }))).toEqual(reply);
    chat.dispose();
  });
});
