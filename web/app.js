// The chat page: one connection to the server that served this page,
// through the JavaScript SDK (clients/js, served as /sdk/chat.js).
//
// The SDK keeps the protocol's promises: every request is answered by its
// own reply; every send carries a client_id, is kept until acknowledged
// and resent after a reconnect (the page shows it as pending meanwhile);
// on every reconnect it re-joins the rooms with `since` and syncs DMs, so
// each message, edit and delete reaches the page once and in id order. The
// page keeps what it shows (messages in a Map by id, so a history page
// merges with what was delivered), and reads the latest history where the
// SDK says there is a gap (or on a room's first join).
//
// Modules: app.js (state, rendering, wiring), edits.js (edits and
// deletes), members.js (member list, roles, moderation), sdk/chat.js (the
// connection).
import { connect as connectChat } from './sdk/chat.js';
import * as edits from './edits.js';
import * as members from './members.js';

(() => {
  const HISTORY_PAGE = 50;
  const TYPING_SHOWN_MS = 4000;
  const STORAGE_KEY = 'chat.session';
  // A development token is renewed this long before it expires (and handed
  // to the open connection with `refresh`).
  const RENEW_BEFORE_MS = 120000;

  const $ = (id) => document.getElementById(id);

  /** Per-tab state (sessionStorage keeps it across reloads of this tab). */
  const S = {
    token: null,
    me: null, // {id, username, exp}
    dev: false, // the token came from /dev/token (renewable)
    chat: null, // the SDK's client
    open: false, // the SDK is connected
    renewNow: false, // the next token asked for must be a new dev token
    rooms: new Map(), // room name -> conversation
    dms: new Map(), // other user id -> conversation
    current: null,
    names: new Map(), // user id -> username
    // Everything this server supports (members.js asks).
    features: {
      rooms: true, dmSync: true, createRoom: true, read: true, typing: true, leave: true, refresh: true,
      edit: true, delete: true, members: true,
      invite: true, set_role: true, mute: true, unmute: true, kick: true, ban: true, unban: true,
    },
    typers: new Map(), // user id -> {username, until, room}
    editing: null, // {conv, id, draft}: the composer edits this message (draft: what it held before)
    showMembers: false,
  };

  /** What the modules (members.js) may use of the core. */
  const app = {
    S,
    send: (frame, what) => send(frame, what),
    render: (opts) => render(opts),
    showError: (text) => showError(text),
    join: (room) => join(room),
    leaveLocally: (room) => leaveLocally(room),
    // Asks the server which rooms the user is in (the answer adds and drops).
    syncRooms: () => send({ type: 'rooms' }, { kind: 'rooms' }),
  };

  // ---------- conversations ----------

  function conversation(kind, key) {
    const map = kind === 'room' ? S.rooms : S.dms;
    let c = map.get(key);
    if (!c) {
      c = { kind, key, messages: new Map(), lastId: 0, unread: 0, noMore: false, loadingOlder: false, online: new Set() };
      map.set(key, c);
    }
    return c;
  }

  function convTitle(c) {
    if (c.kind === 'room') return '# ' + c.key;
    const name = S.names.get(c.key);
    return name ? `${name} (user ${c.key})` : `user ${c.key}`;
  }

  /** Adds a delivered message; returns true when it was new (one already
   * kept takes the incoming state: edited, or deleted). */
  function addMessage(c, m) {
    const kept = c.messages.get(m.id);
    if (kept) {
      edits.mergeMessage(kept, m);
      return false;
    }
    c.messages.set(m.id, m);
    if (m.id > c.lastId) c.lastId = m.id;
    if (m.fromUser !== S.me.id && m.username) S.names.set(m.fromUser, m.username);
    return true;
  }

  function oldestId(c) {
    let min = 0;
    for (const id of c.messages.keys()) if (min === 0 || id < min) min = id;
    return min;
  }

  /** The conversation a send (or pending one) belongs to. */
  function convOf(p) {
    if (p.type === 'message') return S.rooms.get(p.room) || null;
    if (p.type === 'dm') return S.dms.get(p.to) || null;
    return null;
  }

  // ---------- persistence (this tab only) ----------

  function save() {
    if (!S.token) {
      sessionStorage.removeItem(STORAGE_KEY);
      return;
    }
    const state = {
      token: S.token,
      dev: S.dev,
      current: S.current ? [S.current.kind, S.current.key] : null,
      rooms: [...S.rooms.values()].map((c) => [c.key, c.lastId]),
      dms: [...S.dms.values()].map((c) => [c.key, c.lastId]),
      names: [...S.names.entries()],
      pending: S.chat ? S.chat.pending() : S.restoredPending || [],
    };
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(state));
  }

  function restore() {
    let state;
    try {
      state = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null');
    } catch (_) {
      state = null;
    }
    if (!state || !state.token) return false;
    if (!useToken(state.token, state.dev)) return false;
    for (const [name] of state.rooms || []) conversation('room', name);
    for (const [id] of state.dms || []) conversation('dm', id);
    for (const [id, name] of state.names || []) S.names.set(id, name);
    // Sends not acknowledged before the reload: the SDK sends them again
    // with their client_id (the server stores each once).
    S.restoredPending = (state.pending || []).filter((p) => p && p.client_id && p.type);
    for (const p of S.restoredPending) {
      if (p.type === 'message') conversation('room', p.room);
      if (p.type === 'dm') conversation('dm', p.to);
    }
    if (state.current) {
      const [kind, key] = state.current;
      S.current = conversation(kind, key);
    }
    // Restored conversations start empty: their latest history is read
    // again on connect.
    return true;
  }

  // ---------- tokens ----------

  function useToken(token, dev) {
    let claims;
    try {
      claims = decodeJwt(token.trim());
    } catch (e) {
      showError('That is not a token: ' + e.message);
      return false;
    }
    const id = Number(claims.user_id ?? claims.sub);
    if (!Number.isSafeInteger(id) || !claims.username) {
      showError('The token has no user id or no username.');
      return false;
    }
    if (typeof claims.exp === 'number' && claims.exp * 1000 < Date.now()) {
      showError('The token has expired.');
      return false;
    }
    S.token = token.trim();
    S.dev = !!dev;
    S.me = { id, username: String(claims.username), exp: claims.exp };
    return true;
  }

  function decodeJwt(token) {
    const parts = token.split('.');
    if (parts.length !== 3) throw new Error('a JWT has three dot-separated parts');
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (ch) => ch.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  /** The SDK's token function for a dev session: a new dev token when the
   * current one is close to expiry (or was refused), else the current one. */
  async function devToken() {
    const soon = typeof S.me.exp === 'number' && S.me.exp * 1000 - Date.now() < RENEW_BEFORE_MS;
    if (soon || S.renewNow) {
      try {
        const token = await fetchDevToken(S.me.id, S.me.username);
        if (useToken(token, true)) {
          S.renewNow = false;
          save();
        }
      } catch (e) {
        showError('Could not renew the development token: ' + e.message);
        throw e;
      }
    }
    return S.token;
  }

  async function fetchDevToken(userId, username) {
    const q = new URLSearchParams({ user_id: String(userId), username });
    const r = await fetch('/dev/token?' + q.toString(), { cache: 'no-store' });
    const text = (await r.text()).trim();
    if (!r.ok) throw new Error(text || `HTTP ${r.status}`);
    return text;
  }

  // ---------- the connection (the SDK) ----------

  function setStatus(kind, text) {
    const el = $('status');
    el.className = 'status ' + kind;
    el.textContent = text;
  }

  function connect() {
    if (!S.token || S.chat) return;
    setStatus('connecting', 'connecting…');
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const chat = connectChat({
      url: `${proto}//${location.host}/ws`,
      // A pasted token is used as it is (when it expires, the session ends);
      // a dev token is renewed by the page.
      token: S.dev ? devToken : S.token,
      refreshBeforeMs: RENEW_BEFORE_MS,
      resume: { rooms: {}, dm: null, maxSeen: 0, pending: S.restoredPending || [] },
    });
    S.restoredPending = null;
    S.chat = chat;
    chat.on('state', onState);
    chat.on('rooms', onRooms);
    chat.on('joined', onJoined);
    chat.on('gap', onGap);
    chat.on('message', (m) => onDelivered(conversation('room', m.room), m));
    chat.on('dm', (m) => onDelivered(conversation('dm', m.fromUser === S.me.id ? m.to : m.fromUser), m));
    chat.on('edit', (d) => onStreamEvent('edit', d));
    chat.on('delete', (d) => onStreamEvent('delete', d));
    chat.on('member', (d) => members.onMemberEvent(app, d));
    chat.on('presence', onPresence);
    chat.on('typing', onTyping);
    chat.on('sent', onSent);
    chat.on('error', (e) => {
      if (e.room === undefined) return;
      // A room the SDK could not re-join (gone, or private to us now).
      if (S.rooms.has(e.room)) leaveLocally(e.room);
      showError(e.message);
    });
  }

  function onState(e) {
    S.open = e.state === 'connected';
    switch (e.state) {
      case 'connecting':
        setStatus('connecting', 'reconnecting…');
        break;
      case 'connected':
        setStatus('online', 'connected');
        for (const c of S.dms.values()) if (c.messages.size === 0 && c === S.current) loadLatest(c);
        break;
      case 'disconnected':
        if (e.code === 1008 && e.reason) showError('Disconnected: ' + e.reason);
        setStatus('offline', `offline, retrying in ${Math.round(e.retryInMs / 100) / 10}s`);
        if (!e.wasOpen) checkRefusal();
        break;
      case 'closed':
        if (e.code === 4001) signOut('Your token expired: sign in again.');
        else if (e.code !== 1000) signOut('Disconnected: ' + (e.reason || `closed (${e.code})`));
        break;
      default:
        break;
    }
    render();
  }

  /** The WebSocket never opened: server down, or the token refused? */
  async function checkRefusal() {
    let ready = false;
    try {
      ready = (await fetch('/readyz', { cache: 'no-store' })).ok;
    } catch (_) {
      ready = false;
    }
    if (!ready || !S.token || !S.chat || S.open) return;
    // A dev token is replaced on the next attempt; a pasted one is refused.
    if (S.dev) S.renewNow = true;
    else signOut('The server refused the token (expired, or signed with another secret).');
  }

  /**
   * Sends a request through the SDK; its reply (or error) is handled by
   * `what.kind`. Returns false when not connected (nothing is sent).
   */
  function send(frame, what) {
    if (!S.open || !S.chat) return false;
    if (frame.type === 'typing') return S.chat.typing(frame.room);
    S.chat.request(frame).then(
      (data) => onReply(frame, what || { kind: frame.type }, data),
      (err) => onRequestError(what || { kind: frame.type }, err),
    );
    return true;
  }

  function join(room) {
    conversation('room', room);
    if (!S.chat) return;
    S.chat.join(room).catch((err) => onRequestError({ kind: 'join', room }, err));
  }

  function loadLatest(c) {
    if (c.kind === 'room') send({ type: 'room_history', room: c.key, limit: HISTORY_PAGE }, { kind: 'history', conv: c });
    else send({ type: 'dm_history', with: c.key, limit: HISTORY_PAGE }, { kind: 'history', conv: c });
  }

  function loadOlder(c) {
    const before = oldestId(c);
    if (!before || c.noMore || c.loadingOlder || !S.open) return;
    c.loadingOlder = true;
    const what = { kind: 'older', conv: c, before };
    if (c.kind === 'room') send({ type: 'room_history', room: c.key, before, limit: HISTORY_PAGE }, what);
    else send({ type: 'dm_history', with: c.key, before, limit: HISTORY_PAGE }, what);
    renderOlder();
  }

  // ---------- replies and events ----------

  function onReply(frame, what, d) {
    switch (what.kind) {
      case 'members':
        members.onMembers(app, d);
        break;
      case 'invite':
      case 'set_role':
      case 'mute':
      case 'unmute':
      case 'kick':
      case 'ban':
      case 'unban':
        members.onModerationAck(app, d);
        break;
      case 'history':
      case 'older':
        onHistory(what, Array.isArray(d) ? d : []);
        break;
      case 'rooms':
        onRooms(d);
        break;
      case 'create_room':
        join(d.room);
        select(conversation('room', d.room));
        break;
      case 'leave':
        leaveLocally(d.room);
        break;
      default:
        break;
    }
  }

  function onRequestError(what, err) {
    if (what.kind === 'members') members.onMembersFailed(app, what.room);
    if (what.kind === 'older') {
      what.conv.loadingOlder = false;
      renderOlder();
    }
    // Timeouts and replies lost to a reconnect are not the user's business:
    // the SDK re-joins and resends what matters by itself.
    if (err.kind !== 'server') return;
    const missing = /^room '(.*)' does not exist$/.exec(err.message);
    const gone = what.kind === 'join' ? what.room : missing ? missing[1] : null;
    if (gone !== null && S.rooms.has(gone)) {
      if (S.current === S.rooms.get(gone)) S.current = null;
      S.rooms.delete(gone);
      save();
    }
    showError(err.message);
    render();
  }

  /** The user's rooms (after each connect, and when asked): the server's
   * list is the truth (a room left in another tab is dropped here). */
  function onRooms(list) {
    if (!Array.isArray(list)) return;
    const names = new Set(list.map((r) => r.room));
    for (const [name, c] of S.rooms) {
      if (names.has(name)) continue;
      S.rooms.delete(name);
      if (S.current === c) S.current = null;
    }
    for (const r of list) {
      const c = conversation('room', r.room);
      if (!S.chat.following(r.room)) join(r.room);
      if (typeof r.unread === 'number' && c !== S.current) {
        c.unread = r.unread;
        // Messages delivered up to here are already in that count.
        c.countedUpTo = r.last_id || 0;
      }
    }
    save();
    render();
  }

  /** A room's `join_ack` (the page's joins and the SDK's re-joins). */
  function onJoined(d) {
    if (!d || !d.room) return;
    const c = conversation('room', d.room);
    const first = !c.joined;
    c.joined = true;
    if (c === S.current) members.loadMembers(app, c);
    if (Array.isArray(d.online)) c.online = new Set(d.online);
    // Without a replay (a first join, or one after a reload), read the
    // latest page and merge it by id.
    if (d.recovered !== true && (first || c.messages.size === 0)) loadLatest(c);
    if (!S.current) select(c);
    render();
  }

  /** The server could not replay everything: read the latest page again. */
  function onGap(g) {
    if (g.room !== undefined) {
      const c = S.rooms.get(g.room);
      if (c) loadLatest(c);
    } else {
      for (const c of S.dms.values()) loadLatest(c);
    }
  }

  /** The user is no longer in `room` (left, kicked or banned). */
  function leaveLocally(room) {
    const c = S.rooms.get(room);
    S.rooms.delete(room);
    if (c && S.current === c) S.current = null;
    if (c && S.editing && S.editing.conv === c) cancelEdit();
    save();
    render();
  }

  /** `message_edited` / `message_deleted`, live or replayed (in id order). */
  function onStreamEvent(kind, d) {
    let c;
    if (d.room !== undefined) {
      c = S.rooms.get(d.room);
    } else {
      const actor = kind === 'edit' ? d.fromUser : d.by;
      c = S.dms.get(actor === S.me.id ? d.to : actor);
    }
    if (!c) return;
    if (d.id > c.lastId) c.lastId = d.id;
    const changed = kind === 'edit' ? edits.applyEdited(c, d) : edits.applyDeleted(c, d);
    if (kind === 'delete' && S.editing && S.editing.conv === c && S.editing.id === d.target) cancelEdit();
    save();
    if (changed && c === S.current) render();
  }

  function onDelivered(c, m) {
    const fresh = addMessage(c, m);
    if (fresh && !m.deleted && c !== S.current && m.fromUser !== S.me.id && m.id > (c.countedUpTo || 0)) c.unread += 1;
    if (fresh && c === S.current) markRead(c);
    S.typers.delete(m.fromUser);
    save();
    render();
  }

  /** A send (or edit, or delete) was acknowledged, or refused for good. */
  function onSent(e) {
    if (e.error && (e.type === 'message' || e.type === 'dm')) {
      const c = convOf(e);
      if (c) {
        c.failed = c.failed || [];
        c.failed.push({ content: e.content, error: e.error });
      }
      showError(e.error);
    } else if (e.error) {
      showError(e.error);
    }
    save();
    render();
  }

  function onHistory(what, list) {
    if (!what) return;
    const c = what.conv;
    let added = 0;
    for (const m of list) if (addMessage(c, m)) added += 1;
    if (what.kind === 'older') {
      c.loadingOlder = false;
      if (added === 0 || list.length < HISTORY_PAGE) c.noMore = true;
      render({ keepOffset: true });
    } else {
      if (list.length < HISTORY_PAGE) c.noMore = true;
      if (c === S.current) markRead(c);
      render();
    }
    save();
  }

  function onPresence(d) {
    const c = S.rooms.get(d.room);
    if (!c) return;
    if (d.username) S.names.set(d.user, d.username);
    if (d.status === 'online') c.online.add(d.user);
    else c.online.delete(d.user);
    render();
  }

  function onTyping(d) {
    if (d.fromUser === S.me.id) return;
    S.typers.set(d.fromUser, { username: d.username, room: d.room, until: Date.now() + TYPING_SHOWN_MS });
    renderTyping();
    setTimeout(renderTyping, TYPING_SHOWN_MS + 50);
  }

  // ---------- actions ----------

  function sendMessage(text) {
    const c = S.current;
    if (!c || !text || !S.chat) return;
    if (S.editing) {
      sendEdit(text);
      return;
    }
    // Kept by the SDK until acknowledged (shown as pending meanwhile);
    // refusals come back as `sent` events with an error.
    const sending = c.kind === 'room' ? S.chat.send(c.key, text) : S.chat.sendDm(c.key, text);
    sending.catch(() => {});
    // Sent: the next keystroke starts a new "typing" at once.
    if (c.kind === 'room') S.chat.resetTyping(c.key);
    save();
    render({ toBottom: true });
  }

  /** Puts message `m` of the current conversation into the composer to edit it. */
  function startEdit(m) {
    if (!S.current || !edits.mayEdit(m, S.me.id)) return;
    const input = $('composer-input');
    const draft = S.editing ? S.editing.draft : input.value;
    S.editing = { conv: S.current, id: m.id, draft };
    input.value = m.content;
    input.dispatchEvent(new Event('input'));
    render();
    input.focus();
  }

  /** Leaves edit mode; the composer gets back what it held before. */
  function cancelEdit() {
    if (!S.editing) return;
    $('composer-input').value = S.editing.draft || '';
    S.editing = null;
    render();
  }

  function sendEdit(text) {
    const { conv, id } = S.editing;
    const m = conv.messages.get(id);
    cancelEdit();
    if (!m || m.deleted || m.content === text) return;
    if (!S.open) {
      showError('Not connected: the edit was not sent.');
      return;
    }
    S.chat.edit(id, text).catch(() => {});
  }

  function deleteMessage(m) {
    if (!S.open) {
      showError('Not connected: try again in a moment.');
      return;
    }
    if (!window.confirm('Delete this message for everyone?')) return;
    S.chat.delete(m.id).catch(() => {});
  }

  function markRead(c) {
    if (c.kind !== 'room' || !c.lastId || c.readUpTo === c.lastId || !S.open) return;
    if (!document.hasFocus() && document.visibilityState !== 'visible') return;
    c.readUpTo = c.lastId;
    send({ type: 'read', room: c.key, up_to: c.lastId }, { kind: 'read' });
  }

  function select(c) {
    if (S.editing && S.editing.conv !== c) cancelEdit();
    S.current = c;
    c.unread = 0;
    c.countedUpTo = 0;
    if (c.messages.size === 0 && S.open && (c.kind === 'dm' || c.joined)) loadLatest(c);
    if (c.kind === 'room') members.loadMembers(app, c);
    markRead(c);
    save();
    render({ toBottom: true });
    $('composer-input').focus();
  }

  function signOut(reason) {
    const chat = S.chat;
    S.chat = null;
    S.open = false;
    if (chat) chat.close();
    S.token = null;
    S.me = null;
    S.rooms.clear();
    S.dms.clear();
    S.current = null;
    S.editing = null;
    S.restoredPending = null;
    save();
    setStatus('offline', 'signed out');
    showView();
    if (reason) showError(reason);
  }

  function startSession() {
    save();
    hideError();
    showView();
    connect();
  }

  // ---------- rendering ----------

  function showError(text) {
    $('banner-text').textContent = text;
    $('banner').hidden = false;
  }

  function hideError() {
    $('banner').hidden = true;
  }

  function showView() {
    const signedIn = !!S.token;
    $('login').hidden = signedIn;
    $('chat').hidden = !signedIn;
    $('me').hidden = !signedIn;
    if (signedIn) {
      $('me-name').textContent = S.me.username;
      $('me-id').textContent = `user ${S.me.id}`;
      render({ toBottom: true });
    }
  }

  function listItem(c, label, onClick) {
    const li = document.createElement('li');
    if (c === S.current) li.className = 'active';
    const b = document.createElement('button');
    b.type = 'button';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = label;
    b.append(name);
    if (c.unread > 0) {
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = String(c.unread);
      b.append(badge);
    }
    b.addEventListener('click', onClick);
    li.append(b);
    return li;
  }

  function time(ts) {
    const d = new Date(ts);
    if (Number.isNaN(d.getTime())) return '';
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function messageItem(m, state) {
    const li = document.createElement('li');
    const mine = m.fromUser === S.me.id;
    li.className = 'msg' + (mine ? ' mine' : '') + (state ? ' ' + state.kind : '');
    if (m.id) li.dataset.id = String(m.id);
    const meta = document.createElement('div');
    meta.className = 'meta';
    const who = document.createElement('button');
    who.type = 'button';
    who.className = 'who';
    who.textContent = mine ? 'you' : m.username;
    who.title = `user ${m.fromUser}: open a direct message`;
    if (!mine) who.addEventListener('click', () => select(conversation('dm', m.fromUser)));
    meta.append(who);
    if (m.timestamp) {
      const t = document.createElement('time');
      t.dateTime = m.timestamp;
      t.textContent = time(m.timestamp);
      meta.append(t);
    }
    const edited = edits.editedMark(m, time);
    if (edited) meta.append(edited);
    if (!state && S.open) {
      const controls = edits.messageControls(m, S.me.id, members.myRole(app, S.current), {
        edit: S.features.edit ? startEdit : null,
        delete: S.features.delete ? deleteMessage : null,
      });
      if (controls) meta.append(controls);
    }
    const text = document.createElement('div');
    if (m.deleted) {
      li.classList.add('deleted');
      text.className = 'text tombstone';
      text.textContent = edits.TOMBSTONE_TEXT;
    } else {
      text.className = 'text';
      text.textContent = m.content;
    }
    if (S.editing && S.editing.conv === S.current && S.editing.id === m.id) li.classList.add('editing');
    li.append(meta, text);
    if (state) {
      const note = document.createElement('div');
      note.className = 'note';
      note.textContent = state.note;
      li.append(note);
    }
    return li;
  }

  function renderOlder() {
    const c = S.current;
    const el = $('older');
    if (!c || c.messages.size === 0) {
      el.hidden = true;
      return;
    }
    el.hidden = false;
    el.textContent = c.loadingOlder ? 'Loading older messages…' : c.noMore ? 'Beginning of the conversation' : 'Scroll up for older messages';
  }

  function renderTyping() {
    const c = S.current;
    const now = Date.now();
    const names = [];
    for (const [id, t] of S.typers) {
      if (t.until < now) S.typers.delete(id);
      else if (c && c.kind === 'room' && t.room === c.key) names.push(t.username);
    }
    $('typing').textContent = names.length ? `${names.join(', ')} ${names.length > 1 ? 'are' : 'is'} typing…` : '';
  }

  function render(opts = {}) {
    if (!S.token) return;
    const rooms = $('room-list');
    rooms.replaceChildren(...[...S.rooms.values()]
      .sort((a, b) => a.key.localeCompare(b.key))
      .map((c) => listItem(c, '# ' + c.key, () => select(c))));
    const dms = $('dm-list');
    dms.replaceChildren(...[...S.dms.values()].map((c) => listItem(c, S.names.get(c.key) || `user ${c.key}`, () => select(c))));

    const c = S.current;
    const box = $('messages');
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    const fromBottom = box.scrollHeight - box.scrollTop;
    $('conv-title').textContent = c ? convTitle(c) : 'No conversation';
    $('conv-sub').textContent = c && c.kind === 'room' && c.online.size ? `${c.online.size} online` : '';
    $('leave-room').hidden = !(c && c.kind === 'room' && S.features.leave);
    $('composer-input').disabled = !c;
    $('composer-input').placeholder = members.mutedHere(app, c) ? 'You are muted in this room' : 'Write a message';
    $('send').disabled = !c;
    $('edit-bar').hidden = !S.editing;
    $('send').textContent = S.editing ? 'Save' : 'Send';
    members.renderMembers(app);
    const list = $('message-list');
    if (!c) {
      list.replaceChildren();
      $('empty').hidden = false;
      $('older').hidden = true;
      return;
    }
    const items = [...c.messages.values()].sort((a, b) => a.id - b.id).map((m) => messageItem(m));
    for (const f of c.failed || []) {
      items.push(messageItem({ fromUser: S.me.id, username: S.me.username, content: f.content }, { kind: 'failed', note: 'not sent: ' + f.error }));
    }
    // Sends the SDK keeps until they are acknowledged.
    for (const p of S.chat ? S.chat.pending() : S.restoredPending || []) {
      if (convOf(p) !== c) continue;
      items.push(messageItem({ fromUser: S.me.id, username: S.me.username, content: p.content }, { kind: 'pending', note: S.open ? 'sending…' : 'waiting for the connection…' }));
    }
    list.replaceChildren(...items);
    $('empty').hidden = items.length > 0;
    $('empty').textContent = c.kind === 'room' ? 'No messages in this room yet.' : 'No messages yet: say hello.';
    renderOlder();
    renderTyping();
    if (opts.keepOffset) box.scrollTop = box.scrollHeight - fromBottom;
    else if (opts.toBottom || atBottom) box.scrollTop = box.scrollHeight;
  }

  // ---------- wiring ----------

  function wire() {
    $('banner-close').addEventListener('click', hideError);
    $('signout').addEventListener('click', () => signOut(null));

    $('token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      if (useToken($('token-input').value, false)) {
        $('token-input').value = '';
        startSession();
      }
    });

    $('dev-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const username = $('dev-username').value.trim();
      const userId = Number($('dev-userid').value);
      if (!username || !Number.isSafeInteger(userId) || userId < 1) {
        showError('Give a username and a positive user id.');
        return;
      }
      try {
        if (useToken(await fetchDevToken(userId, username), true)) startSession();
      } catch (err) {
        showError('Could not get a development token: ' + err.message);
      }
    });

    $('room-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const room = $('room-input').value.trim();
      if (!room) return;
      $('room-input').value = '';
      if (!S.open) {
        showError('Not connected: try again in a moment.');
        return;
      }
      join(room);
      select(conversation('room', room));
    });

    $('create-room').addEventListener('click', () => {
      const room = $('room-input').value.trim();
      if (!room) {
        showError('Type the name of the room to create.');
        return;
      }
      if (!S.open) {
        showError('Not connected: try again in a moment.');
        return;
      }
      $('room-input').value = '';
      const frame = { type: 'create_room', room };
      if ($('room-private').checked) frame.visibility = 'private';
      $('room-private').checked = false;
      send(frame, { kind: 'create_room', room });
    });

    $('dm-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const id = Number($('dm-input').value);
      if (!Number.isSafeInteger(id) || id < 1) {
        showError('A user id is a positive integer.');
        return;
      }
      $('dm-input').value = '';
      select(conversation('dm', id));
    });

    $('leave-room').addEventListener('click', () => {
      const c = S.current;
      if (c && c.kind === 'room' && S.open) {
        S.chat.leave(c.key).then(() => leaveLocally(c.key), (err) => onRequestError({ kind: 'leave', room: c.key }, err));
      }
    });

    const input = $('composer-input');
    $('composer').addEventListener('submit', (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text) {
        cancelEdit();
        return;
      }
      input.value = '';
      autosize();
      sendMessage(text);
    });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $('composer').requestSubmit();
      } else if (e.key === 'Escape' && S.editing) {
        e.preventDefault();
        cancelEdit();
      }
    });
    $('cancel-edit').addEventListener('click', cancelEdit);
    members.wireMembers(app);
    const autosize = () => {
      input.style.height = 'auto';
      input.style.height = Math.min(input.scrollHeight + 2, 144) + 'px';
    };
    input.addEventListener('input', () => {
      autosize();
      const c = S.current;
      // The SDK lets one through per room every 2 s, as the server relays them.
      if (c && c.kind === 'room' && !S.editing && S.open) S.chat.typing(c.key);
    });

    $('messages').addEventListener('scroll', () => {
      if ($('messages').scrollTop < 40 && S.current) loadOlder(S.current);
    });
    window.addEventListener('focus', () => S.current && markRead(S.current));
  }

  async function detectDev() {
    try {
      const r = await fetch('/dev/enabled', { cache: 'no-store' });
      if (r.ok && (await r.text()).trim() === 'true') {
        $('dev-form').hidden = false;
        if (!$('dev-userid').value) $('dev-userid').value = String(1 + Math.floor(Math.random() * 9999));
      }
    } catch (_) {
      // No dev endpoint: paste a token.
    }
  }

  function init() {
    wire();
    detectDev();
    if (restore()) {
      showView();
      connect();
    } else {
      showView();
      setStatus('offline', 'signed out');
    }
  }

  init();
})();
