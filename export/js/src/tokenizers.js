// The tokenizers a bundle can hold (export/README.md, "Tokenizers"), giving the same ids as
// seqgen/text/: characters, words, whitespace-separated tokens and sentencepiece (the real
// library compiled to WebAssembly, @sctg/sentencepiece-js, loaded only when a bundle needs it).

import { BundleError } from './errors.js';

export const PAD_ID = 0;
export const UNK_ID = 1;
export const BOS_ID = 2;
export const EOS_ID = 3;
const NON_TEXT_IDS = new Set([PAD_ID, BOS_ID, EOS_ID]);
const NEWLINE_ID = 4; // sentencepiece's control piece <nl>: sentencepiece never sees "\n"

// Python's \w is a Unicode letter or digit (str.isalnum) or "_"; marks are not \w.
const WORD = "[\\p{L}\\p{N}_]+(?:['\\u2019][\\p{L}\\p{N}_]+)*";
const WORD_PATTERN = new RegExp(`${WORD}|\\n|[^\\p{L}\\p{N}_\\s]`, 'gu');
const NO_SPACE_BEFORE = new Set([...",.;:!?)]}'\u2019\n"]);
const NO_SPACE_AFTER = new Set([...'([{\n']);

/** Units <-> text for each vocabulary kind (seqgen/text/{char,word,whitespace}.py). */
const UNITS = {
  char: { split: (text) => Array.from(text), join: (units) => units.join('') },
  word: { split: (text) => text.match(WORD_PATTERN) ?? [], join: joinWords },
  whitespace: {
    split: (text) => text.split(/\s+/u).filter((unit) => unit.length > 0),
    join: (units) => units.join(' '),
  },
};

/** seqgen.text.word.join_words: single spaces, none around punctuation and newlines. */
function joinWords(tokens) {
  let text = '';
  let previous = '\n';
  for (const token of tokens) {
    if (!NO_SPACE_AFTER.has(previous) && !NO_SPACE_BEFORE.has(token)) text += ' ';
    text += token;
    previous = token;
  }
  return text;
}

/** A vocabulary of whole units: id = index in `tokens`; unseen units are <unk>. */
export class VocabularyTokenizer {
  constructor(kind, tokens, lowercase) {
    this.kind = kind;
    this.units = UNITS[kind];
    this.tokens = tokens;
    this.lowercase = lowercase;
    this.ids = new Map(tokens.map((token, id) => [token, id]));
    this.vocabSize = tokens.length;
  }

  /** @returns {number[]} one id per unit, no BOS or EOS */
  encode(text) {
    const units = this.units.split(this.lowercase ? text.toLowerCase() : text);
    return units.map((unit) => this.ids.get(unit) ?? UNK_ID);
  }

  decode(ids) {
    return this.units.join(ids.filter((id) => !NON_TEXT_IDS.has(id)).map((id) => this.tokens[id]));
  }
}

/** Sentencepiece ids per line, lines joined by <nl> (seqgen/text/sentencepiece.py). */
export class SentencePieceTokenizer {
  constructor(processor, lowercase) {
    this.kind = 'sentencepiece';
    this.processor = processor;
    this.lowercase = lowercase;
  }

  encode(text) {
    const lines = (this.lowercase ? text.toLowerCase() : text).split('\n');
    const ids = [];
    lines.forEach((line, index) => {
      if (index > 0) ids.push(NEWLINE_ID);
      ids.push(...this.processor.encodeIds(line));
    });
    return ids;
  }

  decode(ids) {
    const lines = [[]];
    for (const id of ids) {
      if (id === NEWLINE_ID) lines.push([]);
      else if (!NON_TEXT_IDS.has(id)) lines[lines.length - 1].push(id);
    }
    return lines.map((line) => (line.length ? this.processor.decodeIds(line) : '')).join('\n');
  }
}

/**
 * The tokenizer a bundle's tokenizer file describes.
 * @param {object} data the parsed `*tokenizer.json`
 * @param {string} where the file, for messages
 */
export async function createTokenizer(data, where) {
  const lowercase = Boolean(data?.lowercase);
  if (data?.kind === 'sentencepiece') {
    if (typeof data.model_proto !== 'string') {
      throw new BundleError(`${where} has no base64 model_proto; re-export the bundle`);
    }
    return new SentencePieceTokenizer(await loadSentencePiece(data.model_proto, where), lowercase);
  }
  if (!UNITS[data?.kind] || !Array.isArray(data.tokens)) {
    throw new BundleError(`${where} holds a ${JSON.stringify(data?.kind)} tokenizer, which this runtime does not know`);
  }
  return new VocabularyTokenizer(data.kind, data.tokens, lowercase);
}

async function loadSentencePiece(modelProto, where) {
  const { SentencePieceProcessor } = await import('@sctg/sentencepiece-js');
  const processor = new SentencePieceProcessor();
  try {
    await processor.loadFromB64StringModel(modelProto);
  } catch (error) {
    throw new BundleError(`${where} holds a sentencepiece model that does not load (${error.message ?? error})`);
  }
  return processor;
}
