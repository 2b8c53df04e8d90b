// Builds the C++ core and its native tests for linux-arm64 with a cross compiler and runs them
// under qemu's user-mode emulation: the portable (non-x86) code path on a real arm64 ISA, which
// this x86 project otherwise never executes. Not part of `npm test` or CI (about 6 min on 2 cores);
// run it after changing numerics or platform code. Prints the tests' own summary.
//
// Usage: node scripts/check-arm64.mjs [test-name-filter...]      (npm run check:arm64)
// Needs (Debian): apt-get install g++-aarch64-linux-gnu qemu-user cmake ninja-build
// Build folder: build-arm64/ (ignored by git).
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const build = join(root, "build-arm64");
const CXX = process.env.ARM64_CXX ?? "aarch64-linux-gnu-g++";
const SYSROOT = process.env.ARM64_SYSROOT ?? "/usr/aarch64-linux-gnu";

function have(cmd) {
  try {
    execFileSync(cmd, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

for (const tool of [CXX, "qemu-aarch64", "cmake"]) {
  if (!have(tool)) {
    console.error(`check-arm64: ${tool} not found (Debian: apt-get install g++-aarch64-linux-gnu qemu-user cmake)`);
    process.exit(1);
  }
}
mkdirSync(build, { recursive: true });
const toolchain = join(build, "toolchain.cmake");
writeFileSync(
  toolchain,
  [
    "set(CMAKE_SYSTEM_NAME Linux)",
    "set(CMAKE_SYSTEM_PROCESSOR aarch64)",
    `set(CMAKE_CXX_COMPILER ${CXX})`,
    `set(CMAKE_FIND_ROOT_PATH ${SYSROOT})`,
    "",
  ].join("\n"),
);
const generator = have("ninja") ? ["-G", "Ninja"] : [];
const step = (args) => {
  const r = spawnSync("cmake", args, { stdio: "inherit", cwd: root });
  if (r.status !== 0) process.exit(r.status ?? 1);
};
step(["-S", root, "-B", build, ...generator, `-DCMAKE_TOOLCHAIN_FILE=${toolchain}`, "-DLLMSERVE_BUILD_TESTS=ON"]);
step(["--build", build, "-j", String(availableParallelism())]);

// The arm64 ggml libraries node-llama-cpp ships are NOT the oracle here: ggml's arm64 build fuses
// multiply-adds and so differs from its own x86 build; test_quant_portable.cpp holds arm64 to the
// x86 bytes instead, and test_quant_ggml.cpp skips (it looks for the linux-x64 libraries).
const r = spawnSync("qemu-aarch64", [join(build, "bin", "llmserve_native_tests"), ...process.argv.slice(2)], {
  stdio: "inherit",
  env: { ...process.env, QEMU_LD_PREFIX: SYSROOT },
});
process.exit(r.status ?? 1);
