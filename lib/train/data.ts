/**
 * Training data for finetune(): a file read asynchronously and turned into token sequences with
 * labels (the token each position must predict, or -1 where no loss is taken).
 *
 * - plain text (any extension but .jsonl): tokenized whole with the model's tokenizer (BOS as the
 *   vocabulary asks), cut into sequences of `ctx` tokens;
 * - JSONL, one object a line: `{"text": "..."}` (tokenized like plain text, each record on its own)
 *   or `{"messages": [{role, content}, ...]}`: rendered with the model's chat template, loss on the
 *   assistant turns only (each assistant turn's text is what the template adds after the
 *   conversation before it with the generation prompt); records longer than `ctx` are cut.
 */
import { readFile } from "node:fs/promises";
import type { ChatMessage, ChatTemplate } from "../chat/index.js";
import { LlmserveError } from "../errors.js";
import type { Tokenizer } from "../tokenizer/index.js";

/** One training sequence: `tokens[t]` and the token `labels[t]` position t must predict (-1: none). */
export interface TrainSequence {
  tokens: number[];
  labels: number[];
}

/** The sequences of a file, in file order, and how many tokens carry a loss. */
export interface TrainDataset {
  sequences: TrainSequence[];
  labelled: number;
}

/** Next-token labels of a run of tokens: labels[t] = tokens[t + 1], the last position has none. */
function nextTokenLabels(tokens: number[], mask?: boolean[]): number[] {
  return tokens.map((_, t) => (t + 1 < tokens.length && (!mask || mask[t + 1]) ? tokens[t + 1] : -1));
}

/** Cuts tokens (and their per-token loss mask) into sequences of at most ctx tokens (2 or more). */
function chunk(tokens: number[], ctx: number, mask?: boolean[]): TrainSequence[] {
  const out: TrainSequence[] = [];
  for (let s = 0; s + 1 < tokens.length; s += ctx) {
    const t = tokens.slice(s, s + ctx);
    if (t.length < 2) break;
    out.push({ tokens: t, labels: nextTokenLabels(t, mask?.slice(s, s + ctx)) });
  }
  return out;
}

function bad(path: string, line: number | undefined, what: string): LlmserveError {
  const where = line === undefined ? path : `${path}:${line}`;
  return new LlmserveError("ERR_INVALID_ARGUMENT", `${where}: ${what}`);
}

/**
 * Tokens of a conversation and which of them are assistant text (the loss mask). For each
 * assistant turn i, the tokens of the conversation before it with the generation prompt must be a
 * prefix of the tokens of the conversation up to and including it; the rest is that turn.
 */
async function renderChat(chat: ChatTemplate, messages: ChatMessage[]): Promise<{ tokens: number[]; mask: boolean[] }> {
  const isPrefix = (p: number[], f: number[]) => p.length <= f.length && p.every((v, k) => v === f[k]);
  let tokens: number[] = [];
  const mask: boolean[] = [];
  for (let i = 0; i < messages.length; i++) {
    if (messages[i].role !== "assistant") continue;
    const prompt = chat.encode(await chat.render(messages.slice(0, i), { addGenerationPrompt: true }));
    const full = chat.encode(await chat.render(messages.slice(0, i + 1), { addGenerationPrompt: false }));
    if (!isPrefix(tokens, prompt) || !isPrefix(prompt, full))
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        'the chat template does not render this conversation as growing prefixes, so its assistant turns cannot be found; use {"text"} records instead',
      );
    while (mask.length < prompt.length) mask.push(false);
    while (mask.length < full.length) mask.push(true);
    tokens = full;
  }
  if (tokens.length === 0)
    throw new LlmserveError("ERR_INVALID_ARGUMENT", "the conversation has no assistant message to learn from");
  return { tokens, mask };
}

/**
 * Reads and tokenizes a training file. Errors (ERR_INVALID_ARGUMENT, naming the file and line): a
 * JSONL line that is not JSON, a record with neither `text` nor `messages`, a conversation without
 * an assistant turn, a file with no sequence of 2 tokens; ERR_FILE_NOT_FOUND / ERR_IO from reading.
 */
export async function loadTrainData(
  path: string,
  ctx: number,
  tok: Tokenizer,
  chat: () => Promise<ChatTemplate>,
): Promise<TrainDataset> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code === "ENOENT" ? "ERR_FILE_NOT_FOUND" : "ERR_IO";
    throw new LlmserveError(code, `cannot read training data ${path}: ${(err as Error).message}`, { cause: err });
  }
  const sequences: TrainSequence[] = [];
  if (!path.toLowerCase().endsWith(".jsonl")) {
    sequences.push(...chunk(await tok.encodeAsync(text), ctx));
  } else {
    const lines = text.split("\n");
    let template: ChatTemplate | undefined;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i].trim();
      if (line === "") continue;
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch (err) {
        throw bad(path, i + 1, `not valid JSON (${(err as Error).message}); each line must be one JSON object`);
      }
      const r = rec as { text?: unknown; messages?: unknown };
      if (rec !== null && typeof rec === "object" && typeof r.text === "string") {
        sequences.push(...chunk(await tok.encodeAsync(r.text), ctx));
      } else if (rec !== null && typeof rec === "object" && Array.isArray(r.messages)) {
        if (!r.messages.every((m) => m !== null && typeof m === "object" && typeof m.role === "string"))
          throw bad(path, i + 1, 'every message needs a "role" (and "content")');
        template ??= await chat();
        let c: { tokens: number[]; mask: boolean[] };
        try {
          c = await renderChat(template, r.messages as ChatMessage[]);
        } catch (err) {
          throw bad(path, i + 1, (err as Error).message);
        }
        const t = c.tokens.slice(0, ctx);
        sequences.push({ tokens: t, labels: nextTokenLabels(t, c.mask.slice(0, ctx)) });
      } else {
        throw bad(path, i + 1, 'expected {"text": "..."} or {"messages": [{"role": ..., "content": ...}]}');
      }
    }
  }
  const labelled = sequences.reduce((n, s) => n + s.labels.filter((l) => l >= 0).length, 0);
  if (labelled === 0)
    throw bad(
      path,
      undefined,
      "no tokens to learn from: the file is empty or has no assistant text within --ctx tokens",
    );
  return { sequences, labelled };
}

/** mulberry32, a small 32-bit generator: the same order on every platform for a seed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The sequences of `count` training passes ("epochs"), each pass a Fisher-Yates shuffle of the
 * dataset from a generator seeded with (seed, pass): deterministic for a seed.
 */
export function shuffledEpochs(seqs: readonly TrainSequence[], epochs: number, seed: number): TrainSequence[] {
  const out: TrainSequence[] = [];
  for (let e = 0; e < epochs; e++) {
    const rand = mulberry32((seed * 0x9e3779b1 + e) >>> 0);
    const order = seqs.map((_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    for (const i of order) out.push(seqs[i]);
  }
  return out;
}

/** The flat arrays the addon takes: tokens, labels and each sequence's start ([n + 1] offsets). */
export function packSequences(seqs: readonly TrainSequence[]): {
  tokens: Int32Array;
  labels: Int32Array;
  offsets: Float64Array;
} {
  const n = seqs.reduce((a, s) => a + s.tokens.length, 0);
  const tokens = new Int32Array(n);
  const labels = new Int32Array(n);
  const offsets = new Float64Array(seqs.length + 1);
  let at = 0;
  seqs.forEach((s, i) => {
    tokens.set(s.tokens, at);
    labels.set(s.labels, at);
    at += s.tokens.length;
    offsets[i + 1] = at;
  });
  return { tokens, labels, offsets };
}
