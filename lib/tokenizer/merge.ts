/**
 * The merge loop shared by the BPE and SentencePiece tokenizers: the symbols of one word are
 * adjacent spans of its text, kept in a doubly linked list; the adjacent pair with the smallest key
 * is merged first (leftmost on ties), until no adjacent pair has a key.
 */
import { CandidateHeap } from "./heap.js";

/**
 * Merges the first `n` (>= 1) symbols, whose lengths are `len`: `key(left, right)` is the priority
 * of merging symbol `right` into its left neighbour `left` (smaller first), or undefined when the
 * pair cannot merge. On return `len[i]` is the merged length of symbol i (0 when it was merged into
 * its left neighbour); returns `next`: walk the surviving symbols from 0 through next[i] until -1.
 */
export function mergeSymbols(
  len: Int32Array,
  n: number,
  key: (left: number, right: number) => number | undefined,
): Int32Array {
  const prev = new Int32Array(n);
  const next = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    prev[i] = i - 1;
    next[i] = i + 1;
  }
  next[n - 1] = -1;

  const heap = new CandidateHeap();
  const tryAdd = (left: number, right: number) => {
    if (left < 0 || right < 0) return;
    const k = key(left, right);
    if (k === undefined) return;
    heap.push({ key: k, left, right, size: len[left] + len[right] });
  };
  for (let i = 1; i < n; i++) tryAdd(i - 1, i);

  while (heap.length > 0) {
    const c = heap.pop()!;
    const l = c.left;
    const r = c.right;
    // skip candidates whose symbols changed since they were made
    if (len[l] === 0 || len[r] === 0 || len[l] + len[r] !== c.size) continue;
    len[l] += len[r];
    len[r] = 0;
    next[l] = next[r];
    if (next[r] >= 0) prev[next[r]] = l;
    tryAdd(prev[l], l);
    tryAdd(l, next[l]);
  }
  return next;
}
