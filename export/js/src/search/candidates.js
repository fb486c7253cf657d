// What a step gives search: each row's candidates as (value, token id) columns, best first
// when they come from the graph's top_log_probs/top_ids (export/README.md), or the whole
// vocabulary (or shortlist) when search needs more than the graph's K.

export const NEG_INF = Number.NEGATIVE_INFINITY;

/**
 * Each row's candidates with the bans applied (seqgen/decoding/search.py: apply_bans).
 * @param {{values: Float32Array, ids: Int32Array, width: number}} step `(rows, width)`
 * @param {Set<number>} banned token ids never produced
 * @param {number|null} eosId
 * @param {(row: number) => boolean} eosBanned EOS is banned in this row (min length)
 * @returns {Float32Array} `(rows, width)` scores, -inf where banned
 */
export function banned(step, banned, eosId, eosBanned) {
  const { values, ids, width } = step;
  const scores = Float32Array.from(values);
  for (let row = 0; row * width < values.length; row += 1) {
    const noEos = eosId !== null && eosBanned(row);
    for (let column = row * width; column < (row + 1) * width; column += 1) {
      const id = ids[column];
      if (banned.has(id) || (noEos && id === eosId)) scores[column] = NEG_INF;
    }
  }
  return scores;
}

/**
 * The `count` best columns of one row, best first (seqgen/decoding/beam.py, _Candidates.top).
 * @param {Float32Array} scores `(rows, width)`
 * @param {boolean} ranked the columns come best first (the graph's top-k): then, unless a ban
 *   took one of the first `count`, those are the row's best, in the graph's order
 * @returns {number[]} column indices within the row
 */
export function rowBest(scores, row, width, count, ranked) {
  const start = row * width;
  const take = Math.min(count, width);
  let intact = ranked;
  for (let c = 0; c < take && intact; c += 1) intact = scores[start + c] > NEG_INF;
  if (intact) return firstColumns(take);
  // A partial selection, in the order a stable sort by score would give (equal scores by
  // column): the full vocabulary is thousands of columns for the 2k best.
  const best = [];
  for (let column = 0; column < width; column += 1) {
    const score = scores[start + column];
    if (best.length === take && !(score > scores[start + best[take - 1]])) continue;
    let at = best.length;
    while (at > 0 && scores[start + best[at - 1]] < score) at -= 1;
    best.splice(at, 0, column);
    if (best.length > take) best.pop();
  }
  return best;
}

const FIRST_COLUMNS = [];

/** `[0, 1, ..., count - 1]`, made once per count (callers only read it). */
function firstColumns(count) {
  FIRST_COLUMNS[count] ??= Array.from({ length: count }, (_, column) => column);
  return FIRST_COLUMNS[count];
}

/** The first column of a row holding its highest score (numpy's argmax). */
export function argmax(scores, row, width) {
  let best = row * width;
  for (let c = best + 1; c < (row + 1) * width; c += 1) if (scores[c] > scores[best]) best = c;
  return best - row * width;
}
