/**
 * Hugging Face PEFT adapters through Model.loadAdapter (issue 11): a PEFT folder written by
 * test/peftFiles.ts gives the same greedy tokens as the merged model W + scale·B·A (merged the way
 * llama.cpp's converter lays out llama q/k rows), on a llama base (q/k lora_B rows permuted) and a
 * qwen2 base (not permuted), with F32 / F16 / BF16 tensors, rank_pattern / alpha_pattern overrides,
 * use_rslora and a user scale; the adapter must change the tokens. Every PEFT option, tensor and
 * file llmserve does not apply is a typed error naming it, and hostile safetensors files fail cleanly.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlmserveError, Model } from "../../lib/index.js";
import { synthModel, tmpRoot } from "../helpers.js";
import { type PeftSpec, type StTensor, safetensorsBytes, writeMerged, writePeft } from "../peftFiles.js";

const SHAPE = { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 400, seed: 3, type: "f32" } as const;
const OPTS = { threads: 1, contextSize: 256, kvType: "f32" } as const;
const N = 24;
const prompts = [
  [1, 300, 17, 42],
  [1, 5, 6, 7, 8, 9],
  [1, 250, 251, 99, 3, 380, 12],
];

let dir: string;
const bases: Record<"llama" | "qwen2", string> = { llama: "", qwen2: "" };
const models: Partial<Record<"llama" | "qwen2", Model>> = {};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpRoot, "peft-"));
  for (const arch of ["llama", "qwen2"] as const) {
    bases[arch] = await synthModel(`peft-${arch}`, { ...SHAPE, arch });
    models[arch] = await Model.load(bases[arch], OPTS);
  }
});
afterAll(async () => {
  for (const m of Object.values(models)) await m?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

async function greedy(m: Model, prompt: number[], adapter?: string): Promise<number[]> {
  const r = await m.complete(
    { tokens: prompt },
    { maxTokens: N, temperature: 0, stopAtEos: false, ...(adapter ? { adapter } : {}) },
  );
  return r.tokens;
}

/** Loads the PEFT adapter and its merged model; returns [adapter tokens, merged tokens, base tokens] per prompt. */
async function peftVsMerged(
  arch: "llama" | "qwen2",
  name: string,
  spec: PeftSpec,
  userScale = 1,
  loadPath?: (d: string) => string,
): Promise<{ peft: number[][]; merged: number[][]; base: number[][] }> {
  const m = models[arch] as Model;
  const d = join(dir, name);
  const pairs = await writePeft(bases[arch], d, spec);
  const mergedPath = join(dir, `${name}-merged.gguf`);
  const info = m.info;
  await writeMerged(bases[arch], mergedPath, pairs, {
    userScale,
    permuteQK: arch === "llama",
    nHead: info.nHead,
    nHeadKv: info.nHeadKv,
  });
  const a = await m.loadAdapter(name, loadPath ? loadPath(d) : d, { scale: userScale });
  expect(a.name).toBe(name);
  const merged = await Model.load(mergedPath, OPTS);
  try {
    const out = { peft: [] as number[][], merged: [] as number[][], base: [] as number[][] };
    for (const p of prompts) {
      out.peft.push(await greedy(m, p, name));
      out.merged.push(await greedy(merged, p));
      out.base.push(await greedy(m, p));
    }
    return out;
  } finally {
    await merged.dispose();
    m.unloadAdapter(name);
  }
}

function expectSameAndChanged(r: { peft: number[][]; merged: number[][]; base: number[][] }): void {
  expect(r.peft).toEqual(r.merged);
  for (let i = 0; i < prompts.length; i++)
    expect(r.peft[i], `prompt ${i}: the adapter changed nothing`).not.toEqual(r.base[i]);
}

describe("PEFT adapter = merged model", () => {
  it("llama base, F32, every projection, rank_pattern and alpha_pattern overrides", async () => {
    const r = await peftVsMerged("llama", "llama-f32", {
      r: 8,
      alpha: 16,
      modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
      rankPattern: { "layers.1.mlp.down_proj": 4 },
      alphaPattern: { v_proj: 4 },
      seed: 1,
    });
    expectSameAndChanged(r);
  });

  it("llama base, BF16 / F16 / F32 tensors, use_rslora, scale 0.5, loaded by its .safetensors path", async () => {
    const dtype = (m: string) => (/[qk]_proj/.test(m) ? "BF16" : /[vo]_proj/.test(m) ? "F16" : "F32");
    const r = await peftVsMerged(
      "llama",
      "llama-mixed",
      {
        r: 8,
        alpha: 8,
        modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        useRslora: true,
        dtype,
        seed: 2,
        stdB: 0.12,
      },
      0.5,
      (d) => join(d, "adapter_model.safetensors"),
    );
    expectSameAndChanged(r);
  });

  it("llama base, F32 data at addresses that are not 4-byte aligned (an unpadded header), all-linear", async () => {
    const r = await peftVsMerged("llama", "llama-misaligned", {
      r: 4,
      alpha: 8,
      modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
      config: { target_modules: "All-Linear" }, // PEFT compares it lowercased
      misalign: true,
      seed: 4,
      stdB: 0.12,
    });
    const f = readFileSync(join(dir, "llama-misaligned", "adapter_model.safetensors"));
    expect((8 + Number(f.readBigUInt64LE(0))) % 4).toBe(2);
    expectSameAndChanged(r);
  });

  it("qwen2 base (no q/k permutation), attention only + lm_head, regex target_modules", async () => {
    const r = await peftVsMerged("qwen2", "qwen2-attn", {
      r: 4,
      alpha: 8,
      modules: ["q_proj", "k_proj", "v_proj", "o_proj", "lm_head"],
      config: { target_modules: ".*\\.(q|k|v|o)_proj|lm_head" },
      seed: 3,
      stdB: 0.12,
    });
    expectSameAndChanged(r);
  });
});

// ---------- refusals ----------

async function errorOf(f: () => Promise<unknown>): Promise<LlmserveError> {
  try {
    await f();
  } catch (err) {
    expect(err).toBeInstanceOf(LlmserveError);
    return err as LlmserveError;
  }
  throw new Error("expected an error");
}

const small: PeftSpec = { r: 2, alpha: 4, modules: ["q_proj", "v_proj"], seed: 9 };
let caseNo = 0;

/** Writes a variant of `small` and expects loading it to fail with code and a message containing `mention`. */
async function refused(variant: Partial<PeftSpec>, code: string, mention: string, arch: "llama" | "qwen2" = "llama") {
  const d = join(dir, `bad-${caseNo++}`);
  await writePeft(bases[arch], d, { ...small, ...variant });
  const m = models[arch] as Model;
  const e = await errorOf(() => m.loadAdapter("bad", d));
  expect(e.code, e.message).toBe(code);
  expect(e.message).toContain(mention);
  expect(m.adapters()).toEqual([]);
  return e;
}

const rename = (from: string, to: string) => (ts: StTensor[]) =>
  ts.map((t) => ({ ...t, name: t.name.replace(from, to) }));

describe("PEFT options, tensors and files llmserve does not apply are typed errors", () => {
  it("config options that change the math", async () => {
    await refused({ config: { use_dora: true } }, "ERR_INVALID_ARGUMENT", "DoRA (use_dora) is not supported");
    await refused({ config: { bias: "all" } }, "ERR_INVALID_ARGUMENT", "bias: 'all'");
    await refused({ config: { bias: "lora_only" } }, "ERR_INVALID_ARGUMENT", "bias: 'lora_only'");
    await refused({ config: { lora_bias: true } }, "ERR_INVALID_ARGUMENT", "lora_bias");
    const e = await refused({ config: { modules_to_save: ["lm_head"] } }, "ERR_INVALID_ARGUMENT", "modules_to_save");
    expect(e.message).toContain("merge_and_unload");
    await refused({ config: { peft_type: "LOHA" } }, "ERR_INVALID_ARGUMENT", "peft_type is 'LOHA'");
    await refused({ config: { init_lora_weights: "pissa_niter_4" } }, "ERR_INVALID_ARGUMENT", "init_lora_weights");
    await refused({ config: { alora_invocation_tokens: [5, 6] } }, "ERR_INVALID_ARGUMENT", "Activated LoRA");
    await refused({ config: { use_rslora: "yes" } }, "ERR_INVALID_ARGUMENT", "use_rslora is not a boolean");
    await refused({ config: { r: 0 } }, "ERR_INVALID_ARGUMENT", "r is not a rank");
    await refused({ config: { target_modules: null } }, "ERR_INVALID_ARGUMENT", "no target_modules");
    await refused({ config: { target_modules: "(?=q).*" } }, "ERR_INVALID_ARGUMENT", "target_modules pattern");
    await refused({ config: { rank_pattern: { q_proj: 2.5 } } }, "ERR_INVALID_ARGUMENT", 'rank_pattern["q_proj"]');
  });

  it("target modules llmserve cannot map, or that the weights contradict", async () => {
    await refused(
      { config: { target_modules: ["q_proj", "v_proj", "embed_tokens"] } },
      "ERR_INVALID_ARGUMENT",
      "model.embed_tokens",
    );
    await refused({ config: { target_modules: ["c_attn"] } }, "ERR_INVALID_ARGUMENT", "selects none of the modules");
    await refused(
      { config: { target_modules: ["q_proj"] } },
      "ERR_INVALID_ARGUMENT",
      "'model.layers.0.self_attn.v_proj', which the config's target_modules",
    );
    await refused(
      { config: { target_modules: ["q_proj", "v_proj"], exclude_modules: ["layers.1.self_attn.v_proj"] } },
      "ERR_INVALID_ARGUMENT",
      "model.layers.1.self_attn.v_proj",
    );
  });

  it("tensors: embeddings, DoRA vectors, unknown names, missing halves, layers out of range", async () => {
    const extra =
      (name: string, dtype = "F32", shape = [2, 4]) =>
      (ts: StTensor[]) => [
        ...ts,
        { name, dtype, shape, data: Buffer.alloc((dtype === "F32" ? 4 : 2) * shape[0] * shape[1]) },
      ];
    await refused(
      { editTensors: extra("base_model.model.model.embed_tokens.lora_embedding_A") },
      "ERR_INVALID_ARGUMENT",
      "token embeddings",
    );
    await refused(
      { editTensors: extra("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector") },
      "ERR_INVALID_ARGUMENT",
      "DoRA's magnitude vector",
    );
    await refused(
      { editTensors: extra("base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias") },
      "ERR_INVALID_ARGUMENT",
      "a bias on lora_B",
    );
    await refused(
      { editTensors: extra("base_model.model.lm_head.weight") },
      "ERR_INVALID_ARGUMENT",
      "'base_model.model.lm_head.weight' is not a LoRA weight",
    );
    await refused(
      { editTensors: (ts) => ts.filter((t) => !t.name.endsWith("1.self_attn.v_proj.lora_B.weight")) },
      "ERR_MISSING_TENSOR",
      "'base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight' is missing",
    );
    await refused(
      { editTensors: rename("layers.1.", "layers.7.") },
      "ERR_INVALID_ARGUMENT",
      "is for layer 7 but the model has 2 layers",
    );
    await refused(
      { editTensors: rename("self_attn.v_proj", "self_attn.rotary_proj"), config: { target_modules: ".*_proj" } },
      "ERR_INVALID_ARGUMENT",
      "which llmserve cannot map to a GGUF tensor",
    );
    await refused(
      { editTensors: rename("base_model.model.model.", "model.") },
      "ERR_INVALID_ARGUMENT",
      "is not a LoRA weight",
    );
  });

  it("dtypes, shapes and ranks that do not fit", async () => {
    const retype = (dtype: string, bytes: number) => (ts: StTensor[]) =>
      ts.map((t, i) => (i === 0 ? { ...t, dtype, data: Buffer.alloc(bytes * t.shape[0] * t.shape[1]) } : t));
    await refused(
      { editTensors: retype("F64", 8) },
      "ERR_UNSUPPORTED_TYPE",
      "has dtype F64; supported: F32, F16, BF16",
    );
    await refused({ editTensors: retype("I32", 4) }, "ERR_UNSUPPORTED_TYPE", ".lora_A.weight' has dtype I32");
    // A with 32 inputs where the model's q_proj takes 64.
    const narrow = (ts: StTensor[]) =>
      ts.map((t, i) => (i === 0 ? { ...t, shape: [t.shape[0], 32], data: t.data.subarray(0, t.data.length / 2) } : t));
    await refused({ editTensors: narrow }, "ERR_BAD_SHAPE", "LoRA pair of 'model.layers.0.self_attn.q_proj'");
    await refused({ config: { r: 4 } }, "ERR_BAD_SHAPE", "has rank 2 but the config gives");
    await refused({ config: { rank_pattern: { "layers.0.self_attn.q_proj": 3 } } }, "ERR_BAD_SHAPE", "r = 3");
  });

  it("folders and files", async () => {
    const m = models.llama as Model;
    const d = join(dir, "no-config");
    await writePeft(bases.llama, d, small);
    rmSync(join(d, "adapter_config.json"));
    let e = await errorOf(() => m.loadAdapter("x", d));
    expect(e.code).toBe("ERR_FILE_NOT_FOUND");
    expect(e.message).toContain("adapter_config.json");
    const bin = join(dir, "bin-only");
    mkdirSync(bin);
    writeFileSync(join(bin, "adapter_model.bin"), "pickle");
    e = await errorOf(() => m.loadAdapter("x", bin));
    expect(e.code).toBe("ERR_INVALID_ARGUMENT");
    expect(e.message).toContain("adapter_model.bin");
    e = await errorOf(() => m.loadAdapter("x", join(dir, "empty-dir-that-is-missing")));
    expect(e.code).toBe("ERR_FILE_NOT_FOUND");
    const empty = join(dir, "empty");
    mkdirSync(empty);
    e = await errorOf(() => m.loadAdapter("x", empty));
    expect(e.code).toBe("ERR_FILE_NOT_FOUND");
    expect(e.message).toContain("adapter_model.safetensors");
    const badJson = join(dir, "bad-json");
    await writePeft(bases.llama, badJson, small);
    writeFileSync(join(badJson, "adapter_config.json"), '{"r": 2,}');
    e = await errorOf(() => m.loadAdapter("x", badJson));
    expect(e.code).toBe("ERR_INVALID_ARGUMENT");
    expect(e.message).toContain("adapter_config.json is not valid JSON");
    expect(m.adapters()).toEqual([]);
  });

  it("lm_head on a base whose output is tied to the embeddings", async () => {
    const tied = await synthModel("peft-tied", { ...SHAPE, tiedOutput: true });
    const m = await Model.load(tied, OPTS);
    try {
      const d = join(dir, "tied");
      await writePeft(bases.llama, d, { ...small, modules: ["q_proj", "lm_head"] });
      const e = await errorOf(() => m.loadAdapter("t", d));
      expect(e.code).toBe("ERR_MISSING_TENSOR");
      expect(e.message).toContain("tied to token_embd");
    } finally {
      await m.dispose();
    }
  });
});

describe("hostile adapter_model.safetensors files fail with a typed error", () => {
  it("truncated, huge header length, bad offsets, unknown dtype, garbage", async () => {
    const m = models.llama as Model;
    const good = join(dir, "hostile-src");
    await writePeft(bases.llama, good, small);
    const bytes = readFileSync(join(good, "adapter_model.safetensors"));
    const hlen = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + hlen).toString());
    const withHeader = (h: unknown, data = bytes.subarray(8 + hlen)) => {
      const j = Buffer.from(JSON.stringify(h));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(j.length));
      return Buffer.concat([len, j, data]);
    };
    const names = Object.keys(header).filter((k) => k !== "__metadata__");
    const moved = structuredClone(header);
    moved[names[1]].data_offsets = [0, moved[names[1]].data_offsets[1] - moved[names[1]].data_offsets[0]];
    const retyped = structuredClone(header);
    retyped[names[0]].dtype = "Q9";
    const huge = Buffer.from(bytes);
    huge.writeBigUInt64LE(1n << 60n, 0);
    const cases: [string, Buffer, string, string][] = [
      ["empty", Buffer.alloc(0), "ERR_INVALID_ARGUMENT", "fewer than the 8-byte header length"],
      ["truncated", bytes.subarray(0, bytes.length - 100), "ERR_INVALID_ARGUMENT", "is corrupt"],
      ["header-cut", bytes.subarray(0, 8 + Math.floor(hlen / 2)), "ERR_INVALID_ARGUMENT", "bytes follow it"],
      ["huge-header", huge, "ERR_INVALID_ARGUMENT", `the header length is ${1n << 60n} bytes`],
      ["overlap", withHeader(moved), "ERR_INVALID_ARGUMENT", "overlapping"],
      ["dtype", withHeader(retyped), "ERR_UNSUPPORTED_TYPE", "dtype 'Q9'"],
      ["not-json", withHeader("x"), "ERR_INVALID_ARGUMENT", "not a JSON object"],
      ["gguf", readFileSync(bases.llama).subarray(0, 4096), "ERR_INVALID_ARGUMENT", "is corrupt"],
      ["no-tensors", safetensorsBytes([]), "ERR_INVALID_ARGUMENT", "holds no LoRA tensors"],
    ];
    for (const [name, data, code, mention] of cases) {
      const d = join(dir, `hostile-${name}`);
      await writePeft(bases.llama, d, small);
      writeFileSync(join(d, "adapter_model.safetensors"), data);
      const e = await errorOf(() => m.loadAdapter("h", d));
      expect(e.code, `${name}: ${e.message}`).toBe(code);
      expect(e.message, name).toContain(mention);
      expect(e.message, name).toContain("adapter_model.safetensors");
    }
    // The model is untouched and still serves.
    expect(m.adapters()).toEqual([]);
    expect((await greedy(m, prompts[0])).length).toBe(N);
  });
});
