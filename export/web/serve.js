#!/usr/bin/env node
// A static file server for the page: export/ at /, and a bundle folder at /web/bundle/.
//
//   node export/web/serve.js BUNDLE_DIR [PORT]      then open http://localhost:PORT/web/
//
// Only plain files under those two folders are served (no listing, no "..").

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
};

/** Where a URL path lies on disk, or null when it is outside the served folders. */
function resolve(urlPath, bundle) {
  const clean = decodeURIComponent(urlPath.split('?')[0]);
  const [base, rest] = clean.startsWith('/web/bundle/') ? [bundle, clean.slice('/web/bundle/'.length)] : [ROOT, clean];
  const file = path.resolve(base, `.${path.sep}${rest.endsWith('/') || rest === '' ? `${rest}index.html` : rest}`);
  return file.startsWith(base + path.sep) ? file : null;
}

/** Start serving; resolves to the http.Server once it listens. */
export function serve(bundle, port = 0) {
  const folder = path.resolve(bundle);
  const server = http.createServer((request, response) => {
    const file = resolve(request.url, folder);
    fs.readFile(file ?? '', (error, data) => {
      if (!file || error) {
        response.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
        return;
      }
      response.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' }).end(data);
    });
  });
  return new Promise((done) => server.listen(port, '127.0.0.1', () => done(server)));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [bundle, port = '8000'] = process.argv.slice(2);
  if (!bundle) {
    process.stderr.write('usage: node export/web/serve.js BUNDLE_DIR [PORT]\n');
    process.exit(1);
  }
  const server = await serve(bundle, Number(port));
  process.stdout.write(`serving http://127.0.0.1:${server.address().port}/web/ (bundle ${bundle})\n`);
}
