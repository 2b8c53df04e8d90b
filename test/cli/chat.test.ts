/**
 * The CLI's chat command (piped stdin: two turns, the second sees the first), detokenize, the API's
 * option names with llama.cpp's as aliases, and "did you mean" for misspelled options.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatTemplate, Conversation, Model } from "../../lib/index.js";
import { repoRoot, synthModel } from "../helpers.js";

const cli = join(repoRoot, "dist", "cli.js");

function run(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", timeout: 120_000, input });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe.runIf(existsSync(cli))("llmserve chat, detokenize and option names", () => {
  let path: string;
  let model: Model;
  beforeAll(async () => {
    path = await synthModel("cli-chat", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 400 });
    model = await Model.load(path, { threads: 1 });
  });
  afterAll(async () => {
    await model?.dispose();
  });

  it("chat with piped stdin: two turns, the second reuses the first's KV; replies equal the library's Conversation", async () => {
    const r = run(
      ["chat", "-m", path, "--system", "Be brief.", "--temperature", "0", "--max-tokens", "6", "--stats", "-q"],
      "Hello there\nAnd then?\n/exit\nnever sent\n",
    );
    expect(r.code, r.stderr).toBe(0);
    const stats = r.stderr.split("\n").filter((l) => l.startsWith("["));
    expect(stats).toHaveLength(2);
    const nums = stats.map((l) =>
      /prompt (\d+) tok \((\d+) reused\).*generated (\d+) tok/.exec(l)?.slice(1).map(Number),
    );
    const [p1, , g1] = nums[0] ?? [];
    const [p2, reused2] = nums[1] ?? [];
    expect(p2).toBeGreaterThan(p1 + g1); // turn 2's prompt holds turn 1 and its reply
    expect(reused2).toBeGreaterThanOrEqual(p1); // ... whose KV was kept
    // The library's conversation with the same template and options says the same.
    const template = await ChatTemplate.fromModel(model, { warn: () => {} });
    const conv = await Conversation.create(model, {
      system: "Be brief.",
      template,
      defaults: { temperature: 0, maxTokens: 6 },
    });
    let expected = "";
    for (const turn of ["Hello there", "And then?"]) {
      for await (const c of conv.send(turn)) expected += c.text;
      expected += "\n";
    }
    conv.dispose();
    expect(r.stdout).toBe(expected);
  });

  it("chat: /reset forgets the conversation (the same question gets the first answer again)", () => {
    const r = run(["chat", "-m", path, "--temperature", "0", "--max-tokens", "5", "-q"], "Hi\nHi\n/reset\nHi\n");
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split("\n");
    expect(r.stderr).toContain("(conversation cleared)");
    expect(lines[2]).toBe(lines[0]);
  });

  it("detokenize is the inverse of tokenize", () => {
    const ids = run(["tokenize", "-m", path, "-p", "the quick fox", "--no-bos"]);
    expect(ids.code, ids.stderr).toBe(0);
    const back = run(["detokenize", "-m", path, "--tokens", ids.stdout.trim(), "--json"]);
    expect(back.code, back.stderr).toBe(0);
    expect(JSON.parse(back.stdout)).toBe(model.detokenize(JSON.parse(ids.stdout)));
    expect(JSON.parse(back.stdout)).toContain("quick");
    const bad = run(["detokenize", "-m", path, "--tokens", "[1,x]"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("ERR_INVALID_ARGUMENT");
  });

  it("the API's option names, with llama.cpp's as aliases (--temp, -n, --n-predict, -c, --ctx)", () => {
    const gen = (args: string[]) => {
      const r = run(["generate", "-m", path, "--tokens", "[1,300,301]", "--seed", "3", "--json", "-q", ...args]);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout).tokens as number[];
    };
    const hot = gen(["--temperature", "1.5", "--max-tokens", "12"]);
    expect(hot).toHaveLength(12);
    expect(gen(["--temp", "1.5", "-n", "12"])).toEqual(hot);
    expect(gen(["--temp", "1.5", "--n-predict", "12"])).toEqual(hot);
    expect(gen(["--temperature", "0", "--max-tokens", "12"])).not.toEqual(hot); // the alias is not ignored
    for (const ctx of [
      ["--context-size", "3"],
      ["-c", "3"],
      ["--ctx", "3"],
      ["--ctx-size", "3"],
    ]) {
      const r = run(["generate", "-m", path, "--tokens", "[1,300,301]", ...ctx]);
      expect(r.code, ctx.join(" ")).toBe(1);
      expect(r.stderr).toContain("ERR_CONTEXT_OVERFLOW");
    }
  });

  it("a misspelled option gets a suggestion", () => {
    const r = run(["generate", "-m", path, "-p", "x", "--temprature", "0"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("unknown option '--temprature'");
    expect(r.stderr).toContain("Did you mean --temperature?");
    expect(run(["chat", "-m", path, "--max-token", "3"]).stderr).toContain("Did you mean --max-tokens?");
    expect(run(["serve", "-m", path, "--context-sise", "3"]).stderr).toContain("Did you mean --context-size?");
  });
});
