// No repeated n-grams (seqgen/decoding/processors.py, no_repeat_ngram_bans): a row may not
// produce a token that would repeat an n-gram already in its history. The history starts
// with the row's first token (BOS, or a prompt's last token), as in Python, so for a language
// model an n-gram may span the end of the prompt.

import { NEG_INF } from './candidates.js';

/**
 * The tokens a row may not produce next: every token that followed an earlier occurrence of
 * the history's last n - 1 tokens (n = 1: every token seen; n <= 0: none).
 * @param {number[]} history the row's tokens so far, oldest first
 * @param {number} n the n-gram size
 * @returns {number[]}
 */
export function noRepeatNgramBans(history, n) {
  if (n <= 0 || history.length < n - 1) return [];
  const suffixStart = history.length - (n - 1);
  const bans = [];
  for (let start = 0; start + n <= history.length; start += 1) {
    let same = true;
    for (let i = 0; i < n - 1 && same; i += 1) same = history[start + i] === history[suffixStart + i];
    if (same) bans.push(history[start + n - 1]);
  }
  return bans;
}

/**
 * Set to -inf, in place, each row's candidates that would repeat one of its n-grams.
 * @param {Float32Array} scores `(rows, width)` a step's scores after the other bans (a copy)
 * @param {Int32Array} ids `(rows, width)` the token id of each column
 * @param {number} width
 * @param {(row: number) => number[]} historyOf the history of a row of `scores`
 * @param {number} n the n-gram size; 0 bans nothing
 */
export function banRepeatedNgrams(scores, ids, width, historyOf, n) {
  if (!(n > 0)) return;
  const rows = scores.length / width;
  for (let row = 0; row < rows; row += 1) {
    const bans = new Set(noRepeatNgramBans(historyOf(row), n));
    if (bans.size === 0) continue;
    for (let column = row * width; column < (row + 1) * width; column += 1) {
      if (bans.has(ids[column])) scores[column] = NEG_INF;
    }
  }
}
