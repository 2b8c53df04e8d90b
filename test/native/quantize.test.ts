/**
 * quantize(): the library API over native/core/compress. The recipe and bytes against llama.cpp
 * itself are native/tests/test_quantize.cpp's job; here: what a user sees (types per tensor, file
 * type, metadata and tokenizer kept, the file loads and generates, progress, the event loop stays
 * free) and every refusal with its typed error (nothing left on disk).
 */
import { linkSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import {
  LlmserveError,
  Model,
  QUANTIZE_TYPES,
  quantize,
  readGguf,
  Tokenizer,
  type ProgressEvent,
} from "../../lib/index.js";
import { loadAddon } from "../../lib/binding.js";
import { resolveQuantizeOptions } from "../../lib/quantize.js";
import { maxStall, synthModel, tmpRoot } from "../helpers.js";

const out = (name: string) => join(tmpRoot, `quantize-${name}-${process.pid}.gguf`);
/** Files in tmpRoot whose name starts like `path`'s (a temp file is `path.tmp-...`). */
const leftovers = (path: string) => readdirSync(tmpRoot).filter((f) => f.startsWith(basename(path)));

async function rejects(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LlmserveError);
  expect((err as LlmserveError).code).toBe(code);
  expect((err as LlmserveError).message).toMatch(message);
}

describe("quantize", () => {
  let src: string;
  beforeAll(async () => {
    // 8 layers so use_more_bits picks layers 0, 3, 6, 7 of q4_k_m; GQA 4.
    src = await synthModel("quantize-src", {
      dim: 256,
      layers: 8,
      heads: 8,
      kvHeads: 2,
      ffn: 512,
      vocabSize: 600,
      context: 256,
      type: "f32",
      seed: 3,
    });
  });

  it("q4_k_m: llama.cpp's type per tensor, file type 15, metadata and tokenizer kept; it loads and generates", async () => {
    const path = out("q4km");
    const fractions: number[] = [];
    const events: ProgressEvent[] = [];
    const { value: r, stallMs } = await maxStall(() =>
      quantize(src, path, {
        type: "Q4_K_M",
        threads: 2,
        onProgress: (f, e) => {
          fractions.push(f);
          events.push(e);
        },
      }),
    );
    expect(stallMs).toBeLessThan(500); // the work runs on a worker thread
    expect(r.type).toBe("q4_k_m");
    expect(r.fileType).toBe(15);
    expect(r.outputBytes).toBe(statSync(path).size);
    expect(r.outputBytes).toBeLessThan(r.inputBytes / 5);
    expect(fractions.length).toBeGreaterThan(2);
    expect(fractions.every((f, i) => i === 0 || f >= fractions[i - 1])).toBe(true);
    expect(fractions.at(-1)).toBe(1);
    expect(events.at(-1)?.finished).toBe(true);
    expect(events[0].phase).toBe("quantize");

    const more = new Set([0, 3, 6, 7]);
    const want = (name: string): string => {
      if (name.endsWith("norm.weight")) return "f32";
      if (name === "output.weight") return "q6_k";
      const layer = Number(/^blk\.(\d+)\./.exec(name)?.[1]);
      if (/attn_v|ffn_down/.test(name) && more.has(layer)) return "q6_k";
      return "q4_k";
    };
    const g = await readGguf(path);
    expect(g.tensors.length).toBe(r.tensors.length);
    for (const [i, t] of g.tensors.entries()) {
      expect(t.type.toLowerCase(), t.name).toBe(want(t.name));
      expect(r.tensors[i]).toEqual({ name: t.name, from: "f32", to: want(t.name) });
    }
    const s = await readGguf(src);
    const { "general.file_type": ft, "general.quantization_version": qv, ...rest } = g.metadata;
    const { "general.file_type": _ft, "general.quantization_version": _qv, ...srcRest } = s.metadata;
    expect(ft).toBe(15);
    expect(qv).toBe(2);
    expect(rest).toEqual(srcRest);

    const text = "Hello world, the quantized model keeps its tokenizer.";
    const [a, b] = await Promise.all([Tokenizer.fromGguf(src), Tokenizer.fromGguf(path)]);
    expect(b.encode(text)).toEqual(a.encode(text));

    const model = await Model.load(path, { threads: 1, contextSize: 64 });
    try {
      const c = await model.complete({ tokens: [1, 5, 9] }, { maxTokens: 4, temperature: 0 });
      expect(c.tokens.length).toBe(4);
    } finally {
      await model.dispose();
    }
  });

  it("f16 and q8_0: every matrix converted, norms kept; aliases and case are accepted", async () => {
    const f16 = await quantize(src, out("f16"), { type: "f16", threads: 1 });
    expect(f16.fileType).toBe(1);
    for (const t of f16.tensors) expect(t.to).toBe(t.name.endsWith("norm.weight") ? "f32" : "f16");
    const q8 = await quantize(src, out("q8"), { type: "q8_0" });
    expect(q8.fileType).toBe(7);
    expect(q8.tensors.find((t) => t.name === "output.weight")?.to).toBe("q8_0");
    const k = await quantize(src, out("q4k"), { type: "q4_k" });
    expect(k.type).toBe("q4_k_m");
  });

  it("re-quantizing an already quantized model works and says it loses quality", async () => {
    const r = await quantize(out("q8"), out("requant"), { type: "q4_0" });
    expect(r.notes.join("\n")).toMatch(/already quantized \(q8_0\); re-quantizing loses quality/);
    expect(r.tensors.find((t) => t.name === "blk.0.attn_q.weight")).toEqual({
      name: "blk.0.attn_q.weight",
      from: "q8_0",
      to: "q4_0",
    });
  });

  it("an importance matrix (llama.cpp's .dat) changes the bytes, is recorded as llama-quantize does; a bad one is ERR_BAD_IMATRIX", async () => {
    // One entry per blk matrix (mean squared input per column); none for output / token_embd.
    const g = await readGguf(src);
    const entries = g.tensors.filter((t) => t.name.startsWith("blk.") && t.shape.length >= 2 && t.shape[1] > 1);
    const dat = (values: (t: (typeof entries)[number], j: number) => number) => {
      const parts: Buffer[] = [];
      const i32 = (v: number) => {
        const b = Buffer.alloc(4);
        b.writeInt32LE(v);
        parts.push(b);
      };
      i32(entries.length);
      for (const t of entries) {
        i32(Buffer.byteLength(t.name));
        parts.push(Buffer.from(t.name));
        i32(1);
        i32(t.shape[0]);
        parts.push(Buffer.from(Float32Array.from({ length: t.shape[0] }, (_, j) => values(t, j)).buffer));
      }
      return Buffer.concat(parts);
    };
    const imatrix = join(tmpRoot, `quantize-imatrix-${process.pid}.dat`);
    writeFileSync(
      imatrix,
      dat((_t, j) => 1 + ((j * 7919) % 13)),
    );
    const plain = await quantize(src, out("plain-q4_0"), { type: "q4_0" });
    const r = await quantize(src, out("imatrix-q4_0"), { type: "q4_0", imatrix });
    // llama.cpp's has-imatrix rule: ffn_down of the first n_layer/8 layers gets q4_1.
    expect(r.tensors.find((t) => t.name === "blk.0.ffn_down.weight")?.to).toBe("q4_1");
    expect(plain.tensors.find((t) => t.name === "blk.0.ffn_down.weight")?.to).toBe("q4_0");
    expect(r.notes.join("\n")).toMatch(
      /2 tensors have no importance-matrix entry .*: token_embd\.weight, output\.weight/,
    );
    expect(readFileSync(out("imatrix-q4_0")).equals(readFileSync(out("plain-q4_0")))).toBe(false);
    const m = (await readGguf(out("imatrix-q4_0"))).metadata;
    expect(m["quantize.imatrix.file"]).toBe(imatrix);
    expect(m["quantize.imatrix.entries_count"]).toBe(entries.length);
    // Hostile or mismatched files: typed errors naming the problem, nothing written.
    const bad = join(tmpRoot, `quantize-bad-imatrix-${process.pid}.dat`);
    for (const [bytes, message] of [
      [dat(() => Number.NaN), /non-finite value/],
      [dat(() => 1).subarray(0, 100), /truncated/],
      [Buffer.from([0xff, 0xff, 0xff, 0x7f]), /over the cap/],
    ] as const) {
      writeFileSync(bad, bytes);
      await rejects(quantize(src, out("bad-imatrix"), { type: "q4_k_m", imatrix: bad }), "ERR_BAD_IMATRIX", message);
    }
    expect(leftovers(out("bad-imatrix"))).toEqual([]);
  });

  it("llama-quantize's overrides: pure, output / token-embedding types, tensor-type rules; bad ones are typed errors", async () => {
    const pure = await quantize(src, out("pure"), { type: "q4_k_m", pure: true });
    for (const t of pure.tensors) expect(t.to, t.name).toBe(t.name.endsWith("norm.weight") ? "f32" : "q4_k");
    const r = await quantize(src, out("overrides"), {
      type: "q4_k_m",
      outputTensorType: "Q8_0",
      tokenEmbeddingType: "q6_K",
      tensorTypes: ["ATTN_V=q8_0", "blk\\.7\\.ffn_down=iq4_xs"],
    });
    const to = (name: string) => r.tensors.find((t) => t.name === name)?.to;
    expect([to("output.weight"), to("token_embd.weight"), to("blk.2.attn_v.weight")]).toEqual(["q8_0", "q6_k", "q8_0"]);
    expect([to("blk.7.ffn_down.weight"), to("blk.6.ffn_down.weight"), to("blk.1.ffn_up.weight")]).toEqual([
      "iq4_xs",
      "q6_k",
      "q4_k",
    ]);
    for (const [opts, message] of [
      [{ tensorTypes: ["attn_v(=q8_0"] }, /not a valid regular expression/],
      [{ tensorTypes: ["attn_v=q7_k"] }, /unknown tensor type 'q7_k'.*expected one of f32, f16/],
      [{ tensorTypes: ["attn_v"] }, /PATTERN=TYPE/],
      [{ tensorTypes: "attn_v=q8_0" }, /array/],
      [{ outputTensorType: "q3_k_m" }, /unknown tensor type/],
      [{ pure: "yes" }, /pure/],
    ] as const) {
      await rejects(
        quantize(src, out("bad-override"), { type: "q4_k_m", ...(opts as object) }),
        "ERR_INVALID_ARGUMENT",
        message,
      );
    }
    expect(leftovers(out("bad-override"))).toEqual([]);
  });

  it("refuses to overwrite its input (same path or same inode), leaving it unchanged", async () => {
    const before = readFileSync(src);
    const hard = out("hardlink");
    linkSync(src, hard);
    for (const target of [src, hard])
      await rejects(quantize(src, target, { type: "q8_0" }), "ERR_INVALID_ARGUMENT", /refusing to overwrite the input/);
    expect(readFileSync(src).equals(before)).toBe(true);
  });

  it("typed errors: unknown type (lists the valid ones), imatrix, missing file, not GGUF, truncated", async () => {
    const err = (await quantize(src, out("x"), { type: "q7_k" as never }).then(
      () => undefined,
      (e: unknown) => e,
    )) as LlmserveError;
    expect(err).toBeInstanceOf(LlmserveError);
    expect(err.code).toBe("ERR_INVALID_ARGUMENT");
    for (const t of QUANTIZE_TYPES) expect(err.message).toContain(`"${t}"`);
    await rejects(
      quantize(src, out("x"), { type: "q4_k_m", imatrix: join(tmpRoot, "no-such.dat") }),
      "ERR_FILE_NOT_FOUND",
      /importance matrix file not found/,
    );
    await rejects(quantize(src, out("x"), { type: "q4_k_m", imatrix: "" }), "ERR_INVALID_ARGUMENT", /imatrix/);
    await rejects(quantize(src, out("x"), { type: "q8_0", threads: 0 }), "ERR_INVALID_ARGUMENT", /threads/);
    await rejects(
      quantize(join(tmpRoot, "no-such.gguf"), out("x"), { type: "q8_0" }),
      "ERR_FILE_NOT_FOUND",
      /not found/,
    );
    const junk = join(tmpRoot, `quantize-junk-${process.pid}.gguf`);
    writeFileSync(junk, "definitely not a GGUF file");
    await rejects(quantize(junk, out("x"), { type: "q8_0" }), "ERR_NOT_GGUF", /not a GGUF file/);
    const cut = join(tmpRoot, `quantize-cut-${process.pid}.gguf`);
    writeFileSync(cut, readFileSync(src).subarray(0, 4096));
    await rejects(quantize(cut, out("x"), { type: "q8_0" }), "ERR_GGUF_TRUNCATED", /./);
    expect(leftovers(out("x"))).toEqual([]);
  });

  it("one list of mixes and one message across the boundary; the addon requires every option", () => {
    const addon = loadAddon();
    expect(addon.quantizeTypes).toEqual([...QUANTIZE_TYPES]);
    let ts = "";
    try {
      resolveQuantizeOptions({ type: "q5_x" });
    } catch (e) {
      ts = (e as Error).message;
    }
    expect(ts).toMatch(/^Expected one of "q8_0", /);
    const never = out("never");
    expect(() => addon.quantize(src, never, { type: "q5_x", threads: 1 })).toThrow(ts);
    expect(() => addon.quantize(src, never, { type: "q8_0" } as never)).toThrow(TypeError);
    expect(() => addon.quantize(src, never, { threads: 1 } as never)).toThrow(TypeError);
    expect(() => addon.quantize(src, never, { type: "q8_0", threads: 0 })).toThrow(RangeError);
    expect(leftovers(never)).toEqual([]);
  });

  it("an AbortSignal cancels: ERR_CANCELLED, no output and no temp file", async () => {
    const path = out("aborted");
    const ac = new AbortController();
    await rejects(
      quantize(src, path, {
        type: "q6_k",
        threads: 1,
        signal: ac.signal,
        onProgress: (f) => {
          if (f > 0.2) ac.abort();
        },
      }),
      "ERR_CANCELLED",
      /cancelled/,
    );
    expect(leftovers(path)).toEqual([]);
    await rejects(quantize(src, path, { type: "q8_0", signal: AbortSignal.abort() }), "ERR_CANCELLED", /aborted/);
    expect(leftovers(path)).toEqual([]);
  });
});
