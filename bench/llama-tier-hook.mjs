// Module resolve hook for benchmark children (registered by importLlamaCpp in common.mjs under
// --tier avx2): node-llama-cpp's import of its prebuilt package "@node-llama-cpp/linux-x64" gets a
// copy of that package whose bins keep only the AVX2 ("haswell") CPU backend among the
// libggml-cpu-*.so variants, so llama.cpp runs its AVX2 kernels on an AVX-512 machine.
import { join } from "node:path";
import { pathToFileURL } from "node:url";

let target;

export async function initialize({ pkg }) {
  target = pathToFileURL(join(pkg, "dist", "index.js")).href;
}

export async function resolve(specifier, context, next) {
  if (specifier === "@node-llama-cpp/linux-x64") return { url: target, shortCircuit: true };
  return next(specifier, context);
}
