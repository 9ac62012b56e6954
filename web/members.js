// Room access on the page: the member list of the current room (from
// `members`, kept current by `member` frames), the user's own role there,
// and the owner/moderator controls: invite, set_role, mute/unmute,
// kick, ban/unban.
//
// `app` is the page's core (app.js): {S, send, render, showError, join,
// leaveLocally, syncRooms}. `app.send` goes through the SDK, which
// correlates each reply by its `ref`; the `<request>_ack` (or error) comes
// back through app.js's `onReply` (`onRequestError`).

/** Members asked for per `members` page (the server caps it, 200 by default). */
const MEMBERS_PAGE = 200;
/** Pages read per listing at most: larger rooms show the first ones. */
const MEMBERS_MAX_PAGES = 5;

/** Requests this module sends, answered `<type>_ack`. */
export const MODERATION_REQUESTS = ['invite', 'set_role', 'mute', 'unmute', 'kick', 'ban', 'unban'];

const ROLES = ['owner', 'moderator', 'member'];

/** Counts changes of any member list (a list's `version` is its last one). */
let changes = 0;

/** Durations offered for mute and ban (seconds; 0: until lifted). */
const DURATIONS = [
  [600, '10 minutes'],
  [3600, '1 hour'],
  [86400, '1 day'],
  [0, 'until lifted'],
];

/** A room conversation's member state, created on first use. */
function state(c) {
  if (!c.members) c.members = { list: new Map(), loaded: false, loading: false, more: false, pages: 0, version: 0 };
  return c.members;
}

/** The user's role in room conversation `c`, when its members are known. */
export function myRole(app, c) {
  if (!c || c.kind !== 'room' || !c.members) return null;
  const me = c.members.list.get(app.S.me.id);
  return me ? me.role : null;
}

/** Whether the user is muted in room conversation `c`, as far as known. */
export function mutedHere(app, c) {
  if (!c || c.kind !== 'room' || !c.members) return false;
  const me = c.members.list.get(app.S.me.id);
  if (!me || !me.muted) return false;
  return !me.muted_until || Date.parse(me.muted_until) > Date.now();
}

/** Whether `actor` (a role) may act on a member with role `target` (not itself). */
export function mayModerate(actor, target) {
  if (actor === 'owner') return true;
  return actor === 'moderator' && target === 'member';
}

/** Reads the member list of room conversation `c` again, from its first page. */
export function loadMembers(app, c) {
  if (!c || c.kind !== 'room' || !c.joined || !app.S.open || !app.S.features.members) return;
  const m = state(c);
  if (m.loading) {
    m.again = true;
    return;
  }
  m.loading = true;
  m.again = false;
  m.next = new Map();
  m.pages = 0;
  requestPage(app, c, 0);
}

function requestPage(app, c, after) {
  const frame = { type: 'members', room: c.key, limit: MEMBERS_PAGE };
  if (after) frame.after = after;
  app.send(frame, { kind: 'members', room: c.key });
}

/** Handles a `members` reply (`what`: the request it answers). */
export function onMembers(app, d) {
  const c = d && app.S.rooms.get(d.room);
  if (!c || !c.members || !c.members.loading) return;
  const m = c.members;
  let last = 0;
  for (const e of d.members || []) {
    m.next.set(e.user, e);
    if (e.username) app.S.names.set(e.user, e.username);
    last = e.user;
  }
  m.pages += 1;
  if (d.more && last && m.pages < MEMBERS_MAX_PAGES) {
    requestPage(app, c, last);
    return;
  }
  m.list = m.next;
  m.next = null;
  m.more = !!d.more;
  m.loaded = true;
  m.loading = false;
  m.version = ++changes;
  if (m.again) loadMembers(app, c);
  app.render();
}

/** The request of a `members` listing failed: allow the next one. */
export function onMembersFailed(app, room) {
  const c = app.S.rooms.get(room);
  if (c && c.members) c.members.loading = false;
}

/**
 * Applies a `member` frame: updates the room's member list, and for the
 * user's own membership adds the room (invited) or drops it (kicked,
 * banned).
 */
export function onMemberEvent(app, d) {
  const S = app.S;
  const mine = d.user === S.me.id;
  if (mine && (d.action === 'invited' || d.action === 'joined')) {
    // A member now (invited, or joined on another connection): join here
    // too, for the ack, who is online and the latest history.
    const c = S.rooms.get(d.room);
    if (!c || !c.joined) {
      app.join(d.room);
      app.render();
      return;
    }
  }
  if (mine && d.action === 'left') {
    app.leaveLocally(d.room);
    return;
  }
  if (mine && (d.action === 'kicked' || d.action === 'banned')) {
    const by = d.by ? S.names.get(d.by) || `user ${d.by}` : 'an operator';
    app.leaveLocally(d.room);
    app.showError(`You were ${d.action} from room '${d.room}' by ${by}${d.reason ? ': ' + d.reason : ''}.`);
    // A kick is an event of the room's stream: one replayed from before a
    // new invitation must not drop the room for good, so ask the server.
    app.syncRooms();
    return;
  }
  const c = S.rooms.get(d.room);
  if (c && ['left', 'kicked', 'banned'].includes(d.action) && c.online.delete(d.user)) app.render();
  if (!c || !c.members) return;
  // A listing under way may have been read before this change: read again.
  if (c.members.loading) c.members.again = true;
  if (!c.members.loaded) return;
  const list = c.members.list;
  switch (d.action) {
    case 'invited':
    case 'joined':
      if (!list.has(d.user)) list.set(d.user, { user: d.user, username: S.names.get(d.user) || `user ${d.user}`, role: 'member' });
      break;
    case 'left':
    case 'kicked':
    case 'banned':
      list.delete(d.user);
      break;
    case 'role': {
      const e = list.get(d.user);
      if (e && ROLES.includes(d.role)) e.role = d.role;
      break;
    }
    case 'muted': {
      const e = list.get(d.user);
      if (e) {
        e.muted = true;
        e.muted_until = d.until;
      }
      break;
    }
    case 'unmuted': {
      const e = list.get(d.user);
      if (e) {
        e.muted = false;
        delete e.muted_until;
      }
      break;
    }
    default:
      break;
  }
  c.members.version = ++changes;
  app.render();
}

/** Handles `<request>_ack` of a moderation request: the list is read again. */
export function onModerationAck(app, d) {
  const c = d && app.S.rooms.get(d.room);
  if (c) loadMembers(app, c);
}

/** Sends one moderation request about `user` in room conversation `c`. */
function act(app, c, type, user, extra = {}) {
  if (!app.S.open) {
    app.showError('Not connected: try again in a moment.');
    return;
  }
  if (!app.S.features[type]) {
    app.showError(`This server does not support ${type} yet.`);
    return;
  }
  app.send({ type, room: c.key, user, ...extra }, { kind: type, room: c.key, user });
}

/** The duration chosen in the panel, as the `seconds` field (none: until lifted). */
function duration() {
  const v = Number(document.getElementById('mod-duration').value);
  return v > 0 ? { seconds: v } : {};
}

function userIdInput() {
  const el = document.getElementById('admin-user');
  const id = Number(el.value);
  if (!Number.isSafeInteger(id) || id < 1) return null;
  el.value = '';
  return id;
}

/** Wires the panel's fixed controls once (the list is built by renderMembers). */
export function wireMembers(app) {
  const sel = document.getElementById('mod-duration');
  sel.replaceChildren(...DURATIONS.map(([s, label]) => {
    const o = document.createElement('option');
    o.value = String(s);
    o.textContent = label;
    return o;
  }));
  document.getElementById('members-toggle').addEventListener('click', () => {
    app.S.showMembers = !app.S.showMembers;
    if (app.S.showMembers) loadMembers(app, app.S.current);
    app.render();
  });
  document.getElementById('admin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const c = app.S.current;
    const id = userIdInput();
    if (!c || c.kind !== 'room') return;
    if (id === null) {
      app.showError('A user id is a positive integer.');
      return;
    }
    act(app, c, 'invite', id);
  });
  document.getElementById('unban').addEventListener('click', () => {
    const c = app.S.current;
    const id = userIdInput();
    if (!c || c.kind !== 'room') return;
    if (id === null) {
      app.showError('Type the user id to unban.');
      return;
    }
    act(app, c, 'unban', id);
  });
}

/** Renders the member panel of the current conversation (rooms only). */
export function renderMembers(app) {
  const S = app.S;
  const c = S.current;
  const room = c && c.kind === 'room' && S.features.members;
  const toggle = document.getElementById('members-toggle');
  toggle.hidden = !room;
  toggle.setAttribute('aria-expanded', String(!!(room && S.showMembers)));
  const panel = document.getElementById('members-panel');
  panel.hidden = !(room && S.showMembers);
  if (panel.hidden) return;
  const m = state(c);
  const role = myRole(app, c);
  // Rebuilt only when something shown changed, so that a control in use
  // (an open role menu) survives unrelated renders.
  const key = [c.key, m.version, role, S.features.kick, S.features.ban, S.features.unban].join('|');
  if (panel.dataset.key === key) return;
  panel.dataset.key = key;
  const staff = role === 'owner' || role === 'moderator';
  document.getElementById('admin-form').hidden = !staff;
  document.getElementById('unban').hidden = !(staff && S.features.unban);
  document.getElementById('my-role').textContent = role ? `you are ${role === 'member' ? 'a member' : 'an ' + role}` : '';
  const items = [...m.list.values()]
    .sort((a, b) => roleRank(a.role) - roleRank(b.role) || a.user - b.user)
    .map((e) => memberItem(app, c, e, role));
  if (!m.loaded) items.push(note('Loading members…'));
  else if (m.more) items.push(note('More members are not shown.'));
  document.getElementById('member-list').replaceChildren(...items);
}

function roleRank(role) {
  const i = ROLES.indexOf(role);
  return i < 0 ? ROLES.length : i;
}

function note(text) {
  const li = document.createElement('li');
  li.className = 'muted note';
  li.textContent = text;
  return li;
}

function memberItem(app, c, e, role) {
  const S = app.S;
  const li = document.createElement('li');
  li.className = 'member';
  li.dataset.user = String(e.user);
  const head = document.createElement('div');
  head.className = 'member-head';
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = e.user === S.me.id ? `${e.username} (you)` : e.username;
  name.title = `user ${e.user}`;
  const badge = document.createElement('span');
  badge.className = 'role role-' + e.role;
  badge.textContent = e.role;
  head.append(name, badge);
  if (e.muted) {
    const muted = document.createElement('span');
    muted.className = 'muted-tag';
    muted.textContent = 'muted';
    if (e.muted_until) muted.title = 'until ' + new Date(e.muted_until).toLocaleString();
    head.append(muted);
  }
  li.append(head);
  if (e.user === S.me.id || !mayModerate(role, e.role)) return li;

  const actions = document.createElement('div');
  actions.className = 'member-actions';
  if (role === 'owner') {
    const sel = document.createElement('select');
    sel.className = 'set-role';
    sel.setAttribute('aria-label', `role of ${e.username}`);
    for (const r of ROLES) {
      const o = document.createElement('option');
      o.value = r;
      o.textContent = r;
      o.selected = r === e.role;
      sel.append(o);
    }
    sel.addEventListener('change', () => act(app, c, 'set_role', e.user, { role: sel.value }));
    actions.append(sel);
  }
  if (e.muted) actions.append(button('Unmute', 'unmute', () => act(app, c, 'unmute', e.user)));
  else actions.append(button('Mute', 'mute', () => act(app, c, 'mute', e.user, duration())));
  if (S.features.kick) actions.append(button('Kick', 'kick', () => act(app, c, 'kick', e.user)));
  if (S.features.ban) {
    actions.append(button('Ban', 'ban', () => {
      if (window.confirm(`Ban ${e.username} from #${c.key}?`)) act(app, c, 'ban', e.user, duration());
    }));
  }
  li.append(actions);
  return li;
}

function button(label, cls, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'link ' + cls;
  b.textContent = label;
  b.addEventListener('click', onClick);
  return b;
}
