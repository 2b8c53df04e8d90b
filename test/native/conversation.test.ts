/**
 * lib/chat/conversation.ts: turns rendered with the chat template, each sending only the new text,
 * so the session's KV holds exactly the rendered conversation and later turns reuse it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatTemplate, Conversation, Model, type Chunk } from "../../lib/index.js";
import { synthModel } from "../helpers.js";

let m: Model;
const greedy = { temperature: 0, maxTokens: 6, stopAtEos: false } as const;

beforeAll(async () => {
  const path = await synthModel("conv", { dim: 64, layers: 2, heads: 4, kvHeads: 2, ffn: 128, vocabSize: 400 });
  m = await Model.load(path, { threads: 1, contextSize: 2048 });
});
afterAll(async () => {
  await m?.dispose();
});

async function reply(gen: AsyncIterable<Chunk>): Promise<{ text: string; tokens: number[]; last?: Chunk }> {
  let text = "";
  const tokens: number[] = [];
  let last: Chunk | undefined;
  for await (const c of gen) {
    text += c.text;
    tokens.push(...c.tokens);
    last = c;
  }
  return { text, tokens, last };
}

describe("Conversation", () => {
  it("the second turn sees the first: the KV holds the rendered conversation, reused, with the output of a fresh evaluation", async () => {
    const template = ChatTemplate.builtin("chatml", m.tokenizer);
    const conv = await Conversation.create(m, { system: "Be brief.", template, defaults: greedy });
    const r1 = await reply(conv.send("Hello there"));
    const afterFirst = conv.tokens.length;
    expect(r1.tokens).toHaveLength(6);
    const before2 = [...conv.tokens];
    const r2 = await reply(conv.send("And then?"));
    expect(conv.messages.map((x) => x.role)).toEqual(["system", "user", "assistant", "user", "assistant"]);
    expect(conv.messages[2].content).toBe(r1.text);
    // The session holds turn 1 (its rendered prompt and reply), then the rest of the conversation
    // as the template renders it, tokenized on its own (as llama.cpp's chat mode), then reply 2.
    const prompt1 = await template.render(conv.messages.slice(0, 2));
    const prompt2 = await template.render(conv.messages.slice(0, 4));
    expect(prompt2.startsWith(prompt1 + r1.text)).toBe(true);
    const delta = m.tokenizer.encode(prompt2.slice(prompt1.length + r1.text.length), {
      addSpecial: false,
      parseSpecial: true,
    });
    const enc1 = m.tokenizer.encode(prompt1, { addSpecial: true, parseSpecial: true });
    expect(conv.tokens).toEqual([...enc1, ...r1.tokens, ...delta, ...r2.tokens]);
    expect(conv.tokens.slice(0, before2.length)).toEqual(before2);
    // Turn 2 reused turn 1's KV and computed only the new text.
    expect(r2.last?.timings?.reusedTokens).toBeGreaterThanOrEqual(afterFirst - 1);
    // Same tokens as evaluating the whole history from scratch without a session.
    const history = conv.tokens.slice(0, conv.tokens.length - r2.tokens.length);
    const fresh = await m.complete({ tokens: history }, greedy);
    expect(r2.tokens).toEqual(fresh.tokens);
    conv.dispose();
  });

  it("reset forgets the turns (the system message stays); an aborted turn is not kept", async () => {
    const conv = await Conversation.create(m, {
      system: "S",
      template: ChatTemplate.builtin("chatml", m.tokenizer),
      defaults: greedy,
    });
    const a = await reply(conv.send("Hi"));
    conv.reset();
    expect(conv.messages).toEqual([{ role: "system", content: "S" }]);
    expect(conv.tokens).toEqual([]);
    expect((await reply(conv.send("Hi"))).tokens).toEqual(a.tokens); // the same first turn again
    const ac = new AbortController();
    ac.abort();
    const stopped = await reply(conv.send("More", { signal: ac.signal }));
    expect(stopped.last?.finishReason).toBe("abort");
    expect(conv.messages).toHaveLength(3);
    conv.dispose();
  });

  it("stops at the template's end-of-turn marker token (not emitted, finish reason eos)", async () => {
    const jinja = "{% for x in messages %}{{ x.content }}{% endfor %}";
    const free = await Conversation.create(m, {
      template: new ChatTemplate(jinja, m.tokenizer, { endMarkers: [] }),
      defaults: { temperature: 0, maxTokens: 5, stopAtEos: false },
    });
    const first = (await reply(free.send("anything at all"))).tokens;
    expect(first.length).toBe(5);
    free.dispose();
    // The same prompt with the reply's third token as the template's end-of-turn marker.
    const template = new ChatTemplate(jinja, m.tokenizer, { endMarkers: [m.tokenizer.tokenText(first[2])] });
    expect(template.stopTokens).toEqual([first[2]]);
    const conv = await Conversation.create(m, {
      template,
      defaults: { temperature: 0, maxTokens: 5, stopAtEos: false },
    });
    const r = await reply(conv.send("anything at all"));
    expect(r.tokens).toEqual(first.slice(0, 2));
    expect(r.last?.finishReason).toBe("eos");
    conv.dispose();
  });
});
