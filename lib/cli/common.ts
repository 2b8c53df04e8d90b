/** What the CLI's commands share: number parsers for flags and the progress bar. */
import cliProgress from "cli-progress";
import { LlmserveError } from "../errors.js";

/** A commander parser for an integer flag (ERR_INVALID_ARGUMENT naming the flag otherwise). */
export function int(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n))
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        `Expected an integer for ${name} but received ${JSON.stringify(v)}`,
      );
    return n;
  };
}

/** A commander parser for a number flag. */
export function float(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n))
      throw new LlmserveError(
        "ERR_INVALID_ARGUMENT",
        `Expected a number for ${name} but received ${JSON.stringify(v)}`,
      );
    return n;
  };
}

/** A progress bar on stderr when it is a terminal; silent otherwise (keeps --json output clean). */
export function progressBar(label: string): { update: (f: number) => void; stop: () => void } {
  if (!process.stderr.isTTY) return { update: () => {}, stop: () => {} };
  const bar = new cliProgress.SingleBar(
    { format: `${label} [{bar}] {percentage}%`, stream: process.stderr, hideCursor: true, clearOnComplete: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(100, 0);
  return { update: (f) => bar.update(Math.round(f * 100)), stop: () => bar.stop() };
}
