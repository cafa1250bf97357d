// Anchor for bench_tokenizer_encode: Hugging Face tokenizers (the Rust library, version printed
// below) through its npm binding `tokenizers`, encoding the same corpus (fixture corpus repeated to
// >= 20 MB). "single": encodeBatch with RAYON_NUM_THREADS=1 (one Rust thread, no per-call JS
// overhead); "batch": encodeBatch on all threads. One JSON line per figure.
//   npm install tokenizers   (in some DIR)
//   TOKENIZERS_NODE_MODULES=DIR/node_modules node bench/tokenizer_anchor.mjs [single|batch] > a.jsonl
// Run once per mode (rayon reads RAYON_NUM_THREADS when its pool starts, so "single" sets it
// itself by re-running this script in a child process).
import { createRequire } from 'module';
import { execFileSync } from 'child_process';
import fs from 'fs';
import path from 'path';
import { fileURLToPath } from 'url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const modules = process.env.TOKENIZERS_NODE_MODULES || '/tmp/tokanchor/node_modules';
const require = createRequire(path.join(modules, 'x.js'));
const mode = process.argv[2];
if (!mode) {
  // Parent: run both modes, each in its own process.
  for (const m of ['single', 'batch']) {
    const env = { ...process.env };
    if (m === 'single') env.RAYON_NUM_THREADS = '1';
    else delete env.RAYON_NUM_THREADS;
    process.stdout.write(execFileSync(process.execPath, [fileURLToPath(import.meta.url), m], { env }));
  }
  process.exit(0);
}
const tk = require('tokenizers');
const version = JSON.parse(fs.readFileSync(path.join(modules, 'tokenizers', 'package.json'))).version;
const cases = JSON.parse(fs.readFileSync(path.join(root, 'tests/fixtures/tokenizer_cases.json')));
const targetMb = Number(process.env.TOKENIZER_BENCH_MB || 20);
const docs = [];
let bytes = 0;
while (bytes < targetMb * 1e6) {
  for (const t of cases.corpus) { docs.push(t); bytes += Buffer.byteLength(t, 'utf8'); }
}
for (const name of ['qwen3', 'llama3']) {
  const t0 = process.hrtime.bigint();
  const tok = tk.Tokenizer.fromFile(path.join(root, 'tests/fixtures/tokenizers', name, 'tokenizer.json'));
  const load_s = Number(process.hrtime.bigint() - t0) / 1e9;
  const chunk = 20000;
  let tokens = 0;
  const t1 = process.hrtime.bigint();
  for (let i = 0; i < docs.length; i += chunk) {
    const encs = await tok.encodeBatch(docs.slice(i, i + chunk), { addSpecialTokens: false });
    for (const e of encs) tokens += e.getIds().length;
  }
  const s = Number(process.hrtime.bigint() - t1) / 1e9;
  console.log(JSON.stringify({
    tokenizer: name, mode, mb_per_s: bytes / 1e6 / s, seconds: s, tokens, load_s,
    threads: mode === 'single' ? 1 : 'all (rayon)',
    anchor: `HF tokenizers ${version} (Rust library via npm 'tokenizers' binding, encodeBatch${mode === 'single' ? ', RAYON_NUM_THREADS=1' : ''}; includes JS<->Rust marshalling of results)`,
  }));
}
