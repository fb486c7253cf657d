// node --test: search on a scripted step function (fixed log-probs per step), with hand-computed
// expectations, as tests/decoding does for Python's search.

import assert from 'node:assert';
import test from 'node:test';
import { beamSearch, bestFirst, lengthPenalty } from '../src/search/beam.js';
import { greedySearch } from '../src/search/greedy.js';
import { noRepeatNgramBans } from '../src/search/ngrams.js';
import { defaultRng } from '../src/search/numpy-random.js';
import { draw, pairwiseSum } from '../src/search/sample.js';

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
  const first = Array.from({ length: 20 }, (_, i, r = defaultRng(7)) => draw(scores, 1, 3, {}, r)[0]);
  const again = Array.from({ length: 20 }, (_, i, r = defaultRng(7)) => draw(scores, 1, 3, {}, r)[0]);
  assert.deepStrictEqual(first, again);
  assert.deepStrictEqual(draw(scores, 1, 3, { topK: 1 }, defaultRng(1)), [1]);
});

test('a draw inverts the cumulative sum in token order; an all-banned row still uses a number', () => {
  const scores = Float32Array.from([Math.log(0.1), Math.log(0.7), Math.log(0.2), -Infinity, -Infinity, -Infinity]);
  const numbers = [0.05, 0.5, 0.85, 0.95];
  const fixed = (values) => () => values.shift();
  // cumulative 0.1, 0.8, 1.0: 0.05 -> token 0, 0.5 -> 1, 0.85 -> 2; row 2 banned takes 0.5
  assert.deepStrictEqual(draw(scores, 2, 3, {}, fixed([0.05, 0.5])), [0, -1]);
  assert.deepStrictEqual(numbers.map((u) => draw(scores, 1, 3, {}, fixed([u]))[0]), [0, 1, 2, 2]);
  // top-p 0.75 keeps 1 (0.7 before it: 0 < 0.75) and 2 (0.7 before it), not 0 (0.9 before it)
  assert.deepStrictEqual(draw(scores, 1, 3, { topP: 0.75 }, fixed([0.05]))[0], 1);
});

test("numpy's pairwise sum: 8 accumulators, halves above 128", () => {
  const values = Float64Array.from({ length: 300 }, (_, i) => 1 / (i + 1) ** 1.5);
  let sequential = 0;
  for (const v of values) sequential += v;
  assert.ok(Math.abs(pairwiseSum(values) - sequential) < 1e-12);
  assert.strictEqual(pairwiseSum([1, 2, 3]), 6);
});

test('n-gram bans: every token that followed the last n - 1 tokens before', () => {
  // The cases of tests/decoding/test_processors.py, test_no_repeat_ngram_bans.
  const history = [[5, 1, 2, 3, 1, 2, 4, 1], [1, 2], [7]];
  assert.deepStrictEqual(history.map((h) => noRepeatNgramBans(h, 2)), [[2, 2], [], []]);
  assert.deepStrictEqual(history.map((h) => noRepeatNgramBans(h, 3)), [[], [], []]);
  assert.deepStrictEqual(noRepeatNgramBans([1, 2, 3, 1, 2], 3), [3]);
  assert.deepStrictEqual([...new Set(noRepeatNgramBans(history[0], 1))].sort(), [1, 2, 3, 4, 5]);
  assert.deepStrictEqual(noRepeatNgramBans(history[0], 0), []);
  assert.deepStrictEqual(noRepeatNgramBans([1], 3), []);
});

test('greedy and beam never repeat a banned n-gram', async () => {
  // The model always prefers token 1, then 2: with bigrams banned, 1 1 cannot follow 0 1.
  const loop = () => ({ 1: 0.6, 2: 0.3, 4: 0.1 });
  const options = { maxNew: [4], eosId: EOS, bannedIds: [], noRepeatNgramSize: 2 };
  const [greedy] = await greedySearch(scripted(loop), [[]], [0], options);
  assert.deepStrictEqual(greedy.tokens, [1, 1, 2, 1]); // (0 1), (1 1), (1 2), (2 1): no pair twice
  const [[best]] = await beamSearch(scripted(loop), [[]], [0], { ...options, beamSize: 2 });
  const pairs = [0, ...best.tokens].slice(1).map((t, i) => `${[0, ...best.tokens][i]} ${t}`);
  assert.strictEqual(new Set(pairs).size, pairs.length);
  const [plain] = await greedySearch(scripted(loop), [[]], [0], { ...options, noRepeatNgramSize: 0 });
  assert.deepStrictEqual(plain.tokens, [1, 1, 1, 1]);
});

test("beam search's candidate ranking is a stable sort's first 2k, -inf ties by position", () => {
  const rng = defaultRng(7);
  for (let trial = 0; trial < 500; trial += 1) {
    const n = 1 + Math.floor(rng() * 60);
    // Few distinct values, so that ties are common; -inf among them.
    const values = [Number.NEGATIVE_INFINITY, -3, -2.5, -1, -0.25, 0];
    const totals = Float64Array.from({ length: n }, () => values[Math.floor(rng() * values.length)]);
    const count = Math.min(1 + Math.floor(rng() * 12), n);
    const sorted = Array.from({ length: n }, (_, i) => i).sort((a, b) => totals[b] - totals[a] || a - b);
    const found = bestFirst(totals, n, count, new Int32Array(count));
    assert.deepStrictEqual(Array.from(found), sorted.slice(0, count), `trial ${trial}`);
  }
});
