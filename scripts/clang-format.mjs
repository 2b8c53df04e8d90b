// clang-format over the C++ sources (native/ and bench/kernels; the style is .clang-format).
//
//   node scripts/clang-format.mjs           # rewrite the files in place (npm run format)
//   node scripts/clang-format.mjs --check   # change nothing; fail listing each file that would change
//                                           # (npm run format:check)
//
// The files are the git-tracked *.cpp / *.cc / *.h under native/ and bench/. Needs clang-format on the
// PATH (CLANG_FORMAT overrides; Debian: apt-get install clang-format, which is version 14: other
// major versions lay some constructs out differently, so the check warns when the version differs).
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const check = process.argv.includes("--check");
const bin = process.env.CLANG_FORMAT ?? "clang-format";
const EXPECTED_MAJOR = 14;

// The check is only meaningful with the expected version. Without it, `--check` (part of npm test)
// warns and passes on a contributor's machine; CI sets LLMSERVE_REQUIRE_FORMAT=1 (.ci/run), where a
// missing or other clang-format fails.
const required = process.env.LLMSERVE_REQUIRE_FORMAT === "1";
const version = spawnSync(bin, ["--version"], { encoding: "utf8" });
const major = version.error || version.status !== 0 ? Number.NaN : Number(/version (\d+)/.exec(version.stdout)?.[1]);
if (check && !required && major !== EXPECTED_MAJOR) {
  console.warn(
    `clang-format: ${Number.isNaN(major) ? `\`${bin}\` not found` : `version ${major}, not ${EXPECTED_MAJOR}`}; ` +
      "skipping the C++ format check here (CI runs it; Debian: apt-get install clang-format)",
  );
  process.exit(0);
}
if (Number.isNaN(major)) {
  console.error(
    `clang-format: \`${bin}\` not found; install it (Debian: apt-get install clang-format) or set CLANG_FORMAT`,
  );
  process.exit(1);
}
if (major !== EXPECTED_MAJOR) {
  console.warn(
    `clang-format: version ${major} (.clang-format is checked with ${EXPECTED_MAJOR}); its layout may differ`,
  );
}

const ls = spawnSync(
  "git",
  ["ls-files", "-z", "--", "native/*.cpp", "native/*.cc", "native/*.h", "bench/*.cpp", "bench/*.h"],
  {
    cwd: root,
    encoding: "utf8",
  },
);
if (ls.status !== 0) {
  console.error(`clang-format: git ls-files failed: ${ls.stderr}`);
  process.exit(1);
}
const files = ls.stdout.split("\0").filter(Boolean);
// --ferror-limit=1: the first difference of each file is enough to point at it.
const args = check ? ["--dry-run", "-Werror", "--ferror-limit=1", "--style=file"] : ["-i", "--style=file"];
let failed = false;
// In batches, to stay well under the argument-length limit.
for (let i = 0; i < files.length; i += 50) {
  const r = spawnSync(bin, [...args, ...files.slice(i, i + 50)], { cwd: root, stdio: "inherit" });
  if (r.status !== 0) failed = true;
}
if (failed) {
  console.error(check ? "clang-format: files above are not formatted; run `npm run format`" : "clang-format: failed");
  process.exit(1);
}
console.log(`clang-format: ${files.length} files ${check ? "formatted" : "written"}`);
