/**
 * response_format on both generation endpoints, streaming and not: json_schema output validates
 * (ajv), json_object output is a JSON object, and a schema the compiler cannot honor is a 400
 * naming response_format.json_schema.schema.
 */
import { Ajv } from "ajv";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model } from "../../lib/index.js";
import { createServer } from "../../lib/server/index.js";
import { synthModel } from "../helpers.js";

let model: Model;
let app: FastifyInstance;
beforeAll(async () => {
  const path = await synthModel("server-grammar", {
    dim: 32,
    layers: 1,
    heads: 2,
    kvHeads: 1,
    ffn: 64,
    vocabSize: 512,
  });
  model = await Model.load(path, { threads: 1, contextSize: 512, kvCacheTokens: 4096 });
  app = createServer(model, { modelName: "tiny", chatTemplate: "chatml", defaultMetrics: false });
  await app.ready();
});
afterAll(async () => {
  await app?.close();
  await model?.dispose();
});

async function post(url: string, body: object) {
  const r = await app.inject({
    method: "POST",
    url,
    headers: { "content-type": "application/json" },
    payload: JSON.stringify(body),
  });
  return { status: r.statusCode, body: r.body };
}

/** The generated text of a response (streamed: the deltas joined). */
function textOf(body: string, stream: boolean, chat: boolean): string {
  if (!stream) {
    const j = JSON.parse(body) as { choices: { text?: string; message?: { content: string } }[] };
    return chat ? (j.choices[0].message?.content ?? "") : (j.choices[0].text ?? "");
  }
  let text = "";
  for (const e of body.split("\n\n")) {
    if (!e.startsWith("data: ") || e === "data: [DONE]") continue;
    const c = JSON.parse(e.slice(6)) as { choices: { text?: string; delta?: { content?: string } }[] };
    for (const ch of c.choices) text += (chat ? ch.delta?.content : ch.text) ?? "";
  }
  return text;
}

const schema = {
  type: "object",
  properties: {
    answer: { enum: ["yes", "no"] },
    n: { type: "integer" },
    tags: { type: "array", items: { type: "string", maxLength: 4 }, maxItems: 2 },
  },
  required: ["answer", "n", "tags"],
  additionalProperties: false,
};

describe("response_format", () => {
  const validate = new Ajv().compile(schema);
  const cases = [
    ["/v1/chat/completions", true],
    ["/v1/completions", false],
  ] as const;

  for (const [url, chat] of cases) {
    for (const stream of [false, true]) {
      it(`json_schema on ${url}${stream ? " (streaming)" : ""}: the output validates`, async () => {
        for (const seed of [1, 2]) {
          const input = chat ? { messages: [{ role: "user", content: "JSON please" }] } : { prompt: "JSON:" };
          const r = await post(url, {
            ...input,
            seed,
            max_tokens: 200,
            stream,
            response_format: { type: "json_schema", json_schema: { name: "reply", schema, strict: true } },
          });
          expect(r.status, r.body.slice(0, 300)).toBe(200);
          const text = textOf(r.body, stream, chat);
          expect(validate(JSON.parse(text)), text).toBe(true);
        }
      });
    }
  }

  it("json_object gives a JSON object", async () => {
    // Favor `"` and `}` (random weights rarely close a string on their own).
    const logit_bias: Record<string, number> = {};
    for (let id = 0; id < model.tokenizer.nVocab; id++) {
      const b = model.tokenizer.tokenBytes(id);
      if (b.length === 1 && (b[0] === 0x22 || b[0] === 0x7d)) logit_bias[String(id)] = 6;
    }
    let complete = 0;
    for (const seed of [1, 2, 3, 4]) {
      const r = await post("/v1/chat/completions", {
        messages: [{ role: "user", content: "JSON please" }],
        seed,
        max_tokens: 120,
        logit_bias,
        response_format: { type: "json_object" },
      });
      expect(r.status).toBe(200);
      const j = JSON.parse(r.body) as { choices: { message: { content: string }; finish_reason: string }[] };
      const text = j.choices[0].message.content;
      expect(text.startsWith("{")).toBe(true);
      if (j.choices[0].finish_reason !== "stop") continue;
      complete++;
      expect(typeof JSON.parse(text)).toBe("object");
    }
    expect(complete).toBeGreaterThan(0);
  });

  it("an unsupported or missing schema is a 400 naming it", async () => {
    let r = await post("/v1/chat/completions", {
      messages: [{ role: "user", content: "x" }],
      response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "string", pattern: "a+" } } },
    });
    expect(r.status).toBe(400);
    let err = JSON.parse(r.body).error;
    expect(err.param).toBe("response_format.json_schema.schema");
    expect(err.message).toMatch(/pattern/);
    r = await post("/v1/completions", {
      prompt: "x",
      response_format: { type: "json_schema", json_schema: { name: "x" } },
    });
    expect(r.status).toBe(400);
    err = JSON.parse(r.body).error;
    expect(err.param).toBe("response_format.json_schema.schema");
    r = await post("/v1/completions", { prompt: "x", response_format: { type: "yaml" } });
    expect(r.status).toBe(400);
  });
});
