// node --test: which backend the page runs on (src/browser.js, chooseBackend), with stand-ins
// for navigator.gpu: none, one without an adapter, a software adapter, a hardware adapter.

import assert from 'node:assert';
import test from 'node:test';
import { chooseBackend } from '../src/browser.js';

const gpu = (adapter) => ({ requestAdapter: async () => adapter });
const hardware = { isFallbackAdapter: false, info: { vendor: 'nvidia', architecture: 'hopper' } };
const software = { info: { vendor: 'google', architecture: 'swiftshader', isFallbackAdapter: true } };

test('auto takes WebGPU on a hardware adapter only', async () => {
  assert.deepStrictEqual(await chooseBackend('auto', gpu(hardware)), { backend: 'webgpu', notice: null, adapter: 'nvidia hopper' });
  for (const missing of [undefined, gpu(null), gpu(software)]) {
    assert.deepStrictEqual(await chooseBackend('auto', missing), { backend: 'wasm', notice: null, adapter: null });
  }
});

test('webgpu asked for takes any adapter, and says so when there is none', async () => {
  assert.strictEqual((await chooseBackend('webgpu', gpu(software))).adapter, 'google swiftshader, software');
  const none = await chooseBackend('webgpu', gpu(null));
  assert.strictEqual(none.backend, 'wasm');
  assert.match(none.notice, /WebGPU was asked for, but the browser gives no WebGPU adapter: running on WebAssembly/);
  assert.match((await chooseBackend('webgpu', undefined)).notice, /this browser has no WebGPU/);
  const refused = { requestAdapter: async () => Promise.reject(new Error('blocked')) };
  assert.strictEqual((await chooseBackend('webgpu', refused)).backend, 'wasm');
});

test('wasm never asks for an adapter; an unknown backend runs WebAssembly with a notice', async () => {
  const asked = { requestAdapter: async () => assert.fail('asked for an adapter') };
  assert.deepStrictEqual(await chooseBackend('wasm', asked), { backend: 'wasm', notice: null, adapter: null });
  assert.match((await chooseBackend('cuda', gpu(hardware))).notice, /Unknown backend "cuda"/);
});
