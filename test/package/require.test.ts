/**
 * The package's entry points as a CommonJS user and a TypeScript user meet them (issue 16, part 6):
 * `require("llmserve")` works (the "default" export condition; Node >= 20.19 loads the ES module
 * through require(esm)), and the emitted declarations keep internals out (stripInternal: members
 * tagged @internal are not in dist/*.d.ts). Runs against dist/ of this checkout (npm run build).
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot, tmpRoot } from "../helpers.js";

const dist = join(repoRoot, "dist");

/** A scratch project with this checkout installed as node_modules/llmserve. */
function project(name: string): string {
  const dir = join(tmpRoot, `${name}-${process.pid}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, "node_modules"), { recursive: true });
  symlinkSync(repoRoot, join(dir, "node_modules", "llmserve"), "dir");
  return dir;
}

// A TypeScript user's code: the union on done narrows, embed is typed, and the declarations
// compile with skipLibCheck off (a stripped internal that a public type still named would fail).
const CONSUMER = `import { Model, createServer, type Chunk, type FinishReason } from "llmserve";
export async function f(m: Model): Promise<FinishReason | number> {
  createServer(m);
  for await (const c of m.generate("x")) {
    const k: Chunk = c;
    if (k.done) return k.finishReason;
    // @ts-expect-error: only the final chunk carries a finish reason
    k.finishReason satisfies FinishReason;
  }
  const [v]: Float32Array[] = await m.embed(["a"], { pooling: "mean" });
  return v.length;
}
`;

describe("package entry points", () => {
  it("require('llmserve') returns the same API as import", () => {
    expect(existsSync(join(dist, "index.js")), "run `npm run build` first").toBe(true);
    const dir = project("require");
    const script =
      "const m = require('llmserve');" +
      "console.log(JSON.stringify({ model: typeof m.Model, err: typeof m.LlmserveError, server: typeof m.createServer, codes: m.ERROR_CODES.length }));";
    const r = spawnSync(process.execPath, ["-e", script], { cwd: dir, encoding: "utf8", timeout: 60_000 });
    rmSync(dir, { recursive: true, force: true });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "")).toEqual({
      model: "function",
      err: "function",
      server: "function",
      codes: expect.any(Number),
    });
  });

  it("keeps @internal members out of the emitted declarations", () => {
    const model = readFileSync(join(dist, "model.d.ts"), "utf8");
    expect(model).toContain("embed(");
    for (const internal of ["promptTokensAsync(", "startSubmitted(", "get nativeModel()"])
      expect(model).not.toContain(internal);
    const embed = readFileSync(join(dist, "embed.d.ts"), "utf8");
    expect(embed).toContain("EmbedOptions");
    expect(embed).not.toContain("embedTokens");
    for (const f of readdirSync(dist).filter((f) => f.endsWith(".d.ts")))
      expect(readFileSync(join(dist, f), "utf8"), f).not.toContain("@internal");
  });

  it("declarations type-check a user's code with skipLibCheck off", () => {
    const dir = project("consumer");
    writeFileSync(join(dir, "c.ts"), CONSUMER);
    const compilerOptions = {
      module: "NodeNext",
      moduleResolution: "NodeNext",
      target: "ES2022",
      strict: true,
      noEmit: true,
      skipLibCheck: false,
      types: ["node"],
      typeRoots: [join(repoRoot, "node_modules", "@types")],
      lib: ["ES2023", "ESNext.Disposable"],
    };
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({ compilerOptions, files: ["c.ts"] }));
    const tsc = join(repoRoot, "node_modules", "typescript", "bin", "tsc");
    const r = spawnSync(process.execPath, [tsc, "-p", dir], { encoding: "utf8", timeout: 120_000 });
    rmSync(dir, { recursive: true, force: true });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  }, 150_000);
});
