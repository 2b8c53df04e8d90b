/**
 * One source of truth per rule across the TypeScript / C++ boundary (docs/design.md, "Where each
 * rule lives"). Each test here fails when one side changes a shared value alone:
 *  - error codes: native/core/status.h (exported by the addon as errorCodes()) = lib/errors.ts
 *    NATIVE_ERROR_CODES, in order; every code is produced somewhere and documented;
 *  - defaults: the core's struct initializers (exported as addon.defaults) = what the TypeScript
 *    layer fills in from lib/defaults.ts;
 *  - the addon has no defaults of its own: every missing or mistyped field is a typed error;
 *  - token ids and a disposed model get the same answer whichever side notices.
 * (Ranges: lib/limits.ts = native/napi/limits.h is checked in limits.test.ts.)
 */
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadAddon } from "../../lib/binding.js";
import { GENERATE_DEFAULTS, GGUF_DEFAULTS, LOAD_DEFAULTS, SYNTH_DEFAULTS } from "../../lib/defaults.js";
import { ERROR_CODES, JS_ERROR_CODES, NATIVE_ERROR_CODES } from "../../lib/errors.js";
import { resolveOptions } from "../../lib/generate.js";
import { resolveLoadOptions } from "../../lib/loadOptions.js";
import { Model } from "../../lib/model.js";
import type {
  NativeAddon,
  NativeGenerateParams,
  NativeModel,
  NativeModelOptions,
  NativeSynthOptions,
} from "../../lib/native.js";
import { resolveSynthLoraOptions, resolveSynthOptions } from "../../lib/synth.js";
import { checkTokenIds } from "../../lib/validate.js";
import { repoRoot as root, synthModel, tmpRoot } from "../helpers.js";

const read = (p: string) => readFileSync(join(root, p), "utf8");
function files(dir: string, ext: RegExp): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, dir))) {
    const p = join(dir, name);
    if (statSync(join(root, p)).isDirectory()) out.push(...files(p, ext));
    else if (ext.test(name)) out.push(p);
  }
  return out;
}

let addon: NativeAddon;
beforeAll(() => {
  addon = loadAddon();
});

describe("one list of error codes", () => {
  /** status.h's LLMS_STATUS_CODES, parsed: [enumerator, JS code]. */
  const statusH = [...read("native/core/status.h").matchAll(/X\((\w+), "(\w+)"\)/g)].map((m) => [m[1], m[2]] as const);

  it("the addon's list (status.h) equals NATIVE_ERROR_CODES, in order", () => {
    expect(addon.errorCodes()).toEqual([...NATIVE_ERROR_CODES]);
    expect(statusH.map(([, c]) => c).filter((c) => c !== "OK")).toEqual([...NATIVE_ERROR_CODES]);
  });

  it("ERROR_CODES (the ErrorCode union) is the native codes plus the TypeScript-only ones, each once", () => {
    expect([...ERROR_CODES]).toEqual([...NATIVE_ERROR_CODES, ...JS_ERROR_CODES]);
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
  });

  it("every native code is produced somewhere in native/core or native/napi (no dead codes)", () => {
    const src = [...files("native/core", /\.(h|cpp)$/), ...files("native/napi", /\.(h|cc)$/)]
      .filter((p) => !p.endsWith("status.h"))
      .map(read)
      .join("\n");
    for (const [e, code] of statusH) {
      if (code === "OK") continue;
      expect(src.includes(`Code::${e}`), `${code} (Code::${e}) is never produced`).toBe(true);
    }
  });

  it("every TypeScript-only code is produced somewhere in lib/ (no dead codes)", () => {
    const src = files("lib", /\.ts$/)
      .filter((p) => !p.endsWith("errors.ts"))
      .map(read)
      .join("\n");
    for (const code of JS_ERROR_CODES) expect(src.includes(`"${code}"`), `${code} is never produced`).toBe(true);
  });

  it("every code is documented in docs/design.md's table", () => {
    const doc = read("docs/design.md");
    for (const code of ERROR_CODES)
      expect(doc, `${code} is not in docs/design.md`).toMatch(new RegExp(`\\| \`${code}\` \\|`));
  });
});

describe("one table of defaults (lib/defaults.ts = the core's struct initializers)", () => {
  /** The core stores some defaults as float: compare the float the TypeScript value becomes. */
  const asCore = (o: Record<string, unknown>) =>
    Object.fromEntries(Object.entries(o).map(([k, v]) => [k, typeof v === "number" ? Math.fround(v) : v]));

  it("Model.load: the options filled in for {} equal EngineOptions{} (threads: physical cores, not a constant)", () => {
    const { nativeOptions, responseCacheBytes } = resolveLoadOptions({});
    expect({ ...nativeOptions, threads: 0 }).toEqual({ ...addon.defaults.load, threads: 0 });
    expect(nativeOptions.kvType).toBe(LOAD_DEFAULTS.kvType);
    expect(responseCacheBytes).toBe(LOAD_DEFAULTS.responseCacheBytes);
  });

  it("generate: the params filled in for {} equal GenerateRequest{} / SamplingParams{}, but the seed", () => {
    const { params } = resolveOptions({}, []);
    // The seed is the one departure: TypeScript draws a random one (GENERATE_DEFAULTS.seed is
    // "random"); C++ callers of SamplingParams{} get 0.
    expect(GENERATE_DEFAULTS.seed).toBe("random");
    expect(addon.defaults.generate.seed).toBe(0);
    expect(asCore({ ...params, seed: 0 })).toEqual(asCore({ ...addon.defaults.generate }));
    expect(params.maxTokens).toBe(GENERATE_DEFAULTS.maxTokens);
  });

  it("synth: the options filled in for {} equal SynthOptions{}", () => {
    const { opts } = resolveSynthOptions({});
    expect(opts).toEqual(addon.defaults.synth);
    expect(opts.dim).toBe(SYNTH_DEFAULTS.dim);
  });

  it("synthLora: the options filled in for {} equal SynthLoraOptions{}", () => {
    expect(resolveSynthLoraOptions({})).toEqual(addon.defaults.synthLora);
  });

  it("readGguf: the metadata caps equal GgufLimits{}", () => {
    expect({ maxStringBytes: GGUF_DEFAULTS.maxStringBytes, maxMetadataBytes: GGUF_DEFAULTS.maxMetadataBytes }).toEqual(
      addon.defaults.gguf,
    );
  });

  it("the exported defaults have exactly the fields the addon requires", () => {
    expect(Object.keys(addon.defaults.load).sort()).toEqual(Object.keys(resolveLoadOptions({}).nativeOptions).sort());
    expect(Object.keys(addon.defaults.generate).sort()).toEqual(Object.keys(resolveOptions({}, []).params).sort());
    expect(Object.keys(addon.defaults.synth).sort()).toEqual(Object.keys(resolveSynthOptions({}).opts).sort());
  });
});

describe("the addon checks types and has no defaults of its own", () => {
  let path: string;
  let native: NativeModel;
  let loadOpts: NativeModelOptions;
  let params: NativeGenerateParams;
  let synthOpts: NativeSynthOptions;
  const prompt = Int32Array.from([1, 5, 9]);

  beforeAll(async () => {
    path = await synthModel("truth", { dim: 64, layers: 1, heads: 4, kvHeads: 2, ffn: 96, vocabSize: 320 });
    loadOpts = { ...resolveLoadOptions({ threads: 1, contextSize: 64, maxSequences: 4 }).nativeOptions };
    native = await addon.loadModel(path, loadOpts);
    params = { ...resolveOptions({ maxTokens: 2, temperature: 0 }, []).params };
    synthOpts = resolveSynthOptions({ dim: 64, layers: 1, heads: 4, kvHeads: 2, ffn: 96, vocabSize: 320 }).opts;
  });
  afterAll(async () => {
    await native?.dispose();
  });

  /** The typed error `f` throws (a TypeError carrying ERR_INVALID_ARGUMENT that names `field`). */
  function typeError(f: () => unknown, field: string): void {
    let err: unknown;
    try {
      f();
    } catch (e) {
      err = e;
    }
    expect(err, `${field} was accepted`).toBeInstanceOf(TypeError);
    expect((err as { code?: string }).code).toBe("ERR_INVALID_ARGUMENT");
    expect((err as Error).message).toContain(` for ${field} but received `);
  }
  const without = <T extends object>(o: T, k: string): T => {
    const c = { ...o } as Record<string, unknown>;
    delete c[k];
    return c as T;
  };
  const wrongType = (v: unknown) =>
    typeof v === "number" ? "1" : typeof v === "boolean" ? 1 : typeof v === "string" ? 1 : 1;

  it("generate(): every params field is required, and typed", () => {
    for (const k of Object.keys(params)) {
      typeError(() => native.generate(prompt, without(params, k), () => {}), k);
      typeError(
        () => native.generate(prompt, { ...params, [k]: wrongType(params[k as keyof NativeGenerateParams]) }, () => {}),
        k,
      );
    }
    typeError(() => native.generate([1, 2] as never, params, () => {}), "tokens");
    typeError(() => native.generate(prompt, { ...params, pin: 1 as never }, () => {}), "pin"); // no truthiness
  });

  it("loadModel(): every option is required, and typed (the load is refused before it starts)", () => {
    for (const k of Object.keys(loadOpts)) {
      typeError(() => addon.loadModel(path, without(loadOpts, k)), k);
      typeError(
        () => addon.loadModel(path, { ...loadOpts, [k]: wrongType(loadOpts[k as keyof NativeModelOptions]) }),
        k,
      );
    }
    expect(() => addon.loadModel(path, { ...loadOpts, kvType: "f8" as never })).toThrow(
      `Expected one of "f16", "f32", "q8_0" for kvType but received "f8"`,
    );
  });

  it("synth(): every option is required, and typed; a bad type gets the TypeScript message", () => {
    const out = join(tmpRoot, "truth-never-written.gguf");
    for (const k of Object.keys(synthOpts)) {
      typeError(() => addon.synth(without(synthOpts, k), out), k);
      typeError(() => addon.synth({ ...synthOpts, [k]: wrongType(synthOpts[k as keyof NativeSynthOptions]) }, out), k);
    }
    let ts = "";
    try {
      resolveSynthOptions({ type: "q5_x" });
    } catch (e) {
      ts = (e as Error).message;
    }
    expect(() => addon.synth({ ...synthOpts, type: "q5_x" }, out)).toThrow(ts);
  });

  it("readGguf(): maxArrayLength and every option are required", () => {
    const opts = {
      keyPrefixes: [],
      maxStringBytes: GGUF_DEFAULTS.maxStringBytes,
      maxMetadataBytes: GGUF_DEFAULTS.maxMetadataBytes,
    };
    expect(() => addon.readGguf(path, undefined as never, opts)).toThrow(TypeError);
    typeError(() => addon.readGguf(path, 0, undefined as never), "readGguf options");
    for (const k of Object.keys(opts)) typeError(() => addon.readGguf(path, 0, without(opts, k)), k);
  });

  it("a token id outside the vocabulary: the core's message is the TypeScript one", async () => {
    let ts = "";
    try {
      checkTokenIds([1, 320], 320);
    } catch (e) {
      ts = (e as Error).message;
    }
    expect(ts).toBe("Token id 320 is outside the vocabulary [0, 320).");
    expect(() => native.generate(Int32Array.from([1, 320]), params, () => {})).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT", message: ts }),
    );
    await expect(native.evaluate(Int32Array.from([1, 320]), false)).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: ts,
    });
    const model = await Model.load(path, { threads: 1, contextSize: 64 });
    try {
      expect(() => model.generate({ tokens: [1, 320] })).toThrow(
        expect.objectContaining({ code: "ERR_INVALID_ARGUMENT", message: ts }),
      );
      await expect(model.evaluate([1, 320])).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT", message: ts });
    } finally {
      await model.dispose();
    }
  });

  it("a disposed model is ERR_DISPOSED from the addon as from the TypeScript layer", async () => {
    const raw = await addon.loadModel(path, loadOpts);
    await raw.dispose();
    for (const f of [
      () => raw.info(),
      () => raw.stats(),
      () => raw.generate(prompt, params, () => {}),
      () => raw.evaluate(prompt, false),
    ]) {
      expect(f).toThrow(expect.objectContaining({ code: "ERR_DISPOSED" }));
    }
    const model = await Model.load(path, { threads: 1, contextSize: 64 });
    await model.dispose();
    expect(() => model.generate({ tokens: [1] })).toThrow(expect.objectContaining({ code: "ERR_DISPOSED" }));
    await expect(model.evaluate([1])).rejects.toMatchObject({ code: "ERR_DISPOSED" });
  });
});
