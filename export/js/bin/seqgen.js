#!/usr/bin/env node
// The command line: lines on stdin, one result line each on stdout.
//
//   node bin/seqgen.js translate BUNDLE [--beam-size N] [--n-best N] [--max-length N]
//       [--length-penalty A] [--no-repeat-ngram-size N] [--workers N]
//   node bin/seqgen.js generate BUNDLE [--prompt TEXT] [--strategy greedy|sample|beam]
//       [--max-new-tokens N] [--seed N] [--temperature T] [--top-k N] [--top-p P]
//       [--no-repeat-ngram-size N] [--num-samples N]
// (generate continues --prompt, as Python's seqgen generate does, or else each line of stdin;
// --max-length is another name for --max-new-tokens there)
//   node bin/seqgen.js classify BUNDLE [--top-k N]
//
// Bad input (not a bundle, a newer format, another task's bundle, a bad option, an empty text
// to classify) is one line on stderr and exit status 1, without a stack trace.

import { BundleError, openBundle, translateInThreads } from '../src/node.js';

const USAGE =
  'usage: seqgen.js translate|generate|classify BUNDLE [--beam-size N] [--n-best N] [--max-length N] ' +
  '[--length-penalty A] [--no-repeat-ngram-size N] [--strategy S] [--seed N] [--temperature T] ' +
  '[--top-k N] [--top-p P] [--num-samples N] [--workers N] [--prompt TEXT] [--max-new-tokens N]';
const TASKS = { translate: 'translation', generate: 'generation', classify: 'classification' };
const OPTIONS = {
  '--beam-size': ['beamSize', 'int'],
  '--max-length': ['maxLength', 'int'],
  '--workers': ['workers', 'int'],
  '--strategy': ['strategy', 'string'],
  '--seed': ['seed', 'int'],
  '--temperature': ['temperature', 'number'],
  '--top-k': ['topK', 'int'],
  '--top-p': ['topP', 'number'],
  '--n-best': ['nBest', 'int'],
  '--length-penalty': ['lengthPenalty', 'number'],
  '--no-repeat-ngram-size': ['noRepeatNgramSize', 'int'],
  '--num-samples': ['numSamples', 'int'],
  '--prompt': ['prompt', 'string'],
  '--max-new-tokens': ['maxLength', 'int'], // Python's name for a generator's length
};
// Flags that only one command takes, whatever the option's name.
const ONLY = { '--prompt': 'generate', '--max-new-tokens': 'generate' };
// What each command reads (the others are refused, not ignored).
const ACCEPTS = {
  translate: ['beamSize', 'nBest', 'maxLength', 'lengthPenalty', 'noRepeatNgramSize', 'workers'],
  generate: ['prompt', 'strategy', 'maxLength', 'seed', 'temperature', 'topK', 'topP', 'beamSize', 'lengthPenalty', 'noRepeatNgramSize', 'numSamples'],
  classify: ['topK'],
};

/** The command, the bundle folder and the options, or a BundleError naming what is wrong. */
export function parseArguments(argv) {
  const [command, bundle, ...rest] = argv;
  if (!TASKS[command] || !bundle || bundle.startsWith('--')) throw new BundleError(USAGE);
  const options = {};
  for (let i = 0; i < rest.length; i += 2) {
    const [flag, value] = rest[i].includes('=') ? rest[i].split(/=(.*)/s) : [rest[i], rest[i + 1]];
    if (rest[i].includes('=')) i -= 1;
    const known = OPTIONS[flag];
    if (!known) throw new BundleError(`unknown option ${flag}; ${USAGE}`);
    if (value === undefined) throw new BundleError(`${flag} needs a value`);
    const [name, type] = known;
    if (!ACCEPTS[command].includes(name) || (ONLY[flag] ?? command) !== command) {
      throw new BundleError(`${flag} is not an option of ${command}; ${USAGE}`);
    }
    const parsed = type === 'string' ? value : Number(value);
    if (type !== 'string' && (!Number.isFinite(parsed) || (type === 'int' && !Number.isInteger(parsed)))) {
      throw new BundleError(`${flag} ${value}: expected ${type === 'int' ? 'a whole number' : 'a number'}`);
    }
    options[name] = parsed;
  }
  return { command, bundle, options };
}

async function readLines(stream) {
  let text = '';
  for await (const chunk of stream) text += chunk;
  const lines = text.split('\n').map((line) => line.replace(/\r$/, ''));
  if (lines.at(-1) === '') lines.pop();
  return lines;
}

async function run(command, bundle, model, options, lines) {
  if (command === 'translate') {
    const { workers, ...given } = options;
    const limit = model.options().maxSourceLength;
    const tooLong = lines.filter((line) => line.trim() && model.sourceTokenizer.encode(line).length > limit).length;
    if (tooLong) process.stderr.write(`seqgen-js: warning: ${tooLong} sentence(s) longer than the model's limit of ${limit} pieces were cut to it\n`);
    const found = await translateInThreads(bundle, model, lines, { ...given, workers });
    if ((options.nBest ?? 1) === 1) return found.map((best) => best[0].text);
    // seqgen translate --n-best's format: 'line ||| translation ||| score', lines from 0.
    return found.flatMap((best, line) => best.map((h) => `${line} ||| ${h.text} ||| ${h.score.toFixed(4)}`));
  }
  if (command === 'generate') {
    const { maxLength: maxNewTokens, prompt, ...given } = options;
    const texts = [];
    for (const line of lines) texts.push(await model.generateSamples(line, { maxNewTokens, ...given }));
    // JSON, since a continuation may hold newlines; with --num-samples N > 1 an array of N.
    return texts.map((found) => JSON.stringify((options.numSamples ?? 1) > 1 ? found : found[0]));
  }
  lines.forEach((line, i) => {
    if (!line.trim()) throw new BundleError(`line ${i + 1} of the input is empty; give one text per line`);
  });
  const results = await model.classify(lines, { topK: options.topK ?? 1 });
  return results.map((best) => best.map(([label, p]) => `${label}\t${p.toFixed(4)}`).join('\t'));
}

async function main(argv) {
  const { command, bundle, options } = parseArguments(argv);
  const model = await openBundle(bundle, { task: TASKS[command] });
  // Bad options fail before stdin is read.
  if (command === 'translate') model.options({ ...options, workers: undefined });
  if (command === 'generate') {
    model.options({ ...options, prompt: undefined, maxLength: undefined, maxNewTokens: options.maxLength });
  }
  // generate --prompt TEXT: that one prompt, and stdin is not read.
  const lines = options.prompt !== undefined ? [options.prompt] : await readLines(process.stdin.setEncoding('utf8'));
  const output = await run(command, bundle, model, options, lines);
  process.stdout.write(output.map((line) => `${line}\n`).join(''));
}

main(process.argv.slice(2)).catch((error) => {
  // One line for what a user can fix; anything else is a bug, worth its trace under SEQGEN_DEBUG.
  const message = error instanceof BundleError ? error.message : String(error?.message ?? error).split('\n')[0];
  process.stderr.write(`seqgen-js: error: ${message}\n`);
  if (!(error instanceof BundleError) && process.env.SEQGEN_DEBUG) process.stderr.write(`${error.stack}\n`);
  process.exitCode = 1;
});
