/**
 * lib/defaults.ts: the server's defaults are TypeScript-only (test/native/truth.test.ts checks the
 * ones the core shares), so the values the README and docs/design.md promise are checked here
 * against the table: neither can change without the other.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { LOAD_DEFAULTS, SERVER_DEFAULTS } from "../../lib/defaults.js";
import { repoRoot } from "../helpers.js";

const flat = (file: string) => readFileSync(join(repoRoot, file), "utf8").replace(/\s+/g, " ");

describe("server defaults as documented", () => {
  it("README: header, request, keep-alive and stream-write timeouts, connection cap", () => {
    const readme = flat("README.md");
    const s = SERVER_DEFAULTS;
    expect(readme).toContain(`headers must arrive within ${s.headersTimeoutMs / 1000} s (\`headersTimeoutMs\`)`);
    expect(readme).toContain(`request within ${s.requestTimeoutMs / 1000} s (\`requestTimeoutMs\`)`);
    expect(readme).toContain(
      `idle keep-alive connections close after ${s.keepAliveTimeoutMs / 1000} s (\`keepAliveTimeoutMs\`)`,
    );
    expect(readme).toContain(`at most ${s.maxConnections} connections are open`);
    expect(readme).toContain(`stops reading for ${s.streamWriteTimeoutMs / 1000} s (\`--stream-write-timeout\`)`);
    expect(readme).toContain(`--port ${s.port} [--host ${s.host}]`);
    expect(readme).toContain(`[--max-queue ${s.cliMaxQueue}]`);
  });

  it("docs/design.md: body limit and Node's server timeouts", () => {
    const design = flat("docs/design.md");
    const s = SERVER_DEFAULTS;
    expect(design).toContain(`\`bodyLimit\`, ${s.bodyLimit / 2 ** 20} MiB`);
    expect(design).toContain(
      `\`headersTimeout\` (${s.headersTimeoutMs / 1000} s) and \`requestTimeout\` (${s.requestTimeoutMs / 1000} s)`,
    );
    expect(design).toContain(`\`keepAliveTimeout\` (${s.keepAliveTimeoutMs / 1000} s)`);
    expect(design).toContain(`\`maxConnections\` (${s.maxConnections})`);
  });

  it("the whole table: values not stated in the docs are pinned here (shutdown 10 s, response cache 64 MiB)", () => {
    expect(SERVER_DEFAULTS.shutdownTimeoutMs).toBe(10_000);
    expect(LOAD_DEFAULTS.responseCacheBytes).toBe(64 * 2 ** 20);
    expect(Object.keys(SERVER_DEFAULTS).sort()).toEqual([
      "bodyLimit",
      "cliMaxQueue",
      "headersTimeoutMs",
      "host",
      "keepAliveTimeoutMs",
      "maxConnections",
      "port",
      "requestTimeoutMs",
      "shutdownTimeoutMs",
      "streamWriteTimeoutMs",
    ]);
  });
});
