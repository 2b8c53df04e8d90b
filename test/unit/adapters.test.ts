/**
 * AdapterRegistry (lib/adapters.ts) against a fake engine whose loads resolve when the test says:
 * the orderings the real engine makes hard to hit (a file changed while it is read, an unload
 * between a reload's end and its waiting request's submit, unlimited maxAdapters), checked
 * deterministically. The behaviour through a real model is in test/native/lora-lru.test.ts.
 */
import { mkdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { AdapterRegistry, fileIdentity } from "../../lib/adapters.js";
import { LlmserveError } from "../../lib/errors.js";
import { tmpRoot } from "../helpers.js";

/** A fake engine: each load waits for `finish()`; ids count up from 1. */
function fakeEngine() {
  const pending: { name: string; resolve: (v: { id: number }) => void; reject: (e: unknown) => void }[] = [];
  const loaded = new Set<string>();
  const log: string[] = [];
  let nextId = 1;
  return {
    loaded,
    log,
    pending,
    backend: {
      load: (name: string) =>
        new Promise<{ id: number }>((resolve, reject) => {
          log.push(`load ${name}`);
          pending.push({ name, resolve, reject });
        }),
      unload: (name: string) => {
        log.push(`unload ${name}`);
        loaded.delete(name);
      },
    },
    /** Completes the oldest pending load (after the registry's file checks have run). */
    async finish(fail?: Error) {
      await until(() => pending.length > 0);
      const p = pending.shift() as (typeof pending)[number];
      if (fail) p.reject(fail);
      else {
        loaded.add(p.name);
        p.resolve({ id: nextId++ });
      }
    },
  };
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setTimeout(r, 1));
  expect(cond()).toBe(true);
}

function file(name: string): string {
  const p = join(tmpRoot, `adapters-unit-${name}-${process.pid}.bin`);
  writeFileSync(p, name);
  return p;
}

async function register(r: AdapterRegistry, e: ReturnType<typeof fakeEngine>, name: string, path = file(name)) {
  const p = r.register(name, path, 1);
  await e.finish();
  return p;
}

describe("AdapterRegistry", () => {
  it("maxAdapters 0 keeps every adapter resident", async () => {
    const e = fakeEngine();
    const r = new AdapterRegistry(0, e.backend);
    for (const n of ["a", "b", "c", "d"]) await register(r, e, n);
    expect(r.list().map((x) => x.resident)).toEqual([true, true, true, true]);
    expect(r.stats()).toEqual({ registered: 4, resident: 4, loads: 4, evictions: 0 });
    expect(e.log.filter((l) => l.startsWith("unload"))).toEqual([]);
  });

  it("a file changed while it is loaded is refused, and its copy unloaded", async () => {
    const e = fakeEngine();
    const r = new AdapterRegistry(2, e.backend);
    const path = file("changing");
    const p = r.register("x", path, 1);
    await until(() => e.pending.length > 0);
    utimesSync(path, new Date(), new Date(Date.now() + 5000));
    await e.finish();
    const err = await p.then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(err).toBeInstanceOf(LlmserveError);
    expect((err as LlmserveError).code).toBe("ERR_ADAPTER_CHANGED");
    expect((err as LlmserveError).message).toBe(
      `The LoRA adapter ${path} changed while it was being loaded; load it again once it is complete.`,
    );
    expect(e.log).toEqual(["load lora#1", "unload lora#1"]);
    expect(e.loaded.size).toBe(0);
    expect(r.list()).toEqual([]);
    // The name is free again.
    await register(r, e, "x", path);
    expect(r.list().map((x) => x.name)).toEqual(["x"]);
  });

  it("a failed engine load leaves nothing registered or held", async () => {
    const e = fakeEngine();
    const r = new AdapterRegistry(1, e.backend);
    const p = r.register("bad", file("bad"), 1);
    await e.finish(new LlmserveError("ERR_BAD_SHAPE", "wrong shape"));
    await expect(p).rejects.toMatchObject({ code: "ERR_BAD_SHAPE" });
    expect(e.log).toEqual(["load lora#1"]); // nothing to unload
    await register(r, e, "good"); // the slot was not kept by the failed load
    expect(r.stats()).toEqual({ registered: 1, resident: 1, loads: 1, evictions: 0 });
  });

  it("an unload between a reload's end and its request's submit keeps the copy until the submit", async () => {
    const e = fakeEngine();
    const r = new AdapterRegistry(1, e.backend);
    await register(r, e, "a");
    await register(r, e, "b"); // evicts a
    const lease = r.acquire("a");
    expect(typeof lease.id).not.toBe("number");
    const done = (lease.id as Promise<number>).then((id) => {
      // The reload is done; before this request is submitted, the adapter is unloaded.
      r.unregister("a");
      expect(e.loaded.has("lora#1")).toBe(true); // still there for the waiting request
      lease.submitted();
      expect(e.loaded.has("lora#1")).toBe(false); // dropped once it was submitted
      return id;
    });
    await e.finish();
    expect(await done).toBeGreaterThan(0);
    lease.release();
    lease.release(); // idempotent
    expect(r.list().map((x) => x.name)).toEqual(["b"]);
  });

  it("two requests for an evicted adapter share one load; a busy adapter is not evicted", async () => {
    const e = fakeEngine();
    const r = new AdapterRegistry(1, e.backend);
    await register(r, e, "a");
    await register(r, e, "b"); // evicts a
    const l1 = r.acquire("a");
    const l2 = r.acquire("a");
    expect(l2.id).toBe(l1.id); // the same promise
    await e.finish();
    expect(await l1.id).toBe(await l2.id);
    expect(e.log.filter((l) => l === "load lora#1")).toHaveLength(2); // register + one reload
    l1.submitted();
    l2.submitted();
    // a is busy: a request for b loads b over the bound instead of evicting a.
    const l3 = r.acquire("b");
    await e.finish();
    await l3.id;
    l3.submitted();
    expect(r.stats().resident).toBe(2);
    l1.release();
    expect(r.stats().resident).toBe(2); // a still held by l2
    l2.release();
    expect(r.list().map((x) => [x.name, x.resident])).toEqual([
      ["a", false],
      ["b", true],
    ]);
    l3.release();
    expect(r.stats()).toMatchObject({ resident: 1, evictions: 3 }); // a (loading b), b (reloading a), a (released)
  });

  it("names: a duplicate is refused, an unknown one lists the registered ones", async () => {
    const e = fakeEngine();
    const r = new AdapterRegistry(0, e.backend);
    await register(r, e, "a");
    await register(r, e, "b");
    await expect(r.register("a", file("a"), 1)).rejects.toThrow(
      'An adapter named "a" is already loaded; unload it first or pick another name.',
    );
    for (const f of [() => r.acquire("z"), () => r.unregister("z"), () => r.cacheKey("z")]) {
      expect(f).toThrow('No adapter named "z" is loaded (loaded: "a", "b").');
    }
  });

  it("evicts before loading (the bound holds during the load); only resident idle adapters are victims", async () => {
    const e = fakeEngine();
    const r = new AdapterRegistry(1, e.backend);
    await register(r, e, "a");
    await register(r, e, "b");
    await register(r, e, "c");
    expect(e.log).toEqual(["load lora#1", "unload lora#1", "load lora#2", "unload lora#2", "load lora#3"]);
    // a and b are idle and not resident (a the least recently used): c is the one to evict.
    const l = r.acquire("a");
    await e.finish();
    await l.id;
    expect(e.log.slice(5)).toEqual(["unload lora#3", "load lora#1"]);
    l.submitted();
    l.release();
    l.release(); // a second release changes nothing
    expect(r.list().find((x) => x.name === "a")?.inUse).toBe(0);
  });

  it("a request ending counts as a use: the adapter whose request ended last is kept", async () => {
    const e = fakeEngine();
    const r = new AdapterRegistry(2, e.backend);
    await register(r, e, "a");
    await register(r, e, "b");
    const la = r.acquire("a"); // a's request starts first...
    const lb = r.acquire("b");
    lb.release();
    la.release(); // ... but ends last
    await register(r, e, "c");
    expect(r.list().map((x) => [x.name, x.resident])).toEqual([
      ["a", true],
      ["b", false],
      ["c", true],
    ]);
  });

  it("a reload whose requests all ended before it finished is evicted when it does, if over the bound", async () => {
    const e = fakeEngine();
    const r = new AdapterRegistry(1, e.backend);
    await register(r, e, "a");
    await register(r, e, "b"); // evicts a
    const lb = r.acquire("b"); // b busy: a's reload goes over the bound
    const la = r.acquire("a");
    la.release(); // e.g. aborted while a loads
    await e.finish();
    await la.id;
    await until(() => r.stats().resident === 1);
    expect(r.list().map((x) => x.resident)).toEqual([false, true]);
    lb.release();
  });

  it("reload failures: deleted file (ERR_FILE_NOT_FOUND), unreadable path (ERR_IO), engine error; nothing held", async () => {
    const e = fakeEngine();
    const r = new AdapterRegistry(1, e.backend);
    const dir = join(tmpRoot, `adapters-unit-gone-${process.pid}`);
    mkdirSync(dir, { recursive: true });
    const inDir = join(dir, "a.gguf");
    writeFileSync(inDir, "a");
    await register(r, e, "a", inDir);
    await register(r, e, "b"); // evicts a
    await register(r, e, "c"); // evicts b
    const resident = () => r.list().map((x) => [x.name, x.resident, x.inUse]);
    // Deleted: typed, with the cause; checked before anything is evicted or loaded.
    rmSync(inDir);
    const l1 = r.acquire("a");
    const gone = (await (l1.id as Promise<number>).catch((x: unknown) => x)) as LlmserveError;
    expect(gone.code).toBe("ERR_FILE_NOT_FOUND");
    expect(gone.message).toContain(`${inDir} no longer exists`);
    expect(gone.message).toContain("more than maxAdapters (1) adapters are loaded");
    expect((gone.cause as { code?: string }).code).toBe("ENOENT");
    l1.release();
    // Its folder replaced by a file: stat fails with ENOTDIR, reported as ERR_IO.
    rmSync(dir, { recursive: true });
    writeFileSync(dir, "not a folder");
    const l2 = r.acquire("a");
    const io = (await (l2.id as Promise<number>).catch((x: unknown) => x)) as LlmserveError;
    expect(io.code).toBe("ERR_IO");
    expect(io.message).toContain(`${inDir} cannot be read (`);
    l2.release();
    rmSync(dir);
    expect(resident()).toEqual([
      ["a", false, 0],
      ["b", false, 0],
      ["c", true, 0],
    ]);
    // The engine fails to read b: c was evicted to make room, and nothing is held for b.
    const l3 = r.acquire("b");
    await e.finish(new LlmserveError("ERR_OUT_OF_MEMORY", "no memory"));
    await expect(l3.id).rejects.toMatchObject({ code: "ERR_OUT_OF_MEMORY" });
    l3.release();
    expect(e.log.slice(-2)).toEqual(["unload lora#3", "load lora#2"]); // c evicted; the failed copy needs no unload
    expect(resident()).toEqual([
      ["a", false, 0],
      ["b", false, 0],
      ["c", false, 0],
    ]);
    expect(e.log.filter((x) => x.startsWith("load"))).toHaveLength(4); // 3 registrations, b's failed reload
    expect(r.stats()).toMatchObject({ loads: 3, evictions: 3 });
    await register(r, e, "d"); // the slot is free: nothing to evict
    expect(r.stats()).toMatchObject({ resident: 1, evictions: 3 });
  });

  it("a file changed while a reload reads it: ERR_ADAPTER_CHANGED, the copy unloaded", async () => {
    const e = fakeEngine();
    const r = new AdapterRegistry(1, e.backend);
    const path = file("reload-changing");
    await register(r, e, "a", path);
    await register(r, e, "b"); // evicts a
    const l = r.acquire("a");
    await until(() => e.pending.length > 0);
    utimesSync(path, new Date(), new Date(Date.now() + 5000));
    await e.finish();
    await expect(l.id).rejects.toMatchObject({ code: "ERR_ADAPTER_CHANGED" });
    l.release();
    expect(e.log.slice(-3)).toEqual(["unload lora#2", "load lora#1", "unload lora#1"]);
    expect(r.stats()).toMatchObject({ resident: 0, loads: 2 });
  });

  it("unloaded while several requests wait for its reload: the copy stays until the last is submitted", async () => {
    const e = fakeEngine();
    const r = new AdapterRegistry(1, e.backend);
    await register(r, e, "a");
    await register(r, e, "b"); // evicts a
    const l1 = r.acquire("a");
    const l2 = r.acquire("a");
    r.unregister("a");
    await e.finish();
    await l1.id;
    l1.submitted();
    expect(e.loaded.has("lora#1")).toBe(true); // l2 has not been submitted yet
    l2.submitted();
    expect(e.loaded.has("lora#1")).toBe(false);
    l1.release();
    l2.release();
  });

  it("unloaded while its reload runs and every request gave up: the new copy is unloaded when it arrives", async () => {
    const e = fakeEngine();
    const r = new AdapterRegistry(2, e.backend);
    await register(r, e, "a");
    await register(r, e, "b");
    await register(r, e, "c"); // evicts a
    const l = r.acquire("a");
    r.unregister("a");
    l.release(); // e.g. aborted
    await e.finish();
    await l.id;
    await until(() => !e.loaded.has("lora#1"));
    expect(r.stats()).toMatchObject({ registered: 2, resident: 1 }); // b was evicted for a's reload; c stays
  });

  it("file identity covers a folder's entries", async () => {
    const dir = join(tmpRoot, `adapters-unit-dir-${process.pid}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "adapter_model.safetensors"), "x");
    const before = await fileIdentity(dir);
    utimesSync(join(dir, "adapter_model.safetensors"), new Date(), new Date(Date.now() + 5000));
    expect(await fileIdentity(dir)).not.toBe(before);
  });
});
