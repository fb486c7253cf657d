#!/usr/bin/env node
// Drive the page in headless Chromium (playwright-core and the system's chromium): load it
// with a bundle, type each sentence, read what the page shows. Prints one JSON object.
//
//   node export/web/test/drive-page.mjs BUNDLE_DIR SENTENCES_FILE [--screenshot PNG]
//       [--type N] [--bench N] [--chromium PATH] [--bad-bundle DIR] [--backend auto|wasm|webgpu]
//       [--webgpu on] [--long-line off]
//
// --backend loads the page with ?backend=...; --webgpu on starts Chromium with
// --enable-unsafe-webgpu, which gives headless Chromium without a GPU a software WebGPU
// adapter (SwiftShader); without it, navigator.gpu gives no adapter. With --webgpu on, the
// output's `adapter` is what navigator.gpu.requestAdapter() gives the page's origin, asked
// directly (not through the page's code): null where the browser gives none.
// --long-line off skips the too-long line (40 copies of the first sentence, cut to the
// model's limit), the slowest thing to translate on a software WebGPU adapter.
// --bench N also times the model itself inside the page on the first N sentences (greedy and
// beam 5, sentences per second); --bad-bundle loads the page with that folder and reports the
// message it shows.

import fs from 'node:fs';
import { createRequire } from 'node:module';
import { serve } from '../serve.js';

const require = createRequire(new URL('../../js/package.json', import.meta.url));
const { chromium } = require('playwright-core');

function parse(argv) {
  const [bundle, sentences, ...rest] = argv;
  const options = { bundle, sentences, chromium: '/usr/bin/chromium' };
  for (let i = 0; i < rest.length; i += 2) options[rest[i].replace(/^--/, '').replace(/-(.)/g, (_, c) => c.toUpperCase())] = rest[i + 1];
  return options;
}

const TYPED_CHARACTERS = 120;

async function typeAndRead(page, text) {
  // A long text is pasted and its last characters typed: typing thousands of keys, each one
  // answered by the page, took over 30 s on a slow CI machine.
  const typed = text.slice(-TYPED_CHARACTERS);
  await page.fill('#input', text.slice(0, text.length - typed.length));
  await page.type('#input', typed, { delay: 2 });
  // The page answers as it is typed; one more answer for the whole text, awaited, so that
  // what is read is the last keystroke's answer.
  await page.waitForTimeout(300);
  await page.evaluate(() => window.seqgen.update());
  return {
    output: await page.locator('#output').textContent(),
    timing: await page.locator('#timing').textContent(),
    error: (await page.locator('#error').isVisible()) ? await page.locator('#error').textContent() : null,
  };
}

async function main() {
  const options = parse(process.argv.slice(2));
  const lines = fs.readFileSync(options.sentences, 'utf8').split('\n').filter((line) => line.length > 0);
  const server = await serve(options.bundle);
  const base = `http://127.0.0.1:${server.address().port}/web/`;
  const args = ['--no-sandbox', ...(options.webgpu === 'on' ? ['--enable-unsafe-webgpu'] : [])];
  const browser = await chromium.launch({ executablePath: options.chromium, args });
  const result = { consoleErrors: [] };
  try {
    const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
    const page = await context.newPage();
    page.on('console', (message) => message.type() === 'error' && result.consoleErrors.push(message.text()));
    const started = Date.now();
    await page.goto(options.backend ? `${base}?backend=${encodeURIComponent(options.backend)}` : base);
    await page.waitForFunction(() => !document.getElementById('input').disabled || !document.getElementById('error').hidden, null, { timeout: 120000 });
    result.backend = await page.locator('#task').getAttribute('data-backend');
    result.task = await page.locator('#task').textContent();
    result.notice = (await page.locator('#notice').isVisible()) ? await page.locator('#notice').textContent() : null;
    result.pageLoadSeconds = (Date.now() - started) / 1000;
    if (options.webgpu === 'on') result.adapter = await page.evaluate(probeAdapter);
    result.bundleLoadSeconds = Number(await page.locator('#status').getAttribute('data-load-seconds'));
    result.bytes = await page.evaluate(() => performance.getEntriesByType('resource').reduce((sum, e) => sum + (e.encodedBodySize || 0), 0));
    await context.setOffline(true); // from here on the page must need no network
    result.typed = [];
    for (const line of lines.slice(0, Number(options.type ?? 3))) result.typed.push(await typeAndRead(page, line));
    if (options.screenshot) await page.screenshot({ path: options.screenshot });
    const empty = await typeAndRead(page, ' ');
    result.emptyLine = { output: empty.output, timing: empty.timing, error: empty.error };
    if (options.longLine !== 'off') result.longLine = (await typeAndRead(page, `${lines[0]} `.repeat(40).trim())).error;
    if (options.bench) result.bench = await bench(page, lines.slice(0, Number(options.bench)));
    await context.setOffline(false);
    if (options.badBundle) {
      const bad = await context.newPage();
      await bad.goto(`${base}?bundle=${encodeURIComponent(options.badBundle)}`);
      await bad.waitForSelector('#error:not([hidden])', { timeout: 60000 });
      result.badBundle = await bad.locator('#error').textContent();
    }
  } finally {
    await browser.close();
    server.close();
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

/** The WebGPU adapter the browser gives this origin: {vendor, architecture, fallback}, or null. */
async function probeAdapter() {
  const adapter = navigator.gpu ? await navigator.gpu.requestAdapter().catch(() => null) : null;
  if (!adapter) return null;
  const fallback = Boolean(adapter.isFallbackAdapter ?? adapter.info?.isFallbackAdapter);
  return { vendor: adapter.info?.vendor ?? '', architecture: adapter.info?.architecture ?? '', fallback };
}

/** Sentences per second of the model inside the page (on its backend), greedy and beam 5. */
function bench(page, lines) {
  return page.evaluate(async (sentences) => {
    const found = {};
    for (const beamSize of [1, 5]) {
      const started = performance.now();
      const translations = await window.seqgen.model.translate(sentences, { beamSize });
      const seconds = (performance.now() - started) / 1000;
      found[beamSize === 1 ? 'greedy' : 'beam5'] = { sentencesPerSecond: sentences.length / seconds, seconds, translations };
    }
    return found;
  }, lines);
}

main().catch((error) => {
  process.stderr.write(`drive-page: ${error.stack ?? error}\n`);
  process.exitCode = 1;
});
