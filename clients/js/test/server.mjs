// Test harness of the SDK tests: the real server binary (a child process,
// on a loopback port of its own, restartable on the same port), tokens
// signed with its secret, and the database through psql.
//
// Run by `cargo test --test sdk` (tests/sdk/main.rs), which creates a fresh
// database and passes CHAT_SDK_SERVER (the binary), CHAT_SDK_DATABASE_URL,
// CHAT_SDK_JWT_SECRET and CHAT_SDK_PSQL (a psql command) in the environment.
import { spawn, execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:net';
import { promisify } from 'node:util';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests with \`cargo test --test sdk\` (scripts/test.sh does)`);
  return v;
};

/** How long a test waits for something it expects. */
export const WAIT_MS = 15000;

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** An HS256 token for `userId`, living `ttlSecs`. */
export function token(userId, username, ttlSecs = 3600) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const now = Math.floor(Date.now() / 1000);
  const claims = b64url(JSON.stringify({ sub: String(userId), user_id: userId, username, iat: now, exp: now + ttlSecs }));
  const sig = createHmac('sha256', env('CHAT_SDK_JWT_SECRET')).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${sig}`;
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves when `check()` is true, polling; rejects after `ms`. */
export async function until(check, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The server: `start()`, `stop()`, `url`, `sql(query)`. */
export class Server {
  constructor(extraEnv = {}) {
    this.extraEnv = extraEnv;
    this.child = null;
    this.port = 0;
    this.log = [];
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  async start() {
    if (!this.port) this.port = await freePort();
    const child = spawn(env('CHAT_SDK_SERVER'), [], {
      env: {
        PATH: process.env.PATH,
        DATABASE_URL: env('CHAT_SDK_DATABASE_URL'),
        JWT_SECRET: env('CHAT_SDK_JWT_SECRET'),
        WS_BIND_ADDR: `127.0.0.1:${this.port}`,
        CHAT_CORES: '2',
        RUST_LOG: 'warn',
        NO_COLOR: '1',
        CHAT_SHUTDOWN_TIMEOUT_MS: '2000',
        ...this.extraEnv,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    const keep = (chunk) => {
      this.log.push(String(chunk));
      if (this.log.length > 200) this.log.shift();
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    this.exited = exited;
    // Ready: /readyz answers 200.
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`the server exited (${child.exitCode}):\n${this.log.join('')}`);
      try {
        const r = await fetch(`http://127.0.0.1:${this.port}/readyz`);
        if (r.ok) return;
      } catch (_) {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`the server did not become ready:\n${this.log.join('')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops the server: SIGTERM (then SIGKILL after a few seconds), or at
   * once with SIGKILL when `kill`. */
  async stop(kill = false) {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    child.kill(kill ? 'SIGKILL' : 'SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(killer);
    this.child = null;
  }

  /** Runs `query` with psql on the test database; rows as arrays of strings. */
  async sql(query) {
    const [cmd, ...args] = JSON.parse(env('CHAT_SDK_PSQL'));
    const { stdout } = await promisify(execFile)(cmd, [...args, env('CHAT_SDK_DATABASE_URL'), '-AtX', '-v', 'ON_ERROR_STOP=1', '-c', query]);
    return stdout.split('\n').filter((l) => l !== '').map((l) => l.split('|'));
  }
}
