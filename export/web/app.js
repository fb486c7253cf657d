// The page: open a bundle served as static files (?bundle=URL, default ./bundle/) with
// onnxruntime-web, then translate, continue or classify the text as it is typed. Everything
// is fetched once at load; after that the page needs no network.
//
// ?backend=auto|wasm|webgpu (or the page's select) picks what runs the graphs: auto takes
// WebGPU where navigator.gpu gives a hardware adapter, else WebAssembly; webgpu asked for
// where there is none (or where it fails to load the graphs) runs WebAssembly and says so.

import { BACKENDS, chooseBackend, openBundle } from '../js/src/browser.js';

const page = Object.fromEntries(
  ['task', 'status', 'notice', 'error', 'input', 'input-label', 'backend', 'beam', 'beam-label', 'max-length', 'length-label', 'output', 'timing'].map((id) => [id, document.getElementById(id)]),
);
const VERBS = { translation: 'translator', generation: 'generator', classification: 'classifier' };
const DONE = { translation: 'translated', generation: 'generated', classification: 'classified' };

const LABELS = { wasm: 'WebAssembly', webgpu: 'WebGPU' };
// The import map's names: the WebAssembly build, or the WebGPU build (which loads a larger
// .wasm, so a page on WebAssembly does not fetch it).
const RUNTIMES = { wasm: 'onnxruntime-web', webgpu: 'onnxruntime-web/webgpu' };

/** onnxruntime-web's build for `backend`, set up for this page. */
async function runtime(backend) {
  const ort = await import(RUNTIMES[backend]);
  // The WebAssembly files sit beside the .mjs; one thread, since a page served without
  // cross-origin isolation has no SharedArrayBuffer.
  ort.env.wasm.wasmPaths = new URL('../js/node_modules/onnxruntime-web/dist/', import.meta.url).href;
  ort.env.wasm.numThreads = 1;
  return ort;
}

function showNotice(message) {
  page.notice.textContent = message;
  page.notice.hidden = !message;
}

function showError(message) {
  page.error.textContent = message;
  page.error.hidden = false;
}

function clearError() {
  page.error.hidden = true;
  page.error.textContent = '';
}

/** The bundle on the chosen backend; WebGPU that cannot load it gives way to WebAssembly. */
async function openOn(url, requested) {
  const choice = await chooseBackend(requested, navigator.gpu);
  showNotice(choice.notice);
  if (choice.backend === 'webgpu') {
    try {
      return { ...choice, model: await openBundle(await runtime('webgpu'), url, { backend: 'webgpu' }) };
    } catch (error) {
      showNotice(`WebGPU could not load the bundle (${error.message}): running on WebAssembly.`);
    }
  }
  return { backend: 'wasm', adapter: null, model: await openBundle(await runtime('wasm'), url, { backend: 'wasm' }) };
}

async function load() {
  const parameters = new URLSearchParams(location.search);
  const url = parameters.get('bundle') ?? 'bundle/';
  const requested = parameters.get('backend') ?? 'auto';
  page.backend.value = BACKENDS.includes(requested) ? requested : 'auto';
  page.backend.addEventListener('change', () => {
    parameters.set('backend', page.backend.value);
    location.search = parameters.toString(); // sessions are made for one backend: reload
  });
  const started = performance.now();
  const { model, backend, adapter } = await openOn(new URL(url, location.href).href, requested);
  const seconds = (performance.now() - started) / 1000;
  const label = adapter ? `${LABELS[backend]}: ${adapter}` : LABELS[backend];
  page.task.textContent = `${VERBS[model.task]} (ONNX Runtime Web, ${label})`;
  page.task.dataset.backend = backend;
  page.status.textContent = `Bundle ${url} loaded in ${seconds.toFixed(2)} s.`;
  page.status.dataset.loadSeconds = seconds.toFixed(3);
  page['beam-label'].hidden = model.task === 'classification';
  page['length-label'].hidden = model.task === 'classification';
  if (model.task === 'generation') page['max-length'].value = 100;
  if (model.task === 'translation') {
    page.beam.value = model.options().beamSize;
    page['max-length'].value = ''; // the model's own bound, from the source's length
    page['max-length'].placeholder = 'auto';
  }
  page.input.disabled = false;
  page.input.focus();
  return model;
}

/** The model's answer for the text, as the line the page shows. */
async function run(model, text) {
  const number = (input) => (input.value === '' ? undefined : Number(input.value));
  if (model.task === 'translation') {
    const options = { beamSize: number(page.beam), maxLength: number(page['max-length']) };
    const limit = model.options().maxSourceLength;
    const lines = text.split('\n');
    const cut = lines.filter((line) => model.sourceTokenizer.encode(line).length > limit).length;
    const translations = await model.translate(lines, options);
    if (cut) showError(`${cut} line(s) longer than the model's limit of ${limit} pieces were cut to it.`);
    return translations.join('\n');
  }
  if (model.task === 'generation') {
    return model.generate(text, { strategy: 'greedy', maxNewTokens: number(page['max-length']) });
  }
  const tokens = model.tokenizer.encode(text).length;
  if (tokens > model.maxLength) showError(`The text has ${tokens} tokens; the model reads the first ${model.maxLength}.`);
  const [best] = await model.classify([text], { topK: model.labels.length });
  return best.map(([label, p]) => `${label} ${(100 * p).toFixed(1)}%`).join('   ');
}

async function main() {
  let model;
  try {
    model = await load();
  } catch (error) {
    page.status.textContent = 'No model loaded.';
    showError(error.message);
    return;
  }
  let latest = 0;
  let queue = Promise.resolve(); // one model call at a time: a session runs one call at once
  const update = () => (queue = queue.then(answer, answer));
  const answer = async () => {
    const call = ++latest;
    const text = page.input.value;
    clearError();
    if (!text.trim()) {
      page.output.textContent = '';
      page.timing.textContent = model.task === 'generation' ? '' : 'Type some text.';
      return;
    }
    const started = performance.now();
    try {
      const result = await run(model, text);
      if (call !== latest) return; // a newer keystroke's answer is on its way
      const milliseconds = performance.now() - started;
      page.output.textContent = result;
      page.timing.textContent = `${DONE[model.task]} in ${milliseconds.toFixed(0)} ms`;
      page.output.dataset.done = String(call);
    } catch (error) {
      if (call === latest) showError(error.message);
    }
  };
  let timer;
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(update, 150);
  };
  page.input.addEventListener('input', soon);
  page.beam.addEventListener('change', soon);
  page['max-length'].addEventListener('change', soon);
  window.seqgen = { model, update, backend: page.task.dataset.backend }; // for tests and the console
}

main();
