// latency.js: onnxruntime-node's latency for one ONNX model, the peer of
// bench/inference.py (which exports the model and reads what this prints).
//   node latency.js MODEL.onnx INPUT.npy OUTPUT.npy THREADS RUNS
// One InferenceSession (CPU, all graph optimizations, sequential, THREADS
// intra-op threads), 20 warm-up runs, then RUNS timed `await session.run()`;
// prints JSON: median/min microseconds and the output written to OUTPUT.npy
// so the caller can check all peers computed the same thing.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function loadNpy(file) { // little-endian float32, C order
  const buf = fs.readFileSync(file);
  const hlen = buf.readUInt16LE(8);
  const header = buf.toString('latin1', 10, 10 + hlen);
  if (!header.includes("'<f4'") || header.includes("'fortran_order': True"))
    throw new Error(`${file}: only C-order float32 .npy files are read`);
  const shape = header.match(/'shape': \(([^)]*)\)/)[1].split(',').map((s) => s.trim())
    .filter((s) => s).map(Number);
  const bytes = buf.subarray(10 + hlen);
  return { shape, data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)) };
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
  const [model, input, output, threads, runs] = process.argv.slice(2);
  const sess = await ort.InferenceSession.create(model, {
    executionProviders: ['cpu'], graphOptimizationLevel: 'all', executionMode: 'sequential',
    intraOpNumThreads: Number(threads), interOpNumThreads: 1 });
  const x = loadNpy(input);
  const feeds = { [sess.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) };
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
  saveNpy(output, y.dims, y.data);
  console.log(JSON.stringify({ median_us: t[t.length >> 1], min_us: t[0] }));
}

main().catch((e) => { console.error(String(e)); process.exit(1); });
