// node --test: search on a scripted step function (fixed log-probs per step), with hand-computed
// expectations, as tests/decoding does for Python's search.

import assert from 'node:assert';
import test from 'node:test';
import { beamSearch, lengthPenalty } from '../src/search/beam.js';
import { greedySearch } from '../src/search/greedy.js';
import { draw, seededRandom } from '../src/search/sample.js';

const EOS = 3;

/**
 * A step function whose next-token log-probs depend only on the tokens so far (the state is
 * each row's history): `table(history)` -> {token: prob}; 5 tokens, EOS = 3.
 */
function scripted(table) {
  return {
    async step(tokens, state) {
      const histories = state.map((h, row) => [...h, tokens[row]]);
      const width = 5;
      const values = new Float32Array(tokens.length * width).fill(Number.NEGATIVE_INFINITY);
      histories.forEach((history, row) => {
        for (const [token, p] of Object.entries(table(history))) values[row * width + Number(token)] = Math.log(p);
      });
      const ids = Int32Array.from({ length: values.length }, (_, i) => i % width);
      return { values, ids, width, ranked: false, state: histories };
    },
    select: (state, rows) => Array.from(rows, (row) => state[row]),
  };
}

// After the start token 0: token 1 (0.6) then only weak ones; token 2 (0.4) then EOS for sure.
const table = (history) => {
  const last = history.slice(1);
  if (last.length === 0) return { 1: 0.6, 2: 0.4 };
  if (last[0] === 1) return { 4: 0.55, [EOS]: 0.45 };
  return { [EOS]: 1.0 };
};

test('greedy takes the best token each step; beam finds the better sequence', async () => {
  const [greedy] = await greedySearch(scripted(table), [[]], [0], { maxNew: [5], eosId: EOS, bannedIds: [] });
  assert.deepStrictEqual(greedy.tokens, [1, 4, 4, 4, 4]); // never EOS: 0.45 < 0.55
  const [[best]] = await beamSearch(scripted(table), [[]], [0], { beamSize: 2, maxNew: [5], eosId: EOS, bannedIds: [], lengthPenalty: 0 });
  assert.deepStrictEqual(best.tokens, [2]);
  assert.ok(Math.abs(best.score - Math.log(0.4)) < 1e-6);
});

test('n-best comes best first, normalised by the GNMT length penalty', async () => {
  const [hypotheses] = await beamSearch(scripted(table), [[]], [0], { beamSize: 2, nBest: 2, maxNew: [5], eosId: EOS, bannedIds: [], lengthPenalty: 1 });
  assert.strictEqual(hypotheses.length, 2);
  assert.ok(hypotheses[0].normalized >= hypotheses[1].normalized);
  assert.deepStrictEqual(hypotheses[1].tokens, [1]);
  assert.ok(Math.abs(hypotheses[1].normalized - Math.log(0.6 * 0.45) / lengthPenalty(2, 1)) < 1e-6);
});

test('a sentence stops at its max length, its beams unfinished', async () => {
  const [[best]] = await beamSearch(scripted(() => ({ 1: 0.9, 2: 0.1 })), [[]], [0], { beamSize: 2, maxNew: [3], eosId: EOS, bannedIds: [] });
  assert.deepStrictEqual(best.tokens, [1, 1, 1]);
  assert.strictEqual(best.finished, false);
});

test('banned tokens and an early EOS are never produced', async () => {
  const [path] = await greedySearch(scripted(() => ({ 1: 0.5, [EOS]: 0.3, 2: 0.2 })), [[]], [0], { maxNew: [3], minNew: [2], eosId: EOS, bannedIds: [1] });
  assert.deepStrictEqual(path.tokens, [2, 2]);
  const [done] = await greedySearch(scripted(() => ({ 1: 0.5, [EOS]: 0.3, 2: 0.2 })), [[]], [0], { maxNew: [5], minNew: [2], eosId: EOS, bannedIds: [1] });
  assert.deepStrictEqual(done.tokens, [2, 2]);
  assert.strictEqual(done.finished, true);
});

test('rows of a batch decode as they do alone', async () => {
  const batch = await beamSearch(scripted(table), [[], []], [0, 0], { beamSize: 2, maxNew: [5, 1], eosId: EOS, bannedIds: [] });
  const [alone] = await beamSearch(scripted(table), [[]], [0], { beamSize: 2, maxNew: [1], eosId: EOS, bannedIds: [] });
  assert.deepStrictEqual(batch[1], alone);
});

test('sampling with a seed repeats; top-k 1 is greedy', () => {
  const scores = Float32Array.from([Math.log(0.1), Math.log(0.7), Math.log(0.2)]);
  const first = Array.from({ length: 20 }, (_, i, r = seededRandom(7)) => draw(scores, 1, 3, {}, r)[0]);
  const again = Array.from({ length: 20 }, (_, i, r = seededRandom(7)) => draw(scores, 1, 3, {}, r)[0]);
  assert.deepStrictEqual(first, again);
  assert.deepStrictEqual(draw(scores, 1, 3, { topK: 1 }, seededRandom(1)), [1]);
});
