/**
 * AdapterRegistry (lib/adapters.ts) against a fake engine whose loads resolve when the test says:
 * the orderings the real engine makes hard to hit (a file changed while it is read, an unload
 * between a reload's end and its waiting request's submit, unlimited maxAdapters), checked
 * deterministically. The behaviour through a real model is in test/native/lora-lru.test.ts.
 */
import { utimesSync, writeFileSync } from "node:fs";
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

  it("file identity covers a folder's entries", async () => {
    const dir = join(tmpRoot, `adapters-unit-dir-${process.pid}`);
    const { mkdirSync } = await import("node:fs");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "adapter_model.safetensors"), "x");
    const before = await fileIdentity(dir);
    utimesSync(join(dir, "adapter_model.safetensors"), new Date(), new Date(Date.now() + 5000));
    expect(await fileIdentity(dir)).not.toBe(before);
  });
});
