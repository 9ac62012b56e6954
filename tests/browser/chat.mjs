// Two users chat through the embedded page in headless Chromium.
//
//   node chat.mjs http://127.0.0.1:PORT/
//
// Run by `cargo test --test browser`, which starts the server (with --dev
// and a room `general`) and answers this script's control lines on stdout:
// `STOP` (stop the server; it answers `STOPPED` on stdin) and `START` (start
// it again on the same port and database; it answers `STARTED`).
// Besides chatting, DMs and the restart, a private room (issue 14): alice
// creates it, invites bob by id, edits and deletes messages, makes bob a
// moderator who deletes one of hers; bob sees it all live and after a
// reload. Fails (exit 1) on any console error or page error, on any
// missing or duplicated message. Saves screenshots under target/browser/.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';

const base = process.argv[2];
if (!base) {
  console.error('usage: node chat.mjs http://127.0.0.1:PORT/');
  process.exit(2);
}
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const shots = process.env.SCREENSHOT_DIR || path.resolve('../../target/browser');
const STEP_MS = 15_000;
// main.rs fills #general with this many messages before the pages open.
const HISTORY_MESSAGES = Number(process.env.HISTORY_MESSAGES || 80);
// The page's history page size (web/app.js HISTORY_PAGE).
const HISTORY_PAGE = 50;

async function waitForCount(locator, n, what) {
  const deadline = Date.now() + STEP_MS;
  let seen = -1;
  while (Date.now() < deadline) {
    seen = await locator.count();
    if (seen === n) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: expected ${n} messages, saw ${seen}`);
}

const lines = readline.createInterface({ input: process.stdin });
const waiting = [];
lines.on('line', (l) => {
  const w = waiting.shift();
  if (w) w(l.trim());
});
const control = (command) =>
  new Promise((resolve) => {
    waiting.push(resolve);
    process.stdout.write(command + '\n');
  });

const problems = [];
// While the server is down the browser logs failed connection attempts:
// expected then, and only then.
let serverDown = false;
const expectedWhileDown = /WebSocket connection to .* failed|ERR_CONNECTION_REFUSED|Failed to load resource/;

function watch(page, who) {
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (serverDown && expectedWhileDown.test(m.text())) return;
    problems.push(`${who} console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${who} page error: ${e.message}`));
  // "Delete this message?" and the like: yes.
  page.on('dialog', (d) => d.accept());
  page.on('requestfailed', (r) => {
    if (!serverDown) problems.push(`${who} request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
}

const log = (msg) => console.error(`chat.mjs: ${msg}`);

/**
 * Routes a page's WebSockets through the test, so that it can cut the
 * page off the server (`cut()`: the page's socket stays open but reaches
 * nothing, and new ones are held the same way) and let it reconnect
 * (`release()`: the held socket closes, the page reconnects to the server
 * and recovers with `since`).
 */
async function cuttable(page) {
  let held = null;
  let live = [];
  await page.routeWebSocket(/\/ws(\?|$)/, (ws) => {
    if (held !== null) {
      held.push(ws);
      return;
    }
    live.push([ws, ws.connectToServer()]);
  });
  return {
    cut() {
      held = [];
      for (const [ws, server] of live) {
        // The page's side stays open: it sees no close, just silence.
        server.close();
      }
      live = [];
    },
    release() {
      const sockets = held || [];
      held = null;
      for (const ws of sockets) ws.close({ code: 1000, reason: 'test reconnects' });
    },
  };
}

async function signIn(page, username, userId) {
  await page.goto(base);
  await page.locator('#dev-form').waitFor({ state: 'visible', timeout: STEP_MS });
  if (userId === 1) await page.screenshot({ path: path.join(shots, 'login.png') });
  await page.fill('#dev-username', username);
  await page.fill('#dev-userid', String(userId));
  await page.click('#dev-generate');
  await connected(page);
  await page.locator('#me-name', { hasText: username }).waitFor({ timeout: STEP_MS });
}

/** Signs in by pasting a token (the flow without --dev). */
async function pasteToken(page, token, username) {
  await page.goto(base);
  await page.locator('#token-form').waitFor({ state: 'visible', timeout: STEP_MS });
  await page.fill('#token-input', token);
  await page.click('#token-form button[type=submit]');
  await connected(page);
  await page.locator('#me-name', { hasText: username }).waitFor({ timeout: STEP_MS });
}

const connected = (page) => page.locator('#status.online').waitFor({ timeout: STEP_MS });

async function joinRoom(page, room) {
  await page.fill('#room-input', room);
  await page.click('#join-room');
  await page.locator('#conv-title', { hasText: '# ' + room }).waitFor({ timeout: STEP_MS });
}

async function say(page, text) {
  await page.fill('#composer-input', text);
  await page.press('#composer-input', 'Enter');
}

/** Fails unless no message of `page` shows `text` (after a moment). */
async function seesNone(page, text, who) {
  await page.waitForTimeout(300);
  const n = await page.locator('#message-list li.msg', { hasText: text }).count();
  if (n !== 0) problems.push(`${who} still sees "${text}" (${n} times)`);
}

/** The delivered message of `page` showing `text`. */
const message = (page, text) => page.locator('#message-list li.msg[data-id]', { hasText: text });

/** Waits until the message with id `id` is a tombstone on `page`. */
async function seesTombstone(page, id, who) {
  const li = page.locator(`#message-list li.msg.deleted[data-id="${id}"]`, { hasText: 'message deleted' });
  await li.waitFor({ timeout: STEP_MS }).catch(() => {
    throw new Error(`${who} does not show message ${id} as deleted`);
  });
}

/** Waits until exactly one delivered (not pending) message shows `text`. */
async function seesOnce(page, text, who) {
  const delivered = page.locator('#message-list li.msg[data-id]', { hasText: text });
  await delivered.first().waitFor({ timeout: STEP_MS });
  // Give a duplicate a moment to show up before counting.
  await page.waitForTimeout(300);
  const n = await delivered.count();
  if (n !== 1) problems.push(`${who} sees "${text}" ${n} times`);
  const pending = await page.locator('#message-list li.msg.pending', { hasText: text }).count();
  if (pending !== 0) problems.push(`${who} still shows "${text}" as pending`);
}

/**
 * Issue 14: alice creates a private room and invites bob by id; bob sees it
 * appear and reads it; alice edits and deletes her messages, bob sees the
 * edit ("(edited)") and the tombstone live; alice makes bob a moderator,
 * who deletes one of her messages; and after bob reloads the page the
 * edit and the tombstones are still shown.
 */
async function privateRoomScenario(alice, bob, bobLink) {
  const room = 'secret-plans';
  log(`alice creates the private room #${room}`);
  await alice.fill('#room-input', room);
  await alice.check('#room-private', { timeout: STEP_MS });
  await alice.click('#create-room');
  await alice.locator('#conv-title', { hasText: '# ' + room }).waitFor({ timeout: STEP_MS });

  log('bob cannot join it: to him it does not exist');
  await bob.fill('#room-input', room);
  await bob.click('#join-room');
  await bob.locator('#banner', { hasText: `room '${room}' does not exist` }).waitFor({ timeout: STEP_MS });
  await bob.click('#banner-close');
  await bob.click('#room-list button:has-text("general")');

  log('alice sees herself as owner and invites bob by id');
  await alice.click('#members-toggle');
  await alice.locator('#member-list li[data-user="1"]', { hasText: 'owner' }).waitFor({ timeout: STEP_MS });
  await alice.fill('#admin-user', '2');
  await alice.click('#invite');
  await alice.locator('#member-list li[data-user="2"]', { hasText: 'member' }).waitFor({ timeout: STEP_MS });

  log('the room appears on bob\'s page; he reads a message there');
  await bob.locator('#room-list button', { hasText: room }).waitFor({ timeout: STEP_MS });
  await bob.click(`#room-list button:has-text("${room}")`);
  await bob.locator('#conv-title', { hasText: '# ' + room }).waitFor({ timeout: STEP_MS });
  await say(alice, 'the plan: meet at noon');
  await seesOnce(bob, 'the plan: meet at noon', 'bob');
  await seesOnce(alice, 'the plan: meet at noon', 'alice');

  log('alice edits her message; bob sees the new text marked (edited)');
  const planId = await message(alice, 'the plan: meet at noon').getAttribute('data-id');
  await message(alice, 'the plan: meet at noon').locator('button.edit').click();
  await alice.locator('#edit-bar').waitFor({ timeout: STEP_MS });
  await alice.fill('#composer-input', 'the plan: meet at one');
  await alice.press('#composer-input', 'Enter');
  for (const [who, page] of [['bob', bob], ['alice', alice]]) {
    await page.locator(`#message-list li.msg[data-id="${planId}"]`, { hasText: 'the plan: meet at one' })
      .locator('.edited', { hasText: '(edited)' }).waitFor({ timeout: STEP_MS });
    await seesNone(page, 'meet at noon', who);
  }

  log('alice deletes a message; bob sees a tombstone');
  await say(alice, 'oops, wrong room');
  await seesOnce(bob, 'oops, wrong room', 'bob');
  const oopsId = await message(alice, 'oops, wrong room').getAttribute('data-id');
  await message(alice, 'oops, wrong room').locator('button.delete').click();
  await seesTombstone(bob, oopsId, 'bob');
  await seesTombstone(alice, oopsId, 'alice');
  await seesNone(bob, 'oops, wrong room', 'bob');

  log('bob, a plain member, has no moderation controls and cannot delete alice\'s message');
  await bob.click('#members-toggle');
  await bob.locator('#member-list li[data-user="2"]', { hasText: 'member' }).waitFor({ timeout: STEP_MS });
  if (await bob.locator('#admin-form').isVisible()) problems.push('bob, a member, sees the invite form');
  if ((await bob.locator('#member-list button.kick, #member-list button.mute').count()) !== 0) {
    problems.push('bob, a member, sees moderation buttons');
  }
  if ((await message(bob, 'the plan: meet at one').locator('button.delete').count()) !== 0) {
    problems.push('bob, a member, may delete alice\'s message');
  }

  log('alice makes bob a moderator; he deletes one of her messages');
  await say(alice, 'a message for the moderator');
  await seesOnce(bob, 'a message for the moderator', 'bob');
  await alice.locator('#member-list li[data-user="2"] select.set-role').selectOption('moderator');
  await bob.locator('#member-list li[data-user="2"]', { hasText: 'moderator' }).waitFor({ timeout: STEP_MS });
  const modId = await message(bob, 'a message for the moderator').getAttribute('data-id');
  await message(bob, 'a message for the moderator').locator('button.delete').click();
  await seesTombstone(alice, modId, 'alice');
  await seesTombstone(bob, modId, 'bob');

  log('alice mutes bob: his message is refused until she unmutes him');
  await alice.locator('#member-list li[data-user="2"] button.mute').click();
  await alice.locator('#member-list li[data-user="2"] .muted-tag').waitFor({ timeout: STEP_MS });
  await bob.locator('#member-list li[data-user="2"] .muted-tag').waitFor({ timeout: STEP_MS });
  await bob.locator('#composer-input[placeholder="You are muted in this room"]').waitFor({ timeout: STEP_MS });
  await say(bob, 'can I still speak?');
  await bob.locator('#banner', { hasText: `you are muted in room '${room}'` }).waitFor({ timeout: STEP_MS });
  await bob.locator('#message-list li.msg.failed', { hasText: 'can I still speak?' }).waitFor({ timeout: STEP_MS });
  await bob.click('#banner-close');
  await seesNone(alice, 'can I still speak?', 'alice');
  await alice.locator('#member-list li[data-user="2"] button.unmute').click();
  await bob.locator('#composer-input[placeholder="Write a message"]').waitFor({ timeout: STEP_MS });
  if ((await bob.locator('#member-list li[data-user="2"] .muted-tag').count()) !== 0) problems.push('bob is still shown muted');
  await say(bob, 'thanks for unmuting me');
  await seesOnce(alice, 'thanks for unmuting me', 'alice');

  log('bob is cut off; alice edits and deletes meanwhile; bob reconnects and recovers');
  await say(alice, 'to be deleted while bob is away');
  await seesOnce(bob, 'to be deleted while bob is away', 'bob');
  const awayId = await message(alice, 'to be deleted while bob is away').getAttribute('data-id');
  bobLink.cut();
  await message(alice, 'the plan: meet at one').locator('button.edit').click();
  await alice.fill('#composer-input', 'the plan: meet at two');
  await alice.press('#composer-input', 'Enter');
  await message(alice, 'the plan: meet at two').locator('.edited').waitFor({ timeout: STEP_MS });
  await message(alice, 'to be deleted while bob is away').locator('button.delete').click();
  await seesTombstone(alice, awayId, 'alice');
  await say(alice, 'written while bob was away');
  await seesOnce(alice, 'written while bob was away', 'alice');
  await message(alice, 'written while bob was away').locator('button.edit').click();
  await alice.fill('#composer-input', 'written while bob was away, then edited');
  await alice.press('#composer-input', 'Enter');
  await message(alice, 'then edited').locator('.edited').waitFor({ timeout: STEP_MS });
  await bob.waitForTimeout(300);
  if ((await message(bob, 'meet at two').count()) !== 0) throw new Error('bob was not cut off');
  bobLink.release();
  await bob.locator(`#message-list li.msg[data-id="${planId}"]`, { hasText: 'the plan: meet at two' })
    .locator('.edited').waitFor({ timeout: STEP_MS });
  await connected(bob);
  await seesTombstone(bob, awayId, 'bob after recovering');
  await message(bob, 'written while bob was away, then edited').locator('.edited').waitFor({ timeout: STEP_MS });
  await seesOnce(bob, 'written while bob was away, then edited', 'bob after recovering');
  await seesOnce(bob, 'the plan: meet at two', 'bob after recovering');
  await seesNone(bob, 'to be deleted while bob is away', 'bob after recovering');

  log('bob reloads the page: the edits and the tombstones are still shown');
  await bob.reload();
  await connected(bob);
  await bob.locator('#conv-title', { hasText: '# ' + room }).waitFor({ timeout: STEP_MS });
  await bob.locator(`#message-list li.msg[data-id="${planId}"]`, { hasText: 'the plan: meet at two' })
    .locator('.edited', { hasText: '(edited)' }).waitFor({ timeout: STEP_MS });
  for (const id of [oopsId, modId, awayId]) await seesTombstone(bob, id, 'bob after reloading');
  await seesOnce(bob, 'the plan: meet at two', 'bob after reloading');
  await seesOnce(bob, 'written while bob was away, then edited', 'bob after reloading');
  for (const gone of ['meet at noon', 'meet at one', 'oops, wrong room', 'a message for the moderator', 'to be deleted while']) {
    await seesNone(bob, gone, 'bob after reloading');
  }
  await bob.screenshot({ path: path.join(shots, 'private-room-bob.png') });
  await alice.screenshot({ path: path.join(shots, 'private-room-alice.png') });

  log('alice kicks bob: the room leaves his page, and he gets nothing more of it');
  await bob.click('#room-list button:has-text("general")');
  await alice.locator('#member-list li[data-user="2"] button.kick').click();
  await alice.locator('#member-list li[data-user="2"]').waitFor({ state: 'detached', timeout: STEP_MS });
  await bob.locator('#banner', { hasText: `You were kicked from room '${room}'` }).waitFor({ timeout: STEP_MS });
  await bob.click('#banner-close');
  await bob.locator('#room-list button', { hasText: room }).waitFor({ state: 'detached', timeout: STEP_MS });
  await say(alice, 'after the kick');
  await seesOnce(alice, 'after the kick', 'alice');
  await bob.fill('#room-input', room);
  await bob.click('#join-room');
  await bob.locator('#banner', { hasText: `room '${room}' does not exist` }).waitFor({ timeout: STEP_MS });
  await bob.click('#banner-close');
  await bob.click('#room-list button:has-text("general")');
  if ((await bob.locator('#message-list li.msg', { hasText: 'after the kick' }).count()) !== 0) problems.push('bob got a message after his kick');

  log('alice invites bob again, bans him, then unbans him');
  await alice.fill('#admin-user', '2');
  await alice.click('#invite');
  await bob.locator('#room-list button', { hasText: room }).waitFor({ timeout: STEP_MS });
  await alice.locator('#member-list li[data-user="2"] button.ban').click();
  await bob.locator('#banner', { hasText: `You were banned from room '${room}'` }).waitFor({ timeout: STEP_MS });
  await bob.click('#banner-close');
  await bob.locator('#room-list button', { hasText: room }).waitFor({ state: 'detached', timeout: STEP_MS });
  await bob.fill('#room-input', room);
  await bob.click('#join-room');
  await bob.locator('#banner').waitFor({ timeout: STEP_MS });
  log('join while banned: ' + await bob.locator('#banner').innerText());
  await bob.click('#banner-close');
  await bob.click('#room-list button:has-text("general")');
  await alice.fill('#admin-user', '2');
  await alice.click('#unban');
  await alice.waitForTimeout(500);
  await alice.fill('#admin-user', '2');
  await alice.click('#invite');
  await bob.locator('#room-list button', { hasText: room }).waitFor({ timeout: STEP_MS });
  await bob.screenshot({ path: path.join(shots, 'kick-bob.png') });
  await alice.screenshot({ path: path.join(shots, 'kick-alice.png') });

  await alice.click('#members-toggle');
  await alice.click('#room-list button:has-text("general")');
  await bob.click('#room-list button:has-text("general")');
}

async function main() {
  mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  let pages = [];
  try {
    const viewport = { width: 1100, height: 680 };
    const alice = await (await browser.newContext({ viewport })).newPage();
    const bob = await (await browser.newContext({ viewport })).newPage();
    const bobLink = await cuttable(bob);
    watch(alice, 'alice');
    watch(bob, 'bob');
    pages = [['alice', alice], ['bob', bob]];

    log('alice generates a dev token; bob pastes a token');
    await signIn(alice, 'alice', 1);
    if (!process.env.BOB_TOKEN) throw new Error('BOB_TOKEN is not set');
    await pasteToken(bob, process.env.BOB_TOKEN, 'bob');

    log('both join #general');
    await joinRoom(alice, 'general');
    await joinRoom(bob, 'general');

    log('a server error is shown in the banner');
    await alice.fill('#room-input', 'no-such-room');
    await alice.click('#join-room');
    await alice.locator('#banner', { hasText: "room 'no-such-room' does not exist" }).waitFor({ timeout: STEP_MS });
    await alice.click('#banner-close');
    await alice.locator('#banner').waitFor({ state: 'hidden', timeout: STEP_MS });
    if ((await alice.locator('#room-list button', { hasText: 'no-such-room' }).count()) !== 0) {
      problems.push('alice still lists a room that does not exist');
    }
    await alice.click('#room-list button:has-text("general")');

    log('alice scrolls up through the history of #general');
    const history = alice.locator('#message-list li.msg[data-id]', { hasText: 'history ' });
    await waitForCount(history, HISTORY_PAGE, 'alice: the latest page of history');
    await alice.locator('#messages').evaluate((el) => { el.scrollTop = 0; });
    await waitForCount(history, HISTORY_MESSAGES, 'alice: every older message after scrolling up');
    await alice.locator('#older', { hasText: 'Beginning of the conversation' }).waitFor({ timeout: STEP_MS });

    log('alice creates #project-x from the page; bob joins it and reads its history');
    await alice.fill('#room-input', 'project-x');
    await alice.click('#create-room');
    await alice.locator('#conv-title', { hasText: '# project-x' }).waitFor({ timeout: STEP_MS });
    await say(alice, 'first post in project-x');
    await seesOnce(alice, 'first post in project-x', 'alice');
    await joinRoom(bob, 'project-x');
    await seesOnce(bob, 'first post in project-x', 'bob');
    await alice.click('#room-list button:has-text("general")');
    await bob.click('#room-list button:has-text("general")');

    log('alice says hello, bob sees it');
    await say(alice, 'Hello from alice');
    await seesOnce(bob, 'Hello from alice', 'bob');
    await seesOnce(alice, 'Hello from alice', 'alice');
    await say(bob, 'Hi alice! <b>not bold</b>');
    await seesOnce(alice, 'Hi alice! <b>not bold</b>', 'alice');

    log('bob opens a DM with alice from her name');
    await bob.locator('#message-list .who', { hasText: 'alice' }).first().click();
    await bob.locator('#conv-title', { hasText: 'alice' }).waitFor({ timeout: STEP_MS });
    await say(bob, 'psst, a direct message');
    await seesOnce(bob, 'psst, a direct message', 'bob');
    await alice.locator('#dm-list button', { hasText: 'bob' }).waitFor({ timeout: STEP_MS });
    await alice.locator('#dm-list .badge', { hasText: '1' }).waitFor({ timeout: STEP_MS });
    await alice.click('#dm-list button:has-text("bob")');
    await seesOnce(alice, 'psst, a direct message', 'alice');
    await say(alice, 'got it');
    await seesOnce(bob, 'got it', 'bob');

    log('DMs too: alice edits her reply, bob deletes his message');
    await message(alice, 'got it').locator('button.edit').click();
    await alice.fill('#composer-input', 'got it, thanks');
    await alice.press('#composer-input', 'Enter');
    await message(bob, 'got it, thanks').locator('.edited').waitFor({ timeout: STEP_MS });
    const psstId = await message(bob, 'psst, a direct message').getAttribute('data-id');
    await message(bob, 'psst, a direct message').locator('button.delete').click();
    await seesTombstone(alice, psstId, 'alice');
    await seesTombstone(bob, psstId, 'bob');
    await alice.click('#room-list button:has-text("general")');
    await bob.click('#room-list button:has-text("general")');

    await privateRoomScenario(alice, bob, bobLink);

    log('the server stops; alice writes while it is down');
    serverDown = true;
    if ((await control('STOP')) !== 'STOPPED') throw new Error('the test harness did not stop the server');
    await alice.locator('#status.offline').waitFor({ timeout: STEP_MS });
    await bob.locator('#status.offline').waitFor({ timeout: STEP_MS });
    await say(alice, 'written while the server was down');
    await alice.locator('#message-list li.msg.pending', { hasText: 'written while the server was down' }).waitFor({ timeout: STEP_MS });

    log('the server comes back; both pages reconnect by themselves');
    if ((await control('START')) !== 'STARTED') throw new Error('the test harness did not restart the server');
    await connected(alice);
    await connected(bob);
    serverDown = false;
    await seesOnce(bob, 'written while the server was down', 'bob');
    await seesOnce(alice, 'written while the server was down', 'alice');
    for (const page of [alice, bob]) {
      await seesOnce(page, 'Hello from alice', page === alice ? 'alice' : 'bob');
    }
    await say(bob, 'welcome back');
    await seesOnce(alice, 'welcome back', 'alice');

    log('presence and typing');
    await alice.locator('#conv-sub', { hasText: '2 online' }).waitFor({ timeout: STEP_MS });
    // The server relays one `typing` per user and room every 2 s: let the
    // one sent while bob wrote "welcome back" age out.
    await bob.waitForTimeout(2100);
    await bob.locator('#composer-input').pressSequentially('typing something', { delay: 10 });
    await alice.locator('#typing', { hasText: 'bob is typing' }).waitFor({ timeout: STEP_MS });

    await bob.waitForTimeout(300);
    await alice.screenshot({ path: path.join(shots, 'chat-alice.png') });
    await bob.screenshot({ path: path.join(shots, 'chat.png') });
    log(`screenshots in ${shots}`);

    log('bob leaves: alice sees him go offline');
    await bob.context().close();
    await alice.locator('#conv-sub', { hasText: '1 online' }).waitFor({ timeout: STEP_MS });
  } catch (e) {
    // Leave evidence: what each page showed when the step failed.
    for (const [who, page] of pages) {
      await page.screenshot({ path: path.join(shots, `failed-${who}.png`) }).catch(() => {});
      const shown = await page.locator('#messages').innerText().catch(() => '?');
      log(`${who} showed:\n${shown}`);
    }
    throw e;
  } finally {
    await browser.close();
  }
}

main()
  .then(() => {
    if (problems.length) {
      for (const p of problems) console.error(`chat.mjs: FAIL ${p}`);
      process.exit(1);
    }
    log('ok');
    process.exit(0);
  })
  .catch((e) => {
    for (const p of problems) console.error(`chat.mjs: FAIL ${p}`);
    console.error(`chat.mjs: FAIL ${e.stack || e}`);
    process.exit(1);
  });
