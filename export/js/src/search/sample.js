// Sampling (seqgen/decoding/search.py, sample and _draw): each token drawn from the model's
// distribution after temperature, top-k and top-p. The uniform numbers are numpy's
// (`np.random.default_rng(seed).random()`, see numpy-random.js), one per active row and step
// in row order, and the arithmetic is Python's (float32 temperature and nucleus, float64
// softmax with numpy's pairwise sum, a sequential cumulative sum, the first index whose mass
// exceeds the threshold), so a seed gives the text Python gives. With top-k, both walk the k
// best in token-id order (only a tie at the k-th score could make them keep other tokens).

import { banned, NEG_INF } from './candidates.js';
import { banRepeatedNgrams } from './ngrams.js';
import { defaultRng } from './numpy-random.js';

/** numpy's float64 sum along a row (pairwise: 8 accumulators up to 128, halves above). */
export function pairwiseSum(values, start = 0, count = values.length) {
  if (count < 8) {
    let sum = 0;
    for (let i = start; i < start + count; i += 1) sum += values[i];
    return sum;
  }
  if (count <= 128) {
    const r = Array.from({ length: 8 }, (_, j) => values[start + j]);
    let i = 8;
    for (; i < count - (count % 8); i += 8) for (let j = 0; j < 8; j += 1) r[j] += values[start + i + j];
    let sum = r[0] + r[1] + (r[2] + r[3]) + (r[4] + r[5] + (r[6] + r[7]));
    for (; i < count; i += 1) sum += values[start + i];
    return sum;
  }
  let half = Math.floor(count / 2);
  half -= half % 8;
  return pairwiseSum(values, start, half) + pairwiseSum(values, start + half, count - half);
}

/** processors.py's log_softmax then exp, in float64: probabilities of `(n,)` scores. */
function softmax(scores) {
  const top = Math.max(...scores);
  const shifted = Float64Array.from(scores, (s) => s - top);
  const logTotal = Math.log(pairwiseSum(Float64Array.from(shifted, Math.exp)));
  return Float64Array.from(shifted, (s) => Math.exp(s - logTotal));
}

/**
 * processors.py's top_p_filter (Holtzman et al., 2020) on one row of float32 scores: keep
 * the best tokens whose mass before them is < p, and any tied with the last; computed in
 * float32 as numpy computes it (its float32 sum is pairwise too).
 */
function nucleus(scores, p) {
  const f = Math.fround;
  const sorted = Float32Array.from(scores).sort().reverse(); // -inf sorts first, then last
  const top = sorted[0];
  const shifted = Float32Array.from(sorted, (s) => f(s - top));
  const exps = Float32Array.from(shifted, (s) => f(Math.exp(s)));
  const logTotal = f(Math.log(pairwiseSum32(exps, 0, exps.length)));
  let cumulative = 0;
  let kept = 0;
  for (const s of shifted) {
    const probability = f(Math.exp(f(s - logTotal)));
    cumulative = f(cumulative + probability);
    if (f(cumulative - probability) < f(p)) kept += 1;
  }
  const cutoff = sorted[kept - 1];
  return scores.map((s) => (s >= cutoff ? s : NEG_INF));
}

/** numpy's pairwise sum of float32 values, rounded to float32 at each addition. */
function pairwiseSum32(values, start, count) {
  const f = Math.fround;
  if (count < 8) {
    let sum = 0;
    for (let i = start; i < start + count; i += 1) sum = f(sum + values[i]);
    return sum;
  }
  if (count <= 128) {
    const r = Array.from({ length: 8 }, (_, j) => values[start + j]);
    let i = 8;
    for (; i < count - (count % 8); i += 8) for (let j = 0; j < 8; j += 1) r[j] = f(r[j] + values[start + i + j]);
    let sum = f(f(f(r[0] + r[1]) + f(r[2] + r[3])) + f(f(r[4] + r[5]) + f(r[6] + r[7])));
    for (; i < count; i += 1) sum = f(sum + values[start + i]);
    return sum;
  }
  let half = Math.floor(count / 2);
  half -= half % 8;
  return f(pairwiseSum32(values, start, half) + pairwiseSum32(values, start + half, count - half));
}

/**
 * One token per row drawn from `(rows, width)` float32 scores (-inf: impossible), columns in
 * token-id order. Draws one number per row, even for a row with every token banned.
 * @returns {number[]} a column per row, or -1 where every score is -inf
 */
export function draw(scores, rows, width, { temperature = 1, topK = 0, topP = 1 }, random) {
  const chosen = [];
  for (let row = 0; row < rows; row += 1) {
    const line = scores.subarray(row * width, (row + 1) * width);
    let columns = Array.from({ length: width }, (_, c) => c);
    if (topK > 0 && topK < width) {
      columns.sort((a, b) => line[b] - line[a] || a - b);
      columns = columns.slice(0, topK).sort((a, b) => a - b);
    }
    let values = Float32Array.from(columns, (c) => line[c]);
    if (temperature !== 1) values = values.map((v) => v / Math.fround(temperature)); // float32
    if (topP < 1) values = nucleus(values, topP);
    const probabilities = softmax(values);
    const cumulative = new Float64Array(probabilities.length);
    let mass = 0;
    probabilities.forEach((p, i) => (cumulative[i] = mass += p));
    const threshold = random() * cumulative[cumulative.length - 1];
    let drawn = 0;
    for (const c of cumulative) if (c <= threshold) drawn += 1;
    const column = columns[Math.min(drawn, columns.length - 1)];
    chosen.push(line[column] > NEG_INF ? column : -1);
  }
  return chosen;
}

/**
 * Sampling over a step function; one path per row (see greedySearch for the arguments).
 * @param {object} options also temperature, topK, topP, seed (numpy's default_rng seed; none:
 *   a random one) and noRepeatNgramSize
 */
export async function sampleSearch(stepFunction, state, firstTokens, options) {
  const { maxNew, eosId = null, onStep } = options;
  const bannedIds = new Set(options.bannedIds);
  const random = defaultRng(options.seed);
  const paths = firstTokens.map(() => ({ tokens: [], finished: false }));
  let active = firstTokens.map((_, row) => row).filter((row) => maxNew[row] > 0);
  if (active.length < firstTokens.length && active.length > 0) state = stepFunction.select(state, active);
  let tokens = active.map((row) => firstTokens[row]);
  for (let position = 0; position < Math.max(0, ...maxNew) && active.length > 0; position += 1) {
    const step = await stepFunction.step(tokens, state, { candidates: Infinity });
    state = step.state;
    const scores = banned(step, bannedIds, eosId, () => false);
    const historyOf = (i) => [firstTokens[active[i]], ...paths[active[i]].tokens];
    banRepeatedNgrams(scores, step.ids, step.width, historyOf, options.noRepeatNgramSize ?? 0);
    const columns = draw(scores, active.length, step.width, options, random);
    const chosen = columns.map((c, i) => (c < 0 ? null : step.ids[i * step.width + c]));
    const kept = [];
    chosen.forEach((token, i) => {
      if (token === null) return;
      if (token === eosId) paths[active[i]].finished = true;
      else paths[active[i]].tokens.push(token);
      if (token !== eosId && position + 1 < maxNew[active[i]]) kept.push(i);
    });
    onStep?.(active.filter((_, i) => chosen[i] !== null), chosen.filter((t) => t !== null));
    if (kept.length > 0 && kept.length < active.length) state = stepFunction.select(state, kept);
    tokens = kept.map((i) => chosen[i]);
    active = kept.map((i) => active[i]);
  }
  return paths;
}
