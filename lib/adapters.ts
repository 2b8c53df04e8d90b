/**
 * The LoRA adapter registry of a Model: names -> (path, scale), at most `maxAdapters` of them
 * resident in the engine, the least recently used idle one evicted to make room, and a registered
 * adapter that is not resident reloaded from its file when a request names it.
 *
 * Rules (docs/design.md, "LoRA lifecycle"):
 * - Busy adapters are never evicted: a request holds its adapter from generate() (including while
 *   its reload runs) until its native request ends. When every resident adapter is busy, a request
 *   for another one does not wait: its adapter is loaded anyway and the registry holds more than
 *   maxAdapters until requests end, then evicts back down to the bound. Waiting for a slot instead
 *   would let steady traffic on the resident adapters starve a request for any other one (it could
 *   wait forever); the excess is bounded by the adapters that have requests in flight.
 * - One reload per adapter at a time: concurrent requests for an evicted adapter share it.
 * - A reload reads the same file as the registration: its identity (device, inode, size, mtime,
 *   ctime; for a folder, those of the folder and of each entry in it) must be unchanged, else the
 *   request fails with ERR_ADAPTER_CHANGED (serving other weights under the same name would break
 *   every cache keyed by it); a deleted file is ERR_FILE_NOT_FOUND. The adapter stays registered
 *   and the next request tries again.
 * - Each registration gets its own engine name (`lora#N`; a reload reuses it, the previous copy
 *   having been unloaded first) and each copy a fresh engine id (the engine never reuses one), so a
 *   copy that requests still hold never collides with a reload or a new registration of the name.
 */
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { LlmserveError } from "./errors.js";

/** A LoRA adapter registered with {@link Model.loadAdapter}, as {@link Model.adapters} lists it. */
export interface AdapterInfo {
  /** The name requests pick it by. */
  name: string;
  /** The adapter file (or folder) it was loaded from, and is reloaded from after an eviction. */
  path: string;
  /** The user scale (the effective scale is scale × alpha / rank when the file has an alpha). */
  scale: number;
  /** True while its weights are in memory; false once evicted (the next request reloads it). */
  resident: boolean;
  /** The engine's id of the resident copy (a new one after every reload); 0 when not resident. */
  id: number;
  /** Requests using it now: waiting for its reload, queued or generating. */
  inUse: number;
  /** When a request last started or ended with it (or it was loaded), in ms since the epoch. */
  lastUsed: number;
  /** How many times its file has been read: 1 at loadAdapter, plus one per transparent reload. */
  loads: number;
}

/** Options of {@link Model.loadAdapter}. */
export interface LoadAdapterOptions {
  /**
   * Strength of the adapter, in [-100, 100] (default 1; 0 = the base model's outputs). As llama.cpp,
   * the delta is scaled by scale × alpha / rank when the file has an `adapter.lora.alpha`; a PEFT
   * adapter is scaled as PEFT does: scale × lora_alpha / r per module (rank_pattern / alpha_pattern
   * apply; alpha / sqrt(r) with use_rslora).
   */
  scale?: number;
}

/** Counters of the registry, surfaced in Model.stats() and /metrics. */
export interface AdapterRegistryStats {
  /** Adapters registered (what adapters() lists). */
  registered: number;
  /** Adapters whose weights are in memory (over maxAdapters only while that many are in use). */
  resident: number;
  /** Adapter files read: loadAdapter calls and transparent reloads that succeeded. */
  loads: number;
  /** Adapters evicted to keep at most maxAdapters resident. */
  evictions: number;
}

/** How the registry loads and drops native copies (the Model's engine). */
export interface AdapterBackend {
  /** Reads the adapter into the engine under `engineName`; resolves with the engine's id. */
  load(engineName: string, path: string, scale: number): Promise<{ id: number }>;
  /** Stops new requests using it; requests in flight keep it until they end. */
  unload(engineName: string): void;
}

/** A request's hold on its adapter (see {@link AdapterRegistry.acquire}). */
export interface AdapterLease {
  /** The engine id to submit with: now, or once the adapter's reload is done (it may reject). */
  readonly id: number | Promise<number>;
  /** After awaiting `id`: the request was submitted (or given up). */
  submitted(): void;
  /** The request is over (its native request ended, or it was never submitted). Idempotent. */
  release(): void;
}

interface Entry {
  readonly name: string;
  readonly path: string;
  readonly scale: number;
  readonly engineName: string;
  /** The file's identity when it was registered (see fileIdentity). */
  identity: string;
  /** The engine id of the native copy, set once it is loaded and checked; 0 when there is none. */
  id: number;
  /** The reload in progress. */
  loading?: Promise<number>;
  /** Requests holding it (from acquire to release). */
  users: number;
  /** Of those, the ones still waiting for its reload (a removed entry's copy is dropped after them). */
  waiting: number;
  /** Recency: higher = used more recently (a counter, so no two uses tie). */
  seq: number;
  lastUsed: number;
  loads: number;
  /** Unregistered (unloadAdapter) or disposed. */
  removed: boolean;
}

function notFound(name: string, registered: string[]): LlmserveError {
  const loaded = registered.length ? registered.map((x) => JSON.stringify(x)).join(", ") : "none";
  return new LlmserveError(
    "ERR_ADAPTER_NOT_FOUND",
    `No adapter named ${JSON.stringify(name)} is loaded (loaded: ${loaded}). Load it with model.loadAdapter() first.`,
  );
}

/**
 * What identifies the bytes at `path` without reading them: device, inode, size, mtime and ctime
 * (ctime cannot be set back by tools that preserve mtime); for a folder, also each of its entries.
 */
export async function fileIdentity(path: string): Promise<string> {
  const one = async (p: string) => {
    const s = await stat(p, { bigint: true });
    return { s, id: `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}` };
  };
  const top = await one(path);
  if (!top.s.isDirectory()) return top.id;
  // Stryker disable next-line MethodExpression: sorted in case a file system lists entries in varying order
  const names = (await readdir(path)).sort();
  const parts = await Promise.all(names.map(async (n) => `${n}=${(await one(join(path, n))).id}`));
  // Stryker disable next-line StringLiteral: a separator only keeps the string readable
  return [top.id, ...parts].join("|");
}

/** See the module comment. All methods run on the JS thread; native loads run on libuv workers. */
export class AdapterRegistry {
  /** Registered adapters, in registration order. */
  private readonly entries = new Map<string, Entry>();
  /** Names whose loadAdapter is in progress. */
  private readonly registering = new Set<string>();
  /** Entries with a native copy loaded or loading (removed ones whose waiting requests need it included). */
  private readonly held = new Set<Entry>();
  private nextEngineName = 1;
  private seq = 0;
  private loads = 0;
  private evictions = 0;

  /**
   * @param maxAdapters most adapters resident (0 = no limit)
   * @param backend loads and drops native copies
   */
  constructor(
    readonly maxAdapters: number,
    private readonly backend: AdapterBackend,
  ) {}

  /** Registers `name` and loads its file (evicting the least recently used idle adapter if full). */
  async register(name: string, path: string, scale: number): Promise<AdapterInfo> {
    if (this.entries.has(name) || this.registering.has(name)) {
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        `An adapter named ${JSON.stringify(name)} is already loaded; unload it first or pick another name.`,
      );
    }
    this.registering.add(name);
    const e: Entry = {
      name,
      path,
      scale,
      // Stryker disable next-line UpdateOperator: any counter that never repeats a name will do
      engineName: `lora#${this.nextEngineName++}`,
      // Stryker disable next-line StringLiteral: set below before the entry is registered
      identity: "",
      id: 0,
      users: 0,
      waiting: 0,
      seq: 0,
      lastUsed: 0,
      loads: 0,
      removed: false,
    };
    try {
      // A missing or unreadable path: the engine's load reports it with its own typed error.
      const before = await fileIdentity(path).catch(() => undefined);
      this.makeRoom();
      this.held.add(e);
      let id = 0;
      try {
        id = (await this.backend.load(e.engineName, path, scale)).id;
        e.identity = await fileIdentity(path);
        if (e.identity !== before) {
          throw new LlmserveError(
            "ERR_ADAPTER_CHANGED",
            `The LoRA adapter ${path} changed while it was being loaded; load it again once it is complete.`,
          );
        }
      } catch (err) {
        this.held.delete(e);
        if (id !== 0) this.unloadCopy(e.engineName);
        throw err;
      }
      e.id = id;
    } finally {
      this.registering.delete(name);
    }
    e.loads = 1;
    this.loads++;
    this.touch(e);
    this.entries.set(name, e);
    this.trim(); // every other resident adapter busy: this one (idle) is evicted again at once
    return this.info(e);
  }

  /**
   * Removes a registration: new requests naming it throw ERR_ADAPTER_NOT_FOUND; requests already
   * holding it (streaming, queued, or waiting for its reload) finish with it.
   */
  unregister(name: string): void {
    const e = this.entries.get(name);
    if (!e) throw notFound(name, [...this.entries.keys()]);
    this.entries.delete(name);
    e.removed = true;
    // The engine keeps the copy for requests already submitted; requests still waiting for the
    // reload need it loaded until they are submitted (then submitted() drops it).
    if (e.waiting === 0) this.drop(e);
  }

  /** The registered adapters, in registration order. */
  list(): AdapterInfo[] {
    return [...this.entries.values()].map((e) => this.info(e));
  }

  /**
   * A cache key for what `name` computes: path, scale and file identity, not the engine id, so
   * response-cache entries made before an eviction still hit after the reload (a reload refuses a
   * changed file, so the same key means the same weights). ERR_ADAPTER_NOT_FOUND if not registered.
   */
  cacheKey(name: string): string {
    const e = this.entries.get(name);
    if (!e) throw notFound(name, [...this.entries.keys()]);
    return JSON.stringify([e.path, e.scale, e.identity]);
  }

  /**
   * Holds `name` for one request: its id now when resident, else a promise of it once reloaded
   * (one reload shared by every request that arrives meanwhile). Throws ERR_ADAPTER_NOT_FOUND
   * (listing the registered names) if not registered. Call `release()` when the request is over.
   */
  acquire(name: string): AdapterLease {
    const e = this.entries.get(name);
    if (!e) throw notFound(name, [...this.entries.keys()]);
    e.users++;
    this.touch(e);
    let waiting = false;
    let released = false;
    const submitted = () => {
      if (!waiting) return;
      waiting = false;
      e.waiting--;
      if (e.removed && e.waiting === 0) this.drop(e);
    };
    const lease = {
      submitted,
      release: () => {
        if (released) return;
        released = true;
        submitted();
        e.users--;
        this.touch(e); // a request ending is a use too (for a removed entry it does not matter)
        this.trim();
      },
    };
    if (e.id !== 0) return { id: e.id, ...lease };
    waiting = true;
    e.waiting++;
    if (e.loading === undefined) {
      e.loading = this.reload(e);
      const done = () => {
        e.loading = undefined;
        // Unloaded meanwhile and nobody waits any more: the new copy is not needed.
        if (e.removed && e.waiting === 0) this.drop(e);
        this.trim(); // its requests may all have ended while it loaded: it may be idle now
      };
      // Attached before the requests' own handlers: the entry is resident when they run.
      e.loading.then(done, done);
    }
    return { id: e.loading as Promise<number>, ...lease };
  }

  /** Counters for stats() and /metrics. */
  stats(): AdapterRegistryStats {
    let resident = 0;
    for (const e of this.entries.values()) if (e.id !== 0) resident++;
    return { registered: this.entries.size, resident, loads: this.loads, evictions: this.evictions };
  }

  private async reload(e: Entry): Promise<number> {
    await this.checkUnchanged(e); // first: a reload that cannot succeed evicts nothing
    this.makeRoom();
    this.held.add(e);
    let id = 0;
    try {
      id = (await this.backend.load(e.engineName, e.path, e.scale)).id;
      await this.checkUnchanged(e); // changed while it was read: the copy may be a mix of both
    } catch (err) {
      this.held.delete(e);
      if (id !== 0) this.unloadCopy(e.engineName);
      throw err;
    }
    e.id = id; // resident from here on
    e.loads++;
    this.loads++;
    return id;
  }

  private async checkUnchanged(e: Entry): Promise<void> {
    const why = `it was evicted from memory because more than maxAdapters (${this.maxAdapters}) adapters are loaded`;
    let now: string;
    try {
      now = await fileIdentity(e.path);
    } catch (err) {
      const code = (err as { code?: string }).code === "ENOENT" ? "ERR_FILE_NOT_FOUND" : "ERR_IO";
      throw new LlmserveError(
        code,
        `Cannot reload the LoRA adapter ${JSON.stringify(e.name)} (${why}): ${e.path} ${code === "ERR_FILE_NOT_FOUND" ? "no longer exists" : `cannot be read (${(err as Error).message})`}. Restore the file, or unloadAdapter(${JSON.stringify(e.name)}) and load it from where it is now.`,
        { cause: err },
      );
    }
    if (now !== e.identity) {
      throw new LlmserveError(
        "ERR_ADAPTER_CHANGED",
        `Cannot reload the LoRA adapter ${JSON.stringify(e.name)} (${why}): ${e.path} changed since loadAdapter() read it, so it would no longer be the same adapter. To serve the new file, unloadAdapter(${JSON.stringify(e.name)}) and load it again; to keep serving the old one, restore the file.`,
      );
    }
  }

  private touch(e: Entry): void {
    e.seq = ++this.seq;
    e.lastUsed = Date.now();
  }

  /** The least recently used resident adapter that no request holds, if any. */
  private victim(): Entry | undefined {
    let v: Entry | undefined;
    for (const e of this.entries.values()) {
      if (e.id === 0 || e.users > 0) continue; // not resident (or still loading), or busy
      // Stryker disable next-line EqualityOperator: seqs are unique, so < and <= pick the same entry
      if (v === undefined || e.seq < v.seq) v = e;
    }
    return v;
  }

  private evictWhile(over: () => boolean): void {
    if (this.maxAdapters === 0) return;
    while (over()) {
      const v = this.victim();
      if (!v) return; // all busy: stay over the bound until requests end (see the module comment)
      this.drop(v);
      this.evictions++;
    }
  }

  /** Before loading a copy: leave room for it. */
  private makeRoom(): void {
    this.evictWhile(() => this.held.size >= this.maxAdapters);
  }

  /** After a load or a request's end: back down to the bound. */
  private trim(): void {
    this.evictWhile(() => this.held.size > this.maxAdapters);
  }

  /** Drops the entry's native copy (requests in flight keep it until they end). */
  private drop(e: Entry): void {
    this.held.delete(e);
    if (e.id === 0) return;
    e.id = 0;
    this.unloadCopy(e.engineName);
  }

  private unloadCopy(engineName: string): void {
    try {
      this.backend.unload(engineName);
    } catch {
      // A disposed model: the engine has freed everything already.
    }
  }

  private info(e: Entry): AdapterInfo {
    return {
      name: e.name,
      path: e.path,
      scale: e.scale,
      resident: e.id !== 0,
      id: e.id,
      inUse: e.users,
      lastUsed: e.lastUsed,
      loads: e.loads,
    };
  }
}
