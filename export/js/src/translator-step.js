// The ONNX Runtime step function of a translator bundle: `start` runs the encoder, `step` the
// step graph, `select` gathers rows on the host. The source side of the state (memory, keys,
// source_mask and a shortlist's output_columns and output_mask) is kept once per sentence
// (bundle format 2; format 3 scores each row over its sentence's shortlist columns, format 4
// gathers their output-layer rows once per batch with the output_rows graph,
// export/README.md): the rows are grouped by sentence, `rows / sentences` consecutive rows
// each, and the source side is gathered again only when the sentences change, once per
// sentence, never when beams reorder within their sentence (seqgen's source_rows.py).

import { topCandidates } from './bundle.js';
import { BundleError } from './errors.js';
import { shortlistIds } from './shortlist.js';
import { gatherRows, int32Ids, int64 } from './tensors.js';
import { EOS_ID, PAD_ID } from './tokenizers.js';

const RECURRENT = ['hidden', 'cell', 'feed'];
const OUTPUT_IDS = 'output_ids'; // (M,) int64: the batch's shortlist (union of its sentences)
// (sentences, S) int64: each sentence's own shortlist as columns of output_ids, ascending,
// padded with 0; and (sentences, S) float32: 0 for those, -inf for the padding
const OUTPUT_COLUMNS = 'output_columns';
const OUTPUT_MASK = 'output_mask';
// A grouped step's (bundle format 6) `(G, R)` rows of each group and `(rows,)` where each
// row's scores start: each group of sentences is scored against its own shortlists' union.
const OUTPUT_GROUP_ROWS = 'output_group_rows';
const OUTPUT_ROW_OFFSETS = 'output_row_offsets';
// Sentences a group in beam search; greedy search scores its batch as one group (seqgen's
// shortlist.py, GROUP_SENTENCES: the same groups keep the translations the same bits).
export const GROUP_SENTENCES = 8;

export class TranslatorStep {
  /**
   * @param {object} ort onnxruntime-node or onnxruntime-web
   * @param {{encoder: object, step: object, outputRows: object|null}} graphs InferenceSessions
   *   (`outputRows`: a shortlisted model's output_rows graph, else null)
   * @param {object} manifest the bundle's manifest
   * @param {{table: number[][], frequent: number[]}|null} shortlist
   */
  constructor(ort, { encoder, step, outputRows }, manifest, shortlist) {
    this.ort = ort;
    this.encoder = encoder;
    this.session = step;
    this.outputRows = outputRows;
    this.stateNames = manifest.state.names;
    this.recurrentNames = this.stateNames.filter((name) => RECURRENT.includes(name));
    this.sourceNames = this.stateNames.filter((name) => !RECURRENT.includes(name));
    this.takesOutputIds = step.inputNames.includes(OUTPUT_IDS);
    this.takesColumns = step.inputNames.includes(OUTPUT_COLUMNS) && step.inputNames.includes(OUTPUT_MASK);
    this.grouped = step.inputNames.includes(OUTPUT_GROUP_ROWS);
    // An int8 grouped bundle's output_rows gathers each group's rows apart: it takes the
    // groups' unions (G, U), not (M,) (format 7).
    this.rowsByGroup = manifest.graphs.output_rows?.inputs?.[0]?.shape?.length === 2;
    this.top = topCandidates(manifest);
    this.shortlist = shortlist;
    this.vocabSize = manifest.model.target_vocab_size;
    if (this.takesOutputIds && !shortlist) {
      throw new BundleError('the step graph takes a shortlist but the bundle has none; re-export it');
    }
    if (this.takesOutputIds && !(this.takesColumns && outputRows)) {
      throw new BundleError('the step graph takes a shortlist without its columns, mask or output_rows graph (an old bundle); re-export it with this seqgen');
    }
  }

  /**
   * Encode a batch of sources (ids without EOS).
   * @param {number[][]} sources
   * @param {{beamSize?: number}} [search] the search's beam: a grouped step scores groups of
   *   GROUP_SENTENCES sentences in beam search, the batch as one group in greedy search
   * @returns the state: one row per sentence (`layout`: sentences and rows per sentence)
   */
  async start(sources, { beamSize = 1 } = {}) {
    if (sources.length === 1) {
      // One row as two, then back to one (see oneRowAsTwo).
      return this.select(await this.start([sources[0], sources[0]], { beamSize }), [0]);
    }
    const rows = sources.map((s) => [...s, EOS_ID]);
    const width = Math.max(...rows.map((r) => r.length));
    const padded = rows.flatMap((r) => [...r, ...Array(width - r.length).fill(PAD_ID)]);
    const outputs = await this.encoder.run({
      source_ids: int64(this.ort, padded, [rows.length, width]),
      source_lengths: int64(this.ort, rows.map((r) => r.length)),
    });
    const sourceSide = Object.fromEntries(this.sourceNames.map((name) => [name, outputs[name]]));
    let outputIds = null;
    let groups = null;
    if (this.takesOutputIds) {
      const group = this.grouped && beamSize > 1 ? GROUP_SENTENCES : rows.length;
      const shortlisted = this.sentenceColumns(rows, group);
      const tensor = int64(this.ort, shortlisted.ids);
      const { groupCount } = shortlisted;
      // The output layer's rows of the union, once per batch: the step graph's inputs of
      // the same names (output_weight, output_bias; int8 bundles' output_weight_scale too).
      const byGroup = () => int64(this.ort, shortlisted.ids, [groupCount, shortlisted.ids.length / groupCount]);
      const ids = this.rowsByGroup ? byGroup() : tensor;
      const layer = await this.outputRows.run({ [OUTPUT_IDS]: ids });
      outputIds = { ids: shortlisted.ids, tensor, layer, groupCount };
      Object.assign(sourceSide, shortlisted.inputs);
      if (this.grouped) groups = shortlisted.groups;
    }
    return {
      layout: { sentences: rows.length, perSentence: 1 },
      recurrent: Object.fromEntries(this.recurrentNames.map((name) => [name, outputs[name]])),
      sourceSide,
      outputIds,
      groups,
      groupFeeds: null,
    };
  }

  /**
   * The shortlist of a batch's `rows` (source ids with EOS) in groups of `group` consecutive
   * sentences (seqgen's grouped_shortlist; one group: batch_shortlist): `ids` `(G * U)`, the
   * groups' unions one after the other, each ascending and padded with EOS to the longest,
   * `U`; `inputs`: `output_columns` `(sentences, S)` int64, each sentence's own shortlist as
   * indices into its group's part, ascending, padded with that part's first, and
   * `output_mask` `(sentences, S)` float32, 0 for a sentence's columns and -inf for padding;
   * `groups`: each sentence's group.
   */
  sentenceColumns(rows, group) {
    const parts = [];
    for (let start = 0; start < rows.length; start += group) parts.push(rows.slice(start, start + group));
    const unions = parts.map((part) => shortlistIds(this.shortlist, part.flat()));
    const union = Math.max(...unions.map((ids) => ids.length));
    const ids = unions.flatMap((u) => [...u, ...Array(union - u.length).fill(EOS_ID)]);
    const groups = rows.map((_, s) => Math.floor(s / group));
    const own = rows.map((row) => shortlistIds(this.shortlist, row));
    const width = Math.max(...own.map((list) => list.length));
    const columns = new Int32Array(rows.length * width);
    const mask = new Float32Array(rows.length * width).fill(Number.NEGATIVE_INFINITY);
    // Each id's column in the current group's part (an array by id, not a Map: a greedy
    // batch looks up some 25,000 ids in a union of 2,500).
    const place = new Int32Array(1 + Math.max(...ids));
    own.forEach((list, s) => {
      const first = groups[s] * union;
      if (s % group === 0) unions[groups[s]].forEach((id, c) => (place[id] = first + c));
      columns.fill(first, s * width, (s + 1) * width);
      list.forEach((id, j) => (columns[s * width + j] = place[id]));
      mask.fill(0, s * width, s * width + list.length);
    });
    const dims = [rows.length, width];
    const inputs = {
      [OUTPUT_COLUMNS]: int64(this.ort, columns, dims),
      [OUTPUT_MASK]: new this.ort.Tensor('float32', mask, dims),
    };
    return { ids, inputs, groups, groupCount: parts.length };
  }

  /** A grouped step's group inputs for the state's layout, made once per layout. */
  groupFeeds(state) {
    if (!state.groupFeeds) {
      const { groupCount, ids } = state.outputIds;
      state.groupFeeds = groupLayout(this.ort, state.groups, state.layout.perSentence, groupCount, ids.length / groupCount);
    }
    return state.groupFeeds;
  }

  /** `(rows * S)` token ids of each row's log-probs: its sentence's shortlist, -1 for padding. */
  rowTokenIds(state) {
    const columns = state.sourceSide[OUTPUT_COLUMNS];
    const mask = state.sourceSide[OUTPUT_MASK].data;
    const [sentences, width] = columns.dims;
    const ids = new Int32Array(sentences * state.layout.perSentence * width);
    for (let s = 0; s < sentences; s += 1) {
      const row = new Int32Array(width);
      for (let j = 0; j < width; j += 1) {
        row[j] = mask[s * width + j] === 0 ? state.outputIds.ids[Number(columns.data[s * width + j])] : -1;
      }
      for (let r = 0; r < state.layout.perSentence; r += 1) ids.set(row, (s * state.layout.perSentence + r) * width);
    }
    return ids;
  }

  /**
   * One step of every row.
   * @param {number[]} tokens `(rows,)` each row's previous token
   * @param {{candidates: number}} need how many best candidates per row search reads
   * @returns {Promise<{values: Float32Array, ids: Int32Array, width: number, ranked: boolean, state: object}>}
   *   `(rows, width)` log-probs and their token ids: the graph's top K, best first, when
   *   they suffice, else every (shortlisted) token
   */
  async step(tokens, state, { candidates }) {
    if (tokens.length === 1) return this.oneRowAsTwo(tokens, state, candidates);
    const feeds = { tokens: int64(this.ort, tokens), ...state.recurrent, ...state.sourceSide };
    if (state.outputIds) Object.assign(feeds, { [OUTPUT_IDS]: state.outputIds.tensor }, state.outputIds.layer);
    if (this.grouped) Object.assign(feeds, this.groupFeeds(state));
    const useTop = candidates <= this.top.count;
    if (this.top.fed) feeds.top_k = int64(this.ort, [useTop ? candidates : 1]);
    const news = this.recurrentNames.map((name) => `new_${name}`);
    const fetches = useTop ? ['top_log_probs', 'top_ids', ...news] : ['log_probs', ...news];
    const outputs = await this.session.run(feeds, fetches);
    const recurrent = Object.fromEntries(this.recurrentNames.map((name) => [name, outputs[`new_${name}`]]));
    const next = { ...state, recurrent };
    if (useTop) {
      const top = outputs.top_log_probs;
      return { values: top.data, ids: int32Ids(outputs.top_ids.data), width: top.dims[1], ranked: true, state: next };
    }
    const logProbs = outputs.log_probs;
    const width = logProbs.dims[1];
    let ids;
    if (state.outputIds) {
      ids = this.rowTokenIds(state);
    } else {
      const columns = Array.from({ length: width }, (_, i) => i);
      ids = new Int32Array(logProbs.data.length);
      for (let row = 0; row < tokens.length; row += 1) ids.set(columns, row * width);
    }
    return { values: logProbs.data, ids, width, ranked: false, state: next };
  }

  /**
   * `step` of one row, run as two copies of it, as seqgen's Python adapter does: ONNX
   * Runtime's CPU matrix product takes a matrix-vector kernel for a single row, whose sums
   * run in another order, so a sentence alone would differ in the last bits from the same
   * sentence in a batch (enough to change a beam's choice now and then). The copy is a
   * sentence of its own, as in a batch of one row per sentence.
   */
  async oneRowAsTwo(tokens, state, candidates) {
    const pair = this.select(state, [0, 0], { separate: true });
    const found = await this.step([tokens[0], tokens[0]], pair, { candidates });
    const { width } = found;
    return {
      ...found,
      values: found.values.slice(0, width),
      ids: found.ids.slice(0, width),
      state: this.select(found.state, [0]),
    };
  }

  /**
   * Gather `rows` (indices into the current rows, may repeat) of the state, and its source
   * side once per sentence, only where the sentences change (`separate`: one per row).
   */
  select(state, rows, { separate = false } = {}) {
    const layout = rowLayout(rows, state.layout.perSentence, separate);
    const { sentences } = layout;
    const unchanged =
      layout.perSentence === state.layout.perSentence &&
      sentences.length === state.layout.sentences &&
      sentences.every((sentence, i) => sentence === i);
    const recurrent = Object.fromEntries(
      Object.entries(state.recurrent).map(([name, t]) => [name, gatherRows(this.ort, t, rows)]),
    );
    const sourceSide = unchanged
      ? state.sourceSide
      : Object.fromEntries(Object.entries(state.sourceSide).map(([name, t]) => [name, gatherRows(this.ort, t, sentences)]));
    // A grouped step's groups go with their sentences; its inputs are made again for a new layout.
    const groups = state.groups && !unchanged ? sentences.map((s) => state.groups[s]) : state.groups;
    const groupFeeds = unchanged ? state.groupFeeds : null;
    const newLayout = { sentences: sentences.length, perSentence: layout.perSentence };
    return { ...state, layout: newLayout, recurrent, sourceSide, groups, groupFeeds };
  }
}

/**
 * Where a grouped step's rows go (seqgen's shortlist.py, group_layout): `groups` each
 * sentence's group (of `count`), `perSentence` consecutive rows per sentence, `union` the
 * tokens `U` of each group's part of output_ids. `output_group_rows` `(count, R)`: each
 * group's rows in order, then row 0 as padding, `R` the most rows a group has and at least 2
 * (one row takes ONNX Runtime's matrix-vector kernel, whose sums run in another order);
 * `output_row_offsets` `(rows,)`: `(slot - g) * U` for a row at `slot = g * R + j`, where its
 * scores start in the step's flat scores, less its group's first column.
 */
function groupLayout(ort, groups, perSentence, count, union) {
  const counts = new Array(count).fill(0);
  groups.forEach((g) => (counts[g] += 1));
  const width = Math.max(2, perSentence * Math.max(...counts));
  const groupRows = new BigInt64Array(count * width);
  const offsets = new BigInt64Array(groups.length * perSentence);
  const seen = new Array(count).fill(0);
  groups.forEach((g, s) => {
    const place = seen[g];
    seen[g] += 1;
    for (let j = 0; j < perSentence; j += 1) {
      const slot = g * width + place * perSentence + j;
      offsets[s * perSentence + j] = BigInt((slot - g) * union);
      groupRows[slot] = BigInt(s * perSentence + j);
    }
  });
  return {
    [OUTPUT_GROUP_ROWS]: new ort.Tensor('int64', groupRows, [count, width]),
    [OUTPUT_ROW_OFFSETS]: new ort.Tensor('int64', offsets, [offsets.length]),
  };
}

/**
 * The layout of `rows` (indices into a state of `perSentence` rows per sentence): the new
 * rows per sentence and each new sentence's index among the old ones. Consecutive rows of
 * one old sentence form a new sentence when every such run has the same length (beam search:
 * the beam; greedy: 1); otherwise, or `separate`, each row is a sentence of its own
 * (seqgen/tasks/translation/source_rows.py, row_layout).
 * @returns {{perSentence: number, sentences: number[]}}
 */
function rowLayout(rows, perSentence, separate) {
  const owner = Array.from(rows, (row) => Math.floor(row / perSentence));
  if (separate || owner.length < 2) return { perSentence: 1, sentences: owner };
  const starts = [];
  owner.forEach((o, i) => (i === 0 || o !== owner[i - 1]) && starts.push(i));
  const run = (starts[1] ?? owner.length) - starts[0];
  const even = starts.every((start, i) => (starts[i + 1] ?? owner.length) - start === run);
  if (!even) return { perSentence: 1, sentences: owner };
  return { perSentence: run, sentences: starts.map((start) => owner[start]) };
}
