// latency.js: onnxruntime-node's latency for one ONNX model, the peer of
// bench/inference.py (which exports the model and reads what this prints).
//   node latency.js MODEL.onnx INPUTS OUTPUT.npy THREADS RUNS
// INPUTS is one .npy file (fed to the model's first input) or a comma list
// NAME=FILE.npy,... (one per model input); float32 and int32 files (C order).
// One InferenceSession (CPU, all graph optimizations, sequential, THREADS
// intra-op threads), 20 warm-up runs, then RUNS timed `await session.run()`;
// prints JSON: median/min microseconds and the output written to OUTPUT.npy
// so the caller can check all peers computed the same thing.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

const DTYPES = { "'<f4'": ['float32', Float32Array], "'<i4'": ['int32', Int32Array] };

function loadNpy(file) { // little-endian float32 or int32, C order
  const buf = fs.readFileSync(file);
  const hlen = buf.readUInt16LE(8);
  const header = buf.toString('latin1', 10, 10 + hlen);
  const descr = Object.keys(DTYPES).find((d) => header.includes(d));
  if (!descr || header.includes("'fortran_order': True"))
    throw new Error(`${file}: only C-order float32 or int32 .npy files are read`);
  const [type, Arr] = DTYPES[descr];
  const shape = header.match(/'shape': \(([^)]*)\)/)[1].split(',').map((s) => s.trim())
    .filter((s) => s).map(Number);
  const bytes = buf.subarray(10 + hlen);
  return { type, shape, data: new Arr(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)) };
}

function saveNpy(file, shape, data) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1; head[7] = 0; head.writeUInt16LE(header.length, 8);
  fs.writeFileSync(file, Buffer.concat([head, Buffer.from(header, 'latin1'),
    Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

async function main() {
  const [model, inputs, output, threads, runs] = process.argv.slice(2);
  const sess = await ort.InferenceSession.create(model, {
    executionProviders: ['cpu'], graphOptimizationLevel: 'all', executionMode: 'sequential',
    intraOpNumThreads: Number(threads), interOpNumThreads: 1 });
  const feeds = {};
  for (const item of inputs.split(',')) {
    const eq = item.indexOf('=');
    const [name, file] = eq < 0 ? [sess.inputNames[0], item] : [item.slice(0, eq), item.slice(eq + 1)];
    const x = loadNpy(file);
    feeds[name] = new ort.Tensor(x.type, x.data, x.shape);
  }
  let out;
  for (let i = 0; i < 20; i++) out = await sess.run(feeds);
  const t = [];
  for (let i = 0; i < Number(runs); i++) {
    const t0 = process.hrtime.bigint();
    await sess.run(feeds);
    t.push(Number(process.hrtime.bigint() - t0) / 1e3);
  }
  t.sort((a, b) => a - b);
  const y = out[sess.outputNames[0]];
  if (y.type !== 'float32') throw new Error(`output ${sess.outputNames[0]} is ${y.type}, not float32`);
  saveNpy(output, y.dims, y.data);
  console.log(JSON.stringify({ median_us: t[t.length >> 1], min_us: t[0] }));
}

main().catch((e) => { console.error(String(e)); process.exit(1); });
