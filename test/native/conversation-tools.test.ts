/**
 * Conversation with tools (the library's chat path): a forced call ("required" / a named function)
 * on a random-weights model gives calls whose arguments validate (ajv) against the tool's schema,
 * recorded in lastToolCalls and the assistant message; the tool's result is sent as the next turn
 * and renders; "none" makes no call; a template without a tool-call format is refused.
 */
import { existsSync, readFileSync } from "node:fs";
import { Ajv } from "ajv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatTemplate, Conversation, Model, type ToolDefinition } from "../../lib/index.js";
import { fixture, haveFixtures, synthModel } from "../helpers.js";

const qwen = fixture("chat-templates", "Qwen-Qwen2.5-7B-Instruct.jinja");
const nemo = fixture("chat-templates", "mistralai-Mistral-Nemo-Instruct-2407.jinja");
const have = haveFixtures && existsSync(qwen) && existsSync(nemo);

const params = {
  type: "object",
  properties: { city: { type: "string", maxLength: 8 }, days: { type: "integer" } },
  required: ["city", "days"],
  additionalProperties: false,
};
const tools: ToolDefinition[] = [
  { type: "function", function: { name: "get_weather", description: "Weather", parameters: params } },
  {
    type: "function",
    function: { name: "noop", parameters: { type: "object", properties: {}, additionalProperties: false } },
  },
];
const validate = new Ajv().compile(params);

let m: Model;
beforeAll(async () => {
  const path = await synthModel("conv-tools", { dim: 32, layers: 1, heads: 2, kvHeads: 1, ffn: 64, vocabSize: 512 });
  m = await Model.load(path, { threads: 1, contextSize: 2048 });
});
afterAll(async () => {
  await m?.dispose();
});

async function drain(gen: AsyncIterable<{ text: string }>): Promise<string> {
  let s = "";
  for await (const c of gen) s += c.text;
  return s;
}

describe.skipIf(!have)("Conversation with tools", () => {
  it.each([
    ["Qwen2.5 (hermes)", qwen],
    ["Mistral Nemo", nemo],
  ])("%s: a named call validates, is recorded, and the tool result is the next turn", async (_, file) => {
    const template = new ChatTemplate(readFileSync(file, "utf8"), m.tokenizer);
    const conv = await Conversation.create(m, {
      template,
      tools,
      defaults: { temperature: 0.7, seed: 3, maxTokens: 200 },
    });
    await drain(conv.send("Weather in Oslo?", { toolChoice: { type: "function", function: { name: "get_weather" } } }));
    expect(conv.lastToolCalls).toHaveLength(1);
    const call = conv.lastToolCalls[0];
    expect(call.function.name).toBe("get_weather");
    const args = JSON.parse(call.function.arguments);
    expect(validate(args), JSON.stringify(validate.errors)).toBe(true);
    const assistant = conv.messages.at(-1)!;
    expect(assistant.role).toBe("assistant");
    expect(assistant.tool_calls).toEqual([call]);

    await drain(
      conv.send([{ role: "tool", tool_call_id: call.id, content: '{"temp":"RESULT-7C"}' }], {
        toolChoice: "none",
        maxTokens: 3,
      }),
    );
    expect(conv.messages.map((x) => x.role)).toEqual(["user", "assistant", "tool", "assistant"]);
    expect(conv.lastToolCalls).toEqual([]);
  });

  it("required picks one of the tools; a template without a tool-call format is refused", async () => {
    const template = new ChatTemplate(readFileSync(qwen, "utf8"), m.tokenizer);
    const conv = await Conversation.create(m, { template, tools, defaults: { seed: 5, maxTokens: 200 } });
    await drain(conv.send("Anything?", { toolChoice: "required", parallelToolCalls: false }));
    expect(conv.lastToolCalls).toHaveLength(1);
    expect(["get_weather", "noop"]).toContain(conv.lastToolCalls[0].function.name);
    await expect(
      Conversation.create(m, { template: ChatTemplate.builtin("chatml", m.tokenizer), tools }),
    ).rejects.toThrow(/defines no tool-call format/);
  });
});
