/**
 * `llmserve chat`: a REPL over a {@link Conversation} (the model's chat template, history kept in
 * the KV cache). Ctrl-C stops the reply being written; Ctrl-C at the prompt (or a second one) quits,
 * as `/exit` does; `/reset` starts over. With stdin not a terminal it reads one user turn per line
 * and prints each reply on its own line (scripts, tests).
 */
import { existsSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import type { Command } from "commander";
import { ChatTemplate } from "../chat/index.js";
import { Conversation } from "../chat/conversation.js";
import { LlmserveError } from "../errors.js";
import type { Chunk } from "../generate.js";
import {
  addContextSizeOption,
  addSamplingOptions,
  describeTimings,
  int,
  loadModel,
  MODEL_HELP,
  samplingOptions,
  type SamplingCliOptions,
} from "./common.js";

interface ChatCliOptions extends SamplingCliOptions {
  model: string;
  system?: string;
  chatTemplate?: string;
  threads?: number;
  contextSize?: number;
  stats?: boolean;
}

const HELP = "/exit quits, /reset forgets the conversation, Ctrl-C stops a reply (at the prompt: quits)";

async function runChat(o: ChatCliOptions): Promise<void> {
  const model = await loadModel(o.model, { threads: o.threads, contextSize: o.contextSize });
  let conv: Conversation | undefined;
  const rl = createInterface({
    input: process.stdin,
    output: process.stdin.isTTY ? process.stdout : undefined,
    terminal: process.stdin.isTTY === true,
  });
  // Take the line iterator now: readline drops lines emitted before it exists, and piped stdin
  // may deliver every line while the template and the conversation are still being set up.
  const lines = rl[Symbol.asyncIterator]();
  let current: AbortController | undefined;
  let quitting = false;
  const onSigint = () => {
    if (current && !current.signal.aborted) current.abort();
    else {
      quitting = true;
      if (process.stdin.isTTY) process.stdout.write("\n"); // leave the prompt's line
      rl.close();
    }
  };
  rl.on("SIGINT", onSigint); // a terminal: readline turns Ctrl-C into this event
  process.on("SIGINT", onSigint); // a signal from elsewhere (kill -INT, piped stdin)
  try {
    let text = o.chatTemplate;
    if (text !== undefined && existsSync(text)) text = readFileSync(text, "utf8");
    const template = await ChatTemplate.fromModel(model, {
      template: text,
      warn: (m) => process.stderr.write(`note: ${m}\n`),
    });
    conv = await Conversation.create(model, { system: o.system, template, defaults: samplingOptions(o) });
    const tty = process.stdin.isTTY === true;
    if (tty) process.stderr.write(`Chatting with ${model.path} (chat template: ${template.name}). ${HELP}.\n`);
    rl.setPrompt("> ");
    if (tty) rl.prompt();
    for await (const line of { [Symbol.asyncIterator]: () => lines }) {
      const input = line.trim();
      if (input === "/exit" || input === "/quit") break;
      if (input === "/reset") {
        conv.reset();
        process.stderr.write("(conversation cleared)\n");
      } else if (input === "/help" || input === "/?") process.stderr.write(`${HELP}\n`);
      else if (input !== "") await turn(conv, input, o.stats === true, (c) => (current = c));
      current = undefined;
      if (quitting) break;
      if (tty) rl.prompt();
    }
  } finally {
    process.off("SIGINT", onSigint);
    rl.close();
    conv?.dispose();
    await model.dispose();
  }
}

/** One turn: streams the reply; typed errors (e.g. a full context) are reported, the REPL goes on. */
async function turn(
  conv: Conversation,
  input: string,
  stats: boolean,
  setCurrent: (c: AbortController) => void,
): Promise<void> {
  const ac = new AbortController();
  setCurrent(ac);
  let last: Chunk | undefined;
  try {
    for await (const c of conv.send(input, { signal: ac.signal })) {
      process.stdout.write(c.text);
      last = c;
    }
    process.stdout.write("\n");
    if (last?.finishReason === "abort") process.stderr.write("[stopped; this turn is not kept]\n");
    if (stats && last) process.stderr.write(`${describeTimings(last)}\n`);
  } catch (err) {
    if (!(err instanceof LlmserveError)) throw err;
    process.stdout.write("\n");
    const hint = err.code === "ERR_CONTEXT_OVERFLOW" ? " Type /reset to start a new conversation." : "";
    process.stderr.write(`llmserve: ${err.message} (${err.code})${hint}\n`);
  }
}

/** Adds `chat` to the program. */
export function registerChat(program: Command): void {
  const cmd = program
    .command("chat")
    .description("chat with a model in the terminal (its chat template; the conversation stays in the KV cache)")
    .requiredOption("-m, --model <model>", MODEL_HELP)
    .option("--system <text>", "system message the conversation starts with")
    .option(
      "--chat-template <name|file>",
      "built-in chat template (chatml, llama3, llama2, zephyr, phi3, gemma) or a .jinja file, instead of the model's",
    )
    .option("-t, --threads <n>", "compute threads (default: physical cores)", int("--threads"))
    .option("--stats", "print each reply's token counts, reused (cached) tokens and speed to stderr");
  addSamplingOptions(cmd);
  addContextSizeOption(cmd);
  cmd.action(runChat);
}
