// Runs a wasm32-wasip1 program (a test binary) under Node's WASI, with the
// current directory preopened: cargo's runner for `make wasm-unit`.
'use strict';
const { WASI } = require('node:wasi');
const fs = require('node:fs');
const [program, ...args] = process.argv.slice(2);
const wasi = new WASI({
  version: 'preview1',
  args: [program, ...args],
  env: process.env,
  preopens: { '.': '.' },
  returnOnExit: true,
});
const module = new WebAssembly.Module(fs.readFileSync(program));
const instance = new WebAssembly.Instance(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
