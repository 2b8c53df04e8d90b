/**
 * The native mutation list (scripts/native-mutations.mjs) stays applicable: every entry's text
 * occurs exactly once in its file, ids are unique, and each says what it breaks. A refactor that
 * moves the mutated line fails here, in `npm test`, instead of at the next mutation run.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

type Mutation = { id: string; file: string; find: string; replace: string; why: string };

const root = join(import.meta.dirname, "..", "..");

describe("native mutations", () => {
  it("each applies to exactly one place, changes it, and has a unique id and a reason", async () => {
    const { MUTATIONS } = (await import(join(root, "scripts", "native-mutations.mjs"))) as { MUTATIONS: Mutation[] };
    expect(MUTATIONS.length).toBeGreaterThan(60);
    const ids = new Set<string>();
    const stale: string[] = [];
    for (const m of MUTATIONS) {
      expect(ids.has(m.id), `duplicate id ${m.id}`).toBe(false);
      ids.add(m.id);
      expect(m.replace, m.id).not.toBe(m.find);
      expect(m.why.length, m.id).toBeGreaterThan(10);
      const text = readFileSync(join(root, m.file), "utf8");
      const n = text.split(m.find).length - 1;
      if (n !== 1) stale.push(`${m.id}: ${n} matches in ${m.file}`);
    }
    expect(stale).toEqual([]);
  });
});
