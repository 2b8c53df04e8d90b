/** Option validation with messages that say what was expected and what was received. */
import { LlmserveError } from "./errors.js";
import { describeLimit, type Limit } from "./limits.js";

function describe(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number" || typeof v === "boolean" || v === null) return String(v); // (undefined: typeof below)
  if (Array.isArray(v)) return "an array";
  return typeof v;
}

function fail(msg: string): never {
  throw new LlmserveError("ERR_INVALID_ARGUMENT", msg);
}

export function checkInt(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  // Number.isInteger / Number.isFinite are false for every non-number: no separate typeof check.
  if (!Number.isInteger(v) || (v as number) < min || (v as number) > max) {
    const range =
      max === Number.MAX_SAFE_INTEGER
        ? min === 0
          ? "non-negative integer"
          : min === 1
            ? "positive integer"
            : `integer >= ${min}`
        : `an integer in [${min}, ${max}]`;
    fail(`Expected ${range} for ${name} but received ${describe(v)}`);
  }
  return v as number;
}

/**
 * Checks `v` against a range of lib/limits.ts; the message is the one the native addon gives for
 * the same value ("Expected an integer in [0, 2147483647] for topK but received 1e+300").
 */
export function checkLimit(name: string, v: unknown, limit: Limit): number {
  const n = v as number;
  const ok =
    Number.isFinite(v) &&
    (limit.minExclusive ? n > limit.min : n >= limit.min) &&
    n <= limit.max &&
    (!limit.integer || Number.isInteger(v));
  if (!ok) fail(`Expected ${describeLimit(limit)} for ${name} but received ${describe(v)}`);
  return v as number;
}

export function checkNumber(
  name: string,
  v: unknown,
  min: number,
  max: number,
  opts: { minExclusive?: boolean } = {},
): number {
  const okMin = opts.minExclusive ? (v as number) > min : (v as number) >= min;
  if (!Number.isFinite(v) || !okMin || (v as number) > max) {
    const lo = opts.minExclusive ? `(${min}` : `[${min}`;
    const hi = max === Number.MAX_VALUE ? "inf)" : `${max}]`;
    fail(`Expected a number in ${lo}, ${hi} for ${name} but received ${describe(v)}`);
  }
  return v as number;
}

export function checkBool(name: string, v: unknown): boolean {
  if (typeof v !== "boolean") fail(`Expected true or false for ${name} but received ${describe(v)}`);
  return v;
}

export function checkString(name: string, v: unknown, allowed?: readonly string[]): string {
  if (typeof v !== "string" || (allowed && !allowed.includes(v))) {
    fail(
      `Expected ${allowed ? `one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}` : "a string"} for ${name} but received ${describe(v)}`,
    );
  }
  return v;
}

/** A LoRA adapter name: a non-empty string of at most 256 UTF-8 bytes (as the addon checks). */
export function checkAdapterName(name: string, v: unknown): string {
  if (typeof v !== "string") fail(`Expected a string for ${name} but received ${describe(v)}`);
  if (v.length === 0 || Buffer.byteLength(v, "utf8") > 256)
    fail(`Expected an adapter name of 1 to 256 bytes for ${name} but received ${describe(v)}`);
  return v;
}

export function checkObject(name: string, v: unknown): Record<string, unknown> {
  if (v === undefined) return {};
  if (typeof v !== "object" || v === null || Array.isArray(v))
    fail(`Expected an options object for ${name} but received ${describe(v)}`);
  return v as Record<string, unknown>;
}

/** Rejects keys that are not options (catches typos like `maxToken`). */
export function checkKeys(name: string, o: Record<string, unknown>, known: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) fail(`Unknown option "${k}" in ${name}; known options: ${known.join(", ")}`);
  }
}

/**
 * A file path: a non-empty string without NUL characters (the C file APIs would silently cut the
 * path at the NUL and open a different file).
 */
export function checkPath(name: string, v: unknown): string {
  if (typeof v !== "string" || v.length === 0)
    fail(`Expected a file path string for ${name} but received ${describe(v)}`);
  if (v.includes("\0"))
    fail(
      `Expected a file path without NUL characters for ${name} but the string contains "\\0" at index ${v.indexOf("\0")}`,
    );
  return v;
}

/**
 * The token ids of a prompt: integers in [0, nVocab). The one TypeScript check (Model's token
 * prompts, evaluate() and the server's token prompts all call it); an id outside the vocabulary gets
 * the core's message word for word ("Token id 70000 is outside the vocabulary [0, 32000)."): the
 * core keeps the same check in Engine::submit as an invariant, since it indexes the embedding table.
 */
export function checkTokenIds(ids: readonly unknown[], nVocab: number): number[] {
  for (const t of ids) {
    if (!Number.isInteger(t)) fail(`Expected integer token ids but received ${describe(t)}`);
    if ((t as number) < 0 || (t as number) >= nVocab)
      fail(`Token id ${t as number} is outside the vocabulary [0, ${nVocab}).`);
  }
  return ids as number[];
}
