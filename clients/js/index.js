// chat-client: the JavaScript client of this chat server (see README.md).
// One ES module, no dependencies, no build step; browsers and Node 20+.
//
// What it guarantees to the application (docs/PROTOCOL.md has the frames):
// - every request is answered by its own `ref`-correlated reply or `error`,
//   or rejected after a timeout;
// - every `send`/`sendDm` carries a fresh `client_id`, is kept until the
//   server acknowledges it, is resent (same `client_id`) after a reconnect,
//   and its promise resolves once, with the stored message;
// - each stream (a room, or the user's DMs) reaches the handlers exactly
//   once and in id order, across reconnects: the client re-joins with
//   `since` and runs `dm_sync`, holds live frames that overtake a replay,
//   drops what it already delivered, and says `gap` when the server could
//   not replay everything;
// - reconnects back off exponentially with full jitter (capped); closes the
//   server means as final are not retried blindly;
// - a `token` function is called again before the token expires (the new
//   token goes to the live connection as `refresh`) and for reconnects.

/** Connection states, in the order a connection goes through them. */
export const STATES = Object.freeze(['connecting', 'connected', 'disconnected', 'closed']);

/** The server relays at most one `typing` per user and room this often. */
export const TYPING_INTERVAL_MS = 2000;

/** Close codes with a meaning for reconnecting (docs/PROTOCOL.md). */
export const CLOSE_CODES = Object.freeze({ POLICY: 1008, TOKEN_EXPIRED: 4001, REVOKED: 4003 });

/** Refusals of a send that say "not now": it is sent again (same `client_id`). */
const TRANSIENT = /^(server busy|rate limited|message not stored: database unavailable|database unavailable)/;

const DEFAULTS = {
  requestTimeoutMs: 10000,
  connectTimeoutMs: 10000,
  reconnectMinMs: 500,
  reconnectMaxMs: 10000,
  refreshBeforeMs: 60000,
  maxPendingSends: 1000,
  maxQueuedRequests: 1000,
  maxPolicyCloses: 3,
  maxHeldFrames: 10000,
};

/** The error a request is rejected with: the server's `error` message, a
 * timeout, or a connection that ended before the reply came. */
export class ChatError extends Error {
  /**
   * @param {string} message
   * @param {'server'|'timeout'|'disconnected'|'closed'|'limit'} kind
   */
  constructor(message, kind) {
    super(message);
    this.name = 'ChatError';
    /** Why: `server` (an `error` frame), `timeout`, `disconnected`, `closed` or `limit`. */
    this.kind = kind;
  }
}

/**
 * Connects to the server and keeps the connection up until `close()`.
 * @param {import('./index.js').ConnectOptions} options
 * @returns {Chat}
 */
export function connect(options) {
  return new Chat(options);
}

/** Decodes a JWT's claims (no verification: the server verifies). */
export function decodeToken(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (_) {
    return null;
  }
}

/** A fresh client id: 24 random hex digits (the server accepts 1 to 64 characters). */
export function newClientId() {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return 'c' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The `presence` events of a `presence` frame (one) or of a
 * `presence_batch` (several changes of a room's presence within the
 * server's window: one per user who came online, then one per user who
 * went offline).
 */
export function presenceEvents(frame) {
  const d = frame && frame.data;
  if (!d || typeof d !== 'object') return [];
  if (frame.type === 'presence') return [d];
  if (frame.type !== 'presence_batch') return [];
  const one = (status) => (u) => ({ room: d.room, user: u.user, username: u.username, status });
  const list = (v) => (Array.isArray(v) ? v.filter((u) => u && typeof u === 'object') : []);
  return [...list(d.online).map(one('online')), ...list(d.offline).map(one('offline'))];
}

/** A delay for reconnect attempt `attempt` (0-based): uniform in
 * [0, min(max, min * 2^attempt)] ("full jitter"). */
export function backoffDelay(attempt, minMs, maxMs, random = Math.random) {
  const cap = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

/** One stream's delivery state: what was delivered, and a replay under way. */
class Stream {
  constructor(pos) {
    /** Id of the last frame delivered (null: none known). */
    this.pos = pos ?? null;
    /** `live`, `syncing` (join/dm_sync sent, no ack yet) or `replaying`. */
    this.mode = 'live';
    /** Live frames that came before the replay ended, ascending by id. */
    this.held = [];
    /** Sequence number of the request whose replay this is. */
    this.seq = 0;
  }
}

/** The client. Create it with {@link connect}. */
export class Chat {
  /** @param {import('./index.js').ConnectOptions} options */
  constructor(options) {
    if (!options || !options.url) throw new TypeError('connect: `url` is required');
    if (!options.token) throw new TypeError('connect: `token` is required');
    this.options = { ...DEFAULTS, ...options };
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') {
      throw new TypeError('connect: no WebSocket (pass `WebSocket`, or run Node 22+ / a browser)');
    }
    /** The current state: `connecting`, `connected`, `disconnected` or `closed`. */
    this.state = 'connecting';
    /** The user of the token (`{id, username}`), once a token was read. */
    this.user = null;
    this._listeners = new Map();
    this._roomHandlers = new Map();
    this._ws = null;
    this._token = null;
    this._exp = null;
    this._attempt = 0;
    this._policyCloses = 0;
    this._expiredCloses = 0;
    this._timer = null;
    this._resendTimer = null;
    this._refreshTimer = null;
    this._nextRef = 1;
    this._seq = 0;
    this._inflight = new Map(); // ref -> {resolve, reject, timer, seq, frame, onReply}
    this._queue = []; // requests waiting for the connection
    this._pending = new Map(); // client_id -> {frame, resolve, reject}
    this._rooms = new Map(); // room -> Stream
    this._dm = new Stream(null);
    this._maxSeen = 0;
    this._synced = false;
    this._lastTyping = new Map();
    const resume = options.resume;
    if (resume) {
      for (const [room, pos] of Object.entries(resume.rooms || {})) this._rooms.set(room, new Stream(pos));
      if (typeof resume.dm === 'number') this._dm.pos = resume.dm;
      for (const p of resume.pending || []) this._pending.set(p.client_id, { frame: { ...p }, resolve: null, reject: null });
      this._maxSeen = Math.max(0, resume.maxSeen || 0);
    }
    this._open();
  }

  // ------------------------------------------------------------ events

  /**
   * Adds a handler of `event` (see README: `state`, `message`, `dm`,
   * `edit`, `delete`, `member`, `presence`, `typing`, `gap`, `sent`,
   * `rooms`, `token`, `error`). Returns a function that removes it.
   */
  on(event, handler) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(handler);
    return () => this.off(event, handler);
  }

  /** Removes a handler added with `on`. */
  off(event, handler) {
    const set = this._listeners.get(event);
    if (set) set.delete(handler);
  }

  _emit(event, data) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const h of [...set]) {
      try {
        h(data);
      } catch (e) {
        if (event !== 'error') this._emit('error', { message: 'a handler of ' + event + ' threw: ' + e, error: e });
      }
    }
  }

  _roomEvent(room, type, data) {
    const h = this._roomHandlers.get(room);
    if (!h) return;
    try {
      h(type, data);
    } catch (e) {
      this._emit('error', { message: 'the handler of room ' + room + ' threw: ' + e, error: e });
    }
  }

  _setState(state, extra = {}) {
    const previous = this.state;
    this.state = state;
    this._emit('state', { state, previous, ...extra });
  }

  // ------------------------------------------------------------ tokens

  async _getToken(fresh) {
    const t = this.options.token;
    if (typeof t !== 'function') return String(t).trim();
    if (!fresh && this._token && !this._expiresSoon()) return this._token;
    return String(await t()).trim();
  }

  _expiresSoon() {
    return this._exp !== null && this._exp * 1000 - Date.now() < this.options.refreshBeforeMs;
  }

  _useToken(token) {
    this._token = token;
    const claims = decodeToken(token);
    this._exp = claims && typeof claims.exp === 'number' ? claims.exp : null;
    if (claims) {
      const id = Number(claims.user_id ?? claims.sub);
      if (Number.isSafeInteger(id)) this.user = { id, username: String(claims.username ?? '') };
    }
    this._scheduleRefresh();
  }

  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (this._exp === null || typeof this.options.token !== 'function' || this.state === 'closed') return;
    const lifetime = this._exp * 1000 - Date.now();
    // Before the margin, or half-way for tokens shorter than twice it.
    const before = Math.min(this.options.refreshBeforeMs, lifetime / 2);
    const wait = Math.max(0, lifetime - before);
    this._refreshTimer = setTimeout(() => this._refresh(), wait);
  }

  /** Gets a new token from the `token` function and hands it to the live
   * connection (`refresh`); the next connection uses it in any case. */
  async _refresh() {
    let token;
    try {
      token = await this._getToken(true);
    } catch (e) {
      this._emit('error', { message: 'the token function failed: ' + (e && e.message), error: e });
      this._refreshTimer = setTimeout(() => this._refresh(), 5000);
      return;
    }
    if (this.state === 'closed') return;
    this._useToken(token);
    if (this.state !== 'connected') return;
    try {
      const data = await this.request({ type: 'refresh', token });
      this._emit('token', { exp: data && data.exp });
    } catch (e) {
      this._emit('error', { message: 'token refresh failed: ' + e.message, error: e });
    }
  }

  // ------------------------------------------------------------ the connection

  async _open() {
    clearTimeout(this._timer);
    this._timer = null;
    if (this.state === 'closed') return;
    if (this.state !== 'connecting') this._setState('connecting', { attempt: this._attempt });
    let token;
    try {
      token = await this._getToken(false);
    } catch (e) {
      this._emit('error', { message: 'the token function failed: ' + (e && e.message), error: e });
      this._disconnected({ code: 0, reason: 'no token', wasOpen: false });
      return;
    }
    if (this.state === 'closed') return;
    this._useToken(token);
    if (typeof this.options.token !== 'function' && this._exp !== null && this._exp * 1000 <= Date.now()) {
      this._final(CLOSE_CODES.TOKEN_EXPIRED, 'token expired (no token function to renew it)');
      return;
    }
    const sep = this.options.url.includes('?') ? '&' : '?';
    let ws;
    try {
      ws = new this.WebSocket(this.options.url + sep + 'token=' + encodeURIComponent(token));
    } catch (e) {
      this._emit('error', { message: 'cannot open a WebSocket: ' + (e && e.message), error: e });
      this._disconnected({ code: 0, reason: String(e && e.message), wasOpen: false });
      return;
    }
    this._ws = ws;
    let wasOpen = false;
    // A socket that neither opens nor fails (a SYN lost, a server that
    // accepted and hung): given up, like a refused one.
    const connectTimer = setTimeout(() => {
      if (this._ws !== ws || wasOpen) return;
      this._ws = null;
      try {
        ws.close();
      } catch (_) {
        // closing a socket that never opened may throw; it is dropped anyway
      }
      this._disconnected({ code: 0, reason: 'connect timed out', wasOpen: false });
    }, this.options.connectTimeoutMs);
    this._connectTimer = connectTimer;
    ws.onopen = () => {
      clearTimeout(connectTimer);
      if (this._ws !== ws) return;
      wasOpen = true;
      this._attempt = 0;
      this._onOpen();
    };
    ws.onmessage = (e) => {
      if (this._ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      if (frame && typeof frame === 'object') this._handle(frame);
    };
    ws.onerror = () => {
      // Browsers follow a failed connection's `error` with `close`; Node
      // 20's WebSocket does not: a failure before opening ends it here.
      if (this._ws !== ws || wasOpen) return;
      clearTimeout(connectTimer);
      this._ws = null;
      this._disconnected({ code: 1006, reason: 'connection failed', wasOpen: false });
    };
    ws.onclose = (e) => {
      clearTimeout(connectTimer);
      if (this._ws !== ws) return;
      this._ws = null;
      this._disconnected({ code: e.code, reason: e.reason, wasOpen });
    };
  }

  _disconnected({ code, reason, wasOpen }) {
    this._synced = false;
    // Requests in flight get no reply now; sends stay pending.
    for (const [ref, r] of this._inflight) {
      this._inflight.delete(ref);
      clearTimeout(r.timer);
      if (r.send) continue;
      r.reject(new ChatError('disconnected before the reply', 'disconnected'));
    }
    // A replay cut short: what was held is dropped, not delivered (that
    // would skip the unreplayed rest); the next connection replays it all.
    for (const s of [...this._rooms.values(), this._dm]) {
      s.mode = 'live';
      s.held = [];
    }
    if (this.state === 'closed') return;
    if (code === CLOSE_CODES.REVOKED) {
      this._final(code, reason || 'access revoked');
      return;
    }
    if (code === CLOSE_CODES.TOKEN_EXPIRED && typeof this.options.token !== 'function') {
      this._final(code, reason || 'token expired');
      return;
    }
    let delay;
    if (code === CLOSE_CODES.POLICY) {
      // Flooding or a slow consumer: not at once, and not forever.
      this._policyCloses += 1;
      if (this._policyCloses >= this.options.maxPolicyCloses) {
        this._final(code, reason || 'closed by the server (policy)');
        return;
      }
      delay = backoffDelay(30, this.options.reconnectMinMs, this.options.reconnectMaxMs);
    } else if (code === CLOSE_CODES.TOKEN_EXPIRED) {
      // The token function gives a new one: at once the first time.
      this._exp = 0;
      this._expiredCloses += 1;
      delay = this._expiredCloses > 1 ? backoffDelay(this._attempt, this.options.reconnectMinMs, this.options.reconnectMaxMs) : 0;
    } else {
      delay = backoffDelay(this._attempt, this.options.reconnectMinMs, this.options.reconnectMaxMs);
    }
    this._attempt += 1;
    this._setState('disconnected', { code, reason, wasOpen, retryInMs: delay });
    this._timer = setTimeout(() => this._open(), delay);
  }

  _final(code, reason) {
    this._setState('closed', { code, reason });
    this._shutdown(reason);
  }

  _shutdown(reason) {
    clearTimeout(this._timer);
    clearTimeout(this._resendTimer);
    clearTimeout(this._connectTimer);
    clearTimeout(this._stableTimer);
    clearTimeout(this._refreshTimer);
    const err = () => new ChatError('connection closed: ' + reason, 'closed');
    for (const r of this._inflight.values()) {
      clearTimeout(r.timer);
      if (!r.send) r.reject(err());
    }
    this._inflight.clear();
    for (const q of this._queue) {
      clearTimeout(q.timer);
      q.reject(err());
    }
    this._queue = [];
    for (const p of this._pending.values()) if (p.reject) p.reject(err());
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.close(1000, 'closed by the client');
  }

  /** Closes the connection for good (pending sends are rejected; see `snapshot`). */
  close() {
    if (this.state === 'closed') return;
    const previous = this.state;
    this.state = 'closed';
    this._emit('state', { state: 'closed', previous, code: 1000, reason: 'closed by the client' });
    this._shutdown('closed by the client');
  }

  /**
   * What to keep to resume on another page load or process: each room's
   * and the DMs' last delivered id, and the unacknowledged sends. Pass it
   * back as `connect({resume})`.
   */
  snapshot() {
    const rooms = {};
    for (const [room, s] of this._rooms) rooms[room] = s.pos;
    return {
      rooms,
      dm: this._dm.pos,
      maxSeen: this._maxSeen,
      pending: this.pending(),
    };
  }

  /** The unacknowledged sends, edits and deletes, oldest first:
   * `{type, client_id, room|to|id, content}`. */
  pending() {
    return [...this._pending.values()].map((p) => this._described(p));
  }

  _described(p) {
    const { ref, ...rest } = p.frame;
    return rest;
  }

  /** Whether the room's stream is followed (joined here, or seen). */
  following(room) {
    return this._rooms.has(room);
  }

  // ------------------------------------------------------------ (re)sync

  /** The socket is open: find the rooms, re-join them with `since`, sync
   * DMs, resend unacknowledged sends, then let the application's queued
   * requests go. */
  async _onOpen() {
    const ws = this._ws;
    this._setState('connected', { attempt: 0 });
    // The first connection of a policy-closed streak stayed up: reset.
    clearTimeout(this._stableTimer);
    this._stableTimer = setTimeout(() => {
      if (this._ws === ws) {
        this._policyCloses = 0;
        this._expiredCloses = 0;
      }
    }, 10000);
    // Live frames may come before any request (membership is stored):
    // every stream to re-sync holds them from now on, so that none is
    // delivered ahead of the replay of what came before it.
    const fallbackAtOpen = this._maxSeen > 0 ? this._maxSeen : null;
    for (const s of this._rooms.values()) {
      s.mode = 'syncing';
      s.held = [];
    }
    if ((this._dm.pos ?? fallbackAtOpen) !== null) {
      this._dm.mode = 'syncing';
      this._dm.held = [];
    }
    let rooms;
    try {
      rooms = await this._call({ type: 'rooms' });
    } catch (e) {
      if (this._ws === ws) this._emit('error', { message: 'rooms after connecting failed: ' + e.message, error: e });
      rooms = null;
    }
    if (this._ws !== ws) return;
    const fallback = fallbackAtOpen;
    if (Array.isArray(rooms)) {
      // Ids come from one sequence: where to go on from for a stream that
      // delivered nothing yet (see README, "Positions").
      for (const r of rooms) if (typeof r.last_id === 'number' && r.last_id > this._maxSeen) this._maxSeen = r.last_id;
      const listed = new Set(rooms.map((r) => r.room));
      for (const room of [...this._rooms.keys()]) {
        if (!listed.has(room)) this._dropRoom(room);
      }
      for (const r of rooms) if (!this._rooms.has(r.room)) this._rooms.set(r.room, new Stream(null));
      this._emit('rooms', rooms);
    }
    for (const [room, s] of this._rooms) {
      const since = s.pos ?? fallback;
      const frame = { type: 'join', room };
      if (since !== null) frame.since = since;
      this._syncRequest(frame, s, room);
    }
    const dmSince = this._dm.pos ?? fallback;
    if (dmSince !== null) this._syncRequest({ type: 'dm_sync', since: dmSince }, this._dm, null);
    const syncing = this._rooms.size > 0 || dmSince !== null;
    for (const p of this._pending.values()) this._transmitSend(p);
    this._synced = true;
    const queued = this._queue;
    this._queue = [];
    for (const q of queued) {
      clearTimeout(q.timer);
      this._transmit(q);
    }
    // The end of the last replay: the reply to any later request.
    if (syncing) {
      this._call({ type: 'rooms' })
        .then((list) => Array.isArray(list) && this._emit('rooms', list))
        .catch(() => {});
    }
  }

  _syncRequest(frame, s, room) {
    // (Held since the socket opened, for the streams known then.)
    if (s.mode !== 'syncing') {
      s.mode = 'syncing';
      s.held = [];
    }
    this._call(frame, {
      onSeq: (seq) => {
        s.seq = seq;
      },
    }).then(
      (data) => {
        if (room !== null) this._emit('joined', data);
        if (s.mode !== 'syncing') return;
        if (data && data.recovered === true) {
          s.mode = 'replaying';
          return;
        }
        const since = frame.since ?? null;
        const before = s.held.length ? s.held[0].data.id : null;
        this._endReplay(s, room);
        if (since !== null) {
          const gap = room !== null ? { room, since, before } : { dm: true, since, before };
          this._emit('gap', gap);
          if (room !== null) this._roomEvent(room, 'gap', gap);
        }
      },
      (e) => {
        if (e.kind === 'server' && /^server busy/.test(e.message) && this._ws) {
          // The join took effect; ask again, with the same `since`.
          setTimeout(() => this._ws && this._synced && this._syncRequest(frame, s, room), 200);
          return;
        }
        // Held frames are not delivered: the replay did not happen.
        s.mode = 'live';
        s.held = [];
        if (room !== null && e.kind === 'server') {
          // Gone (private, or deleted) or refused: stop following it.
          this._dropRoom(room);
          this._emit('error', { message: e.message, room });
        }
      },
    );
  }

  /** Ends a stream's replay: what was held is delivered, in order. */
  _endReplay(s, room) {
    s.mode = 'live';
    const held = s.held;
    s.held = [];
    for (const f of held) this._deliver(s, room, f);
  }

  _dropRoom(room) {
    this._rooms.delete(room);
    this._lastTyping.delete(room);
  }

  // ------------------------------------------------------------ requests

  /**
   * Sends any request and resolves with its reply's `data` (rejects with a
   * {@link ChatError}: the server's message, or a timeout). Waits for the
   * connection when there is none (within the timeout).
   * @param {object} frame a request, e.g. `{type: 'members', room: 'r'}`
   * @param {{timeoutMs?: number}} [opts]
   */
  request(frame, opts = {}) {
    return this._call(frame, opts, true);
  }

  _call(frame, opts = {}, fromApp = false) {
    return new Promise((resolve, reject) => {
      if (this.state === 'closed') {
        reject(new ChatError('connection closed', 'closed'));
        return;
      }
      const timeoutMs = opts.timeoutMs ?? this.options.requestTimeoutMs;
      const r = { frame: { ...frame }, resolve, reject, timeoutMs, onSeq: opts.onSeq, timer: null };
      if (fromApp && !this._synced) {
        if (this._queue.length >= this.options.maxQueuedRequests) {
          reject(new ChatError('too many requests waiting for the connection', 'limit'));
          return;
        }
        r.timer = setTimeout(() => {
          this._queue = this._queue.filter((q) => q !== r);
          reject(new ChatError('timed out waiting for the connection', 'timeout'));
        }, timeoutMs);
        this._queue.push(r);
        return;
      }
      if (!this._ws || this.state !== 'connected') {
        reject(new ChatError('not connected', 'disconnected'));
        return;
      }
      if (this._inflight.size >= this.options.maxQueuedRequests + this._pending.size) {
        reject(new ChatError('too many requests waiting for their reply', 'limit'));
        return;
      }
      this._transmit(r);
    });
  }

  _transmit(r) {
    const ref = 'r' + this._nextRef++;
    r.frame.ref = ref;
    r.seq = ++this._seq;
    if (r.onSeq) r.onSeq(r.seq);
    r.timer = setTimeout(() => {
      if (this._inflight.get(ref) !== r) return;
      this._inflight.delete(ref);
      r.reject(new ChatError(`no reply to ${r.frame.type} within ${r.timeoutMs} ms`, 'timeout'));
    }, r.timeoutMs);
    this._inflight.set(ref, r);
    this._ws.send(JSON.stringify(r.frame));
  }

  _transmitSend(p) {
    const ref = p.frame.client_id;
    p.frame.ref = ref;
    const r = { send: true, frame: p.frame, seq: ++this._seq, timer: null };
    this._inflight.set(ref, r);
    this._ws.send(JSON.stringify(p.frame));
  }

  // ------------------------------------------------------------ sends

  _queueSend(frame) {
    return new Promise((resolve, reject) => {
      if (this.state === 'closed') {
        reject(new ChatError('connection closed', 'closed'));
        return;
      }
      if (this._pending.size >= this.options.maxPendingSends) {
        reject(new ChatError('too many unacknowledged sends', 'limit'));
        return;
      }
      const p = { frame: { ...frame, client_id: newClientId() }, resolve, reject };
      this._pending.set(p.frame.client_id, p);
      if (this._synced && this._ws) this._transmitSend(p);
    });
  }

  /**
   * Sends a message to `room`; resolves once with the stored message
   * (`{id, fromUser, username, content, timestamp, room}`). Kept and
   * resent after reconnects until the server acknowledges it.
   */
  send(room, content) {
    if (!this._rooms.has(room)) this._rooms.set(room, new Stream(null));
    return this._queueSend({ type: 'message', room, content });
  }

  /** Sends a direct message to user `user`; like {@link Chat#send}. */
  sendDm(user, content) {
    return this._queueSend({ type: 'dm', to: user, content });
  }

  /** Edits message `id` (its author only); resolves with the `message_edited`
   * data. Kept and resent like a send (the server stores it once). */
  edit(id, content) {
    return this._queueSend({ type: 'edit', id, content });
  }

  /** Deletes message `id`; resolves with the `message_deleted` data. Kept
   * and resent like a send. */
  delete(id) {
    return this._queueSend({ type: 'delete', id });
  }

  // ------------------------------------------------------------ rooms

  /** The user's rooms: `[{room, last_id, unread}]`. */
  rooms() {
    return this.request({ type: 'rooms' });
  }

  /**
   * Joins `room` (or re-joins it) and follows its stream; `handler(type,
   * data)` gets this room's `message`, `edit`, `delete`, `member`,
   * `presence`, `typing` and `gap` events. Resolves with `join_ack`'s data.
   */
  async join(room, handler) {
    if (handler) this._roomHandlers.set(room, handler);
    // Live from now on; a stream followed already goes on where it is
    // (reconnects re-join with `since` by themselves).
    const known = this._rooms.has(room);
    if (!known) this._rooms.set(room, new Stream(null));
    let data;
    try {
      data = await this.request({ type: 'join', room });
    } catch (e) {
      if (!known && e.kind === 'server') this._dropRoom(room);
      throw e;
    }
    this._emit('joined', data);
    return data;
  }

  /** Leaves `room` (for all the user's connections). */
  async leave(room) {
    const data = await this.request({ type: 'leave', room });
    this._dropRoom(room);
    this._roomHandlers.delete(room);
    return data;
  }

  /** Creates a room (`visibility`: `public` or `private`); the creator is its owner. */
  async createRoom(room, { visibility } = {}) {
    const frame = { type: 'create_room', room };
    if (visibility) frame.visibility = visibility;
    const data = await this.request(frame);
    if (!this._rooms.has(room)) this._rooms.set(room, new Stream(null));
    return data;
  }

  /**
   * A page of history, oldest first: `{room}` or `{with: userId}`, and
   * `before`, `after` (exclusive ids), `limit`.
   */
  history({ room, with: user, before, after, limit } = {}) {
    const frame = room !== undefined ? { type: 'room_history', room } : { type: 'dm_history', with: user };
    if (before !== undefined) frame.before = before;
    if (after !== undefined) frame.after = after;
    if (limit !== undefined) frame.limit = limit;
    return this.request(frame);
  }

  /** Stores the read position in `room` (default: the last id delivered). */
  markRead(room, upTo) {
    const s = this._rooms.get(room);
    const up_to = upTo ?? (s && s.pos) ?? 0;
    return this.request({ type: 'read', room, up_to });
  }

  /** A page of `room`'s members: `{room, members: [...], more}`. */
  members(room, { after, limit } = {}) {
    const frame = { type: 'members', room };
    if (after !== undefined) frame.after = after;
    if (limit !== undefined) frame.limit = limit;
    return this.request(frame);
  }

  /**
   * Says the user is typing in `room`; at most one every
   * {@link TYPING_INTERVAL_MS} per room reaches the server (the rest would
   * be dropped there). Returns whether this one was sent.
   */
  typing(room) {
    const now = Date.now();
    if (!this._synced || !this._ws || now - (this._lastTyping.get(room) || 0) < TYPING_INTERVAL_MS) return false;
    this._lastTyping.set(room, now);
    this._ws.send(JSON.stringify({ type: 'typing', room }));
    return true;
  }

  /** Lets the next `typing(room)` go at once (e.g. after a send). */
  resetTyping(room) {
    this._lastTyping.delete(room);
  }

  // ------------------------------------------------------------ incoming frames

  _handle(frame) {
    const d = frame.data;
    let r = null;
    if (frame.ref !== undefined && frame.ref !== null) {
      r = this._inflight.get(String(frame.ref)) || null;
      if (r) {
        this._inflight.delete(String(frame.ref));
        clearTimeout(r.timer);
        this._replied(r.seq);
      }
    }
    if (frame.type === 'error') {
      const message = d && d.message ? String(d.message) : 'unknown error';
      if (r && r.send && TRANSIENT.test(message)) this._retrySend(r.frame.client_id);
      else if (r && r.send) this._sendFailed(r.frame.client_id, message);
      else if (r) r.reject(new ChatError(message, 'server'));
      else {
        // The connection's rate limit answers without `ref`: which request
        // it refused is unknown, so every unacknowledged send goes again.
        if (/^rate limited/.test(message)) this._resendUnackedLater();
        this._emit('error', { message });
      }
      return;
    }
    switch (frame.type) {
      case 'message':
      case 'dm':
      case 'message_edited':
      case 'message_deleted':
        if (!d || typeof d.id !== 'number') return;
        if (r && r.send) this._acked(r.frame.client_id, d);
        else if (r) r.resolve(d);
        this._stream(frame);
        return;
      case 'member':
        if (r) r.resolve(d);
        if (d) this._onMember(d);
        return;
      case 'presence':
      case 'presence_batch':
        for (const p of presenceEvents(frame)) this._presence(p);
        return;
      case 'typing':
        if (d) {
          this._emit('typing', d);
          this._roomEvent(d.room, 'typing', d);
        }
        return;
      default:
        if (r) r.resolve(d);
        else this._emit('frame', frame);
    }
  }

  /** A reply to request `seq` came: every replay asked for before it is over. */
  _replied(seq) {
    for (const [room, s] of this._rooms) if (s.mode === 'replaying' && s.seq < seq) this._endReplay(s, room);
    if (this._dm.mode === 'replaying' && this._dm.seq < seq) this._endReplay(this._dm, null);
  }

  _acked(clientId, message) {
    const p = this._pending.get(clientId);
    if (!p) return;
    this._pending.delete(clientId);
    if (p.resolve) p.resolve(message);
    this._emit('sent', { ...this._described(p), message });
  }

  /** Sends every send of this connection not acknowledged yet again, in a
   * second (once for a burst of refusals): a retry of a stored one only
   * brings the original back. */
  _resendUnackedLater() {
    if (this._resendTimer) return;
    const ws = this._ws;
    this._resendTimer = setTimeout(() => {
      this._resendTimer = null;
      if (this._ws !== ws || !ws || !this._synced) return;
      for (const [clientId, p] of this._pending) if (this._inflight.has(clientId)) this._transmitSend(p);
    }, 1000);
  }

  /** A send refused for now (busy, rate, database): the same again later. */
  _retrySend(clientId) {
    const ws = this._ws;
    setTimeout(() => {
      const p = this._pending.get(clientId);
      if (p && this._ws === ws && ws && this._synced && !this._inflight.has(clientId)) this._transmitSend(p);
    }, 1000);
  }

  _sendFailed(clientId, error) {
    const p = this._pending.get(clientId);
    if (!p) return;
    this._pending.delete(clientId);
    if (p.reject) p.reject(new ChatError(error, 'server'));
    this._emit('sent', { ...this._described(p), error });
  }

  _presence(d) {
    this._emit('presence', d);
    this._roomEvent(d.room, 'presence', d);
  }

  _onMember(d) {
    const mine = this.user && d.user === this.user.id;
    if (mine && ['left', 'kicked', 'banned'].includes(d.action)) this._dropRoom(d.room);
    if (mine && ['invited', 'joined'].includes(d.action) && !this._rooms.has(d.room)) this._rooms.set(d.room, new Stream(null));
    this._emit('member', d);
    this._roomEvent(d.room, 'member', d);
  }

  /** A frame of a stream: delivered now, held (a replay is under way), or
   * dropped (already delivered). */
  _stream(frame) {
    const d = frame.data;
    let room = null;
    let s;
    if (frame.type === 'dm' || (frame.type !== 'message' && d.room === undefined)) {
      s = this._dm;
    } else {
      room = d.room;
      s = this._rooms.get(room);
      if (!s) {
        s = new Stream(null);
        this._rooms.set(room, s);
      }
    }
    // Delivered already (a replay overlapping live frames, or the original
    // answered to a resend).
    if (s.pos !== null && d.id <= s.pos) return;
    if (s.mode === 'syncing') {
      this._hold(s, frame);
      return;
    }
    // Replayed frames all come before the first live one held: a frame
    // from there on means the replay is over.
    if (s.mode === 'replaying' && s.held.length && d.id >= s.held[0].data.id) this._endReplay(s, room);
    this._deliver(s, room, frame);
  }

  _hold(s, frame) {
    if (s.held.length >= this.options.maxHeldFrames) {
      // Bounded: start over on a new connection (the replay then covers
      // everything after the last frame delivered).
      const ws = this._ws;
      this._ws = null;
      if (ws) ws.close(1000, 'resync');
      this._disconnected({ code: 1000, reason: 'too many live frames during a replay', wasOpen: true });
      return;
    }
    const id = frame.data.id;
    // Live frames come in id order; keep it so even if not.
    let i = s.held.length;
    while (i > 0 && s.held[i - 1].data.id > id) i -= 1;
    if (i > 0 && s.held[i - 1].data.id === id) return;
    s.held.splice(i, 0, frame);
  }

  _deliver(s, room, frame) {
    const d = frame.data;
    if (s.pos !== null && d.id <= s.pos) return;
    s.pos = d.id;
    if (d.id > this._maxSeen) this._maxSeen = d.id;
    const type = { message: 'message', dm: 'dm', message_edited: 'edit', message_deleted: 'delete' }[frame.type];
    this._emit(type, d);
    if (room !== null) this._roomEvent(room, type, d);
  }
}
