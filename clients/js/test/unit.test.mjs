// Unit tests of the SDK's pure parts (no server): how presence frames,
// batched or not, become `presence` events; the back-off's delays.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, presenceEvents } from '../index.js';

test('a presence_batch becomes one presence event per user, as single frames do', () => {
  const single = { type: 'presence', data: { room: 'general', user: 9, username: 'carol', status: 'online' } };
  assert.deepEqual(presenceEvents(single), [single.data]);
  const batch = {
    type: 'presence_batch',
    data: { room: 'general', online: [{ user: 9, username: 'carol' }, { user: 4, username: 'dan' }], offline: [{ user: 3, username: 'bob' }] },
  };
  assert.deepEqual(presenceEvents(batch), [
    { room: 'general', user: 9, username: 'carol', status: 'online' },
    { room: 'general', user: 4, username: 'dan', status: 'online' },
    { room: 'general', user: 3, username: 'bob', status: 'offline' },
  ]);
  assert.deepEqual(presenceEvents({ type: 'presence_batch', data: { room: 'r', online: [] } }), []);
  assert.deepEqual(presenceEvents({ type: 'presence_batch' }), []);
  assert.deepEqual(presenceEvents({ type: 'typing', data: {} }), []);
});

test('back-off: full jitter below a capped exponential', () => {
  assert.equal(backoffDelay(0, 500, 10000, () => 0), 0);
  assert.equal(backoffDelay(0, 500, 10000, () => 0.999999), 499);
  assert.equal(backoffDelay(3, 500, 10000, () => 0.999999), 3999);
  assert.equal(backoffDelay(30, 500, 10000, () => 0.5), 5000);
  assert.equal(backoffDelay(1000, 500, 10000, () => 0.5), 5000);
});
