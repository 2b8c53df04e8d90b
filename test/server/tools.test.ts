/**
 * Tool calls on /v1/chat/completions through the official `openai` client, one server per
 * template family (the fixture templates) on a random-weights model: tool_choice "required" and a
 * named function give calls whose arguments validate (ajv) against the tool's schema, streamed
 * deltas reassemble to the same call, "none" renders no tools, "auto" answers, a follow-up turn
 * with the tool's result renders, and a template without tool support is a 400.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { Ajv } from "ajv";
import type { FastifyInstance } from "fastify";
import OpenAI from "openai";
import type { ChatCompletionMessageParam, ChatCompletionTool } from "openai/resources/chat/completions";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model } from "../../lib/index.js";
import { createServer } from "../../lib/server/index.js";
import { fixture, haveFixtures, repoRoot, synthModel } from "../helpers.js";

const templatesDir = fixture("chat-templates");
const haveTemplates = haveFixtures && existsSync(templatesDir);

/** One fixture template per family. */
const FAMILY_TEMPLATES = {
  hermes: "Qwen-Qwen2.5-7B-Instruct.jinja",
  llama3: "meta-llama-Llama-3.1-8B-Instruct.jinja",
  mistral: "mistralai-Mistral-Nemo-Instruct-2407.jinja",
  "functionary-v3.1": "meetkai-functionary-medium-v3.1.jinja",
  "firefunction-v2": "fireworks-ai-llama-3-firefunction-v2.jinja",
  "command-r7b": "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja",
  "command-r-plus": "CohereForAI-c4ai-command-r-plus-tool_use.jinja",
} as const;
type Family = keyof typeof FAMILY_TEMPLATES;

// Bounded strings and enums keep a random model's arguments short enough to finish.
const weatherParams = {
  type: "object",
  properties: {
    city: { type: "string", maxLength: 8 },
    unit: { type: "string", enum: ["celsius", "fahrenheit"] },
    days: { type: "integer" },
  },
  required: ["city", "unit"],
  additionalProperties: false,
};
const timeParams = {
  type: "object",
  properties: { zone: { type: "string", maxLength: 6 } },
  required: ["zone"],
  additionalProperties: false,
};
const tools: ChatCompletionTool[] = [
  { type: "function", function: { name: "get_weather", description: "Weather", parameters: weatherParams } },
  { type: "function", function: { name: "get_time", description: "Time", parameters: timeParams } },
];
const validators = { get_weather: new Ajv().compile(weatherParams), get_time: new Ajv().compile(timeParams) };
const ask: ChatCompletionMessageParam[] = [{ role: "user", content: "Weather in Paris?" }];
const forced = { temperature: 0, seed: 7, max_tokens: 200, parallel_tool_calls: false } as const;

let model: Model;
const servers: FastifyInstance[] = [];

/** An `openai` client for a server with `chatTemplate`. */
async function clientFor(chatTemplate: string): Promise<OpenAI> {
  const app = createServer(model, { modelName: "tiny", chatTemplate, defaultMetrics: false });
  servers.push(app);
  await app.listen({ port: 0, host: "127.0.0.1" });
  const addr = app.server.address();
  if (addr === null || typeof addr === "string") throw new Error("no TCP address");
  return new OpenAI({ apiKey: "unused", baseURL: `http://127.0.0.1:${addr.port}/v1`, maxRetries: 0, timeout: 60_000 });
}

const clients = new Map<string, OpenAI>();
beforeAll(async () => {
  const path = await synthModel("server-tools", {
    dim: 32,
    layers: 1,
    heads: 2,
    kvHeads: 1,
    ffn: 64,
    vocabSize: 512,
    context: 8192,
  });
  model = await Model.load(path, { threads: 1, contextSize: 8192, kvCacheTokens: 32768 });
  if (!haveTemplates) return;
  for (const [family, file] of Object.entries(FAMILY_TEMPLATES))
    clients.set(family, await clientFor(readFileSync(`${templatesDir}/${file}`, "utf8")));
  clients.set("chatml", await clientFor("chatml"));
});
afterAll(async () => {
  for (const s of servers) await s.close();
  await model?.dispose();
});

/** Checks a call: a known tool, arguments that validate against its schema; returns it. */
function checkCall(call: { id: string; type: string; function: { name: string; arguments: string } }, name?: string) {
  expect(call.type).toBe("function");
  expect(call.id.length).toBeGreaterThan(0);
  if (name !== undefined) expect(call.function.name).toBe(name);
  const validate = validators[call.function.name as keyof typeof validators];
  expect(validate, `unknown tool ${call.function.name}`).toBeDefined();
  const args = JSON.parse(call.function.arguments);
  expect(validate(args), JSON.stringify(validate.errors)).toBe(true);
  return call;
}

describe.skipIf(!haveTemplates)("tool calls per template family (openai client)", () => {
  const families = Object.keys(FAMILY_TEMPLATES) as Family[];

  it.each(families)(
    "%s: required and a named function give valid calls; streamed deltas reassemble to them",
    async (family) => {
      const client = clients.get(family)!;
      for (const [choice, name] of [
        ["required", undefined],
        [{ type: "function", function: { name: "get_time" } }, "get_time"],
      ] as const) {
        const r = await client.chat.completions.create({
          model: "tiny",
          messages: ask,
          tools,
          tool_choice: choice,
          ...forced,
        });
        const c = r.choices[0];
        expect(c.finish_reason, JSON.stringify(c.message)).toBe("tool_calls");
        expect(c.message.content).toBeNull();
        expect(c.message.tool_calls).toHaveLength(1);
        const call = checkCall(c.message.tool_calls![0], name);

        // The same request streamed: id, type and name first, then argument fragments.
        const stream = await client.chat.completions.create({
          model: "tiny",
          messages: ask,
          tools,
          tool_choice: choice,
          ...forced,
          stream: true,
        });
        const calls: { id?: string; name?: string; args: string }[] = [];
        let content = "";
        let finish: string | null = null;
        for await (const chunk of stream) {
          const ch = chunk.choices[0];
          if (!ch) continue;
          content += ch.delta.content ?? "";
          for (const d of ch.delta.tool_calls ?? []) {
            if (d.id !== undefined) {
              expect(d.index).toBe(calls.length);
              expect(d.type).toBe("function");
              calls.push({ id: d.id, name: d.function?.name, args: d.function?.arguments ?? "" });
            } else calls[d.index].args += d.function?.arguments ?? "";
          }
          finish = ch.finish_reason ?? finish;
        }
        expect(content).toBe(""); // no call markup leaks as content
        expect(finish).toBe("tool_calls");
        expect(calls.map((x) => [x.name, x.args])).toEqual([[call.function.name, call.function.arguments]]);
      }
    },
  );

  it.each(families)("%s: a follow-up turn with the tool's result renders and is answered", async (family) => {
    const client = clients.get(family)!;
    const first = await client.chat.completions.create({
      model: "tiny",
      messages: ask,
      tools,
      tool_choice: "required",
      ...forced,
    });
    const call = first.choices[0].message.tool_calls![0];
    const followUp: ChatCompletionMessageParam[] = [
      ...ask,
      { role: "assistant", content: null, tool_calls: [call] },
      { role: "tool", tool_call_id: call.id, content: '{"temp_c": 21}' },
    ];
    const r = await client.chat.completions.create({
      model: "tiny",
      messages: followUp,
      tools,
      max_tokens: 4,
      seed: 1,
    });
    expect(r.usage!.prompt_tokens).toBeGreaterThan(first.usage!.prompt_tokens);
    expect(["stop", "length", "tool_calls"]).toContain(r.choices[0].finish_reason);
  });
});

describe.skipIf(!haveTemplates)("tool_choice variants and refusals", () => {
  it('"none" renders no tools (the prompt is the one without tools); "auto" answers with text or valid calls', async () => {
    const client = clients.get("hermes")!;
    const plain = await client.chat.completions.create({ model: "tiny", messages: ask, max_tokens: 2, seed: 1 });
    const none = await client.chat.completions.create({
      model: "tiny",
      messages: ask,
      tools,
      tool_choice: "none",
      max_tokens: 2,
      seed: 1,
    });
    expect(none.usage!.prompt_tokens).toBe(plain.usage!.prompt_tokens);
    const auto = await client.chat.completions.create({ model: "tiny", messages: ask, tools, max_tokens: 24, seed: 3 });
    expect(auto.usage!.prompt_tokens).toBeGreaterThan(plain.usage!.prompt_tokens); // the tools are in the prompt
    const m = auto.choices[0].message;
    if (m.tool_calls?.length) for (const c of m.tool_calls) checkCall(c);
    else {
      expect(typeof m.content).toBe("string");
      expect(m.content).not.toContain("<tool_call>");
    }
  });

  it("a forced call cut short by max_tokens: finish_reason length, no tool_calls, the text as content; n = 2 streams", async () => {
    const client = clients.get("mistral")!;
    const r = await client.chat.completions.create({
      model: "tiny",
      messages: ask,
      tools,
      tool_choice: "required",
      max_tokens: 3,
    });
    expect(r.choices[0].finish_reason).toBe("length");
    expect(r.choices[0].message.tool_calls).toBeUndefined();
    expect(r.choices[0].message.content).not.toContain("[TOOL_CALLS]"); // the prompt's, not generated
    const stream = await client.chat.completions.create({
      model: "tiny",
      messages: ask,
      tools,
      tool_choice: "required",
      ...forced,
      n: 2,
      stream: true,
    });
    const names: string[][] = [[], []];
    const finish: (string | null)[] = [null, null];
    for await (const chunk of stream)
      for (const ch of chunk.choices) {
        for (const d of ch.delta.tool_calls ?? []) if (d.function?.name) names[ch.index].push(d.function.name);
        finish[ch.index] = ch.finish_reason ?? finish[ch.index];
      }
    expect(finish).toEqual(["tool_calls", "tool_calls"]);
    expect(names.map((n) => n.length)).toEqual([1, 1]);
  });

  it("parallel_tool_calls: several calls may follow, each valid", async () => {
    const client = clients.get("hermes")!;
    for (const seed of [1, 2, 3]) {
      const r = await client.chat.completions.create({
        model: "tiny",
        messages: ask,
        tools,
        tool_choice: "required",
        temperature: 0.8,
        seed,
        max_tokens: 400,
      });
      const c = r.choices[0];
      if (c.finish_reason === "length") continue; // a random model may keep calling
      expect(c.finish_reason).toBe("tool_calls");
      expect(c.message.tool_calls!.length).toBeGreaterThanOrEqual(1);
      for (const call of c.message.tool_calls!) checkCall(call);
    }
  });

  it("tools on a template without a tool-call format: a 400 naming tools, never plain text", async () => {
    const client = clients.get("chatml")!;
    const err = await client.chat.completions
      .create({ model: "tiny", messages: ask, tools, max_tokens: 4 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    const e = err as InstanceType<typeof OpenAI.APIError>;
    expect(e.status).toBe(400);
    expect(e.code).toBe("unsupported_tools");
    expect(e.param).toBe("tools");
    expect(e.message).toMatch(/defines no tool-call format/);
    // tool_choice "none" asks for no calls: it is answered.
    const ok = await client.chat.completions.create({
      model: "tiny",
      messages: ask,
      tools,
      tool_choice: "none",
      max_tokens: 2,
    });
    expect(ok.choices[0].finish_reason).toBeDefined();
  });

  it("a tool_choice naming no tool, required without tools, bad tools and legacy functions are 400s naming the field", async () => {
    const client = clients.get("hermes")!;
    const cases: [Record<string, unknown>, string][] = [
      [{ tools, tool_choice: { type: "function", function: { name: "nope" } } }, "tool_choice"],
      [{ tool_choice: "required" }, "tool_choice"],
      [{ tools: [{ type: "function", function: { name: "bad name!" } }] }, "tools"],
      [{ tools, tool_choice: "required", response_format: { type: "json_object" } }, "response_format"],
      [{ functions: [{ name: "f" }] }, "functions"],
    ];
    for (const [extra, param] of cases) {
      const err = await client.chat.completions
        .create({ model: "tiny", messages: ask, max_tokens: 2, ...extra } as never)
        .catch((e: unknown) => e);
      expect(err, JSON.stringify(extra)).toBeInstanceOf(OpenAI.APIError);
      expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(400);
      expect((err as InstanceType<typeof OpenAI.APIError>).param).toBe(param);
    }
  });
});

describe.skipIf(!haveTemplates)("the README's Tool calls example", () => {
  it("runs as written against a server of a tool-use template (model id `model`)", async () => {
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## Tool calls"));
    const code = /```js\n([\s\S]*?)```/.exec(section)?.[1];
    expect(code).toContain("tool_choice");
    const app = createServer(model, {
      modelName: "model",
      chatTemplate: readFileSync(`${templatesDir}/${FAMILY_TEMPLATES.hermes}`, "utf8"),
      defaultMetrics: false,
    });
    servers.push(app);
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    const dir = mkdtempSync(join(tmpdir(), "llmserve-readme-"));
    try {
      // The example as written but for the server's address and where `openai` is installed.
      const openai = pathToFileURL(createRequire(import.meta.url).resolve("openai")).href;
      const script = code!
        .replace("http://127.0.0.1:8080", url)
        .replace('from "openai"', `from ${JSON.stringify(openai)}`);
      writeFileSync(join(dir, "example.mjs"), script);
      const { stdout } = await promisify(execFile)(process.execPath, [join(dir, "example.mjs")], { timeout: 60_000 });
      // `get_weather { city: ..., unit: ... }` (util.inspect may wrap a long city), then the answer.
      expect(stdout).toMatch(/^get_weather \{\s+city: [\s\S]*unit: '(celsius|fahrenheit)'\s+\}\n/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
