import { describe, expect, it, beforeAll } from "vitest";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Model } from "../../lib/index.js";
import { fixture, haveFixtures, repoRoot, tmpRoot } from "../helpers.js";
import { writePeft } from "../peftFiles.js";

const cli = join(repoRoot, "dist", "cli.js");

function run(args: string[]) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe.runIf(existsSync(cli))("llmserve CLI", () => {
  const model = join(tmpRoot, `cli-${process.pid}.gguf`);
  beforeAll(() => {
    const r = run([
      "synth",
      "--dim",
      "64",
      "--layers",
      "2",
      "--heads",
      "4",
      "--kv-heads",
      "2",
      "--ffn",
      "128",
      "--vocab-size",
      "400",
      "--type",
      "q8_0",
      "-o",
      model,
    ]);
    expect(r.code, r.stderr).toBe(0);
  });

  it("synth writes a model that info describes", () => {
    const r = run(["info", "-m", model, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.architecture).toBe("llama");
    expect(info.embeddingLength).toBe(64);
    expect(info.blockCount).toBe(2);
    expect(info.vocabSize).toBe(400);
    expect(info.tensorTypes.q8_0).toBeGreaterThan(0);
    expect(info.decodeReadBytes).toBeGreaterThan(0);
    expect(info.decodeReadBytes).toBeLessThan(info.fileSize);
    expect(info.readBandwidthGBs).toBeUndefined();
    // --bandwidth measures the machine; the ceiling is that bandwidth over the bytes a step reads
    // (here with the KV cache of 100 tokens: 2 layers, K and V, f16).
    const b = run(["info", "-m", model, "--json", "--bandwidth", "--context", "100", "-t", "1"]);
    expect(b.code, b.stderr).toBe(0);
    const bw = JSON.parse(b.stdout);
    expect(bw.decodeReadBytes).toBeGreaterThan(info.decodeReadBytes);
    expect(bw.readBandwidthGBs).toBeGreaterThan(0);
    expect(bw.decodeCeiling / ((bw.readBandwidthGBs * 1e9) / bw.decodeReadBytes)).toBeCloseTo(1, 2);
  });

  it("generate --json prints exactly one JSON object", () => {
    const r = run(["generate", "-m", model, "--tokens", "[1,300,301]", "-n", "8", "--temp", "0", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines.length).toBe(1);
    const out = JSON.parse(lines[0]);
    expect(out.promptTokens).toEqual([1, 300, 301]);
    expect(out.tokens.length).toBeLessThanOrEqual(8);
    expect(["length", "eos"]).toContain(out.finishReason);
    expect(typeof out.text).toBe("string");
    expect(out.timings.generatedTokens).toBe(out.tokens.length);
    // Greedy is reproducible across processes.
    const again = JSON.parse(
      run(["generate", "-m", model, "--tokens", "[1,300,301]", "-n", "8", "--temp", "0", "--json"]).stdout,
    );
    expect(again.tokens).toEqual(out.tokens);
  });

  it("synth-lora writes an adapter that generate --adapter uses; --adapter-scale 0 is the base model", async () => {
    const adapter = join(tmpRoot, `cli-lora-${process.pid}.gguf`);
    const w = run([
      "synth-lora",
      "--model",
      model,
      "--rank",
      "8",
      "--targets",
      "q,k,v,o,gate,up,down",
      "--seed",
      "1",
      "-o",
      adapter,
    ]);
    expect(w.code, w.stderr).toBe(0);
    const info = JSON.parse(run(["info", "-m", adapter, "--json"]).stdout);
    expect(info.name).toBe("synth-lora");
    expect(info.tensorCount).toBe(2 * 7 * 2); // a and b of 7 projections in each of 2 layers
    const gen = (extra: string[]) => {
      const r = run([
        "generate",
        "-m",
        model,
        "--tokens",
        "[1,300,301]",
        "-n",
        "12",
        "--temp",
        "0",
        "--json",
        ...extra,
      ]);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout).tokens as number[];
    };
    const base = gen([]);
    const withAdapter = gen(["--adapter", adapter]);
    expect(withAdapter).not.toEqual(base);
    expect(gen(["--adapter", adapter, "--adapter-scale", "1"])).toEqual(withAdapter);
    expect(gen(["--adapter", adapter, "--adapter-scale", "0"])).toEqual(base);
    // The library with the same adapter and scale gives the same tokens and text.
    const lib = await Model.load(model, { threads: 1 });
    try {
      await lib.loadAdapter("x", adapter, { scale: 0.5 });
      const r = run([
        "generate",
        "-m",
        model,
        "-t",
        "1",
        "--tokens",
        "[1,300,301]",
        "-n",
        "12",
        "--temp",
        "0",
        "--json",
        "--adapter",
        adapter,
        "--adapter-scale",
        "0.5",
      ]);
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      const mine = await lib.complete({ tokens: [1, 300, 301] }, { maxTokens: 12, temperature: 0, adapter: "x" });
      expect(out.tokens).toEqual(mine.tokens);
      expect(out.text).toBe(mine.text);
      expect(out.tokens).not.toEqual(withAdapter);
    } finally {
      await lib.dispose();
    }
    const bad = run(["synth-lora", "--model", model, "--targets", "q,nope", "-o", adapter]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain("targets[1]");
  });

  it("generate --adapter takes a PEFT folder (or its .safetensors); a refused PEFT option exits 1 saying why", async () => {
    const dir = join(tmpRoot, `cli-peft-${process.pid}`);
    await writePeft(model, dir, { r: 4, alpha: 8, modules: ["q_proj", "v_proj", "down_proj"], seed: 4, stdB: 0.15 });
    const gen = (extra: string[]) =>
      run(["generate", "-m", model, "--tokens", "[1,300,301]", "-n", "12", "--temp", "0", "--json", ...extra]);
    const tokens = (extra: string[]) => {
      const r = gen(extra);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout).tokens as number[];
    };
    const withPeft = tokens(["--adapter", dir]);
    expect(withPeft).not.toEqual(tokens([]));
    expect(tokens(["--adapter", join(dir, "adapter_model.safetensors")])).toEqual(withPeft);
    const config = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8"));
    writeFileSync(join(dir, "adapter_config.json"), JSON.stringify({ ...config, use_dora: true }));
    const bad = gen(["--adapter", dir]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("DoRA (use_dora) is not supported");
  });

  it("generate with a text prompt and seed is reproducible", () => {
    const a = JSON.parse(
      run(["generate", "-m", model, "-p", "Once upon a time", "-n", "10", "--seed", "3", "--json"]).stdout,
    );
    const b = JSON.parse(
      run(["generate", "-m", model, "-p", "Once upon a time", "-n", "10", "--seed", "3", "--json"]).stdout,
    );
    expect(a.tokens).toEqual(b.tokens);
    expect(a.promptTokens[0]).toBe(1); // BOS
  });

  it("tokenize prints a JSON array; --no-bos drops BOS", () => {
    const a = JSON.parse(run(["tokenize", "-m", model, "-p", "Hello world"]).stdout);
    const b = JSON.parse(run(["tokenize", "-m", model, "-p", "Hello world", "--no-bos"]).stdout);
    expect(a[0]).toBe(1);
    expect(a.slice(1)).toEqual(b);
  });

  it.runIf(haveFixtures)("tokenize works on a vocab-only GGUF file", () => {
    const r = run(["tokenize", "-m", fixture("vocab", "ggml-vocab-llama-spm.gguf"), "-p", "Hello world", "--no-bos"]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([15043, 3186]);
  });

  it("user errors print one clear line with the code, no stack trace, exit 1", () => {
    const r = run(["generate", "-m", join(tmpRoot, "missing.gguf"), "-p", "hi"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not found/);
    expect(r.stderr).toMatch(/ERR_FILE_NOT_FOUND/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const bad = run(["generate", "-m", model, "--tokens", "not json"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/JSON array/);
    const neg = run(["generate", "-m", model, "-p", "x", "-n", "-3"]);
    expect(neg.code).toBe(1);
    expect(neg.stderr).toMatch(/maxTokens/);
    const type = run(["synth", "--type", "iq2_xxs", "-o", join(tmpRoot, "x.gguf")]); // a ggml type llmserve does not run
    expect(type.code).toBe(1);
  });

  it("synth --arch qwen3 / Llama 3 RoPE options; info says whether llmserve runs a file and refuses others", () => {
    const q3 = join(tmpRoot, `cli-qwen3-${process.pid}.gguf`);
    const small = [
      "--dim",
      "64",
      "--layers",
      "1",
      "--heads",
      "4",
      "--kv-heads",
      "2",
      "--ffn",
      "64",
      "--vocab-size",
      "300",
    ];
    const w = run(["synth", "--arch", "qwen3", ...small, "--head-dim", "32", "-o", q3]);
    expect(w.code, w.stderr).toBe(0);
    const r = run(["info", "-m", q3, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ architecture: "qwen3", headDim: 32, supported: true });

    const l3 = join(tmpRoot, `cli-llama3-${process.pid}.gguf`);
    const args = ["synth", ...small, "--rope-freqs", "--rope-scaling", "linear", "--rope-scale", "2", "-o", l3];
    expect(run(args).code).toBe(0);
    const i3 = JSON.parse(run(["info", "-m", l3, "--json"]).stdout);
    expect(i3).toMatchObject({ ropeFreqs: true, ropeScaling: "linear", ropeScalingFactor: 2, supported: true });

    const g2 = join(tmpRoot, `cli-gemma2-${process.pid}.gguf`);
    expect(run(["synth", "--arch", "gemma2", ...small, "--sliding-window", "8", "-o", g2]).code).toBe(0);
    const ig = JSON.parse(run(["info", "-m", g2, "--json"]).stdout);
    expect(ig).toMatchObject({ architecture: "gemma2", slidingWindow: 8, supported: true });
    // Mixture of experts: qwen3moe (8 experts, 2 used by default) and Mixtral-style llama.
    const qm = join(tmpRoot, `cli-qwen3moe-${process.pid}.gguf`);
    expect(run(["synth", "--arch", "qwen3moe", ...small, "-o", qm]).code).toBe(0);
    expect(JSON.parse(run(["info", "-m", qm, "--json"]).stdout)).toMatchObject({
      architecture: "qwen3moe",
      expertCount: 8,
      expertUsedCount: 2,
      expertFeedForwardLength: 64,
      supported: true,
    });
    const mx = join(tmpRoot, `cli-mixtral-${process.pid}.gguf`);
    expect(run(["synth", ...small, "--experts", "4", "--experts-used", "1", "-o", mx]).code).toBe(0);
    const im = JSON.parse(run(["info", "-m", mx, "--json"]).stdout);
    expect(im).toMatchObject({ architecture: "llama", expertCount: 4, expertUsedCount: 1, supported: true });
    // quantize follows llama.cpp's recipe for dense models only.
    const qz = run(["quantize", mx, join(tmpRoot, "mx-q8.gguf"), "--type", "q8_0"]);
    expect(qz.code).toBe(1);
    expect(qz.stderr).toMatch(/ERR_UNSUPPORTED_ARCH/);
    expect(qz.stderr).toContain("mixture-of-experts");
    const badMoe = run(["synth", "--arch", "qwen2", ...small, "--experts", "4", "-o", join(tmpRoot, "x.gguf")]);
    expect(badMoe.code).toBe(1);
    expect(badMoe.stderr).toContain("experts");
    const p3 = join(tmpRoot, `cli-phi3-${process.pid}.gguf`);
    expect(run(["synth", "--arch", "phi3", ...small, "--long-rope", "-o", p3]).code).toBe(0);
    expect(JSON.parse(run(["info", "-m", p3, "--json"]).stdout)).toMatchObject({ longRope: true, supported: true });

    // rope_freqs.weight is a llama tensor (llama.cpp's qwen graphs take no factors).
    const bad = run(["synth", "--arch", "qwen3", ...small, "--rope-freqs", "-o", join(tmpRoot, "x.gguf")]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("rope_freqs");

    // Another architecture (same-length name patched in): described, then refused with exit code 1.
    const buf = readFileSync(q3);
    const at = buf.indexOf("general.architecture");
    const name = buf.indexOf("qwen3", at);
    expect(at >= 0 && name > at).toBe(true);
    buf.write("gemma", name, "latin1");
    const gemma = join(tmpRoot, `cli-gemma-${process.pid}.gguf`);
    writeFileSync(gemma, buf);
    const g = run(["info", "-m", gemma, "--json"]);
    expect(g.code).toBe(1);
    const gi = JSON.parse(g.stdout);
    expect(gi.architecture).toBe("gemma");
    expect(gi.supported).toBe(false);
    expect(gi.unsupportedReason.code).toBe("ERR_UNSUPPORTED_ARCH");
    expect(gi.unsupportedReason.message).toContain(
      "architecture 'gemma' is not supported; supported: llama, qwen2, qwen3",
    );
    expect(g.stderr).toContain("llmserve cannot run this model");
    const text = run(["info", "-m", gemma]);
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(/supported\s+false/);
    expect(text.stdout).toContain("tensors:");
  });

  it("every command has --help", () => {
    for (const c of ["generate", "tokenize", "synth", "info", "demo"]) {
      const r = run([c, "--help"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/Usage: llmserve/);
    }
  });

  it("a model written by synth is deterministic in its seed", () => {
    const a = join(tmpRoot, `det-a-${process.pid}.gguf`);
    const b = join(tmpRoot, `det-b-${process.pid}.gguf`);
    for (const o of [a, b])
      run([
        "synth",
        "--dim",
        "64",
        "--layers",
        "1",
        "--heads",
        "2",
        "--kv-heads",
        "1",
        "--ffn",
        "64",
        "--vocab-size",
        "300",
        "--seed",
        "5",
        "-o",
        o,
      ]);
    expect(readFileSync(a).equals(readFileSync(b))).toBe(true);
  });
});
