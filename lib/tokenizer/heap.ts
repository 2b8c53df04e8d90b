/** A binary heap of merge candidates ordered by (key ascending, left ascending). */
export interface Candidate {
  /** priority: smaller pops first (BPE rank, or negated SentencePiece score) */
  key: number;
  /** index of the left symbol */
  left: number;
  /** index of the right symbol */
  right: number;
  /** combined length of both symbols when the candidate was made (stale-entry check) */
  size: number;
}

const before = (a: Candidate, b: Candidate) => a.key < b.key || (a.key === b.key && a.left < b.left);

export class CandidateHeap {
  private items: Candidate[] = [];

  get length(): number {
    return this.items.length;
  }

  push(c: Candidate): void {
    const h = this.items;
    let i = h.length;
    h.push(c);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(c, h[p])) break;
      h[i] = h[p];
      i = p;
    }
    h[i] = c;
  }

  pop(): Candidate | undefined {
    const h = this.items;
    const top = h[0];
    const last = h.pop();
    if (h.length === 0 || last === undefined) return top;
    let i = 0;
    const n = h.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && before(h[r], h[l]) ? r : l;
      if (!before(h[c], last)) break;
      h[i] = h[c];
      i = c;
    }
    h[i] = last;
    return top;
  }
}
