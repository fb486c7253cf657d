// Sampling (seqgen/decoding/search.py, sample): each token drawn from the model's
// distribution after temperature, top-k and top-p; a seed makes it repeatable. The random
// numbers come from this runtime's own generator (mulberry32), not numpy's: the same seed
// gives the same text here, in Node.js and in the browser, but not Python's text.

import { banned, NEG_INF } from './candidates.js';

/** A seeded uniform generator on [0, 1) (mulberry32). */
export function seededRandom(seed) {
  let a = (seed ?? Math.floor(Math.random() * 2 ** 32)) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * One token per row drawn from `(rows, width)` scores (-inf: impossible).
 * @returns {number[]} a column per row, or -1 where every score is -inf
 */
export function draw(scores, rows, width, { temperature = 1, topK = 0, topP = 1 }, random) {
  const chosen = [];
  for (let row = 0; row < rows; row += 1) {
    let columns = Array.from({ length: width }, (_, c) => c).filter((c) => scores[row * width + c] > NEG_INF);
    if (columns.length === 0) {
      chosen.push(-1);
      continue;
    }
    columns.sort((a, b) => scores[row * width + b] - scores[row * width + a]);
    if (topK > 0) columns = columns.slice(0, topK);
    const logits = columns.map((c) => scores[row * width + c] / temperature);
    const top = logits[0];
    let probs = logits.map((l) => Math.exp(l - top));
    const total = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / total);
    if (topP < 1) {
      // The smallest set of best tokens whose mass reaches topP (Holtzman et al., 2020).
      let mass = 0;
      let keep = 0;
      while (keep < probs.length && mass < topP) mass += probs[keep++];
      columns = columns.slice(0, keep);
      probs = probs.slice(0, keep).map((p) => p / mass);
    }
    const threshold = random();
    let cumulative = 0;
    let pick = columns.length - 1;
    for (let i = 0; i < probs.length; i += 1) {
      cumulative += probs[i];
      if (threshold < cumulative) {
        pick = i;
        break;
      }
    }
    chosen.push(columns[pick]);
  }
  return chosen;
}

/**
 * Sampling over a step function; one path per row (see greedySearch for the arguments).
 * @param {object} options also temperature, topK, topP and seed
 */
export async function sampleSearch(stepFunction, state, firstTokens, options) {
  const { maxNew, eosId = null, onStep } = options;
  const bannedIds = new Set(options.bannedIds);
  const random = seededRandom(options.seed);
  const paths = firstTokens.map(() => ({ tokens: [], finished: false }));
  let active = firstTokens.map((_, row) => row);
  let tokens = [...firstTokens];
  for (let position = 0; position < Math.max(0, ...maxNew) && active.length > 0; position += 1) {
    const step = await stepFunction.step(tokens, state, { candidates: Infinity });
    state = step.state;
    const scores = banned(step, bannedIds, eosId, () => false);
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
