// Greedy search (seqgen/decoding/search.py, greedy_search): the most probable token at every
// step; finished rows leave the batch at once, so no step is spent on them.

import { argmax, banned, NEG_INF } from './candidates.js';
import { banRepeatedNgrams } from './ngrams.js';

/**
 * @param {object} stepFunction `{ step(tokens, state, {candidates}), select(state, rows) }`
 * @param {object} state the start state, one row per input
 * @param {number[]} firstTokens `(batch,)` the token each row feeds first
 * @param {object} options
 * @param {number[]} options.maxNew `(batch,)` most tokens per row
 * @param {number[]} [options.minNew] `(batch,)` EOS is banned before this many
 * @param {number|null} options.eosId null: rows end at maxNew only
 * @param {number[]} options.bannedIds never produced
 * @param {number} [options.noRepeatNgramSize] no n-gram of this size twice in a row's history
 *   (its first token and the tokens produced); 0 = off
 * @param {(rows: number[], tokens: number[]) => void} [options.onStep] after each step
 * @returns {Promise<{tokens: number[], finished: boolean}[]>} per row, EOS not included
 */
export async function greedySearch(stepFunction, state, firstTokens, options) {
  const { maxNew, eosId, onStep } = options;
  const minNew = options.minNew ?? maxNew.map(() => 0);
  const bannedIds = new Set(options.bannedIds);
  const paths = firstTokens.map(() => ({ tokens: [], finished: false }));
  let active = firstTokens.map((_, row) => row).filter((row) => maxNew[row] > 0);
  if (active.length < firstTokens.length && active.length > 0) {
    state = stepFunction.select(state, active);
  }
  let tokens = active.map((row) => firstTokens[row]);
  const longest = Math.max(0, ...maxNew);
  // Greedy reads the best token past the banned ids and EOS; n-gram bans are unbounded, so
  // with them it reads every log-prob (as Python does).
  const ngram = options.noRepeatNgramSize ?? 0;
  const candidates = ngram > 0 ? Infinity : bannedIds.size + 2;
  for (let position = 0; position < longest && active.length > 0; position += 1) {
    const step = await stepFunction.step(tokens, state, { candidates });
    state = step.state;
    const scores = banned(step, bannedIds, eosId, (i) => position < minNew[active[i]]);
    const historyOf = (i) => [firstTokens[active[i]], ...paths[active[i]].tokens];
    banRepeatedNgrams(scores, step.ids, step.width, historyOf, ngram);
    const kept = [];
    const chosen = [];
    for (let i = 0; i < active.length; i += 1) {
      const at = i * step.width + argmax(scores, i, step.width);
      chosen.push(scores[at] === NEG_INF ? null : step.ids[at]); // all banned: the row ends
      const token = chosen[i];
      if (token === null) continue;
      const path = paths[active[i]];
      if (token === eosId) path.finished = true;
      else path.tokens.push(token);
      if (token !== eosId && position + 1 < maxNew[active[i]]) kept.push(i);
    }
    if (onStep) {
      const produced = active.filter((_, i) => chosen[i] !== null);
      onStep(produced, chosen.filter((token) => token !== null));
    }
    const next = kept.map((i) => chosen[i]);
    if (kept.length > 0 && kept.length < active.length) state = stepFunction.select(state, kept);
    active = kept.map((i) => active[i]);
    tokens = next;
  }
  return paths;
}
