// Unit tests of the page's modules (run by `cargo test --test browser`
// with `node --test`, no browser): web/edits.js (applying a stream's
// messages and edit/delete events in id order, as live delivery, history
// and replays bring them, leaves the current state; who may edit and
// delete) and web/members.js (who may moderate whom).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyDeleted, applyEdited, mayDelete, mayEdit, mergeMessage } from '../../web/edits.js';
import { mayModerate } from '../../web/members.js';

const conv = (...messages) => ({ messages: new Map(messages.map((m) => [m.id, { ...m }])) });
const msg = (id, content, extra = {}) => ({ id, fromUser: 1, content, timestamp: 't' + id, room: 'r', ...extra });

test('an edit replaces the content and marks it edited; a later edit wins', () => {
  const c = conv(msg(1, 'a'));
  assert.equal(applyEdited(c, { id: 2, target: 1, content: 'b', timestamp: 't2' }), true);
  assert.equal(applyEdited(c, { id: 3, target: 1, content: 'c', timestamp: 't3' }), true);
  assert.deepEqual([c.messages.get(1).content, c.messages.get(1).edited_at], ['c', 't3']);
});

test('a delete makes a tombstone that no edit brings back', () => {
  const c = conv(msg(1, 'a', { edited_at: 't0' }));
  assert.equal(applyDeleted(c, { id: 2, target: 1, by: 1 }), true);
  const m = c.messages.get(1);
  assert.deepEqual([m.deleted, m.content, m.edited_at], [true, undefined, undefined]);
  assert.equal(applyEdited(c, { id: 3, target: 1, content: 'zombie', timestamp: 't3' }), false);
  assert.equal(applyDeleted(c, { id: 4, target: 1, by: 1 }), false);
  assert.equal(m.content, undefined);
});

test('a replay of a message deleted while away: tombstone, then its edit (no content), then its delete', () => {
  const c = conv();
  c.messages.set(5, msg(5, undefined, { deleted: true }));
  assert.equal(applyEdited(c, { id: 6, target: 5, deleted: true, timestamp: 't6' }), false);
  assert.equal(applyDeleted(c, { id: 7, target: 5, by: 1 }), false);
  assert.equal(c.messages.get(5).deleted, true);
  assert.equal(c.messages.get(5).content, undefined);
});

test('events for messages not shown are ignored', () => {
  const c = conv(msg(1, 'a'));
  assert.equal(applyEdited(c, { id: 9, target: 8, content: 'x', timestamp: 't9' }), false);
  assert.equal(applyDeleted(c, { id: 10, target: 8, by: 1 }), false);
  assert.equal(c.messages.size, 1);
});

test('history merges its current state into a kept message, never reviving a tombstone', () => {
  const kept = msg(1, 'a');
  assert.equal(mergeMessage(kept, msg(1, 'b', { edited_at: 't2' })), true);
  assert.deepEqual([kept.content, kept.edited_at], ['b', 't2']);
  assert.equal(mergeMessage(kept, msg(1, undefined, { deleted: true })), true);
  assert.equal(kept.deleted, true);
  assert.equal(mergeMessage(kept, msg(1, 'b', { edited_at: 't2' })), false);
  assert.equal(kept.content, undefined);
});

test('who may edit and delete', () => {
  const mine = msg(1, 'a');
  const theirs = msg(2, 'b', { fromUser: 2 });
  const dm = { id: 3, fromUser: 2, to: 1, content: 'c' };
  assert.equal(mayEdit(mine, 1), true);
  assert.equal(mayEdit(theirs, 1), false);
  assert.equal(mayDelete(theirs, 1, 'member'), false);
  assert.equal(mayDelete(theirs, 1, 'moderator'), true);
  assert.equal(mayDelete(theirs, 1, 'owner'), true);
  assert.equal(mayDelete(dm, 1, 'owner'), false);
  assert.equal(mayEdit({ ...mine, deleted: true }, 1), false);
  assert.equal(mayDelete({ ...mine, deleted: true }, 1, 'owner'), false);
});

test('owners act on anyone, moderators on plain members, members on no one', () => {
  for (const target of ['owner', 'moderator', 'member']) assert.equal(mayModerate('owner', target), true);
  assert.deepEqual(['owner', 'moderator', 'member'].map((t) => mayModerate('moderator', t)), [false, false, true]);
  for (const target of ['owner', 'moderator', 'member']) assert.equal(mayModerate('member', target), false);
  assert.equal(mayModerate(null, 'member'), false);
});
