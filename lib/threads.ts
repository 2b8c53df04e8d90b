/**
 * Worker threads for work that must not hold the event loop (chat-template rendering, long
 * tokenizations). `moduleWorker` starts a worker from a sibling module of the caller: the compiled
 * `.js` file in a build, or, when running from the TypeScript sources (vitest), the `.ts` file
 * through a small esbuild loader (esbuild comes with vite; production never takes that path).
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker, type WorkerOptions } from "node:worker_threads";
import { LlmserveError } from "./errors.js";

let tsHooks: string | undefined;

/** A data: URL of module hooks that load `.ts` files (and `./x.js` imports of them) with esbuild. */
function tsLoaderHooks(from: string): string {
  if (tsHooks !== undefined) return tsHooks;
  let esbuild: string;
  try {
    esbuild = pathToFileURL(createRequire(from).resolve("esbuild")).href;
  } catch (err) {
    throw new LlmserveError(
      "ERR_INTERNAL",
      "Running llmserve from its TypeScript sources needs esbuild (a vite dependency) to start worker threads; build with `npm run build:ts` instead.",
      { cause: err },
    );
  }
  const hooks = `
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
const esbuild = (await import(${JSON.stringify(esbuild)})).default;
export async function resolve(spec, ctx, next) {
  try {
    return await next(spec, ctx);
  } catch (err) {
    if (spec.endsWith(".js") && ctx.parentURL && ctx.parentURL.endsWith(".ts")) return next(spec.slice(0, -3) + ".ts", ctx);
    throw err;
  }
}
export async function load(url, ctx, next) {
  if (url.startsWith("file:") && url.endsWith(".ts")) {
    const file = fileURLToPath(url);
    const out = esbuild.transformSync(readFileSync(file, "utf8"), { loader: "ts", format: "esm", target: "es2022", sourcefile: file });
    return { format: "module", source: out.code, shortCircuit: true };
  }
  return next(url, ctx);
}`;
  tsHooks = `data:text/javascript,${encodeURIComponent(hooks)}`;
  return tsHooks;
}

/**
 * Starts a worker running the module `name` (without extension) next to the module whose
 * `import.meta.url` is `base`.
 */
export function moduleWorker(base: string, name: string, options: WorkerOptions = {}): Worker {
  const js = new URL(`./${name}.js`, base);
  if (existsSync(fileURLToPath(js))) return new Worker(js, options);
  const ts = new URL(`./${name}.ts`, base);
  if (!existsSync(fileURLToPath(ts)))
    throw new LlmserveError("ERR_INTERNAL", `The worker module ${fileURLToPath(js)} is missing; reinstall llmserve.`);
  const boot = `const { register } = require("node:module");
register(${JSON.stringify(tsLoaderHooks(fileURLToPath(base)))});
import(${JSON.stringify(ts.href)}).catch((err) => { setImmediate(() => { throw err; }); });`;
  return new Worker(boot, { ...options, eval: true });
}
