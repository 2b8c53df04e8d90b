// The npm package as users get it: `npm pack`, then install the tarball in a fresh project with
// --ignore-scripts and no compiler on PATH, and run the CLI and the library from there. The
// prebuilt addon (prebuilds/<platform>-<arch>/llmserve.node, made by `npm run build`) must load:
// nothing can be compiled. The install must pull only runtime dependencies (no cmake-js or
// node-addon-api) and print no EBADENGINE warning on this Node. Needs the npm registry for the
// package's dependencies (the npm cache is preferred); without it the tests are skipped with the
// reason. Takes about a minute.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, spawnSync, type SpawnSyncOptions } from "node:child_process";
import { createRequire } from "node:module";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
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

/** Every package under a node_modules folder (scoped and nested ones too), with its package.json. */
function installedPackages(nm: string): { dir: string; name: string; engines?: { node?: string } }[] {
  const out: { dir: string; name: string; engines?: { node?: string } }[] = [];
  if (!existsSync(nm)) return out;
  for (const e of readdirSync(nm, { withFileTypes: true })) {
    if (!e.isDirectory() || e.name.startsWith(".")) continue;
    const dirs = e.name.startsWith("@")
      ? readdirSync(join(nm, e.name)).map((n) => join(nm, e.name, n))
      : [join(nm, e.name)];
    for (const dir of dirs) {
      const pj = join(dir, "package.json");
      if (!existsSync(pj)) continue;
      const pkg = JSON.parse(readFileSync(pj, "utf8"));
      out.push({ dir, name: pkg.name, engines: pkg.engines });
      out.push(...installedPackages(join(dir, "node_modules")));
    }
  }
  return out;
}

interface Semver {
  satisfies(version: string, range: string): boolean;
  minVersion(range: string): { version: string } | null;
}

/** semver (the range logic npm's engine check uses): the checkout's copy, else npm's own. */
function loadSemver(npmBinDir: string): Semver {
  try {
    return createRequire(join(repoRoot, "package.json"))("semver") as Semver;
  } catch {
    return createRequire(join(npmBinDir, "..", "package.json"))("semver") as Semver;
  }
}

/**
 * Runs `command` in a pseudo-terminal (util-linux `script`), answers the first prompt "> " with
 * `turn`, and `/exit` once `reply` has been printed. Resolves with the exit code and everything
 * the terminal showed (ANSI escapes and carriage returns removed).
 */
function chatInPty(
  command: string,
  opts: { cwd: string; env: NodeJS.ProcessEnv },
  turn: string,
  reply: string,
  timeoutMs: number,
): Promise<{ code: number | null; screen: string }> {
  return new Promise((resolve) => {
    const child = spawn("/usr/bin/script", ["-qfec", command, "/dev/null"], {
      ...opts,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let raw = "";
    let state: "wait-prompt" | "wait-reply" | "exiting" = "wait-prompt";
    const csi = new RegExp(`${String.fromCharCode(27)}\\[[0-9;?]*[A-Za-z]`, "g"); // ANSI escape sequences
    const screen = () => raw.replace(csi, "").replace(/\r/g, "");
    const onData = (d: Buffer) => {
      raw += d.toString("utf8");
      const text = screen();
      if (state === "wait-prompt" && text.includes("> ")) {
        state = "wait-reply";
        child.stdin.write(`${turn}\r`);
      } else if (state === "wait-reply" && text.includes(reply)) {
        state = "exiting";
        child.stdin.write("/exit\r");
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, screen: screen() });
    });
  });
}

describe.runIf(process.platform !== "win32")("npm package (packed tarball)", () => {
  const work = mkdtempSync(join(tmpdir(), "llmserve-pack-"));
  const project = join(work, "project");
  const bin = join(work, "bin");
  let pack: PackResult;
  let tarball: string;
  let env: NodeJS.ProcessEnv;
  let installLog = "";
  /** Why the install could not run (no registry and no cache), when so: every test is skipped. */
  let offline: string | undefined;

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
    // The default log level, so that npm's warnings (EBADENGINE among them) are printed.
    const i = sh(
      join(bin, "npm"),
      ["install", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline", tarball],
      { cwd: project, env },
    );
    if (i.code !== 0 && /ENOTFOUND|ENOTCACHED|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ENETUNREACH/.test(i.stderr)) {
      offline = `the npm registry is unreachable and the npm cache lacks a dependency (${i.stderr.split("\n").find((l) => /E[A-Z]+/.test(l)) ?? ""})`;
      console.warn(`skipping the packed-tarball tests: ${offline}`);
      return;
    }
    if (i.code !== 0) throw new Error(`npm install of the tarball failed: ${i.why}`);
    installLog = `${i.stdout}\n${i.stderr}`;
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

  it("ships dist/, the prebuilt addon, the native sources and README; no tests, builds, maps, models or examples", () => {
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
        /^(test|tests|bench|build|build-[^/]*|lib|docs|scripts|examples|node_modules|native\/tests|native\/fuzz|\.github|\.ci)\//.test(
          p,
        ) ||
        /^(Dockerfile|\.dockerignore|package-lock\.json|tsconfig.*\.json|vitest.*|stryker.*)$/.test(p) ||
        /\.(gguf|map|tgz|o|a)$/.test(p) ||
        /\.tmp-\d+$/.test(p),
    );
    expect(bad.filter((p) => p !== "scripts/build-from-source.mjs")).toEqual([]);
    // The one script shipped: what `llmserve build-from-source` runs. No install scripts.
    expect(paths).toContain("scripts/build-from-source.mjs");
    const shippedPkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8"));
    for (const hook of ["preinstall", "install", "postinstall"])
      expect(shippedPkg.scripts?.[hook], hook).toBeUndefined();
    expect(pack.size).toBeLessThan(MAX_TARBALL_BYTES);
    // The shipped addon is the stripped prebuild, byte for byte.
    const shipped = pack.files.find((f) => f.path === `prebuilds/${plat}/llmserve.node`)!;
    expect(shipped.size).toBe(statSync(prebuild).size);
  });

  it("runs `npx llmserve synth` and `generate --json` from the installed tarball, matching the checkout", (ctx) => {
    if (offline) ctx.skip();
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

  it("imports as an ES module and loads the prebuilt binary, not a local build", (ctx) => {
    if (offline) ctx.skip();
    const script =
      "import { kernelIsa, LlmserveError } from 'llmserve';" +
      "import { pathToFileURL } from 'node:url';" +
      "const b = await import(pathToFileURL('node_modules/llmserve/dist/binding.js').href);" +
      "console.log(JSON.stringify({ isa: kernelIsa(), path: b.loadedAddonPath(), err: typeof LlmserveError }));";
    const r = sh(join(bin, "node"), ["--input-type=module", "-e", script], { cwd: project, env });
    expect(r.code, r.why).toBe(0);
    const o = JSON.parse(r.stdout.trim());
    expect(["avx512", "avxvnni", "avx2", "scalar"]).toContain(o.isa);
    expect(o.path).toBe(join(project, "node_modules", "llmserve", "prebuilds", plat, "llmserve.node"));
    expect(o.err).toBe("function");
    expect(existsSync(join(project, "node_modules", "llmserve", "build"))).toBe(false);
  });

  it("without a loadable binary, fails with ERR_NATIVE_LOAD naming the platform, each path and how to build", (ctx) => {
    if (offline) ctx.skip();
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
      expect(r.stderr).toContain(`native addon for ${plat}`);
      expect(r.stderr).toContain("This package has no prebuilt binaries.");
      expect(r.stderr).toContain("npx llmserve build-from-source");
    } finally {
      renameSync(join(pkgDir, "prebuilds.off"), join(pkgDir, "prebuilds"));
    }
  });

  it("keeps the installed package.json's entry points pointing at shipped files", (ctx) => {
    if (offline) ctx.skip();
    const pkgDir = join(project, "node_modules", "llmserve");
    const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
    for (const f of [pkg.main, pkg.types, pkg.bin.llmserve, pkg.exports["."].import, pkg.exports["."].types]) {
      expect(existsSync(join(pkgDir, f)), f).toBe(true);
    }
  });
  it("installs on this Node without an engine warning, with runtime dependencies only", (ctx) => {
    if (offline) ctx.skip();
    expect(installLog).not.toMatch(/EBADENGINE|Unsupported engine/);
    const nm = join(project, "node_modules");
    const pkgs = installedPackages(nm);
    const names = new Set(pkgs.map((p) => p.name));
    expect(names.has("llmserve")).toBe(true);
    expect(names.has("fastify")).toBe(true);
    // Build tools and dev tools stay out of a user's install.
    for (const dev of ["cmake-js", "node-addon-api", "typescript", "vitest", "node-llama-cpp", "openai"])
      expect(names.has(dev), dev).toBe(false);
    // Every installed package supports both ends of llmserve's engines range that matter here: its
    // lowest version and this Node (npm's EBADENGINE check above covers only the latter).
    const semver = loadSemver(findNpmBinDir());
    const ours = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")).engines.node as string;
    const lowest = semver.minVersion(ours)?.version ?? "0.0.0";
    const bad = pkgs
      .filter((p) => p.engines?.node)
      .filter(
        (p) => !semver.satisfies(lowest, p.engines!.node!) || !semver.satisfies(process.version, p.engines!.node!),
      )
      .map((p) => `${p.name} wants node ${p.engines!.node}`);
    expect(bad).toEqual([]);
    console.log(
      `llmserve install: ${pkgs.length} packages (incl. llmserve), Node ${lowest}+ and ${process.version} fine`,
    );
  });

  it("runs one `npx llmserve chat` turn in a terminal, then /exit", async (ctx) => {
    if (offline) ctx.skip();
    const model = join(project, "chat.gguf");
    const s = sh(
      join(bin, "npx"),
      [
        "--no",
        "llmserve",
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
      ].concat(["--vocab-size", "300", "--type", "q8_0", "--seed", "5", "-q", "-o", model]),
      { cwd: project, env },
    );
    expect(s.code, s.why).toBe(0);
    const chatArgs = ["chat", "-m", model, "--max-tokens", "8", "--temperature", "0", "-q"];
    // The reply the checkout's CLI gives with piped stdin (greedy: deterministic).
    const ref = sh(process.execPath, [distCli, ...chatArgs], {
      cwd: repoRoot,
      env: cleanEnv(process.env.PATH ?? ""),
      input: "Hello\n",
    });
    expect(ref.code, ref.why).toBe(0);
    const reply = ref.stdout.replace(/\n$/, "");
    if (process.platform !== "linux" || !existsSync("/usr/bin/script")) {
      // No util-linux `script` (macOS's takes other flags), so no pty: the CLI's piped mode instead.
      const r = sh(join(bin, "npx"), ["--no", "llmserve", ...chatArgs], { cwd: project, env, input: "Hello\n/exit\n" });
      expect(r.code, r.why).toBe(0);
      expect(r.stdout).toBe(ref.stdout);
      return;
    }
    const r = await chatInPty(`npx --no llmserve ${chatArgs.join(" ")}`, { cwd: project, env }, "Hello", reply, 60_000);
    expect(r.code, r.screen).toBe(0);
    expect(r.screen).toContain("Chatting with"); // the terminal banner: stdin was a TTY
    const afterTurn = r.screen.slice(r.screen.indexOf("> Hello"));
    expect(afterTurn, r.screen).toContain(`> Hello\n${reply}\n> /exit`);
  });

  it("`llmserve build-from-source` without a compiler fails with what it needs, leaving no binary", (ctx) => {
    if (offline) ctx.skip();
    const pkgDir = join(project, "node_modules", "llmserve");
    // It fetches cmake-js and node-addon-api (devDependencies) into a temporary folder, then cmake-js
    // finds no cmake on this PATH.
    const r = sh(join(bin, "npx"), ["--no", "llmserve", "build-from-source"], { cwd: project, env });
    expect(r.code, r.why).toBe(1);
    expect(r.stderr).toContain("llmserve: source build failed");
    expect(r.stderr).toContain("it needs cmake and a C++20 compiler");
    expect(r.stdout).toMatch(/cmake-js@\d+\.\d+\.\d+ node-addon-api@\d+\.\d+\.\d+/); // the pinned versions
    expect(existsSync(join(pkgDir, "build", "Release", "llmserve.node"))).toBe(false);
  });
});
