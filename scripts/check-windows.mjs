// Compiles every native source (native/core and the N-API layer) for Windows with the MinGW-w64
// cross compiler, syntax and semantics only (-fsyntax-only: no objects, no link). It catches a
// POSIX header or call that slipped in, and checks the Windows half of native/core/os, which
// nothing else here compiles. It does not prove an MSVC/clang-cl build (the prebuild workflow's
// Windows job is that), but the core's language level is already checked by g++ and clang (ASan).
//
// Usage: node scripts/check-windows.mjs   (npm run check:windows)
// Without x86_64-w64-mingw32-g++ it says so and exits 0, unless LLMSERVE_REQUIRE_WINDOWS_CHECK=1
// (CI installs the compiler and sets it). Debian: apt-get install g++-mingw-w64-x86-64-posix.
import { execFile, execFileSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const CXX = process.env.MINGW_CXX ?? "x86_64-w64-mingw32-g++";

function* sources(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* sources(p);
    else if (/\.(cpp|cc)$/.test(name)) yield p;
  }
}

/** The ISA flags CMakeLists.txt gives a file (kept in step with its foreach over CORE_SOURCES). */
function isaFlags(file) {
  if (file.endsWith("_avx2.cpp")) return ["-mavx2", "-mfma", "-mf16c"];
  if (file.endsWith("_avxvnni.cpp")) return ["-mavx2", "-mfma", "-mf16c", "-mavxvnni"];
  if (file.endsWith("_avx512vbmi.cpp"))
    return [
      "-mavx512f",
      "-mavx512bw",
      "-mavx512vl",
      "-mavx512dq",
      "-mavx512vnni",
      "-mavx512vbmi",
      "-mavx2",
      "-mfma",
      "-mf16c",
    ];
  if (file.endsWith("_avx512.cpp"))
    return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-mavx2", "-mfma", "-mf16c"];
  return [];
}

function haveCompiler() {
  try {
    execFileSync(CXX, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

async function main() {
  if (!haveCompiler()) {
    const msg = `check-windows: ${CXX} not found (Debian: apt-get install g++-mingw-w64-x86-64-posix)`;
    if (process.env.LLMSERVE_REQUIRE_WINDOWS_CHECK === "1") {
      console.error(`${msg}; required here (LLMSERVE_REQUIRE_WINDOWS_CHECK=1)`);
      process.exit(1);
    }
    console.log(`${msg}; skipped`);
    return;
  }
  const nodeInclude = join(dirname(dirname(process.execPath)), "include", "node");
  const addonApi = join(root, "node_modules", "node-addon-api");
  const common = [
    "-std=c++20",
    "-fsyntax-only",
    "-Wall",
    "-Wextra",
    "-Werror",
    `-I${join(root, "native", "core")}`,
    "-DLLMSERVE_X86=1",
  ];
  const napi = [`-I${nodeInclude}`, `-I${addonApi}`, "-DNAPI_VERSION=8", "-DNAPI_CPP_EXCEPTIONS"];
  const files = [...sources(join(root, "native", "core")), ...sources(join(root, "native", "napi"))];
  const failures = [];
  let next = 0;
  const worker = async () => {
    while (next < files.length) {
      const file = files[next++];
      const args = [...common, ...isaFlags(file), ...(file.endsWith(".cc") ? napi : []), file];
      try {
        await run(CXX, args, { maxBuffer: 16 << 20 });
      } catch (e) {
        failures.push(`${relative(root, file)}:\n${String(e.stderr || e.message).trim()}`);
      }
    }
  };
  const jobs = Math.max(1, Math.min(availableParallelism(), 8));
  await Promise.all(Array.from({ length: jobs }, worker));
  if (failures.length) {
    for (const f of failures) console.error(f);
    console.error(`check-windows: ${failures.length} of ${files.length} files do not compile for Windows (MinGW-w64)`);
    process.exit(1);
  }
  console.log(`check-windows: ${files.length} native sources compile for Windows (MinGW-w64, -fsyntax-only)`);
}

await main();
