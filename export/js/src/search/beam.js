// Batched beam search (seqgen/decoding/beam.py): the same candidates, ranking, length penalty
// and stopping rule as Python, so that both print the same translations.

import { banned, NEG_INF, rowBest } from './candidates.js';
import { Kept, Trail } from './hypotheses.js';
import { banRepeatedNgrams } from './ngrams.js';

/** GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al., 2016, eq. 14). */
export function lengthPenalty(length, alpha) {
  return ((5 + length) / 6) ** alpha;
}

/**
 * Beam search over all sentences at once. Rows are sentences x beam, sentence-major.
 * Each step ranks, per sentence, the 2 * beam best (beam, token) extensions by cumulative
 * log-prob: those ending in EOS become finished hypotheses, the best `beam` others the next
 * beams. A sentence is done when it holds `nBest` finished hypotheses that no live beam can
 * beat (see `cannotImprove`), or at its maxNew, where its live beams join unfinished.
 * @param {object} stepFunction `{ step(tokens, state, {candidates}), select(state, rows) }`
 * @param {object} state one row per sentence
 * @param {number[]} firstTokens `(sentences,)`
 * @param {object} options beamSize, nBest, lengthPenalty, maxNew, minNew, eosId, bannedIds,
 *   noRepeatNgramSize (0 = off)
 * @returns {Promise<{tokens: number[], score: number, normalized: number, finished: boolean}[][]>}
 *   per sentence, its nBest hypotheses best first
 */
export async function beamSearch(stepFunction, state, firstTokens, options) {
  const { beamSize: k, nBest = 1, eosId, maxNew } = options;
  const alpha = options.lengthPenalty ?? 1;
  const minNew = options.minNew ?? maxNew.map(() => 0);
  const bannedIds = new Set(options.bannedIds);
  const kept = new Kept(firstTokens.length, k);
  firstTokens.forEach((_, s) => maxNew[s] === 0 && kept.keepEmpty(s));
  let beams = Beams.start(firstTokens, maxNew, k);
  if (beams.sentences.length) state = stepFunction.select(state, beams.sentences.flatMap((s) => Array(k).fill(s)));
  // Each row's 2k best past bans and EOS; n-gram bans are unbounded: then every log-prob.
  const ngram = options.noRepeatNgramSize ?? 0;
  const candidates = ngram > 0 ? Infinity : 2 * k + bannedIds.size + 1;
  for (let position = 0; position < Math.max(0, ...maxNew); position += 1) {
    if (beams.sentences.length === 0) break;
    const step = await stepFunction.step(beams.lastTokens(), state, { candidates });
    state = step.state;
    const scores = banned(step, bannedIds, eosId, (row) => position < minNew[beams.sentences[Math.floor(row / k)]]);
    const historyOf = (row) => beams.trail.history(beams.length - 1, beams.rows[row]);
    banRepeatedNgrams(scores, step.ids, step.width, historyOf, ngram);
    const ranked = topCandidates(beams, scores, step, k, eosId);
    // Where bans leave no extension at all, the beams end here, unfinished.
    keepBeams(kept, beams, ranked.map((c, s) => (c[0].score === NEG_INF ? s : -1)).filter((s) => s >= 0), alpha);
    keepEosCandidates(kept, beams, ranked, alpha);
    let parentRows;
    [parentRows, beams] = beams.advance(ranked);
    const atMax = beams.sentences.map((s) => position + 1 >= maxNew[s]);
    keepBeams(kept, beams, atMax.map((at, s) => (at ? s : -1)).filter((s) => s >= 0), alpha);
    const done = atMax.map((at, s) => at || cannotImprove(kept, beams, s, maxNew, alpha, nBest));
    if (done.every(Boolean)) break;
    if (done.some(Boolean)) [parentRows, beams] = beams.drop(done, parentRows);
    state = stepFunction.select(state, parentRows);
  }
  return kept.hypotheses(beams.trail, nBest);
}

/**
 * Per sentence, its 2k best extensions, best first: {score, beam, token, isEos}. The 2k best
 * of a sentence are among the 2k best of each of its rows. Ranked in typed arrays, equal sums
 * in (beam, rank) order as a stable sort gives; objects only for the 2k kept (a step's host
 * work is most of the JavaScript runtime's time beside ONNX Runtime's).
 */
function topCandidates(beams, scores, step, k, eosId) {
  const perRow = Math.min(2 * k, step.width);
  const totals = new Float64Array(k * perRow);
  const beamOf = new Int32Array(k * perRow);
  const tokenOf = new Int32Array(k * perRow);
  const best = new Int32Array(2 * k);
  return beams.sentences.map((_, s) => {
    let n = 0;
    for (let beam = 0; beam < k; beam += 1) {
      const row = s * k + beam;
      for (const column of rowBest(scores, row, step.width, perRow, step.ranked)) {
        const at = row * step.width + column;
        totals[n] = beams.scores[row] + scores[at];
        beamOf[n] = beam;
        tokenOf[n] = step.ids[at];
        n += 1;
      }
    }
    const kept = bestFirst(totals, n, Math.min(2 * k, n), best);
    return Array.from(kept, (c) => ({ score: totals[c], beam: beamOf[c], token: tokenOf[c], isEos: tokenOf[c] === eosId }));
  });
}

/**
 * The `count` highest of `totals[0..n)` as indices, best first, equal totals (-inf too) in
 * index order: a stable sort's first `count`, by insertion into `into` (the k x 2k sums of a
 * sentence for its 2k best: fewer comparisons than sorting them all).
 */
export function bestFirst(totals, n, count, into) {
  let size = 0;
  for (let c = 0; c < n; c += 1) {
    const total = totals[c];
    if (size === count) {
      if (!(total > totals[into[count - 1]])) continue;
      size -= 1; // the last kept makes room
    }
    let at = size;
    for (; at > 0 && totals[into[at - 1]] < total; at -= 1) into[at] = into[at - 1];
    into[at] = c;
    size += 1;
  }
  return into.subarray(0, size);
}

/** Offer each finite EOS candidate as a finished hypothesis of its sentence. */
function keepEosCandidates(kept, beams, ranked, alpha) {
  const k = beams.beamSize;
  ranked.forEach((candidates, s) => {
    for (const c of candidates) {
      if (!c.isEos || c.score === NEG_INF) continue;
      kept.offer(beams.sentences[s], c.score, lengthPenalty(beams.length + 1, alpha), {
        step: beams.length - 1,
        row: beams.rows[s * k + c.beam],
        finished: true,
      });
    }
  });
}

/** Offer the live beams of `sentences` (local indices) as unfinished hypotheses. */
function keepBeams(kept, beams, sentences, alpha) {
  const k = beams.beamSize;
  for (const s of sentences) {
    for (let beam = 0; beam < k; beam += 1) {
      const score = beams.scores[s * k + beam];
      if (score === NEG_INF) continue;
      kept.offer(beams.sentences[s], score, lengthPenalty(beams.length, alpha), {
        step: beams.length - 1,
        row: beams.rows[s * k + beam],
        finished: false,
      });
    }
  }
}

/**
 * Sentence `s` holds nBest finished hypotheses and no live beam can end above the nBest-th.
 * A beam's score only falls; its normalised score can still rise while the penalty grows
 * (alpha > 0), so the bound divides by the penalty at the sentence's maxNew.
 */
function cannotImprove(kept, beams, s, maxNew, alpha, nBest) {
  const k = beams.beamSize;
  const bestAlive = Math.max(...beams.scores.slice(s * k, (s + 1) * k));
  const sentence = beams.sentences[s];
  const penalty = lengthPenalty(alpha > 0 ? maxNew[sentence] : beams.length, alpha);
  return bestAlive === NEG_INF || bestAlive / penalty <= kept.normalized(sentence, nBest - 1);
}

/** The live beams of the sentences still decoded (beam.py, _Beams). */
class Beams {
  constructor(sentences, scores, rows, length, trail, beamSize) {
    this.sentences = sentences; // (sentences,) original index of each
    this.scores = scores; // (sentences * beam,) cumulative log-probs, -inf: no beam
    this.rows = rows; // (rows,) each row's row in the trail's last step
    this.length = length; // tokens generated so far
    this.trail = trail;
    this.beamSize = beamSize;
  }

  /** beamSize copies of each sentence's start; only beam 0 is alive at first. */
  static start(firstTokens, maxNew, k) {
    const sentences = firstTokens.map((_, s) => s).filter((s) => maxNew[s] > 0);
    const scores = new Float64Array(sentences.length * k).fill(NEG_INF);
    for (let s = 0; s < sentences.length; s += 1) scores[s * k] = 0;
    const trail = new Trail(sentences.flatMap((s) => Array(k).fill(firstTokens[s])));
    const rows = Int32Array.from({ length: sentences.length * k }, (_, row) => row);
    return new Beams(sentences, scores, rows, 0, trail, k);
  }

  /** (rows,) the token each row feeds to the next step. */
  lastTokens() {
    const tokens = this.length ? this.trail.tokens.at(-1) : this.trail.firstTokens;
    return Array.from(this.rows, (row) => tokens[row]);
  }

  /** The first `beam` non-EOS candidates of each sentence become its beams. */
  advance(ranked) {
    const k = this.beamSize;
    const parentRows = [];
    const parents = [];
    const tokens = [];
    const scores = new Float64Array(this.sentences.length * k);
    ranked.forEach((candidates, s) => {
      const alive = [...candidates.filter((c) => !c.isEos), ...candidates.filter((c) => c.isEos)].slice(0, k);
      alive.forEach((c, beam) => {
        parentRows.push(s * k + c.beam);
        parents.push(this.rows[s * k + c.beam]);
        tokens.push(c.token);
        scores[s * k + beam] = c.isEos ? NEG_INF : c.score;
      });
    });
    this.trail.append(parents, tokens);
    const rows = Int32Array.from(parentRows, (_, row) => row);
    return [parentRows, new Beams(this.sentences, scores, rows, this.length + 1, this.trail, k)];
  }

  /** Without the `done` sentences, in beams and in parent rows. */
  drop(done, parentRows) {
    const k = this.beamSize;
    const keep = (_, row) => !done[Math.floor(row / k)];
    const beams = new Beams(
      this.sentences.filter((_, s) => !done[s]),
      this.scores.filter(keep),
      this.rows.filter(keep),
      this.length,
      this.trail,
      k,
    );
    return [parentRows.filter(keep), beams];
  }
}
