// Runs the native C++ test binary built by `npm run build:native` (build/bin/llmserve_native_tests),
// once with the dispatched SIMD kernels and once with LLMSERVE_FORCE_SCALAR=1 (the portable path).
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = join(root, "build", "bin", "llmserve_native_tests");
if (!existsSync(bin)) {
  console.error(`native test binary not found at ${bin}; run \`npm run build:native\` first`);
  process.exit(1);
}
let failed = false;
for (const [label, env] of [
  ["dispatched kernels", {}],
  ["forced scalar", { LLMSERVE_FORCE_SCALAR: "1" }],
]) {
  console.log(`# native tests (${label})`);
  const r = spawnSync(bin, process.argv.slice(2), { stdio: "inherit", env: { ...process.env, ...env } });
  if (r.status !== 0) failed = true;
}
process.exit(failed ? 1 : 0);
