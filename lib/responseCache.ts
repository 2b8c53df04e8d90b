/**
 * Response cache: complete outputs of deterministic requests (greedy, or a fixed seed), keyed by
 * model, normalized prompt tokens and sampling parameters; LRU within a byte budget. A hit replays
 * the stored chunks without touching the engine.
 */
import type { Chunk } from "./generate.js";

interface Entry {
  chunks: Chunk[];
  bytes: number;
}

export class ResponseCache {
  private readonly map = new Map<string, Entry>(); // insertion order = LRU order
  private bytes = 0;
  hits = 0;
  misses = 0;

  constructor(readonly maxBytes: number) {}

  static key(modelKey: string, tokens: number[], paramsKey: string): string {
    return `${modelKey}\u0000${tokens.join(",")}\u0000${paramsKey}`;
  }

  get(key: string): Chunk[] | undefined {
    const e = this.map.get(key);
    if (!e) {
      this.misses++;
      return undefined;
    }
    this.map.delete(key);
    this.map.set(key, e); // most recently used
    this.hits++;
    return e.chunks;
  }

  set(key: string, chunks: Chunk[]): void {
    // Timings describe the original computation, not a replay: drop them from the stored copy.
    const stored = chunks.map((c) => {
      const { timings: _t, ...rest } = c;
      return rest;
    });
    const bytes = key.length * 2 + JSON.stringify(stored).length * 2;
    if (bytes > this.maxBytes) return;
    const old = this.map.get(key);
    if (old) {
      this.bytes -= old.bytes;
      this.map.delete(key);
    }
    // `this.map.size > 0` is a guard only: an empty map holds 0 bytes and bytes <= maxBytes here.
    // Stryker disable next-line ConditionalExpression,EqualityOperator: equivalent (see above)
    while (this.bytes + bytes > this.maxBytes && this.map.size > 0) {
      const [k, e] = this.map.entries().next().value as [string, Entry];
      this.map.delete(k);
      this.bytes -= e.bytes;
    }
    this.map.set(key, { chunks: stored, bytes });
    this.bytes += bytes;
  }

  get entries(): number {
    return this.map.size;
  }
  get usedBytes(): number {
    return this.bytes;
  }
}
