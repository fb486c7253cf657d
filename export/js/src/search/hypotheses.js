// Beam search's records (seqgen/decoding/hypotheses.py): every step's beams as back-pointers,
// and per sentence the best hypotheses so far.

/** Every step's beams: step i has, per row, its token and its parent row at step i - 1. */
export class Trail {
  constructor(firstTokens) {
    this.firstTokens = firstTokens; // (rows,) the token each first row fed
    this.parents = [];
    this.tokens = [];
  }

  append(parents, tokens) {
    this.parents.push(parents);
    this.tokens.push(tokens);
  }

  /** The tokens of the beam (step, row), walked back to its start. */
  path(step, row) {
    const tokens = new Array(step + 1);
    for (let i = step; i >= 0; i -= 1) {
      tokens[i] = this.tokens[i][row];
      row = this.parents[i][row];
    }
    return tokens;
  }

  /** The first token and the tokens of the beam (step, row); step -1: the first row `row`. */
  history(step, row) {
    const tokens = new Array(step + 2);
    for (let i = step; i >= 0; i -= 1) {
      tokens[i + 1] = this.tokens[i][row];
      row = this.parents[i][row];
    }
    tokens[0] = this.firstTokens[row];
    return tokens;
  }
}

/**
 * Per sentence, the `limit` best hypotheses offered so far by normalised score, best first;
 * on equal scores the one offered first (a stable sort, as beam.py's Kept).
 */
export class Kept {
  constructor(batch, limit) {
    this.limit = limit;
    this.best = Array.from({ length: batch }, () => []);
  }

  /** The normalised score of a sentence's hypothesis at `rank`, -inf while fewer are kept. */
  normalized(sentence, rank) {
    return this.best[sentence][rank]?.normalized ?? Number.NEGATIVE_INFINITY;
  }

  keepEmpty(sentence) {
    this.best[sentence] = [{ normalized: 0, score: 0, step: -1, row: 0, finished: false }];
  }

  offer(sentence, score, penalty, { step, row, finished }) {
    const list = this.best[sentence];
    const hypothesis = { normalized: score / penalty, score, step, row, finished };
    // Insert after every kept one it does not beat: the stable order of beam.py's sort.
    let at = list.length;
    while (at > 0 && list[at - 1].normalized < hypothesis.normalized) at -= 1;
    if (at < this.limit) {
      list.splice(at, 0, hypothesis);
      if (list.length > this.limit) list.pop();
    }
  }

  hypotheses(trail, nBest) {
    return this.best.map((list) =>
      list.slice(0, nBest).map((h) => ({
        tokens: h.step < 0 ? [] : trail.path(h.step, h.row),
        score: h.score,
        normalized: h.normalized,
        finished: h.finished,
      })),
    );
  }
}
