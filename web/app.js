// The chat page: one WebSocket to the server that served this page.
//
// Reliability rules:
// - every message id is shown once (messages are kept in a Map by id);
// - every send carries a client_id (and a `ref` equal to it); a send that
//   was not acknowledged (its own copy not seen) is sent again, with the same
//   client_id, after a reconnect; the server then answers with the original;
// - on (re)connect the page asks for its rooms, re-joins each known room
//   with `since` = last seen id, and syncs DMs from the last DM id; where the
//   server does not know these requests yet, it falls back to reading the
//   latest history and merging it by id;
// - edits and deletes are events of a stream with ids of their own: they
//   move the stream's last seen id forward and are applied in order
//   (edits.js); history brings each message in its current state.
//
// Modules: app.js (state, connection, frames, rendering), edits.js (edits
// and deletes), members.js (member list, roles, moderation).
import * as edits from './edits.js';
import * as members from './members.js';

(() => {
  const RECONNECT_MIN_MS = 500;
  const RECONNECT_MAX_MS = 8000;
  const HISTORY_PAGE = 50;
  // The server relays at most one `typing` per user and room every 2 s.
  const TYPING_EVERY_MS = 2500;
  const TYPING_SHOWN_MS = 4000;
  const STORAGE_KEY = 'chat.session';
  // A development token is renewed this long before it expires (and handed
  // to the open connection with `refresh` where the server supports it).
  const RENEW_BEFORE_MS = 120000;

  const $ = (id) => document.getElementById(id);

  /** Per-tab state (sessionStorage keeps it across reloads of this tab). */
  const S = {
    token: null,
    me: null, // {id, username, exp}
    dev: false, // the token came from /dev/token (renewable)
    ws: null,
    open: false,
    attempt: 0,
    timer: null,
    rooms: new Map(), // room name -> conversation
    dms: new Map(), // other user id -> conversation
    current: null,
    pending: new Map(), // client_id -> {frame, conv}
    refs: new Map(), // ref -> what the reply answers
    nextRef: 1,
    lastDmId: 0,
    names: new Map(), // user id -> username
    features: {
      rooms: true, dmSync: true, createRoom: true, read: true, typing: true, leave: true, refresh: true,
      edit: true, delete: true, members: true,
      invite: true, set_role: true, mute: true, unmute: true, kick: true, ban: true, unban: true,
    },
    renewTimer: null,
    lastTyping: 0,
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
    syncRooms: () => S.features.rooms && send({ type: 'rooms' }, { kind: 'rooms' }),
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
      lastDmId: S.lastDmId,
      pending: [...S.pending.values()].map((p) => p.frame),
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
    for (const frame of state.pending || []) {
      const c = frame.type === 'message' ? conversation('room', frame.room) : conversation('dm', frame.to);
      S.pending.set(frame.client_id, { frame, conv: c });
    }
    if (state.current) {
      const [kind, key] = state.current;
      S.current = conversation(kind, key);
    }
    // Restored conversations start empty: their history is read again on
    // connect, so lastId starts at 0 and the latest page is fetched.
    return true;
  }

  // ---------- tokens ----------

  function decodeJwt(token) {
    const parts = token.split('.');
    if (parts.length !== 3) throw new Error('a JWT has three dot-separated parts');
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(
      atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))
        .split('')
        .map((ch) => '%' + ch.charCodeAt(0).toString(16).padStart(2, '0'))
        .join(''),
    );
    return JSON.parse(json);
  }

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
    scheduleRenewal();
    return true;
  }

  function scheduleRenewal() {
    clearTimeout(S.renewTimer);
    if (!S.dev || !S.me || typeof S.me.exp !== 'number') return;
    const wait = Math.max(5000, S.me.exp * 1000 - Date.now() - RENEW_BEFORE_MS);
    S.renewTimer = setTimeout(renewDevToken, wait);
  }

  /** Gets a fresh development token; the open connection switches to it
   * with `refresh`, or the next connection uses it. */
  async function renewDevToken() {
    if (!S.dev || !S.me) return;
    try {
      const token = await fetchDevToken(S.me.id, S.me.username);
      if (!useToken(token, true)) return;
      save();
      if (S.features.refresh) send({ type: 'refresh', token }, { kind: 'refresh' });
    } catch (e) {
      showError('Could not renew the development token: ' + e.message);
      scheduleRenewal();
    }
  }

  async function fetchDevToken(userId, username) {
    const q = new URLSearchParams({ user_id: String(userId), username });
    const r = await fetch('/dev/token?' + q.toString(), { cache: 'no-store' });
    const text = (await r.text()).trim();
    if (!r.ok) throw new Error(text || `HTTP ${r.status}`);
    return text;
  }

  // ---------- the connection ----------

  function setStatus(kind, text) {
    const el = $('status');
    el.className = 'status ' + kind;
    el.textContent = text;
  }

  function connect() {
    clearTimeout(S.timer);
    if (!S.token) return;
    setStatus('connecting', S.attempt ? 'reconnecting…' : 'connecting…');
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/ws?token=${encodeURIComponent(S.token)}`);
    S.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      S.open = true;
      S.attempt = 0;
      setStatus('online', 'connected');
      onConnected();
    };
    ws.onmessage = (e) => {
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      handle(frame);
    };
    ws.onclose = (e) => {
      if (S.ws !== ws) return;
      S.ws = null;
      S.open = false;
      S.refs.clear();
      if (!S.token) return;
      if (e.code === 4001) {
        onTokenExpired();
        return;
      }
      if (e.code === 1008 && e.reason) showError('Disconnected: ' + e.reason);
      if (!opened) {
        checkRefusal();
        return;
      }
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** S.attempt);
    S.attempt += 1;
    setStatus('offline', `offline, retrying in ${Math.round(delay / 100) / 10}s`);
    S.timer = setTimeout(connect, delay);
  }

  /** The WebSocket never opened: server down, or the token refused? */
  async function checkRefusal() {
    let ready = false;
    try {
      ready = (await fetch('/readyz', { cache: 'no-store' })).ok;
    } catch (_) {
      ready = false;
    }
    if (!ready || !S.token) {
      scheduleReconnect();
      return;
    }
    if (S.dev) {
      onTokenExpired();
      return;
    }
    signOut('The server refused the token (expired, or signed with another secret).');
  }

  async function onTokenExpired() {
    if (S.dev && S.me) {
      try {
        useToken(await fetchDevToken(S.me.id, S.me.username), true);
        save();
        connect();
        return;
      } catch (e) {
        showError('Could not renew the development token: ' + e.message);
      }
    }
    signOut('Your token expired: sign in again.');
  }

  function send(frame, what) {
    if (!S.open || !S.ws) return false;
    if (what) {
      if (frame.ref === undefined) frame.ref = 'r' + S.nextRef++;
      S.refs.set(String(frame.ref), what);
    }
    S.ws.send(JSON.stringify(frame));
    return true;
  }

  function onConnected() {
    if (S.features.rooms) send({ type: 'rooms' }, { kind: 'rooms' });
    else rejoinAll();
    if (S.features.dmSync) send({ type: 'dm_sync', since: S.lastDmId }, { kind: 'dm_sync' });
    else for (const c of S.dms.values()) loadLatest(c);
    // Sends not acknowledged before the connection dropped: same client_id,
    // so a server that already stored one returns the original.
    for (const p of S.pending.values()) S.ws.send(JSON.stringify(p.frame));
    render();
  }

  function rejoinAll() {
    for (const c of S.rooms.values()) join(c.key);
  }

  function join(room) {
    const c = conversation('room', room);
    const frame = { type: 'join', room };
    if (c.lastId > 0) frame.since = c.lastId;
    send(frame, { kind: 'join', room });
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

  // ---------- incoming frames ----------

  /** What a reply answers: by its `ref`, else by the oldest open request of that kind. */
  function answered(frame, kinds) {
    if (frame.ref !== undefined && S.refs.has(String(frame.ref))) {
      const what = S.refs.get(String(frame.ref));
      S.refs.delete(String(frame.ref));
      return what;
    }
    for (const [ref, what] of S.refs) {
      if (kinds.includes(what.kind)) {
        S.refs.delete(ref);
        return what;
      }
    }
    return null;
  }

  function handle(frame) {
    const d = frame.data;
    switch (frame.type) {
      case 'message':
        onDelivered(conversation('room', d.room), d, frame.ref);
        break;
      case 'dm': {
        const other = d.fromUser === S.me.id ? d.to : d.fromUser;
        if (d.id > S.lastDmId) S.lastDmId = d.id;
        onDelivered(conversation('dm', other), d, frame.ref);
        break;
      }
      case 'message_edited':
      case 'message_deleted':
        onStreamEvent(frame);
        break;
      case 'member':
        if (d) members.onMemberEvent(app, d);
        break;
      case 'members':
        answered(frame, ['members']);
        members.onMembers(app, d);
        break;
      case 'invite_ack':
      case 'set_role_ack':
      case 'mute_ack':
      case 'unmute_ack':
      case 'kick_ack':
      case 'ban_ack':
      case 'unban_ack':
        answered(frame, [frame.type.replace('_ack', '')]);
        members.onModerationAck(app, d);
        break;
      case 'join_ack': {
        answered(frame, ['join']);
        const c = conversation('room', d.room);
        c.joined = true;
        if (c === S.current) members.loadMembers(app, c);
        if (Array.isArray(d.online)) c.online = new Set(d.online);
        // Without recovery (older server, or a gap too large), read the
        // latest page and merge it by id.
        if (d.recovered !== true) loadLatest(c);
        if (!S.current) select(c);
        render();
        break;
      }
      case 'room_history':
      case 'dm_history':
        onHistory(answered(frame, ['history', 'older']), Array.isArray(d) ? d : []);
        break;
      case 'rooms': {
        answered(frame, ['rooms']);
        // Membership is stored by the server: its list is the truth (a
        // room left in another tab is not joined again here).
        const names = new Set((d || []).map((r) => r.room));
        for (const [name, c] of S.rooms) {
          if (names.has(name)) continue;
          S.rooms.delete(name);
          if (S.current === c) S.current = null;
        }
        for (const r of d || []) {
          const c = conversation('room', r.room);
          if (typeof r.unread === 'number' && c !== S.current) {
            c.unread = r.unread;
            // Replayed messages up to here are already in that count.
            c.countedUpTo = r.last_id || 0;
          }
        }
        rejoinAll();
        save();
        render();
        break;
      }
      case 'dm_sync_ack':
        answered(frame, ['dm_sync']);
        if (!d || d.recovered !== true) for (const c of S.dms.values()) loadLatest(c);
        break;
      case 'room_created':
        answered(frame, ['create_room']);
        join(d.room);
        select(conversation('room', d.room));
        break;
      case 'leave_ack':
        answered(frame, ['leave']);
        leaveLocally(d.room);
        break;
      case 'presence':
        onPresence(d);
        break;
      case 'presence_batch':
        for (const u of d.online || []) onPresence({ room: d.room, user: u.user, username: u.username, status: 'online' });
        for (const u of d.offline || []) onPresence({ room: d.room, user: u.user, username: u.username, status: 'offline' });
        break;
      case 'typing':
        onTyping(d);
        break;
      case 'read_ack':
      case 'refresh_ack':
        answered(frame, [frame.type.replace('_ack', '')]);
        break;
      case 'error':
        onError(frame, d && d.message ? String(d.message) : 'unknown error');
        break;
      default:
        break;
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

  /** `message_edited` / `message_deleted`, live or replayed. */
  function onStreamEvent(frame) {
    const d = frame.data;
    if (!d) return;
    if (frame.ref !== undefined) answered(frame, []);
    let c;
    if (d.room !== undefined) {
      c = S.rooms.get(d.room);
    } else {
      if (d.id > S.lastDmId) S.lastDmId = d.id;
      const actor = frame.type === 'message_edited' ? d.fromUser : d.by;
      c = S.dms.get(actor === S.me.id ? d.to : actor);
    }
    if (!c) return;
    // Replays go on from the newest id seen, events included.
    if (d.id > c.lastId) c.lastId = d.id;
    const changed = frame.type === 'message_edited' ? edits.applyEdited(c, d) : edits.applyDeleted(c, d);
    if (frame.type === 'message_deleted' && S.editing && S.editing.conv === c && S.editing.id === d.target) cancelEdit();
    save();
    if (changed && c === S.current) render();
  }

  function onDelivered(c, m, ref) {
    // Our own copy acknowledges a pending send: by ref (= client_id), else
    // by content.
    let ackedBy = ref !== undefined && S.pending.has(String(ref)) ? String(ref) : null;
    if (!ackedBy && m.fromUser === S.me.id) {
      for (const [id, p] of S.pending) {
        if (p.conv === c && p.frame.content === m.content) {
          ackedBy = id;
          break;
        }
      }
    }
    if (ackedBy) S.pending.delete(ackedBy);
    const fresh = addMessage(c, m);
    if (fresh && !m.deleted && c !== S.current && m.fromUser !== S.me.id && m.id > (c.countedUpTo || 0)) c.unread += 1;
    if (fresh && c === S.current) markRead(c);
    S.typers.delete(m.fromUser);
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

  function onError(frame, message) {
    const unknown = /^unknown request type `(\w+)`/.exec(message);
    const what = answered(frame, []);
    if (unknown) {
      // A request this server does not know yet: fall back quietly.
      switch (unknown[1]) {
        case 'rooms':
          S.features.rooms = false;
          S.refs.forEach((w, r) => w.kind === 'rooms' && S.refs.delete(r));
          rejoinAll();
          return;
        case 'dm_sync':
          S.features.dmSync = false;
          S.refs.forEach((w, r) => w.kind === 'dm_sync' && S.refs.delete(r));
          for (const c of S.dms.values()) loadLatest(c);
          return;
        case 'read':
          S.features.read = false;
          return;
        case 'typing':
          S.features.typing = false;
          return;
        case 'refresh':
          // The connection keeps its old token until it expires (4001);
          // the reconnect that follows uses the renewed one.
          S.features.refresh = false;
          return;
        case 'create_room':
          S.features.createRoom = false;
          showError('This server cannot create rooms from the page yet: ask an operator (chat_server room create NAME).');
          return;
        case 'leave':
          S.features.leave = false;
          showError('This server does not support leaving rooms yet.');
          return;
        case 'members':
          S.features.members = false;
          if (what && what.kind === 'members') members.onMembersFailed(app, what.room);
          render();
          return;
        default:
          if (unknown[1] in S.features) {
            S.features[unknown[1]] = false;
            showError(`This server does not support ${unknown[1]} yet.`);
            render();
            return;
          }
          break;
      }
    }
    if (what && what.kind === 'members') members.onMembersFailed(app, what.room);
    const ref = frame.ref !== undefined ? String(frame.ref) : null;
    if (ref && S.pending.has(ref)) {
      const p = S.pending.get(ref);
      S.pending.delete(ref);
      p.conv.failed = p.conv.failed || [];
      p.conv.failed.push({ content: p.frame.content, error: message });
      save();
      render();
    }
    const missing = /^room '(.*)' does not exist$/.exec(message);
    const gone = what && what.kind === 'join' ? what.room : missing ? missing[1] : null;
    if (gone !== null && S.rooms.has(gone)) {
      if (S.current === S.rooms.get(gone)) S.current = null;
      S.rooms.delete(gone);
      save();
    }
    if (what && what.kind === 'older') {
      what.conv.loadingOlder = false;
      renderOlder();
    }
    showError(message);
    render();
  }

  // ---------- actions ----------

  function newClientId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return 'c' + [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  }

  function sendMessage(text) {
    const c = S.current;
    if (!c || !text) return;
    if (S.editing) {
      sendEdit(text);
      return;
    }
    const client_id = newClientId();
    const frame = c.kind === 'room'
      ? { type: 'message', room: c.key, content: text, client_id, ref: client_id }
      : { type: 'dm', to: c.key, content: text, client_id, ref: client_id };
    S.pending.set(client_id, { frame, conv: c });
    if (S.open) S.ws.send(JSON.stringify(frame));
    // Sent: the next keystroke starts a new "typing" at once.
    S.lastTyping = 0;
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
    const client_id = newClientId();
    send({ type: 'edit', id, content: text, client_id }, { kind: 'edit' });
  }

  function deleteMessage(m) {
    if (!S.open) {
      showError('Not connected: try again in a moment.');
      return;
    }
    if (!window.confirm('Delete this message for everyone?')) return;
    send({ type: 'delete', id: m.id, client_id: newClientId() }, { kind: 'delete' });
  }

  function markRead(c) {
    if (c.kind !== 'room' || !S.features.read || !c.lastId || c.readUpTo === c.lastId) return;
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
    const ws = S.ws;
    S.ws = null;
    S.open = false;
    if (ws) ws.close(1000, 'signed out');
    clearTimeout(S.timer);
    clearTimeout(S.renewTimer);
    S.token = null;
    S.me = null;
    S.rooms.clear();
    S.dms.clear();
    S.pending.clear();
    S.refs.clear();
    S.current = null;
    S.editing = null;
    S.lastDmId = 0;
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
    for (const p of S.pending.values()) {
      if (p.conv !== c) continue;
      items.push(messageItem({ fromUser: S.me.id, username: S.me.username, content: p.frame.content }, { kind: 'pending', note: S.open ? 'sending…' : 'waiting for the connection…' }));
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
      if (c && c.kind === 'room') send({ type: 'leave', room: c.key }, { kind: 'leave', room: c.key });
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
      if (c && c.kind === 'room' && !S.editing && S.features.typing && Date.now() - S.lastTyping > TYPING_EVERY_MS) {
        S.lastTyping = Date.now();
        send({ type: 'typing', room: c.key });
      }
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
