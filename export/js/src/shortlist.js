// Lexical shortlists (seqgen/tasks/translation/shortlist.py, shortlist_ids): the target ids a
// batch (or one sentence) may produce.

const SPECIAL_IDS = [0, 1, 2, 3];

/**
 * The sorted target ids for some source ids: the specials, `frequent`, and the table row of
 * every source id (padding included: its row holds only EOS).
 * @param {{table: number[][], frequent: number[]}} shortlist the bundle's shortlist.json
 * @param {Iterable<number>} sourceIds
 * @returns {number[]} ascending
 */
export function shortlistIds(shortlist, sourceIds) {
  const chosen = new Set([...SPECIAL_IDS, ...shortlist.frequent]);
  for (const id of new Set(sourceIds)) for (const target of shortlist.table[id] ?? []) chosen.add(target);
  return [...chosen].sort((a, b) => a - b);
}
