// A small TypeScript program against index.d.ts: `tsc --noEmit` must accept
// it (types.test.mjs), so the declarations say what the README shows.
import { connect, ChatError, type Message, type RoomHandler } from '../index.js';

const chat = connect({ url: 'ws://127.0.0.1:9001/ws', token: async () => 'jwt', reconnectMaxMs: 8000 });

chat.on('state', (e) => console.log(e.state, e.code ?? '', e.retryInMs ?? ''));
chat.on('dm', (m: Message) => console.log(`dm ${m.id} from ${m.username}: ${m.content ?? '(deleted)'}`));
chat.on('presence', (p) => console.log(p.room, p.user, p.status === 'online'));
chat.on('gap', (g) => {
  if ('room' in g) void chat.history({ room: g.room, after: g.since, before: g.before ?? undefined });
});

const onRoom: RoomHandler = (type, data) => {
  if (type === 'message') console.log(data.id, data.content);
  else if (type === 'edit') console.log('edited', data.target, data.content);
  else if (type === 'delete') console.log('deleted', data.target, 'by', data.by);
};

async function main(): Promise<void> {
  const ack = await chat.join('general', onRoom);
  const online: number[] = ack.online ?? [];
  const sent: Message = await chat.send('general', 'hello');
  const edited = await chat.edit(sent.id, 'hello, world');
  const page = await chat.history({ room: 'general', before: edited.target, limit: 20 });
  const dms = await chat.history({ with: 2, limit: 5 });
  const rooms = await chat.rooms();
  const unread: number = rooms.reduce((n, r) => n + r.unread, 0);
  await chat.markRead('general');
  const members = await chat.members('general', { limit: 10 });
  const roles: string[] = members.members.map((m) => m.role);
  chat.typing('general');
  try {
    await chat.request<{ room: string }>({ type: 'leave', room: 'nowhere' });
  } catch (e) {
    if (e instanceof ChatError && e.kind === 'server') console.log(e.message);
  }
  localStorageLike.save(JSON.stringify(chat.snapshot()));
  console.log(online, page.length, dms.length, unread, roles, chat.pending().length);
  chat.close();
}

const localStorageLike = { save: (_: string): void => {} };
void main();
