// Type declarations of index.js (checked with `tsc --noEmit` against
// test/example.ts by the SDK tests).

/** A user id: an integer from 1 to 2^53 - 1. */
export type UserId = number;

/** A stored room message or DM, as delivered, replayed or in history. */
export interface Message {
  id: number;
  fromUser: UserId;
  username: string;
  /** Absent on a tombstone (`deleted: true`). */
  content?: string;
  /** RFC 3339, UTC, microseconds. */
  timestamp: string;
  /** The room (room messages). */
  room?: string;
  /** The other user (DMs). */
  to?: UserId;
  /** History and replays only: when it was last edited. */
  edited_at?: string;
  /** History and replays only: the message was deleted. */
  deleted?: boolean;
}

/** `message_edited`: an event of the stream, with an id of its own. */
export interface EditEvent {
  id: number;
  target: number;
  fromUser: UserId;
  content?: string;
  timestamp: string;
  room?: string;
  to?: UserId;
  deleted?: boolean;
}

/** `message_deleted`: an event of the stream, with an id of its own. */
export interface DeleteEvent {
  id: number;
  target: number;
  by: UserId;
  timestamp: string;
  room?: string;
  to?: UserId;
}

/** A membership change (`member` frame). */
export interface MemberEvent {
  room: string;
  user: UserId;
  action: 'invited' | 'joined' | 'left' | 'kicked' | 'banned' | 'unbanned' | 'muted' | 'unmuted' | 'role';
  by: UserId | null;
  role?: 'owner' | 'moderator' | 'member';
  until?: string;
  reason?: string;
}

/** One user coming online or going offline in a room (`presence`, or one entry of `presence_batch`). */
export interface PresenceEvent {
  room: string;
  user: UserId;
  username: string;
  status: 'online' | 'offline';
}

/** Someone else is typing in a room. */
export interface TypingEvent {
  room: string;
  fromUser: UserId;
  username: string;
}

/** The server could not replay everything after `since` (more than its `--recovery-max`). */
export type GapEvent =
  | { room: string; since: number; before: number | null }
  | { dm: true; since: number; before: number | null };

export type State = 'connecting' | 'connected' | 'disconnected' | 'closed';

export interface StateEvent {
  state: State;
  previous: State;
  /** Close code, on `disconnected` and `closed`. */
  code?: number;
  reason?: string;
  /** On `disconnected`: whether the socket had opened. */
  wasOpen?: boolean;
  /** On `disconnected`: when the next attempt starts. */
  retryInMs?: number;
  /** On `connecting`: the attempt's number (0: after a successful connection). */
  attempt?: number;
}

export interface RoomSummary {
  room: string;
  last_id: number | null;
  unread: number;
}

export interface JoinAck {
  room: string;
  status: 'ok';
  recovered?: boolean;
  online?: UserId[];
}

export interface MemberInfo {
  user: UserId;
  username: string;
  role: 'owner' | 'moderator' | 'member';
  muted?: boolean;
  muted_until?: string;
}

export interface MembersPage {
  room: string;
  members: MemberInfo[];
  more: boolean;
}

/** A send, edit or delete not acknowledged yet. */
export interface PendingSend {
  type: 'message' | 'dm' | 'edit' | 'delete';
  client_id: string;
  /** `message`, `dm`, `edit`. */
  content?: string;
  /** `message`. */
  room?: string;
  /** `dm`. */
  to?: UserId;
  /** `edit`, `delete`: the message's id. */
  id?: number;
}

/** The outcome of a send, edit or delete (what was sent, and the stored
 * message or event, or the server's refusal). */
export interface SentEvent extends PendingSend {
  message?: Message | EditEvent | DeleteEvent;
  error?: string;
}

/** What `snapshot()` returns and `connect({resume})` takes. */
export interface Snapshot {
  rooms: Record<string, number | null>;
  dm: number | null;
  maxSeen: number;
  pending: PendingSend[];
}

export interface ConnectOptions {
  /** `ws://host:port/ws` (the token is added as `?token=`). */
  url: string;
  /** A JWT, or a function giving one (called for each connection and before expiry). */
  token: string | (() => string | Promise<string>);
  /** A WebSocket class (default: the global one). */
  WebSocket?: unknown;
  /** Default 10000. */
  requestTimeoutMs?: number;
  /** A socket not open after this long is given up and retried (default 10000). */
  connectTimeoutMs?: number;
  /** Back-off: the first cap (default 500) and the largest (default 10000). */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Ask the token function for a new token this long before expiry (default 60000, at most half the lifetime). */
  refreshBeforeMs?: number;
  /** Unacknowledged sends kept at most (default 1000). */
  maxPendingSends?: number;
  /** Requests waiting for the connection at most (default 1000). */
  maxQueuedRequests?: number;
  /** Live frames held back during one replay at most; past it the client reconnects (default 10000). */
  maxHeldFrames?: number;
  /** 1008 closes in a row before giving up (default 3). */
  maxPolicyCloses?: number;
  /** Where to go on from (a previous `snapshot()`). */
  resume?: Snapshot;
}

export type RoomEvent =
  | ['message', Message]
  | ['edit', EditEvent]
  | ['delete', DeleteEvent]
  | ['member', MemberEvent]
  | ['presence', PresenceEvent]
  | ['typing', TypingEvent]
  | ['gap', GapEvent];

export type RoomHandler = (...event: RoomEvent) => void;

export interface Events {
  state: StateEvent;
  message: Message;
  dm: Message;
  edit: EditEvent;
  delete: DeleteEvent;
  member: MemberEvent;
  presence: PresenceEvent;
  typing: TypingEvent;
  gap: GapEvent;
  sent: SentEvent;
  rooms: RoomSummary[];
  joined: JoinAck;
  token: { exp: number };
  error: { message: string; room?: string; error?: unknown };
  frame: { type: string; data?: unknown; ref?: string | number };
}

export declare const STATES: readonly State[];
export declare const TYPING_INTERVAL_MS: number;
export declare const CLOSE_CODES: Readonly<{ POLICY: 1008; TOKEN_EXPIRED: 4001; REVOKED: 4003 }>;

export declare class ChatError extends Error {
  constructor(message: string, kind: ChatError['kind']);
  kind: 'server' | 'timeout' | 'disconnected' | 'closed' | 'limit';
}

export declare class Chat {
  constructor(options: ConnectOptions);
  readonly state: State;
  readonly user: { id: UserId; username: string } | null;
  on<K extends keyof Events>(event: K, handler: (data: Events[K]) => void): () => void;
  off<K extends keyof Events>(event: K, handler: (data: Events[K]) => void): void;
  request<T = unknown>(frame: { type: string; [field: string]: unknown }, opts?: { timeoutMs?: number }): Promise<T>;
  send(room: string, content: string): Promise<Message>;
  sendDm(user: UserId, content: string): Promise<Message>;
  edit(id: number, content: string): Promise<EditEvent>;
  delete(id: number): Promise<DeleteEvent>;
  rooms(): Promise<RoomSummary[]>;
  join(room: string, handler?: RoomHandler): Promise<JoinAck>;
  leave(room: string): Promise<{ room: string }>;
  createRoom(room: string, opts?: { visibility?: 'public' | 'private' }): Promise<{ room: string; visibility: 'public' | 'private' }>;
  history(query: { room: string; before?: number; after?: number; limit?: number }): Promise<Message[]>;
  history(query: { with: UserId; before?: number; after?: number; limit?: number }): Promise<Message[]>;
  markRead(room: string, upTo?: number): Promise<{ room: string; up_to: number }>;
  members(room: string, opts?: { after?: UserId; limit?: number }): Promise<MembersPage>;
  typing(room: string): boolean;
  resetTyping(room: string): void;
  pending(): PendingSend[];
  following(room: string): boolean;
  snapshot(): Snapshot;
  close(): void;
}

export declare function connect(options: ConnectOptions): Chat;
export declare function decodeToken(token: string): Record<string, unknown> | null;
export declare function newClientId(): string;
export declare function presenceEvents(frame: { type: string; data?: unknown }): PresenceEvent[];
export declare function backoffDelay(attempt: number, minMs: number, maxMs: number, random?: () => number): number;
