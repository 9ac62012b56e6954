// Edits and deletes of messages: applying `message_edited` /
// `message_deleted` frames (live or replayed) and history's `edited_at` /
// tombstones to a conversation, who may edit or delete what, and the
// per-message controls.
//
// A conversation keeps its messages in a Map by id (see app.js). Frames are
// applied in the order they arrive, which is id order within a stream:
// an edit replaces the target's content, a delete turns the target into a
// tombstone for good (a later edit frame never brings content back).

/** Text shown in place of a deleted message. */
export const TOMBSTONE_TEXT = 'message deleted';

/** Applies `message_edited`'s data to `c`; true when a shown message changed. */
export function applyEdited(c, d) {
  const m = c.messages.get(d.target);
  if (!m || m.deleted) return false;
  // An edit replayed after its message was deleted has no content: the
  // delete event that follows turns the message into a tombstone.
  if (d.deleted === true || typeof d.content !== 'string') return false;
  m.content = d.content;
  m.edited_at = d.timestamp;
  return true;
}

/** Applies `message_deleted`'s data to `c`; true when a shown message changed. */
export function applyDeleted(c, d) {
  const m = c.messages.get(d.target);
  if (!m || m.deleted) return false;
  tombstone(m);
  return true;
}

/** Makes `m` a tombstone: no content, no edit mark. */
export function tombstone(m) {
  m.deleted = true;
  delete m.content;
  delete m.edited_at;
}

/**
 * Merges a message as the server sent it (live, replayed or from history)
 * into the one already kept with its id: the incoming one is its current
 * state, except that a tombstone never comes back to life.
 */
export function mergeMessage(kept, m) {
  if (kept.deleted) return false;
  if (m.deleted) {
    tombstone(kept);
    return true;
  }
  if (m.edited_at && m.edited_at !== kept.edited_at) {
    kept.content = m.content;
    kept.edited_at = m.edited_at;
    return true;
  }
  return false;
}

/** Whether `me` may edit `m` (its author, while it is not deleted). */
export function mayEdit(m, me) {
  return !!m.id && !m.deleted && m.fromUser === me;
}

/**
 * Whether `me` may delete `m`: its author, or in a room an owner or
 * moderator of it (`role` is `me`'s role there, when known).
 */
export function mayDelete(m, me, role) {
  if (!m.id || m.deleted) return false;
  if (m.fromUser === me) return true;
  return m.room !== undefined && (role === 'owner' || role === 'moderator');
}

/**
 * The controls of one delivered message: "Edit" and "Delete" buttons as
 * allowed. `on.edit(m)` and `on.delete(m)` are called on click (a
 * missing one: that control is not offered).
 */
export function messageControls(m, me, role, on) {
  const box = document.createElement('span');
  box.className = 'actions';
  if (on.edit && mayEdit(m, me)) box.append(button('Edit', 'edit', () => on.edit(m)));
  if (on.delete && mayDelete(m, me, role)) box.append(button('Delete', 'delete', () => on.delete(m)));
  return box.childElementCount ? box : null;
}

/** The "(edited)" mark of an edited message, or null. */
export function editedMark(m, formatTime) {
  if (m.deleted || !m.edited_at) return null;
  const el = document.createElement('span');
  el.className = 'edited';
  el.textContent = '(edited)';
  const t = formatTime(m.edited_at);
  if (t) el.title = 'edited at ' + t;
  return el;
}

function button(label, cls, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'link ' + cls;
  b.textContent = label;
  b.addEventListener('click', onClick);
  return b;
}
