// The type declarations (index.d.ts) checked with `tsc --noEmit` against
// example.ts; and a program that misuses them must be refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const tsc = path.join(here, '..', 'node_modules', 'typescript', 'bin', 'tsc');

function run(args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [tsc, ...args], { cwd: here }, (err, stdout, stderr) => resolve({ code: err ? err.code : 0, out: stdout + stderr }));
  });
}

test('tsc --noEmit accepts the example', async () => {
  const { code, out } = await run(['--noEmit', '-p', 'tsconfig.json']);
  assert.equal(code, 0, out);
});

test('tsc --noEmit refuses a misuse (the declarations are checked, not any)', async () => {
  const bad = path.join(here, 'bad.ts');
  writeFileSync(bad, "import { connect } from '../index.js';\nconst c = connect({ url: 'x', token: 't' });\nconst n: number = c.send('r', 'hi');\nc.join(42);\n");
  try {
    const { code, out } = await run(['--noEmit', '--strict', '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--target', 'ES2022', 'bad.ts']);
    assert.notEqual(code, 0);
    assert.match(out, /bad\.ts\(3,/);
    assert.match(out, /bad\.ts\(4,/);
  } finally {
    rmSync(bad, { force: true });
  }
});
