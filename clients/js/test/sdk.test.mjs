// The SDK against the real server and PostgreSQL (see server.mjs; run by
// `cargo test --test sdk`, which `scripts/test.sh` runs).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, ChatError, backoffDelay } from '../index.js';
import { Server, token, until, freePort, WAIT_MS } from './server.mjs';

const servers = [];
const clients = [];
after(async () => {
  for (const c of clients) c.close();
  for (const s of servers) await s.stop();
});

async function server(extraEnv) {
  const s = new Server(extraEnv);
  servers.push(s);
  await s.start();
  return s;
}

function client(srv, userId, username, opts = {}) {
  const c = connect({ url: srv.url, token: () => token(userId, username), reconnectMinMs: 200, reconnectMaxMs: 1000, connectTimeoutMs: 2000, ...opts });
  clients.push(c);
  if (process.env.SDK_DEBUG) {
    c.on('state', (e) => console.error(`${Date.now() % 100000} user ${userId}: ${JSON.stringify(e)}`));
    c.on('error', (e) => console.error(`${Date.now() % 100000} user ${userId}: error ${e.message}`));
  }
  return c;
}

const connected = (c) => until(() => c.state === 'connected', `user ${c.user && c.user.id} connected`);

test('requests are answered by their own reply; errors reject with the server message', { timeout: 60000 }, async () => {
  const srv = await server();
  const alice = client(srv, 91, 'alice91');
  await connected(alice);
  const created = await alice.createRoom('req-a');
  assert.deepEqual(created, { room: 'req-a', visibility: 'public' });
  await alice.createRoom('req-b', { visibility: 'private' });
  // Concurrent requests: each reply reaches its own promise.
  const [a, b, rooms] = await Promise.all([
    alice.send('req-a', 'in a'),
    alice.send('req-b', 'in b'),
    alice.rooms(),
  ]);
  assert.equal(a.room, 'req-a');
  assert.equal(b.room, 'req-b');
  assert.deepEqual(rooms.map((r) => r.room).sort(), ['req-a', 'req-b']);
  const [ha, hb] = await Promise.all([alice.history({ room: 'req-a' }), alice.history({ room: 'req-b' })]);
  assert.deepEqual([ha.map((m) => m.content), hb.map((m) => m.content)], [['in a'], ['in b']]);

  await assert.rejects(alice.join('nowhere'), (e) => e instanceof ChatError && e.kind === 'server' && e.message === "room 'nowhere' does not exist");
  await assert.rejects(alice.request({ type: 'no_such_request' }), (e) => e.kind === 'server' && /unknown request type/.test(e.message));
  await assert.rejects(alice.send('req-a', ''), (e) => e.kind === 'server' && e.message === 'content must not be empty');
  await assert.rejects(alice.edit(a.id + 1000, 'x'), (e) => e.kind === 'server' && /does not exist/.test(e.message));
  // `typing` has no reply: as a request it times out.
  await assert.rejects(alice.request({ type: 'typing', room: 'req-a' }, { timeoutMs: 300 }), (e) => e.kind === 'timeout');
  // Edits and deletes resolve with their events.
  const edited = await alice.edit(a.id, 'in a, edited');
  assert.deepEqual([edited.target, edited.content], [a.id, 'in a, edited']);
  const deleted = await alice.delete(a.id);
  assert.equal(deleted.target, a.id);
  // The connection is still fine after all those errors.
  assert.equal(alice.state, 'connected');
  const members = await alice.members('req-b');
  assert.deepEqual(members.members.map((m) => [m.user, m.role]), [[91, 'owner']]);
});

test('exactly once and in id order to the application across a server kill in the middle of a stream', { timeout: 60000 }, async () => {
  const srv = await server();
  const alice = client(srv, 11, 'alice11');
  const bob = client(srv, 12, 'bob12');
  await connected(alice);
  await connected(bob);
  await alice.createRoom('stream');
  const seen = [];
  await bob.join('stream', (type, d) => {
    if (type === 'message' || type === 'edit' || type === 'delete') seen.push(d.id);
  });
  const N = 300;
  let restarted = false;
  const sends = [];
  const window = 8;
  for (let i = 0; i < N; i++) {
    // A few edits and deletes in the stream too (events with ids of their own).
    const p = alice.send('stream', `m${i}`).then(async (m) => {
      if (i % 25 === 0) await alice.edit(m.id, `m${i} edited`);
      if (i % 40 === 1) await alice.delete(m.id);
      return m;
    });
    sends.push(p);
    if (sends.length >= window) await sends[sends.length - window];
    if (!restarted && seen.length >= N / 3) {
      restarted = true;
      await srv.stop(true);
      await srv.start();
    }
  }
  const stored = await Promise.all(sends);
  assert.ok(restarted, 'the server was restarted in the middle');
  assert.equal(new Set(stored.map((m) => m.id)).size, N, 'one id per send');
  const rows = await srv.sql("SELECT id FROM messages WHERE room = 'stream' ORDER BY id");
  const ids = rows.map((r) => Number(r[0]));
  await until(() => seen.length >= ids.length && (seen.at(-1) ?? 0) >= ids.at(-1), `bob's ${ids.length} frames (has ${seen.length})`);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(seen, ids, 'bob saw exactly the stored stream, in order');
  const once = await srv.sql("SELECT count(*), count(DISTINCT client_id) FROM messages WHERE room = 'stream' AND kind = 0");
  assert.deepEqual(once, [[String(N), String(N)]], 'every message stored once');
});

test('exactly once and in order for a reader cut off (4001) and back while the stream goes on', { timeout: 60000 }, async () => {
  // No per-user message rate: alice's stream is as dense as it can be.
  const srv = await server({ CHAT_USER_MESSAGE_RATE: '0' });
  const alice = client(srv, 13, 'alice13');
  // Bob's tokens live 2 s and are never refreshed in time: the server
  // closes his connection (4001) again and again; he reconnects at once
  // with a new one while alice's messages keep coming.
  const bob = client(srv, 14, 'bob14', { token: () => token(14, 'bob14', 2), refreshBeforeMs: -5000 });
  const closes = [];
  bob.on('state', (e) => e.state === 'disconnected' && closes.push(e.code));
  await connected(alice);
  await connected(bob);
  await alice.createRoom('cut');
  const seen = [];
  await bob.join('cut', (type, d) => type === 'message' && seen.push(d.id));
  const sends = [];
  const started = Date.now();
  for (let i = 0; Date.now() - started < 5000 || closes.length < 2; i++) {
    sends.push(alice.send('cut', `c${i}`));
    if (sends.length >= 32) await sends[sends.length - 32];
  }
  await Promise.all(sends);
  const ids = (await srv.sql("SELECT id FROM messages WHERE room = 'cut' ORDER BY id")).map((r) => Number(r[0]));
  assert.equal(ids.length, sends.length);
  await until(() => seen.length >= ids.length || (seen.at(-1) ?? 0) >= ids.at(-1), `bob's ${ids.length} messages (has ${seen.length})`);
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(closes.filter((c) => c === 4001).length >= 2, `bob was cut off: ${closes}`);
  assert.deepEqual(seen, ids, 'bob saw exactly the stored stream, in order');
});

test('sends not acknowledged when the server dies are resent and stored once', { timeout: 60000 }, async () => {
  const srv = await server();
  const alice = client(srv, 21, 'alice21');
  await connected(alice);
  await alice.createRoom('resend');
  // In flight when the server is killed: some committed, few acknowledged.
  const inflight = [];
  for (let i = 0; i < 50; i++) inflight.push(alice.send('resend', `f${i}`));
  await srv.stop(true);
  const unacked = alice.pending().length;
  await until(() => alice.state !== 'connected', 'alice notices');
  // Written while the server is down.
  const down = [];
  for (let i = 0; i < 5; i++) down.push(alice.send('resend', `d${i}`));
  assert.ok(alice.pending().length >= 5);
  await srv.start();
  const stored = await Promise.all([...inflight, ...down]);
  assert.deepEqual(stored.map((m) => m.content), [...Array.from({ length: 50 }, (_, i) => `f${i}`), ...Array.from({ length: 5 }, (_, i) => `d${i}`)]);
  assert.equal(alice.pending().length, 0);
  const rows = await srv.sql("SELECT content, count(*) FROM messages WHERE room = 'resend' GROUP BY content HAVING count(*) <> 1");
  assert.deepEqual(rows, [], 'no message stored twice');
  const [[count]] = await srv.sql("SELECT count(*) FROM messages WHERE room = 'resend'");
  assert.equal(Number(count), 55);
  assert.ok(unacked > 0, 'some sends were unacknowledged at the kill');
});

test('a token that expires is refreshed on the live connection', { timeout: 60000 }, async () => {
  const srv = await server();
  let calls = 0;
  const states = [];
  const alice = client(srv, 31, 'alice31', {
    token: () => {
      calls += 1;
      return token(31, 'alice31', 4);
    },
    refreshBeforeMs: 2000,
  });
  alice.on('state', (e) => states.push(e.state));
  const refreshed = [];
  alice.on('token', (e) => refreshed.push(e.exp));
  await connected(alice);
  await alice.createRoom('fresh');
  // Past the first token's expiry (4 s), and the second's.
  await new Promise((r) => setTimeout(r, 6500));
  const m = await alice.send('fresh', 'still here');
  assert.equal(m.content, 'still here');
  assert.deepEqual(states, ['connected'], 'never disconnected');
  assert.ok(refreshed.length >= 2, `refreshed ${refreshed.length} times`);
  assert.ok(calls >= 3);
});

test('a static token that expires ends in `closed`, not in reconnects', { timeout: 60000 }, async () => {
  const srv = await server();
  const alice = connect({ url: srv.url, token: token(32, 'alice32', 2), reconnectMinMs: 100, reconnectMaxMs: 200 });
  clients.push(alice);
  const states = [];
  alice.on('state', (e) => states.push([e.state, e.code]));
  await connected(alice);
  await until(() => alice.state === 'closed', 'closed', 6000);
  assert.deepEqual(states.at(-1), ['closed', 4001]);
  await assert.rejects(alice.rooms(), (e) => e.kind === 'closed');
});

test('20 clients do not reconnect in lock-step (full jitter)', { timeout: 60000 }, async () => {
  const srv = await server();
  const n = 20;
  const attempts = new Map(); // client -> time of its first reconnect attempt
  const many = [];
  let downAt = 0;
  for (let i = 0; i < n; i++) {
    const c = client(srv, 100 + i, `jit${i}`, { reconnectMinMs: 1000, reconnectMaxMs: 4000 });
    c.on('state', (e) => {
      if (downAt && e.state === 'connecting' && !attempts.has(i)) attempts.set(i, Date.now() - downAt);
    });
    many.push(c);
  }
  await Promise.all(many.map(connected));
  downAt = Date.now();
  await srv.stop(true);
  await until(() => attempts.size === n, 'every client tried again', 8000);
  await srv.start();
  await Promise.all(many.map(connected));
  const times = [...attempts.values()].sort((a, b) => a - b);
  const spread = times.at(-1) - times[0];
  let crowd = 0;
  for (const t of times) crowd = Math.max(crowd, times.filter((u) => u >= t && u < t + 100).length);
  console.log(`first reconnect attempts after the kill (ms): ${times.join(', ')}; spread ${spread} ms, at most ${crowd} within 100 ms`);
  assert.ok(spread >= 300, `first attempts within ${spread} ms: ${times.join(', ')}`);
  assert.ok(crowd <= 10, `${crowd} of ${n} first attempts within 100 ms: ${times.join(', ')}`);
  // And the delay rule itself: uniform below the capped exponential.
  assert.equal(backoffDelay(3, 500, 10000, () => 0.999999), 3999);
  assert.equal(backoffDelay(30, 500, 10000, () => 0.5), 5000);
});

test('a client resumed from a snapshot gets what it missed, or a gap past the recovery limit', { timeout: 60000 }, async () => {
  const srv = await server({ CHAT_RECOVERY_MAX: '5' });
  const alice = client(srv, 41, 'alice41');
  const bob = client(srv, 42, 'bob42');
  await connected(alice);
  await connected(bob);
  await alice.createRoom('resume');
  const got = [];
  await bob.join('resume', (type, d) => type === 'message' && got.push(d.content));
  await alice.send('resume', 'before');
  await until(() => got.length === 1, 'bob has the first message');
  const snap = bob.snapshot();
  bob.close();
  for (let i = 0; i < 3; i++) await alice.send('resume', `while away ${i}`);
  const dmSeen = [];
  const bob2 = client(srv, 42, 'bob42', { resume: snap });
  bob2.on('message', (m) => m.room === 'resume' && got.push(m.content));
  bob2.on('dm', (m) => dmSeen.push(m.content));
  await until(() => got.length === 4, 'bob has what he missed');
  assert.deepEqual(got, ['before', 'while away 0', 'while away 1', 'while away 2']);
  // Past --recovery-max: a gap, and history fills it.
  const snap2 = bob2.snapshot();
  bob2.close();
  for (let i = 0; i < 8; i++) await alice.send('resume', `lost ${i}`);
  await alice.sendDm(42, 'a dm while away');
  const bob3 = client(srv, 42, 'bob42', { resume: snap2 });
  const gaps = [];
  bob3.on('gap', (g) => gaps.push(g));
  bob3.on('dm', (m) => dmSeen.push(m.content));
  await until(() => gaps.length === 1 && dmSeen.length === 1, 'a gap and the DM');
  assert.deepEqual([gaps[0].room, gaps[0].since], ['resume', snap2.rooms.resume]);
  const filled = await bob3.history({ room: 'resume', after: gaps[0].since });
  assert.deepEqual(filled.map((m) => m.content), Array.from({ length: 8 }, (_, i) => `lost ${i}`));
  assert.deepEqual(dmSeen, ['a dm while away']);
});

test('presence and typing reach the application as events', { timeout: 60000 }, async () => {
  const srv = await server();
  const alice = client(srv, 51, 'alice51');
  await connected(alice);
  await alice.createRoom('here');
  const presence = [];
  const typing = [];
  alice.on('presence', (p) => presence.push([p.user, p.status]));
  alice.on('typing', (t) => typing.push(t.fromUser));
  const bob = client(srv, 52, 'bob52');
  await connected(bob);
  await bob.join('here');
  assert.equal(bob.typing('here'), true);
  assert.equal(bob.typing('here'), false, 'throttled');
  await until(() => typing.length === 1, 'typing');
  bob.close();
  await until(() => presence.some(([u, s]) => u === 52 && s === 'offline'), 'bob offline');
  // A member's first connection: online.
  const bob2 = client(srv, 52, 'bob52');
  await connected(bob2);
  await until(() => presence.some(([u, s]) => u === 52 && s === 'online'), 'bob online');
  assert.deepEqual(typing, [52]);
  assert.ok(WAIT_MS > 0);
});

test('a disconnect by the server API (close 4003) is final: no reconnect, state closed', { timeout: 60000 }, async () => {
  const apiPort = await freePort();
  const key = 'sdk-test-api-key-0123456789';
  const srv = await server({ CHAT_API_BIND: `127.0.0.1:${apiPort}`, CHAT_API_KEYS: key });
  const carol = client(srv, 95, 'carol95');
  const states = [];
  carol.on('state', (e) => states.push(e));
  await connected(carol);
  const r = await fetch(`http://127.0.0.1:${apiPort}/v1/users/95/disconnect`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ reason: 'compromised' }),
  });
  assert.equal(r.status, 200, await r.text());
  await until(() => carol.state === 'closed', 'carol closed');
  const closed = states.find((e) => e.state === 'closed');
  assert.equal(closed.code, 4003);
  // Final: no attempt follows, even though the user is not blocked.
  await new Promise((res) => setTimeout(res, 1500));
  assert.equal(carol.state, 'closed');
  assert.ok(!states.some((e) => e.state === 'connecting' && e.previous === 'closed'), JSON.stringify(states));
});
