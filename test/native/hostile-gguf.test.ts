/**
 * Hostile GGUF files (issue 9): each is written to a temp dir at test time by the small byte writer
 * below, and must fail with a caught, typed error naming the key — never kill the process, never
 * cost unbounded time or memory, never load and then misbehave.
 */
import {
  closeSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadAddon } from "../../lib/binding.js";
import { GGUF_DEFAULTS } from "../../lib/defaults.js";
import { LlmserveError } from "../../lib/errors.js";
import { readGguf } from "../../lib/gguf.js";
import { Model } from "../../lib/model.js";
import { Tokenizer } from "../../lib/tokenizer/index.js";
import { synthModel } from "../helpers.js";

// ---------- a minimal GGUF byte writer ----------

const T = {
  U8: 0,
  I8: 1,
  U16: 2,
  I16: 3,
  U32: 4,
  I32: 5,
  F32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  U64: 10,
  I64: 11,
  F64: 12,
} as const;

class Bytes {
  private parts: Buffer[] = [];
  length = 0;
  raw(b: Buffer): this {
    this.parts.push(b);
    this.length += b.length;
    return this;
  }
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return this.raw(b);
  }
  i32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    return this.raw(b);
  }
  u64(v: number | bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    return this.raw(b);
  }
  f32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    return this.raw(b);
  }
  str(s: string): this {
    const b = Buffer.from(s, "utf8");
    return this.u64(b.length).raw(b);
  }
  key(k: string, type: number): this {
    return this.str(k).u32(type);
  }
  done(): Buffer {
    return Buffer.concat(this.parts);
  }
}

const header = (nTensors: number | bigint, nKv: number | bigint) =>
  new Bytes().u32(0x46554747).u32(3).u64(nTensors).u64(nKv);

/** One encoded metadata value (type + payload), for {@link rewrite}. */
const val = {
  u32: (v: number) => new Bytes().u32(T.U32).u32(v).done(),
  f32: (v: number) => new Bytes().u32(T.F32).f32(v).done(),
  str: (s: string) => new Bytes().u32(T.STRING).str(s).done(),
};

/** Byte length of the value of type `type` at `off` (GGUF v3 encoding). */
function valueSize(b: Buffer, off: number, type: number): number {
  const scalar = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8][type];
  if (type === T.STRING) return 8 + Number(b.readBigUInt64LE(off));
  if (type !== T.ARRAY) return scalar;
  const et = b.readUInt32LE(off);
  const n = Number(b.readBigUInt64LE(off + 4));
  let p = off + 12;
  if (et !== T.STRING && et !== T.ARRAY) return 12 + n * [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8][et];
  for (let k = 0; k < n; k++) p += valueSize(b, p, et);
  return p - off;
}

/**
 * Copies a GGUF file with metadata replaced/added (`set`: key -> encoded value) or dropped, keeping
 * the tensor table and data byte for byte.
 */
function rewrite(src: string, dst: string, set: Record<string, Buffer>, drop: string[] = []): string {
  const b = readFileSync(src);
  const nTensors = Number(b.readBigUInt64LE(8));
  const nKv = Number(b.readBigUInt64LE(16));
  let p = 24;
  const kvs: [string, Buffer][] = [];
  let alignment = 32;
  for (let k = 0; k < nKv; k++) {
    const klen = Number(b.readBigUInt64LE(p));
    const key = b.toString("utf8", p + 8, p + 8 + klen);
    const type = b.readUInt32LE(p + 8 + klen);
    const vstart = p + 12 + klen;
    const end = vstart + valueSize(b, vstart, type);
    if (key === "general.alignment") alignment = b.readUInt32LE(vstart);
    kvs.push([key, b.subarray(p + 8 + klen, end)]);
    p = end;
  }
  const tStart = p;
  for (let k = 0; k < nTensors; k++) {
    const nlen = Number(b.readBigUInt64LE(p));
    const nd = b.readUInt32LE(p + 8 + nlen);
    p += 8 + nlen + 4 + 8 * nd + 4 + 8;
  }
  const tInfos = b.subarray(tStart, p);
  const dataOffset = Math.ceil(p / alignment) * alignment;
  const out = [
    ...kvs.filter(([k]) => !drop.includes(k) && !(k in set)).map(([k, v]) => [k, v] as [string, Buffer]),
    ...Object.entries(set),
  ];
  const w = header(nTensors, out.length);
  for (const [k, v] of out) w.str(k).raw(v);
  w.raw(tInfos);
  w.raw(Buffer.alloc((alignment - (w.length % alignment)) % alignment));
  w.raw(b.subarray(dataOffset));
  writeFileSync(dst, w.done());
  return dst;
}

// ---------- tests ----------

let dir: string;
let base: string;
beforeAll(async () => {
  dir = mkdtempSync(join(process.env.TMPDIR ?? "/tmp", "llmserve-hostile-"));
  base = await synthModel("hostile-base", {
    dim: 64,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    ffn: 96,
    vocabSize: 320,
    type: "f32",
    context: 256,
  });
}, 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function caught(p: Promise<unknown>): Promise<LlmserveError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(LlmserveError);
    return err as LlmserveError;
  }
  throw new Error("expected a rejection");
}

describe("hostile GGUF files", () => {
  describe("a string longer than V8's maximum string length (sparse file)", () => {
    let file: string;
    const len = 2 ** 29; // > 2^29 - 24, V8's limit
    beforeAll(() => {
      file = join(dir, "giant-string.gguf");
      const h = header(0, 2)
        .key("general.architecture", T.STRING)
        .str("llama")
        .key("tokenizer.chat_template", T.STRING)
        .u64(len)
        .done();
      const fd = openSync(file, "w");
      writeSync(fd, h);
      ftruncateSync(fd, h.length + len); // a hole: nothing of the 512 MiB is written
      closeSync(fd);
    });

    it("readGguf rejects it with a caught ERR_GGUF_LIMIT naming the key and the limit", async () => {
      const e = await caught(readGguf(file));
      expect(e.code).toBe("ERR_GGUF_LIMIT");
      expect(e.message).toContain("'tokenizer.chat_template'");
      expect(e.message).toContain(String(64 * 1024 * 1024));
    });

    it("Model.load rejects it with ERR_GGUF_LIMIT", async () => {
      const e = await caught(Model.load(file, { threads: 1 }));
      expect(e.code).toBe("ERR_GGUF_LIMIT");
      expect(e.message).toContain("'tokenizer.chat_template'");
    });

    it("with the cap raised, the JS conversion failure is a rejected promise, and the process survives", async () => {
      const e = await caught(readGguf(file, { maxStringBytes: 2 ** 30, maxMetadataBytes: 2 ** 31 }));
      expect(e.code).toBe("ERR_GGUF_LIMIT");
      expect(e.message).toContain("'tokenizer.chat_template'");
      expect(e.message).toContain("JavaScript value");
      // still alive and working
      const ok = await readGguf(base, { keyPrefix: "general." });
      expect(ok.metadata["general.architecture"]).toBe("llama");
    });
  });

  describe("millions of nested arrays", () => {
    let file: string;
    beforeAll(() => {
      const n = 2_000_000; // 24 MB of empty nested arrays under one key
      const h = header(0, 2)
        .key("general.architecture", T.STRING)
        .str("llama")
        .key("x.nested", T.ARRAY)
        .u32(T.ARRAY)
        .u64(n)
        .done();
      const body = Buffer.alloc(n * 12);
      for (let k = 0; k < n; k++) body.writeUInt32LE(T.I32, k * 12); // element type i32, length 0
      file = join(dir, "nested.gguf");
      writeFileSync(file, Buffer.concat([h, body]));
    });

    it("fail fast with ERR_GGUF_LIMIT and bounded memory (readGguf and Model.load)", async () => {
      const rss0 = process.memoryUsage().rss;
      const t0 = performance.now();
      const e = await caught(readGguf(file));
      expect(e.code).toBe("ERR_GGUF_LIMIT");
      expect(e.message).toContain("'x.nested'");
      expect(e.message).toContain("65536");
      const l = await caught(Model.load(file, { threads: 1 }));
      expect(l.code).toBe("ERR_GGUF_LIMIT");
      expect(performance.now() - t0).toBeLessThan(3000);
      expect(process.memoryUsage().rss - rss0).toBeLessThan(256 * 1024 * 1024);
    });

    it("a key filter leaves other keys unconverted (the tokenizer reads only tokenizer.*)", async () => {
      const small = join(dir, "nested-small.gguf");
      const n = 50_000;
      const h = header(0, 2)
        .key("tokenizer.ggml.model", T.STRING)
        .str("llama")
        .key("x.nested", T.ARRAY)
        .u32(T.ARRAY)
        .u64(n)
        .done();
      const body = Buffer.alloc(n * 12);
      for (let k = 0; k < n; k++) body.writeUInt32LE(T.I32, k * 12);
      writeFileSync(small, Buffer.concat([h, body]));
      const g = await readGguf(small, { keyPrefix: "tokenizer." });
      expect(Object.keys(g.metadata)).toEqual(["tokenizer.ggml.model"]);
      const all = await readGguf(small);
      expect((all.metadata["x.nested"] as unknown[]).length).toBe(n);
    });
  });

  it("the JS copy of the metadata is budgeted on the worker, and a key filter keeps it small", async () => {
    const f = join(dir, "big-array.gguf");
    const n = 1 << 20; // a 1 MiB u8 array: free natively (a view into the mapping), 1 MiB as a JS copy
    writeFileSync(
      f,
      Buffer.concat([
        header(0, 2).key("tokenizer.ggml.model", T.STRING).str("llama").key("x.blob", T.ARRAY).u32(T.U8).u64(n).done(),
        Buffer.alloc(n),
      ]),
    );
    const e = await caught(readGguf(f, { maxMetadataBytes: 512 * 1024 }));
    expect(e.code).toBe("ERR_GGUF_LIMIT");
    expect(e.message).toContain("'x.blob'");
    expect(e.message).toContain("maxMetadataBytes");
    const g = await readGguf(f, { maxMetadataBytes: 512 * 1024, keyPrefix: "tokenizer." });
    expect(g.metadata["tokenizer.ggml.model"]).toBe("llama");
    expect((await readGguf(f, { maxMetadataBytes: 512 * 1024, maxArrayLength: 16 })).metadata["x.blob"]).toEqual({
      type: "array",
      elementType: "u8",
      length: n,
    });
  });

  it("huge counts in the header are ERR_GGUF_TRUNCATED with a message, never ERR_INTERNAL", async () => {
    const f = join(dir, "counts.gguf");
    writeFileSync(f, header(2n ** 40n, 2n ** 40n).done());
    const e = await caught(readGguf(f));
    expect(e.code).toBe("ERR_GGUF_TRUNCATED");
    expect(e.message).toContain("metadata entries");
    const big = join(dir, "kv-cap.gguf");
    const w = header(0, 70_000);
    for (let k = 0; k < 70_000; k++) w.key(`k${k}`, T.U8).raw(Buffer.from([1]));
    writeFileSync(big, w.done());
    const l = await caught(readGguf(big));
    expect(l.code).toBe("ERR_GGUF_LIMIT");
    expect(l.message).toContain("max_kv");
  });

  describe("files that used to load and generate garbage fail at load, naming the key", () => {
    const cases: [string, Record<string, Buffer>, string, string][] = [
      ["block_count too small", { "llama.block_count": val.u32(1) }, "ERR_BAD_SHAPE", "llama.block_count"],
      [
        "NaN YaRN factor",
        { "llama.rope.scaling.type": val.str("yarn"), "llama.rope.scaling.factor": val.f32(NaN) },
        "ERR_BAD_SHAPE",
        "llama.rope.scaling.factor",
      ],
      // (llama.cpp ignores the YaRN beta keys of a llama model, and so does llmserve; the attention
      // factor it reads for every architecture.)
      [
        "infinite rope attn_factor",
        {
          "llama.rope.scaling.type": val.str("yarn"),
          "llama.rope.scaling.factor": val.f32(4),
          "llama.rope.scaling.attn_factor": val.f32(Infinity),
        },
        "ERR_BAD_SHAPE",
        "llama.rope.scaling.attn_factor",
      ],
      [
        "absurd rope scaling factor",
        { "llama.rope.scaling.factor": val.f32(1e5) },
        "ERR_BAD_SHAPE",
        "llama.rope.scaling.factor",
      ],
      [
        "float eos_token_id",
        { "tokenizer.ggml.eos_token_id": val.f32(2) },
        "ERR_GGUF_CORRUPT",
        "tokenizer.ggml.eos_token_id",
      ],
      [
        "eos_token_id outside the vocabulary",
        { "tokenizer.ggml.eos_token_id": val.u32(5000) },
        "ERR_BAD_SHAPE",
        "tokenizer.ggml.eos_token_id",
      ],
      [
        "too many query heads per KV head",
        { "llama.attention.head_count": val.u32(256) },
        "ERR_BAD_SHAPE",
        "query heads per KV head",
      ],
    ];
    for (const [name, set, code, key] of cases) {
      it(name, async () => {
        const f = rewrite(base, join(dir, `${name.replace(/\W+/g, "_")}.gguf`), set);
        const e = await caught(Model.load(f, { threads: 1 }));
        expect(e.code).toBe(code);
        expect(e.message).toContain(key);
      });
    }

    it("the rewrite itself is sound: an unchanged copy loads", async () => {
      const f = rewrite(base, join(dir, "copy.gguf"), { "general.name": val.str("copy") });
      const m = await Model.load(f, { threads: 1 });
      expect(m.tokenizer.nVocab).toBe(320);
      await m.dispose();
    });

    it("the JS tokenizer rejects a fractional token id, naming the key", async () => {
      const f = rewrite(base, join(dir, "eos-frac.gguf"), { "tokenizer.ggml.eos_token_id": val.f32(2.5) });
      const e = await caught(Tokenizer.fromGguf(f));
      expect(e.code).toBe("ERR_TOKENIZER");
      expect(e.message).toContain("tokenizer.ggml.eos_token_id");
    });
  });

  it("a throwing onProgress rejects the load with its error instead of ending the process", async () => {
    const boom = new Error("boom from onProgress");
    await expect(
      Model.load(base, {
        threads: 1,
        onProgress: () => {
          throw boom;
        },
      }),
    ).rejects.toThrow("boom from onProgress");
    const m = await Model.load(base, { threads: 1 });
    expect(m.tokenizer.nVocab).toBe(320);
    await m.dispose();
  });

  it("a path with a NUL byte is ERR_INVALID_ARGUMENT (TS and N-API layers)", async () => {
    const nul = `${base}\0.ignored`;
    expect((await caught(Model.load(nul))).code).toBe("ERR_INVALID_ARGUMENT");
    expect((await caught(readGguf(nul))).code).toBe("ERR_INVALID_ARGUMENT");
    const addon = loadAddon();
    // Every other argument valid, so the path is what the addon refuses.
    const { maxArrayLength, maxStringBytes, maxMetadataBytes } = GGUF_DEFAULTS;
    expect(() => addon.readGguf(nul, maxArrayLength, { keyPrefixes: [], maxStringBytes, maxMetadataBytes })).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }),
    );
    expect(() => addon.loadModel(nul, { threads: 1 } as never)).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_ARGUMENT" }),
    );
  });
});
