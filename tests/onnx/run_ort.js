// run_ort.js: runs an ONNX model with ONNX Runtime (the npm package onnxruntime-node, its CPU
// library) on inputs from .npy files, for nnlab's ONNX tests (the peer nobody here wrote).
//   node run_ort.js --version              prints ONNX Runtime's version after loading its library
//   node run_ort.js MODEL IN.npy OUT.npy    runs MODEL on the f32 array IN, writes its output f32
// The package is looked up in $ORT_NODE_MODULES, else build/node_modules of this checkout.
'use strict';
const fs = require('fs');
const path = require('path');

const modules = process.env.ORT_NODE_MODULES || path.join(__dirname, '..', '..', 'build', 'node_modules');
const ort = require(path.join(modules, 'onnxruntime-node'));
ort.env.logLevel = 'error'; // its warnings (telemetry, cpuinfo) are not the test's business

// A little-endian f32 .npy in C order (what nnlab's Tensor:save writes).
function readNpy(file) {
  const b = fs.readFileSync(file);
  if (b.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(file + ': not a .npy file');
  const v1 = b[6] === 1, off = v1 ? 10 : 12;
  const hlen = v1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const header = b.toString('latin1', off, off + hlen);
  if (!/'descr': '<f4'/.test(header) || /'fortran_order': True/.test(header))
    throw new Error(file + ': expected little-endian f32 in C order, header ' + header);
  const dims = header.match(/'shape': \(([^)]*)\)/)[1].split(',').map(s => s.trim()).filter(s => s).map(Number);
  const start = off + hlen;
  const n = dims.reduce((a, d) => a * d, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = b.readFloatLE(start + 4 * i);
  return { dims, data };
}

function writeNpy(file, dims, data) {
  let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims.join(', ') + (dims.length === 1 ? ',' : '') + '), }';
  while ((10 + header.length + 1) % 64 !== 0) header += ' ';
  header += '\n';
  const b = Buffer.alloc(10 + header.length + 4 * data.length);
  b.write('\x93NUMPY', 0, 'latin1');
  b[6] = 1; b[7] = 0;
  b.writeUInt16LE(header.length, 8);
  b.write(header, 10, 'latin1');
  for (let i = 0; i < data.length; i++) b.writeFloatLE(data[i], 10 + header.length + 4 * i);
  fs.writeFileSync(file, b);
}

async function main() {
  const args = process.argv.slice(2);
  if (args[0] === '--version') {
    // a session on a one-node model proves that the native library loads and runs
    const model = path.join(__dirname, 'identity.onnx');
    const s = await ort.InferenceSession.create(model, { executionProviders: ['cpu'] });
    const x = new ort.Tensor('float32', Float32Array.from([1, 2]), [1, 2]);
    const y = (await s.run({ [s.inputNames[0]]: x }))[s.outputNames[0]];
    if (y.data[1] !== 2) throw new Error('ONNX Runtime gave a wrong identity');
    console.log('onnxruntime-node ' + ort.env.versions.node + ' (node ' + process.versions.node + ')');
    return;
  }
  if (args.length !== 3) throw new Error('usage: node run_ort.js MODEL IN.npy OUT.npy | --version');
  const [model, inFile, outFile] = args;
  // ORT_OPT=disabled runs the graph as written; ORT_OPTIMIZED=file.onnx saves ONNX Runtime's
  // optimized graph (where its fused quantized operators show).
  const opts = { executionProviders: ['cpu'], graphOptimizationLevel: process.env.ORT_OPT || 'all' };
  if (process.env.ORT_OPTIMIZED) opts.optimizedModelFilePath = process.env.ORT_OPTIMIZED;
  const s = await ort.InferenceSession.create(model, opts);
  const x = readNpy(inFile);
  const out = await s.run({ [s.inputNames[0]]: new ort.Tensor('float32', x.data, x.dims) });
  const y = out[s.outputNames[0]];
  writeNpy(outFile, y.dims, y.data);
}

main().catch(e => { console.error('run_ort.js: ' + (e && e.message ? e.message : e)); process.exit(1); });
