/**
 * Test helper: writes Hugging Face PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors,
 * as PEFT's save_pretrained does) with random weights for a base GGUF model, and the merged model
 * W' = W + scale·B·A as a GGUF file: the base file with every adapted f32 matrix rewritten in place,
 * with lora_B's rows of q/k permuted the way llama.cpp's convert_hf_to_gguf.py permutes q_proj /
 * k_proj for llama (LlamaModel.permute), so the merged file is what converting the merged HF model
 * would give. The weights are multiples of 2^-10 below 1/4 in magnitude, exact in F32, F16 and BF16,
 * so the merge uses exactly the values the adapter file holds.
 */
import { copyFileSync, mkdirSync, openSync, closeSync, readSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { readGguf } from "../lib/gguf.js";

export type StDtype = "F32" | "F16" | "BF16";

/** One safetensors entry; `data` is its raw little-endian bytes. */
export interface StTensor {
  name: string;
  dtype: string;
  shape: number[];
  data: Buffer;
}

/**
 * A safetensors file image: 8-byte header length, JSON header (offsets in list order), data. The
 * header is padded to 8 bytes as save_file does; `misalign` pads it to 2 mod 4 instead (older
 * writers did not pad), so 4-byte elements sit at addresses that are not multiples of 4.
 */
export function safetensorsBytes(
  tensors: StTensor[],
  metadata: Record<string, string> = { format: "pt" },
  misalign = false,
): Buffer {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let at = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [at, at + t.data.length] };
    at += t.data.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat(misalign ? (4 + 2 - (json.length % 4)) % 4 : (8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([len, Buffer.from(json), ...tensors.map((t) => t.data)]);
}

/** Encodes values exactly representable in dtype (see the file comment). */
export function encode(values: Float32Array, dtype: StDtype): Buffer {
  if (dtype === "F32") return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const out = Buffer.alloc(values.length * 2);
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (dtype === "BF16") {
      if ((bits[i] & 0xffff) !== 0) throw new Error(`${v} is not exact in bf16`);
      out.writeUInt16LE(bits[i] >>> 16, 2 * i);
      continue;
    }
    let h = 0;
    if (v !== 0) {
      const a = Math.abs(v);
      const e = Math.floor(Math.log2(a));
      const m = (a / 2 ** e - 1) * 1024;
      if (!Number.isInteger(m) || e + 15 < 1 || e + 15 > 30) throw new Error(`${v} is not exact in f16`);
      h = ((e + 15) << 10) | m;
    }
    out.writeUInt16LE(h | (v < 0 ? 0x8000 : 0), 2 * i);
  }
  return out;
}

/** HF module (the part after model.layers.N.) and its GGUF tensor kind. */
export const HF_LAYER_MODULES = {
  q_proj: ["self_attn.q_proj", "attn_q"],
  k_proj: ["self_attn.k_proj", "attn_k"],
  v_proj: ["self_attn.v_proj", "attn_v"],
  o_proj: ["self_attn.o_proj", "attn_output"],
  gate_proj: ["mlp.gate_proj", "ffn_gate"],
  up_proj: ["mlp.up_proj", "ffn_up"],
  down_proj: ["mlp.down_proj", "ffn_down"],
} as const;
export type HfModule = keyof typeof HF_LAYER_MODULES | "lm_head";

export interface PeftSpec {
  /** Config `r` and `lora_alpha`. */
  r: number;
  alpha: number;
  /** Modules to adapt, in every layer (`lm_head`: the output matrix); also the config's target_modules. */
  modules: HfModule[];
  /** Config rank_pattern / alpha_pattern (keys are regexes matched against "(.*\.)?(key)", as PEFT). */
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  useRslora?: boolean;
  /** dtype of a module's tensors (default F32). */
  dtype?: (module: string) => StDtype;
  seed?: number;
  /** Typical size of B's entries (default 0.08) and A's (1/sqrt(n_in)). */
  stdB?: number;
  /** Config keys to add or override (e.g. { use_dora: true }). */
  config?: Record<string, unknown>;
  /** Edits the tensor list before it is written (drop, add or reshape entries for error tests). */
  editTensors?: (t: StTensor[]) => StTensor[];
  /** Write the safetensors header so that F32 data is not 4-byte aligned (see safetensorsBytes). */
  misalign?: boolean;
}

/** One adapted matrix: GGUF tensor name, its A [r, nIn] and B [nOut, r] (HF row order), and alpha / r. */
export interface PeftPair {
  module: string;
  tensor: string;
  r: number;
  nIn: number;
  nOut: number;
  A: Float32Array;
  B: Float32Array;
  scale: number;
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Normal(0, std) values rounded to multiples of 2^-10, |k| <= 255 (exact in f16 and bf16). */
function weights(n: number, std: number, next: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const g = Math.sqrt(-2 * Math.log(next() + 1e-12)) * Math.cos(2 * Math.PI * next());
    out[i] = Math.max(-255, Math.min(255, Math.round(g * std * 1024))) / 1024;
  }
  return out;
}

/** PEFT's pattern lookup (get_pattern_key): the first key whose "(.*\.)?(key)" matches the whole name. */
function patternValue(dict: Record<string, number> | undefined, module: string, dflt: number): number {
  for (const [k, v] of Object.entries(dict ?? {})) if (new RegExp(`^(.*\\.)?(${k})$`).test(module)) return v;
  return dflt;
}

/** Writes a PEFT folder for the base at basePath into dir; returns the pairs it holds. */
export async function writePeft(basePath: string, dir: string, spec: PeftSpec): Promise<PeftPair[]> {
  const g = await readGguf(basePath, { maxArrayLength: 0 });
  const shape = new Map(g.tensors.map((t) => [t.name, t.shape]));
  const nLayer = Number(g.metadata[`${g.metadata["general.architecture"]}.block_count`]);
  const next = rng(spec.seed ?? 1);
  const pairs: PeftPair[] = [];
  const tensors: StTensor[] = [];
  const add = (module: string, tensor: string) => {
    const s = shape.get(tensor);
    if (!s) throw new Error(`base has no ${tensor}`);
    const [nIn, nOut] = s;
    const r = patternValue(spec.rankPattern, module, spec.r);
    const alpha = patternValue(spec.alphaPattern, module, spec.alpha);
    const A = weights(r * nIn, 1 / Math.sqrt(nIn), next);
    const B = weights(nOut * r, spec.stdB ?? 0.08, next);
    const dtype = spec.dtype?.(module) ?? "F32";
    const pre = `base_model.model.${module}`;
    tensors.push({ name: `${pre}.lora_A.weight`, dtype, shape: [r, nIn], data: encode(A, dtype) });
    tensors.push({ name: `${pre}.lora_B.weight`, dtype, shape: [nOut, r], data: encode(B, dtype) });
    pairs.push({ module, tensor, r, nIn, nOut, A, B, scale: alpha / (spec.useRslora ? Math.sqrt(r) : r) });
  };
  for (let il = 0; il < nLayer; il++)
    for (const m of spec.modules)
      if (m !== "lm_head") {
        const [hf, kind] = HF_LAYER_MODULES[m];
        add(`model.layers.${il}.${hf}`, `blk.${il}.${kind}.weight`);
      }
  if (spec.modules.includes("lm_head")) add("lm_head", "output.weight");
  const config = {
    alpha_pattern: spec.alphaPattern ?? {},
    auto_mapping: null,
    base_model_name_or_path: "llmserve-synth",
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: spec.alpha,
    lora_bias: false,
    lora_dropout: 0.05,
    megatron_config: null,
    megatron_core: "megatron.core",
    modules_to_save: null,
    peft_type: "LORA",
    r: spec.r,
    rank_pattern: spec.rankPattern ?? {},
    revision: null,
    target_modules: spec.modules,
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: spec.useRslora ?? false,
    ...spec.config,
  };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "adapter_config.json"), JSON.stringify(config, null, 2));
  writeFileSync(
    join(dir, "adapter_model.safetensors"),
    safetensorsBytes(spec.editTensors?.(tensors) ?? tensors, undefined, spec.misalign),
  );
  return pairs;
}

/**
 * Writes base + userScale · scale · B·A for every pair to outPath (f32 base matrices only), B's rows
 * of attn_q / attn_k permuted as convert_hf_to_gguf.py's LlamaModel.permute when `permuteQK`.
 */
export async function writeMerged(
  basePath: string,
  outPath: string,
  pairs: PeftPair[],
  opts: { userScale: number; permuteQK: boolean; nHead: number; nHeadKv: number },
): Promise<void> {
  const g = await readGguf(basePath, { maxArrayLength: 0 });
  copyFileSync(basePath, outPath);
  const fd = openSync(outPath, "r+");
  try {
    for (const p of pairs) {
      const t = g.tensors.find((x) => x.name === p.tensor);
      if (t?.type !== "f32") throw new Error(`${p.tensor}: expected an f32 base tensor`);
      const buf = Buffer.alloc(t.nbytes);
      readSync(fd, buf, 0, t.nbytes, g.dataOffset + t.offset);
      const W = new Float32Array(buf.buffer, buf.byteOffset, t.nbytes / 4);
      const kind = p.tensor.split(".").at(-2);
      const heads = kind === "attn_q" ? opts.nHead : kind === "attn_k" ? opts.nHeadKv : 0;
      const hd = heads ? p.nOut / heads : 0;
      // GGUF row o comes from HF row src(o): head h, pair i, half j (LlamaModel.permute).
      const src = (o: number) =>
        opts.permuteQK && heads ? Math.floor(o / hd) * hd + (o % 2) * (hd / 2) + Math.floor((o % hd) / 2) : o;
      const s = opts.userScale * p.scale;
      for (let o = 0; o < p.nOut; o++) {
        const b = src(o) * p.r;
        for (let i = 0; i < p.nIn; i++) {
          let d = 0;
          for (let k = 0; k < p.r; k++) d += p.B[b + k] * p.A[k * p.nIn + i];
          W[o * p.nIn + i] = W[o * p.nIn + i] + s * d;
        }
      }
      writeSync(fd, buf, 0, t.nbytes, g.dataOffset + t.offset);
    }
  } finally {
    closeSync(fd);
  }
}
