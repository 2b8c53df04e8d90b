/**
 * The N-API boundary checks every number it reads (native/napi/wrap_common.h, limits.h): the raw
 * binding, called without the TypeScript checks, answers huge, non-finite, fractional and
 * out-of-range values with a RangeError carrying ERR_INVALID_ARGUMENT and the same message the
 * TypeScript layer gives, instead of casting them (undefined behaviour) - and keeps working.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadAddon } from "../../lib/binding.js";
import {
  GENERATE_LIMITS,
  GGUF_LIMITS,
  MACHINE_LIMITS,
  LIMITS,
  LOAD_LIMITS,
  SYNTH_LIMITS,
  describeLimit,
  type Limit,
} from "../../lib/limits.js";
import type {
  NativeAddon,
  NativeEvent,
  NativeGenerateParams,
  NativeModel,
  NativeModelOptions,
  NativeSynthOptions,
} from "../../lib/native.js";
import { checkLimit } from "../../lib/validate.js";
import { Model } from "../../lib/index.js";
import { synthModel, tmpRoot } from "../helpers.js";

let addon: NativeAddon;
let path: string;
let native: NativeModel;

const loadOpts: NativeModelOptions = {
  threads: 1,
  contextSize: 64,
  kvType: "f16",
  kvCacheTokens: 0,
  kvBlockSize: 16,
  maxBatchTokens: 64,
  maxSequences: 4,
  maxQueue: 16,
  prefixCache: true,
  staticBatching: false,
  fixedBatching: false,
  fixedBucket: 0,
  prefillChunk: 32,
  targetStepMs: 0,
  repack: true,
  adapterType: "file",
};
const params: NativeGenerateParams = {
  maxTokens: 2,
  temperature: 0,
  topK: 40,
  topP: 0.95,
  minP: 0.05,
  repeatPenalty: 1,
  repeatLastN: 64,
  frequencyPenalty: 0,
  presencePenalty: 0,
  seed: 0,
  logprobs: 0,
  wantLogprobs: false,
  priority: 0,
  session: 0,
  pin: false,
  adapter: 0,
  stopTokens: [],
  logitBias: [],
  grammar: "",
};
const ggufOpts = { keyPrefixes: [], maxStringBytes: 1 << 20, maxMetadataBytes: 1 << 24 };
const synthOpts: NativeSynthOptions = {
  arch: "llama",
  dim: 64,
  layers: 1,
  heads: 4,
  kvHeads: 2,
  ffn: 96,
  context: 64,
  vocabFrom: "",
  vocabSize: 320,
  type: "f32",
  seed: 1,
  tiedOutput: false,
  headDim: 0,
  ropeFreqs: false,
  ropeScaling: "",
  ropeScale: 1,
  slidingWindow: 0,
  swaPattern: 0,
  attnSoftcap: 0,
  finalSoftcap: 0,
  ropeFreqBaseSwa: 0,
  longRope: false,
  experts: 0,
  expertsUsed: 0,
};
const prompt = Int32Array.from([1, 5, 9]);

/** Values no option accepts, plus the ones just outside this limit. */
function badValues(l: Limit): number[] {
  const vals = [
    1e300,
    -1e300,
    NaN,
    Infinity,
    -Infinity,
    2 ** 53,
    -(2 ** 53),
    l.max + (l.integer ? 1 : l.max * 1e-6 + 1e-6),
  ];
  vals.push(l.minExclusive ? l.min : l.min - (l.integer ? 1 : 1e-6));
  if (l.integer) vals.push(l.min + 0.5);
  return vals;
}

/** Runs `f`, expecting the typed error for `value` at option `name`; returns it. */
function expectRangeError(
  f: () => unknown,
  name: string,
  l: Limit,
  value: unknown,
  kind: typeof RangeError | typeof TypeError = RangeError,
): Error {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err, `${name} = ${String(value)} was accepted`).toBeInstanceOf(kind);
  const e = err as Error & { code?: string };
  expect(e.code).toBe("ERR_INVALID_ARGUMENT");
  expect(e.message).toContain(`Expected ${describeLimit(l)} for ${name} but received `);
  return e;
}

/** The TypeScript check's message for the same value (the native one must match it word for word). */
function tsMessage(name: string, v: unknown, l: Limit): string {
  try {
    checkLimit(name, v, l);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error(`checkLimit accepted ${name} = ${String(v)}`);
}

function run(model: NativeModel, p: Partial<NativeGenerateParams>): Promise<NativeEvent[]> {
  return new Promise((resolve) => {
    const events: NativeEvent[] = [];
    model.generate(prompt, { ...params, ...p }, (e) => {
      events.push(e);
      if (e.done) resolve(events);
    });
  });
}

beforeAll(async () => {
  addon = loadAddon();
  path = await synthModel("napi-limits", { dim: 64, layers: 1, heads: 4, kvHeads: 2, ffn: 96, vocabSize: 320 });
  native = await addon.loadModel(path, loadOpts);
});
afterAll(async () => {
  await native?.dispose();
});

describe("one table of limits", () => {
  it("the addon enforces exactly the ranges of lib/limits.ts", () => {
    expect(addon.limits).toEqual(JSON.parse(JSON.stringify(LIMITS)));
  });
});

describe("generate(tokens, params) on the raw binding", () => {
  const numeric = Object.keys(GENERATE_LIMITS).filter(
    (k) => !k.startsWith("stopTokens") && !k.startsWith("logitBias") && k !== "id",
  ) as (keyof typeof GENERATE_LIMITS)[];
  it.each(numeric)("%s: huge, non-finite, fractional and out-of-range values are typed errors", async (name) => {
    const l = GENERATE_LIMITS[name];
    for (const v of badValues(l)) {
      const e = expectRangeError(() => native.generate(prompt, { ...params, [name]: v }, () => {}), name, l, v);
      expect(e.message).toBe(tsMessage(name, v, l));
    }
    expectRangeError(
      () => native.generate(prompt, { ...params, [name]: "7" as never }, () => {}),
      name,
      l,
      "7",
      TypeError,
    );
    expectRangeError(
      () => native.generate(prompt, { ...params, [name]: 7n as never }, () => {}),
      name,
      l,
      "7n",
      TypeError,
    );
    // The engine still answers.
    const events = await run(native, {});
    expect(events.at(-1)?.error).toBeUndefined();
  });

  it("the message says the value as JavaScript writes it", () => {
    expect(() => native.generate(prompt, { ...params, topK: 1e300 }, () => {})).toThrow(
      "Expected an integer in [0, 2147483647] for topK but received 1e+300",
    );
    expect(() => native.generate(prompt, { ...params, topP: -1e-7 }, () => {})).toThrow(
      "Expected a number in (0, 1] for topP but received -1e-7",
    );
    expect(() => native.generate(prompt, { ...params, seed: 2 ** 53 }, () => {})).toThrow(
      "Expected an integer in [0, 9007199254740991] for seed but received 9007199254740992",
    );
    expect(() => native.generate(prompt, { ...params, repeatLastN: -2.5 }, () => {})).toThrow(
      "Expected an integer in [-1, 2147483647] for repeatLastN but received -2.5",
    );
  });

  it("prints any double exactly as JavaScript does (5000 random bit patterns)", () => {
    const buf = new DataView(new ArrayBuffer(8));
    let x = 0x2545f491n;
    const l = GENERATE_LIMITS.temperature;
    let compared = 0;
    for (let i = 0; i < 5000; i++) {
      x = (x * 6364136223846793005n + 1442695040888963407n) & 0xffffffffffffffffn; // LCG over 64-bit patterns
      buf.setBigUint64(0, x);
      const v = i % 2 ? buf.getFloat64(0) : Number((x >> 11n) % 100000n) / 10 ** Number(x % 30n) - 1; // any double; short decimals
      if (v >= l.min && v <= l.max) continue; // a valid temperature would start a request
      const e = expectRangeError(
        () => native.generate(prompt, { ...params, temperature: v }, () => {}),
        "temperature",
        l,
        v,
      );
      expect(e.message).toBe(tsMessage("temperature", v, l));
      compared++;
    }
    expect(compared).toBeGreaterThan(2000);
  });

  it("stopTokens: each id and the array's length are checked", () => {
    const l = GENERATE_LIMITS.stopTokens;
    for (const v of badValues(l)) {
      const e = expectRangeError(
        () => native.generate(prompt, { ...params, stopTokens: [2, v] }, () => {}),
        "stopTokens[1]",
        l,
        v,
      );
      expect(e.message).toBe(tsMessage("stopTokens[1]", v, l));
    }
    expectRangeError(
      () => native.generate(prompt, { ...params, stopTokens: [null as never] }, () => {}),
      "stopTokens[0]",
      l,
      null,
      TypeError,
    );
    expect(() => native.generate(prompt, { ...params, stopTokens: 5 as never }, () => {})).toThrow(TypeError);
    const sparse: number[] = [];
    sparse.length = 2 ** 32 - 1; // would loop four billion times
    expectRangeError(
      () => native.generate(prompt, { ...params, stopTokens: sparse }, () => {}),
      "stopTokens.length",
      GENERATE_LIMITS["stopTokens.length"],
      sparse.length,
    );
  });

  it("logitBias: each pair's token and bias, and the array's length, are checked", async () => {
    const bias = GENERATE_LIMITS.logitBias;
    for (const v of badValues(bias)) {
      const e = expectRangeError(
        () =>
          native.generate(
            prompt,
            {
              ...params,
              logitBias: [
                [1, 0],
                [2, v],
              ],
            },
            () => {},
          ),
        "logitBias[1][1]",
        bias,
        v,
      );
      expect(e.message).toBe(tsMessage("logitBias[1][1]", v, bias));
    }
    const token = GENERATE_LIMITS["logitBias.token"];
    for (const v of badValues(token))
      expectRangeError(
        () => native.generate(prompt, { ...params, logitBias: [[v, 1]] }, () => {}),
        "logitBias[0][0]",
        token,
        v,
      );
    for (const pair of [5, [1], [1, 2, 3], null])
      expect(() => native.generate(prompt, { ...params, logitBias: [pair as never] }, () => {})).toThrow(
        /Expected a \[token, bias\] pair for logitBias\[0\]/,
      );
    expect(() => native.generate(prompt, { ...params, logitBias: {} as never }, () => {})).toThrow(TypeError);
    const sparse: [number, number][] = [];
    sparse.length = 2 ** 32 - 1;
    expectRangeError(
      () => native.generate(prompt, { ...params, logitBias: sparse }, () => {}),
      "logitBias.length",
      GENERATE_LIMITS["logitBias.length"],
      sparse.length,
    );
    // The engine checks ids against the vocabulary (320 here); -100 and 100 themselves are valid.
    expect(() => native.generate(prompt, { ...params, logitBias: [[320, 1]] }, () => {})).toThrow(
      "Token id 320 in logitBias is outside the vocabulary [0, 320).",
    );
    const events = await run(native, {
      logitBias: [
        [3, -100],
        [4, 100],
      ],
    });
    expect(events.at(-1)?.error).toBeUndefined();
    expect(events.flatMap((e) => e.tokens ?? [])).toEqual([4, 4]);
  });

  it("cancel(id) and endSession(id) check the id", () => {
    const l = GENERATE_LIMITS.id;
    for (const v of badValues(l)) {
      expectRangeError(() => native.cancel(v), "id", l, v);
      expectRangeError(() => native.endSession(v), "session", l, v);
    }
    expect(() => native.cancel(123456)).not.toThrow();
    expect(() => native.endSession(123456)).not.toThrow();
  });

  it("every option at both ends of its range is accepted and generates", async () => {
    const at = (end: "min" | "max") =>
      Object.fromEntries(
        numeric
          .filter((k) => k !== "session" && k !== "adapter")
          .map((k) => {
            const l = GENERATE_LIMITS[k];
            return [k, end === "max" ? l.max : l.minExclusive ? l.min + 1e-3 : l.min];
          }),
      );
    const hi = await run(native, { ...at("max"), stopTokens: [GENERATE_LIMITS.stopTokens.max] });
    expect(hi.at(-1)?.error).toBeUndefined();
    expect(hi.at(-1)?.finishReason).toBe("length"); // maxTokens 2^31 - 1: the 64-token context ends it
    expect(hi.flatMap((e) => e.tokens ?? []).length).toBeGreaterThan(0);
    const lo = await run(native, { ...at("min"), maxTokens: 1 });
    expect(lo.at(-1)?.error).toBeUndefined();
  });
});

describe("loadModel / synth / readGguf on the raw binding", () => {
  it.each(Object.keys(LOAD_LIMITS) as (keyof typeof LOAD_LIMITS)[])("loadModel %s", (name) => {
    const l = LOAD_LIMITS[name];
    for (const v of badValues(l)) {
      const e = expectRangeError(() => addon.loadModel(path, { ...loadOpts, [name]: v }), name, l, v);
      expect(e.message).toBe(tsMessage(name, v, l));
    }
  });

  it("loadModel with static and fixed batching both set is a typed error (one batching mode)", async () => {
    await expect(
      addon.loadModel(path, { ...loadOpts, staticBatching: true, fixedBatching: true }),
    ).rejects.toMatchObject({
      code: "ERR_INVALID_ARGUMENT",
      message: expect.stringMatching(/choose one batching mode/),
    });
  });

  it.each(Object.keys(SYNTH_LIMITS) as (keyof typeof SYNTH_LIMITS)[])("synth %s", (name) => {
    const l = SYNTH_LIMITS[name];
    for (const v of badValues(l)) {
      const e = expectRangeError(
        () => addon.synth({ ...synthOpts, [name]: v }, join(tmpRoot, "never-written.gguf")),
        name,
        l,
        v,
      );
      expect(e.message).toBe(tsMessage(name, v, l));
    }
  });

  it("readGguf maxArrayLength, maxStringBytes, maxMetadataBytes", async () => {
    const l = GGUF_LIMITS.maxArrayLength;
    for (const v of badValues(l)) expectRangeError(() => addon.readGguf(path, v, ggufOpts), "maxArrayLength", l, v);
    for (const name of ["maxStringBytes", "maxMetadataBytes"] as const) {
      for (const v of badValues(GGUF_LIMITS[name]))
        expectRangeError(() => addon.readGguf(path, 0, { ...ggufOpts, [name]: v }), name, GGUF_LIMITS[name], v);
    }
    const g = await addon.readGguf(path, 0, ggufOpts);
    expect(g.tensors.length).toBeGreaterThan(0);
  });

  it.each(Object.keys(MACHINE_LIMITS) as (keyof typeof MACHINE_LIMITS)[])("readBandwidth %s", (name) => {
    const l = MACHINE_LIMITS[name];
    for (const v of badValues(l)) {
      const e = expectRangeError(() => addon.readBandwidth({ threads: 1, megabytes: 1, [name]: v }), name, l, v);
      expect(e.message).toBe(tsMessage(name, v, l));
    }
  });
});

describe("the TypeScript layer gives the same answers first", () => {
  let model: Model;
  beforeAll(async () => {
    model = await Model.load(path, { threads: 1, contextSize: 64 });
  });
  afterAll(async () => {
    await model?.dispose();
  });

  it("generate options beyond the engine's int32 are refused before they reach it", () => {
    for (const [name, v] of [
      ["topK", 2 ** 40],
      ["repeatLastN", 2 ** 31],
      ["maxTokens", 2 ** 31],
      ["seed", 2 ** 53],
      ["temperature", 1e300],
      ["priority", 1e300],
    ] as const) {
      const l = GENERATE_LIMITS[name];
      expect(() => model.generate("x", { [name]: v })).toThrow(tsMessage(name, v, l));
    }
  });

  it("load and synth options too", async () => {
    await expect(Model.load(path, { maxSequences: 2 ** 40 })).rejects.toThrow(
      "Expected an integer in [1, 65536] for maxSequences but received 1099511627776",
    );
    await expect(Model.load(path, { kvCacheTokens: NaN })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    const { synth, readGguf } = await import("../../lib/index.js");
    await expect(synth(join(tmpRoot, "never.gguf"), { dim: 1e300 })).rejects.toThrow(
      "Expected an integer in [1, 65536] for dim but received 1e+300",
    );
    await expect(readGguf(path, { maxArrayLength: -1 })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });
});
