// Runs the vitest suite and decides pass/fail from the tests' own results.
//
// Why: on a loaded 2-core machine a vitest worker can miss the 60 s deadline of an internal RPC
// ("[vitest-worker]: Timeout calling onTaskUpdate") while native code keeps both cores busy; vitest
// then reports it as an unhandled error and exits 1 although every test passed. This wrapper accepts
// such a run only when all of these hold, and fails it otherwise:
//   - every test file the run was asked for has a result, no suite failed, no test failed;
//   - every unhandled error vitest reported is one of its own worker RPC timeouts.
// Any other unhandled error, a missing file, a failed test, or a crash still fails the run.
// It ends with one line "vitest: N passed, N failed, N skipped".
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const dir = mkdtempSync(join(tmpdir(), "llmserve-vitest-"));
const report = join(dir, "report.json");

/** The test files vitest.config.ts includes (test/**\/*.test.ts), relative to the root. */
function allTestFiles(d = join(root, "test")) {
  const out = [];
  for (const name of readdirSync(d)) {
    const p = join(d, name);
    if (statSync(p).isDirectory()) out.push(...allTestFiles(p));
    else if (name.endsWith(".test.ts")) out.push(relative(root, p));
  }
  return out;
}

const vitest = join(root, "node_modules", "vitest", "vitest.mjs");
const child = spawn(
  process.execPath,
  [vitest, "run", "--reporter=default", "--reporter=json", `--outputFile.json=${report}`, ...args],
  {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
    env: process.env,
  },
);
let output = "";
child.stdout.on("data", (d) => {
  output += d;
  process.stdout.write(d);
});
child.stderr.on("data", (d) => {
  output += d;
  process.stderr.write(d);
});
const code = await new Promise((resolve) => child.on("close", (c, signal) => resolve(signal ? 1 : (c ?? 1))));

let json;
try {
  json = JSON.parse(readFileSync(report, "utf8"));
} catch {
  json = undefined;
}
rmSync(dir, { recursive: true, force: true });
if (!json) {
  console.error("run-vitest: vitest wrote no JSON report; failing");
  process.exit(code === 0 ? 1 : code);
}
const passed = json.numPassedTests ?? 0;
const failed = json.numFailedTests ?? 0;
const skipped = (json.numPendingTests ?? 0) + (json.numTodoTests ?? 0);
const closing = () => console.log(`vitest: ${passed} passed, ${failed} failed, ${skipped} skipped`);

if (code === 0) {
  closing();
  process.exit(0);
}

// A failing exit: accept it only if it is nothing but worker RPC timeouts (see above).
const reasons = [];
if (failed > 0) reasons.push(`${failed} test(s) failed`);
if ((json.numFailedTestSuites ?? 0) > 0) reasons.push(`${json.numFailedTestSuites} suite(s) failed`);
if (passed === 0) reasons.push("no test passed");
if (args.length === 0) {
  const reported = new Set(json.testResults.map((r) => relative(root, r.name)));
  const missing = allTestFiles().filter((f) => !reported.has(f));
  if (missing.length > 0) reasons.push(`no result for ${missing.join(", ")}`);
}
const caught = /Vitest caught (\d+) unhandled errors?/.exec(output);
const unhandled = caught ? Number(caught[1]) : 0;
const rpcTimeouts = (output.match(/\[vitest-worker\]: Timeout calling "/g) ?? []).length;
if (unhandled === 0 && reasons.length === 0) reasons.push(`vitest exited ${code} without reporting why`);
else if (rpcTimeouts < unhandled)
  reasons.push(`${unhandled} unhandled error(s), of which only ${rpcTimeouts} are worker RPC timeouts`);

closing();
if (reasons.length > 0) {
  console.error(`run-vitest: failing (${reasons.join("; ")})`);
  process.exit(code);
}
console.error(
  `run-vitest: every test passed; ignoring ${unhandled} vitest worker RPC timeout(s) caused by machine load`,
);
process.exit(0);
