// The npm package as users get it: `npm pack`, then install the tarball in a fresh project with
// --ignore-scripts and no compiler on PATH, and run the CLI and the library from there. The
// prebuilt addon (prebuilds/<platform>-<arch>/llmserve.node, made by `npm run build`) must load:
// nothing can be compiled. Needs the npm registry for the package's dependencies (the npm cache is
// preferred). Takes about a minute.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnSync, type SpawnSyncOptions } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { repoRoot } from "../helpers.js";

const plat = `${process.platform}-${process.arch}`;
const prebuild = join(repoRoot, "prebuilds", plat, "llmserve.node");
const distCli = join(repoRoot, "dist", "cli.js");
/** Largest tarball accepted: the stripped addon, the JS and the native sources are well under it. */
const MAX_TARBALL_BYTES = 4 * 1024 * 1024;

interface PackResult {
  filename: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
  files: { path: string; size: number }[];
}

/** The environment of the fresh project: no npm_* variables from an enclosing `npm test`. */
function cleanEnv(path: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (
      /^npm_/i.test(k) ||
      k === "INIT_CWD" ||
      k.startsWith("LLMSERVE_") ||
      k.startsWith("VITEST") ||
      k === "NODE_OPTIONS"
    )
      continue;
    env[k] = v;
  }
  env.PATH = path;
  return env;
}

function sh(cmd: string, args: string[], opts: SpawnSyncOptions & { env: NodeJS.ProcessEnv }) {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 300_000, maxBuffer: 64 << 20, ...opts });
  const out = { code: r.status, stdout: String(r.stdout ?? ""), stderr: String(r.stderr ?? ""), error: r.error };
  return {
    ...out,
    why: `${cmd} ${args.join(" ")} -> ${out.code} ${out.error?.message ?? ""}\n${out.stderr}\n${out.stdout}`.slice(
      0,
      6000,
    ),
  };
}

/** The folder holding npm-cli.js and npx-cli.js of the npm on PATH (or beside this node). */
function findNpmBinDir(): string {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), dirname(process.execPath)];
  for (const d of dirs) {
    const npm = join(d, "npm");
    if (!d || !existsSync(npm)) continue;
    const real = realpathSync(npm);
    if (existsSync(join(dirname(real), "npx-cli.js"))) return dirname(real);
  }
  const guess = join(dirname(process.execPath), "..", "lib", "node_modules", "npm", "bin");
  if (existsSync(join(guess, "npm-cli.js"))) return guess;
  throw new Error("cannot find npm's npm-cli.js");
}

describe.runIf(process.platform !== "win32")("npm package (packed tarball)", () => {
  const work = mkdtempSync(join(tmpdir(), "llmserve-pack-"));
  const project = join(work, "project");
  const bin = join(work, "bin");
  let pack: PackResult;
  let tarball: string;
  let env: NodeJS.ProcessEnv;

  beforeAll(() => {
    if (!existsSync(distCli)) throw new Error(`${distCli} is missing: run \`npm run build\` first`);
    if (!existsSync(prebuild)) {
      // Reuses build/Release/llmserve.node when it is current, else builds separately.
      const r = sh(process.execPath, [join(repoRoot, "scripts", "prebuild.mjs"), "--reuse"], {
        cwd: repoRoot,
        env: process.env,
      });
      if (r.code !== 0) throw new Error(`prebuild failed: ${r.why}`);
    }

    // A PATH with node, npm, npx and sh (npx runs bins through it) only: no g++, c++, cc, cmake, make.
    mkdirSync(bin);
    symlinkSync("/bin/sh", join(bin, "sh"));
    const npmDir = findNpmBinDir();
    symlinkSync(process.execPath, join(bin, "node"));
    symlinkSync(join(npmDir, "npm-cli.js"), join(bin, "npm"));
    symlinkSync(join(npmDir, "npx-cli.js"), join(bin, "npx"));
    env = cleanEnv(bin);

    // --ignore-scripts: `npm test` has just built dist/ and prebuilds/; prepack would rebuild dist/
    // under the feet of the test files running beside this one.
    const p = sh(join(bin, "npm"), ["pack", "--json", "--ignore-scripts", "--pack-destination", work], {
      cwd: repoRoot,
      env,
    });
    if (p.code !== 0) throw new Error(`npm pack failed: ${p.why}`);
    pack = (JSON.parse(p.stdout) as PackResult[])[0];
    tarball = join(work, pack.filename);
    console.log(
      `llmserve tarball: ${(pack.size / 1024).toFixed(0)} KiB packed, ${(pack.unpackedSize / 1024).toFixed(0)} KiB unpacked, ${pack.entryCount} files`,
    );

    mkdirSync(project);
    writeFileSync(
      join(project, "package.json"),
      JSON.stringify({ name: "llmserve-pack-check", private: true, type: "module" }),
    );
    const i = sh(
      join(bin, "npm"),
      ["install", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error", tarball],
      { cwd: project, env },
    );
    if (i.code !== 0) throw new Error(`npm install of the tarball failed: ${i.why}`);
  }, 600_000);

  afterAll(() => {
    rmSync(work, { recursive: true, force: true });
  });

  it("hides every compiler and build tool from the install", () => {
    const r = sh(
      "/bin/sh",
      [
        "-c",
        "command -v g++ || command -v c++ || command -v cc || command -v gcc || command -v clang || command -v cmake || command -v make",
      ],
      { env },
    );
    expect(r.stdout.trim()).toBe("");
    expect(r.code).not.toBe(0);
    expect(
      sh("/bin/sh", ["-c", "command -v node && command -v npm && command -v npx && command -v sh"], { env }).code,
    ).toBe(0);
  });

  it("ships dist/, the prebuilt addon, the native sources and README; no tests, builds, maps or models", () => {
    const paths = pack.files.map((f) => f.path);
    for (const p of [
      "package.json",
      "README.md",
      "dist/index.js",
      "dist/index.d.ts",
      "dist/cli.js",
      "dist/binding.js",
      `prebuilds/${plat}/llmserve.node`,
      "CMakeLists.txt",
      "native/napi/addon.cc",
    ]) {
      expect(paths, p).toContain(p);
    }
    expect(paths.some((p) => p.startsWith("native/core/") && p.endsWith(".cpp"))).toBe(true);
    expect(paths.some((p) => p.startsWith("native/core/") && p.endsWith(".h"))).toBe(true);
    const bad = paths.filter(
      (p) =>
        /^(test|tests|bench|build|build-[^/]*|lib|docs|scripts|node_modules|native\/tests)\//.test(p) ||
        /\.(gguf|map|tgz|o|a)$/.test(p) ||
        /\.tmp-\d+$/.test(p),
    );
    expect(bad).toEqual([]);
    expect(pack.size).toBeLessThan(MAX_TARBALL_BYTES);
    // The shipped addon is the stripped prebuild, byte for byte.
    const shipped = pack.files.find((f) => f.path === `prebuilds/${plat}/llmserve.node`)!;
    expect(shipped.size).toBe(statSync(prebuild).size);
  });

  it("runs `npx llmserve synth` and `generate --json` from the installed tarball, matching the checkout", () => {
    const model = join(project, "m.gguf");
    const synthArgs = [
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
      "300",
      "--type",
      "q8_0",
      "--seed",
      "3",
      "-o",
      model,
    ];
    const s = sh(join(bin, "npx"), ["--no", "llmserve", ...synthArgs], { cwd: project, env });
    expect(s.code, s.why).toBe(0);
    expect(statSync(model).size).toBeGreaterThan(10_000);

    const genArgs = ["generate", "-m", model, "--tokens", "[1,5,6]", "-n", "4", "--temp", "0", "--json"];
    const g = sh(join(bin, "npx"), ["--no", "llmserve", ...genArgs], { cwd: project, env });
    expect(g.code, g.why).toBe(0);
    const lines = g.stdout.trim().split("\n");
    expect(lines.length, g.stdout).toBe(1);
    const out = JSON.parse(lines[0]);
    expect(out.promptTokens).toEqual([1, 5, 6]);
    expect(out.tokens.length).toBeGreaterThan(0);
    expect(out.tokens.length).toBeLessThanOrEqual(4);
    for (const t of out.tokens) expect(Number.isInteger(t) && t >= 0 && t < 300).toBe(true);
    expect(["length", "eos"]).toContain(out.finishReason);

    // Greedy decoding is deterministic: the installed package and the checkout agree.
    const ref = sh(process.execPath, [distCli, ...genArgs], { cwd: repoRoot, env: cleanEnv(process.env.PATH ?? "") });
    expect(ref.code, ref.why).toBe(0);
    expect(JSON.parse(ref.stdout.trim()).tokens).toEqual(out.tokens);
  });

  it("imports as an ES module and loads the prebuilt binary, not a local build", () => {
    const script =
      "import { kernelIsa, LlmserveError } from 'llmserve';" +
      "import { pathToFileURL } from 'node:url';" +
      "const b = await import(pathToFileURL('node_modules/llmserve/dist/binding.js').href);" +
      "console.log(JSON.stringify({ isa: kernelIsa(), path: b.loadedAddonPath(), err: typeof LlmserveError }));";
    const r = sh(join(bin, "node"), ["--input-type=module", "-e", script], { cwd: project, env });
    expect(r.code, r.why).toBe(0);
    const o = JSON.parse(r.stdout.trim());
    expect(["avx512", "avx2", "scalar"]).toContain(o.isa);
    expect(o.path).toBe(join(project, "node_modules", "llmserve", "prebuilds", plat, "llmserve.node"));
    expect(o.err).toBe("function");
    expect(existsSync(join(project, "node_modules", "llmserve", "build"))).toBe(false);
  });

  it("without a loadable binary, fails with ERR_NATIVE_LOAD naming each path and how to build", () => {
    const pkgDir = join(project, "node_modules", "llmserve");
    renameSync(join(pkgDir, "prebuilds"), join(pkgDir, "prebuilds.off"));
    try {
      const r = sh(join(bin, "npx"), ["--no", "llmserve", "info", "-m", join(project, "m.gguf")], {
        cwd: project,
        env,
      });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("ERR_NATIVE_LOAD");
      expect(r.stderr).toContain(`${join(pkgDir, "prebuilds", plat, "llmserve.node")} (not found)`);
      expect(r.stderr).toContain(`${join(pkgDir, "build", "Release", "llmserve.node")} (not found)`);
      expect(r.stderr).toContain(`npx cmake-js compile --CDLLMSERVE_BUILD_TESTS=OFF\` in ${pkgDir}`);
    } finally {
      renameSync(join(pkgDir, "prebuilds.off"), join(pkgDir, "prebuilds"));
    }
  });

  it("keeps the installed package.json's entry points pointing at shipped files", () => {
    const pkgDir = join(project, "node_modules", "llmserve");
    const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
    for (const f of [pkg.main, pkg.types, pkg.bin.llmserve, pkg.exports["."].import, pkg.exports["."].types]) {
      expect(existsSync(join(pkgDir, f)), f).toBe(true);
    }
  });
});
