/**
 * SentencePiece (BPE-by-score) tokenization as llama.cpp's llm_tokenizer_spm does it: start from
 * single characters, repeatedly merge the adjacent pair whose concatenation is the vocabulary token
 * with the highest score (leftmost on ties), and emit characters that never became a token as
 * byte tokens `<0xNN>`.
 */
import { mergeSymbols } from "./merge.js";
import { utf8Encode } from "./unicode.js";
import type { Vocab } from "./vocab.js";

/**
 * Tokenizes one raw-text fragment whose spaces are already escaped as "▁" (and which already has
 * the leading space prefix when the vocabulary asks for one). Appends ids to `out`.
 */
export function spmTokenize(vocab: Vocab, text: string, out: number[]): void {
  const n0 = text.length;
  if (n0 === 0) return;
  // symbols: one per code point, as [start, len) in UTF-16 units
  const start = new Int32Array(n0);
  const len = new Int32Array(n0);
  let n = 0;
  for (let i = 0; i < n0; ) {
    const c = text.charCodeAt(i);
    const w = c >= 0xd800 && c <= 0xdbff && i + 1 < n0 ? 2 : 1;
    start[n] = i;
    len[n] = w;
    n++;
    i += w;
  }

  const { textToId, scores } = vocab;
  const next = mergeSymbols(len, n, (left, right) => {
    const id = textToId.get(text.substr(start[left], len[left] + len[right]));
    return id === undefined ? undefined : -scores[id];
  });

  for (let i = 0; i !== -1; i = next[i]) {
    const piece = text.substr(start[i], len[i]);
    const id = textToId.get(piece);
    if (id !== undefined) {
      out.push(id);
      continue;
    }
    // a character with no token of its own: one byte token per UTF-8 byte
    for (const b of utf8Encode(piece)) {
      const bt = vocab.byteToken(b);
      if (bt !== undefined) out.push(bt);
      else if (vocab.unk !== undefined) out.push(vocab.unk);
    }
  }
}
