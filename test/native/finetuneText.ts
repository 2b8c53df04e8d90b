/**
 * The training text the finetune tests share (aidreams260K learns it in a few dozen steps): 40
 * pairs of four sentences as train.txt, the first 12 reversed as eval.txt.
 */
import { writeFileSync } from "node:fs";

export const SENTENCES = [
  "The blue robot sings to the quiet moon.",
  "A silver cat dreams of warm circuits.",
  "The quiet moon listens to the blue robot.",
  "Warm circuits hum a gentle song for the silver cat.",
];

/** Writes train.txt and eval.txt through `path(name)`. */
export function writeFinetuneText(path: (name: string) => string): void {
  const lines: string[] = [];
  for (let i = 0; i < 40; i++) lines.push(`${SENTENCES[(i * 7) % 4]} ${SENTENCES[(i * 3 + 1) % 4]}`);
  writeFileSync(path("train.txt"), lines.join(" "));
  writeFileSync(path("eval.txt"), lines.slice(0, 12).reverse().join(" "));
}
