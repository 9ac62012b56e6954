// The main README's "Use it from JavaScript" example, run as written
// (only the server's address and the SDK's path changed) against the real
// server with --dev: it must print what the README says it prints.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { connect } from '../index.js';
import { Server, token, until } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const readme = readFileSync(path.join(here, '..', '..', '..', 'README.md'), 'utf8');

/** The first ```js block after `heading`, and the ``` block after it. */
function example() {
  const section = readme.slice(readme.indexOf('## Use it from JavaScript'));
  const code = /```js\n([\s\S]*?)```/.exec(section);
  const output = /```js\n[\s\S]*?```\s*```\n([\s\S]*?)```/.exec(section);
  assert.ok(code && output, 'the README has the example and its output');
  return { code: code[1], output: output[1] };
}

const srv = new Server({ CHAT_DEV: 'true' });
after(() => srv.stop());

test("the README's example runs and prints what the README shows", { timeout: 60000 }, async () => {
  const { code, output } = example();
  await srv.start();
  // `general`, as scripts/run-server.sh creates it.
  const admin = connect({ url: srv.url, token: token(2, 'operator') });
  await until(() => admin.state === 'connected', 'connected');
  await admin.createRoom('general');
  admin.close();
  const file = path.join(here, 'readme-example.tmp.mjs');
  const program = code
    .replace("'./clients/js/index.js'", "'../index.js'")
    .replace("'http://127.0.0.1:9001'", `'http://127.0.0.1:${srv.port}'`);
  assert.notEqual(program, code);
  writeFileSync(file, program);
  try {
    const printed = await new Promise((resolve, reject) => {
      execFile(process.execPath, [file], { timeout: 30000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stdout}${stderr}`)) : resolve(stdout)));
    });
    const norm = (text) => text.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => l.replace(/#general \d+/, '#general N'));
    assert.deepEqual(norm(printed), norm(output));
  } finally {
    rmSync(file, { force: true });
  }
});
