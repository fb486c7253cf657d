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
import { gatherRows, int64 } from './tensors.js';
import { EOS_ID, PAD_ID } from './tokenizers.js';

const RECURRENT = ['hidden', 'cell', 'feed'];
const OUTPUT_IDS = 'output_ids'; // (M,) int64: the batch's shortlist (union of its sentences)
// (sentences, S) int64: each sentence's own shortlist as columns of output_ids, ascending,
// padded with 0; and (sentences, S) float32: 0 for those, -inf for the padding
const OUTPUT_COLUMNS = 'output_columns';
const OUTPUT_MASK = 'output_mask';

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
   * @returns the state: one row per sentence (`layout`: sentences and rows per sentence)
   */
  async start(sources) {
    if (sources.length === 1) {
      // One row as two, then back to one (see oneRowAsTwo).
      return this.select(await this.start([sources[0], sources[0]]), [0]);
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
    if (this.takesOutputIds) {
      const union = shortlistIds(this.shortlist, padded);
      const tensor = int64(this.ort, union);
      // The output layer's rows of the union, once per batch: the step graph's inputs of
      // the same names (output_weight, output_bias; int8 bundles' output_weight_scale too).
      const layer = await this.outputRows.run({ [OUTPUT_IDS]: tensor });
      outputIds = { ids: union, tensor, layer };
      Object.assign(sourceSide, this.sentenceColumns(rows, union));
    }
    return {
      layout: { sentences: rows.length, perSentence: 1 },
      recurrent: Object.fromEntries(this.recurrentNames.map((name) => [name, outputs[name]])),
      sourceSide,
      outputIds,
    };
  }

  /**
   * Each sentence's own shortlist as columns of the batch's `union`: `output_columns`
   * `(sentences, S)` int64, ascending and padded with 0 to the longest, and `output_mask`
   * `(sentences, S)` float32, 0 for a sentence's columns and -inf for padding.
   */
  sentenceColumns(rows, union) {
    const column = new Map(union.map((id, c) => [id, c]));
    const own = rows.map((row) => shortlistIds(this.shortlist, row).map((id) => column.get(id)));
    const width = Math.max(...own.map((columns) => columns.length));
    const columns = new BigInt64Array(rows.length * width);
    const mask = new Float32Array(rows.length * width).fill(Number.NEGATIVE_INFINITY);
    own.forEach((list, s) => {
      columns.set(list.map(BigInt), s * width);
      mask.fill(0, s * width, s * width + list.length);
    });
    const dims = [rows.length, width];
    return {
      [OUTPUT_COLUMNS]: new this.ort.Tensor('int64', columns, dims),
      [OUTPUT_MASK]: new this.ort.Tensor('float32', mask, dims),
    };
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
    const useTop = candidates <= this.top.count;
    if (this.top.fed) feeds.top_k = int64(this.ort, [useTop ? candidates : 1]);
    const news = this.recurrentNames.map((name) => `new_${name}`);
    const fetches = useTop ? ['top_log_probs', 'top_ids', ...news] : ['log_probs', ...news];
    const outputs = await this.session.run(feeds, fetches);
    const recurrent = Object.fromEntries(this.recurrentNames.map((name) => [name, outputs[`new_${name}`]]));
    const next = { ...state, recurrent };
    if (useTop) {
      const top = outputs.top_log_probs;
      return { values: top.data, ids: Int32Array.from(outputs.top_ids.data, Number), width: top.dims[1], ranked: true, state: next };
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
    return { ...state, layout: { sentences: sentences.length, perSentence: layout.perSentence }, recurrent, sourceSide };
  }
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
  const starts = owner.flatMap((o, i) => (i === 0 || o !== owner[i - 1] ? [i] : []));
  const run = (starts[1] ?? owner.length) - starts[0];
  const even = starts.every((start, i) => (starts[i + 1] ?? owner.length) - start === run);
  if (!even) return { perSentence: 1, sentences: owner };
  return { perSentence: run, sentences: starts.map((start) => owner[start]) };
}
