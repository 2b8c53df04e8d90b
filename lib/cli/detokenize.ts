/** `llmserve detokenize`: token ids back to text (the inverse of `llmserve tokenize`). */
import type { Command } from "commander";
import { LlmserveError } from "../errors.js";
import { Tokenizer } from "../tokenizer/index.js";
import { localModel, MODEL_HELP } from "./common.js";

/** Parses `--tokens '[1,2,3]'` (also plain "1 2 3" or "1,2,3", as tokenize's output is pasted back). */
export function parseTokenList(text: string): number[] {
  const t = text.trim();
  let ids: unknown;
  try {
    ids = t.startsWith("[")
      ? JSON.parse(t)
      : t
          .split(/[\s,]+/)
          .filter(Boolean)
          .map(Number);
  } catch {
    ids = undefined;
  }
  if (!Array.isArray(ids) || ids.some((x) => !Number.isInteger(x)))
    throw new LlmserveError(
      "ERR_INVALID_ARGUMENT",
      `--tokens must be token ids as a JSON array, e.g. "[1,303,281]", but received ${JSON.stringify(text)}`,
    );
  return ids as number[];
}

async function runDetokenize(o: { model: string; tokens: string; special?: boolean; json?: boolean }): Promise<void> {
  const ids = parseTokenList(o.tokens);
  const tok = await Tokenizer.fromGguf(await localModel(o.model));
  const text = tok.decode(ids, { special: o.special === true });
  process.stdout.write(o.json ? `${JSON.stringify(text)}\n` : `${text}\n`);
}

/** Adds `detokenize` to the program. */
export function registerDetokenize(program: Command): void {
  program
    .command("detokenize")
    .description("print the text of token ids (the inverse of tokenize)")
    .requiredOption("-m, --model <model>", `${MODEL_HELP} (or a vocab-only file)`)
    .requiredOption("--tokens <ids>", 'token ids as a JSON array, e.g. "[1,303,281]"')
    .option("--special", "render control tokens such as <s> as text")
    .option("--json", "print the text as a JSON string (shows whitespace and control characters)")
    .action(runDetokenize);
}
