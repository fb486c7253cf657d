// Lexical shortlists (seqgen/tasks/translation/shortlist.py, shortlist_ids): the target ids a
// batch (or one sentence) may produce.

const SPECIAL_IDS = [0, 1, 2, 3];
// Per shortlist: a mark for each target id that every shortlist holds (the specials and
// `frequent`), sized past the largest id the shortlist names; copied for each call.
const ALWAYS = new WeakMap();

/**
 * The sorted target ids for some source ids: the specials, `frequent`, and the table row of
 * every source id (padding included: its row holds only EOS). Marked in a byte per target id
 * and read in id order (a `Set` and a sort took 45-70 µs a sentence).
 * @param {{table: number[][], frequent: number[]}} shortlist the bundle's shortlist.json
 * @param {Iterable<number>} sourceIds
 * @returns {number[]} ascending
 */
export function shortlistIds(shortlist, sourceIds) {
  const marks = always(shortlist).slice();
  for (const id of sourceIds) for (const target of shortlist.table[id] ?? []) marks[target] = 1;
  const ids = [];
  for (let id = 0; id < marks.length; id += 1) if (marks[id]) ids.push(id);
  return ids;
}

function always(shortlist) {
  let marks = ALWAYS.get(shortlist);
  if (!marks) {
    let largest = 0;
    for (const id of [...SPECIAL_IDS, ...shortlist.frequent]) largest = Math.max(largest, id);
    for (const row of shortlist.table) for (const id of row) largest = Math.max(largest, id);
    marks = new Uint8Array(largest + 1);
    for (const id of [...SPECIAL_IDS, ...shortlist.frequent]) marks[id] = 1;
    ALWAYS.set(shortlist, marks);
  }
  return marks;
}
