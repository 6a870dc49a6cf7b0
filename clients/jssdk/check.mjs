// End-to-end check of a Repeater homeserver with matrix-js-sdk.
// Usage: HS_URL=http://127.0.0.1:18118 node check.mjs   (exit 0 = all steps passed)
// SDK_LOG=debug shows the SDK's own logging (silent by default).
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { harness, quietSDK } from "./harness.mjs";

const HS = process.env.HS_URL || "http://127.0.0.1:18118";
const OVERALL_MS = 60_000;
const STEP_MS = 15_000;
const N_MSGS = 30;
const PASSWORD = "correct-horse-battery-staple";
const suffix = Math.random().toString(36).slice(2, 8);

quietSDK();

const { clients, finish, step, waitFor } = harness({ label: "jssdk", overallMs: OVERALL_MS, stepMs: STEP_MS, fatalByDefault: false });

async function register(localpart) {
  const anon = sdk.createClient({ baseUrl: HS });
  let session = null;
  try {
    // First round without auth: the server must answer 401 with the UIA flows and a session.
    const res = await anon.registerRequest({ username: localpart, password: PASSWORD });
    if (res.access_token) return res; // server skipped UIA (allowed, though unusual)
  } catch (e) {
    if (e.httpStatus !== 401) throw e;
    const flows = e.data?.flows ?? [];
    if (!flows.some((f) => f.stages?.length === 1 && f.stages[0] === "m.login.dummy")) {
      throw new Error(`401 UIA response has no m.login.dummy flow: ${JSON.stringify(e.data)}`);
    }
    session = e.data.session ?? null;
  }
  const res = await anon.register(localpart, PASSWORD, session, { type: "m.login.dummy" });
  for (const k of ["user_id", "access_token", "device_id"]) {
    if (!res[k]) throw new Error(`register response lacks ${k}: ${JSON.stringify(res)}`);
  }
  return res;
}

let alice, bob, aliceId, bobId, roomId;
const bobLive = []; // alice's messages as bob received them live, in order

await step("register alice and bob (m.login.dummy UIA)", async () => {
  for (const name of ["alice", "bob"]) {
    const r = await register(`${name}-${suffix}`);
    const c = sdk.createClient({ baseUrl: HS, accessToken: r.access_token, userId: r.user_id, deviceId: r.device_id, logger });
    clients.push(c);
    if (name === "alice") { alice = c; aliceId = r.user_id; } else { bob = c; bobId = r.user_id; }
  }
}, { fatal: true });

await step("start both clients, initial sync reaches PREPARED", async () => {
  await Promise.all(clients.map((c) => {
    const ready = waitFor(c, sdk.ClientEvent.Sync, (state) => state === "PREPARED", `PREPARED for ${c.getUserId()}`);
    const failed = waitFor(c, sdk.ClientEvent.Sync, (state) => state === "ERROR", "sync ERROR");
    c.startClient({ initialSyncLimit: 20 });
    return Promise.race([ready, failed.then(([, , data]) => { throw data?.error ?? new Error("sync ERROR"); })])
      .finally(() => { ready.cancel(); failed.cancel(); });
  }));
}, { fatal: true });

bob.on(sdk.RoomEvent.Timeline, (ev, room, toStart) => {
  if (room?.roomId !== roomId || ev.getType() !== "m.room.message") return;
  if (!toStart) bobLive.push(ev);
});

await step("alice creates a private_chat room and invites bob; bob joins; alice sees the join", async () => {
  ({ room_id: roomId } = await alice.createRoom({ preset: sdk.Preset.PrivateChat, name: `jssdk check ${suffix}` }));
  const invited = waitFor(bob, sdk.RoomMemberEvent.Membership, (ev, m) =>
    m.roomId === roomId && m.userId === bobId && m.membership === "invite", "bob's invite (RoomMember.membership)");
  await alice.invite(roomId, bobId);
  await invited;
  const joined = waitFor(alice, sdk.RoomMemberEvent.Membership, (ev, m) =>
    m.roomId === roomId && m.userId === bobId && m.membership === "join", "bob's join as seen by alice");
  await bob.joinRoom(roomId);
  await joined;
  const name = bob.getRoom(roomId)?.name;
  if (name !== `jssdk check ${suffix}`) throw new Error(`bob sees room name ${JSON.stringify(name)}`);
}, { fatal: true });

await step(`alice sends ${N_MSGS} messages; bob receives all in order (Room.timeline)`, async () => {
  const all = waitFor(bob, sdk.RoomEvent.Timeline, () => bobLive.length >= N_MSGS, `${N_MSGS} messages at bob`);
  for (let i = 0; i < N_MSGS; i++) await alice.sendTextMessage(roomId, `msg ${i}`);
  if (bobLive.length < N_MSGS) {
    await all.catch((e) => { throw new Error(`${e.message}; got ${bobLive.length}`); });
  } else all.cancel();
  const bodies = bobLive.map((e) => e.getContent().body);
  const want = Array.from({ length: N_MSGS }, (_, i) => `msg ${i}`);
  if (JSON.stringify(bodies) !== JSON.stringify(want)) throw new Error(`out of order or wrong: ${bodies.join(", ")}`);
  if (bobLive.some((e) => e.getSender() !== aliceId)) throw new Error("a message has the wrong sender");
});

await step("bob types; alice sees RoomMember.typing", async () => {
  const typing = waitFor(alice, sdk.RoomMemberEvent.Typing, (ev, m) =>
    m.roomId === roomId && m.userId === bobId && m.typing, "bob typing at alice");
  await bob.sendTyping(roomId, true, 10_000);
  await typing;
});

await step("bob sends a read receipt on the last message; alice sees it (Room.receipt)", async () => {
  const last = bobLive.at(-1) ?? bob.getRoom(roomId).getLiveTimeline().getEvents().at(-1);
  const id = last.getId();
  const receipt = waitFor(alice, sdk.RoomEvent.Receipt, (ev, room) =>
    room.roomId === roomId && ev.getContent()?.[id]?.["m.read"]?.[bobId] !== undefined, `bob's m.read receipt on ${id}`);
  await bob.sendReadReceipt(last);
  await receipt;
  const upTo = alice.getRoom(roomId).getEventReadUpTo(bobId);
  if (upTo !== id) throw new Error(`alice's room says bob read up to ${upTo}, want ${id}`);
});

await step("both set presence online with status_msg; each sees the other's", async () => {
  // The SDK emits User.presence only when the presence value changes (both are already "online"
  // from syncing), so also accept User.lastPresenceTs, which fires for every m.presence event.
  const seesOnline = (c, other, msg) => {
    const ok = () => { const u = c.getUser(other); return u?.presence === "online" && u.presenceStatusMsg === msg; };
    if (ok()) return Promise.resolve();
    const what = `${other} online with status "${msg}" at ${c.getUserId()}`;
    const evs = [sdk.UserEvent.Presence, sdk.UserEvent.CurrentlyActive, sdk.UserEvent.LastPresenceTs];
    const waits = evs.map((e) => waitFor(c, e, (ev, u) => u?.userId === other && ok(), what));
    return Promise.race(waits).finally(() => waits.forEach((w) => w.cancel()));
  };
  const aliceSees = seesOnline(alice, bobId, "bob here");
  const bobSees = seesOnline(bob, aliceId, "alice here");
  await alice.setPresence({ presence: "online", status_msg: "alice here" });
  await bob.setPresence({ presence: "online", status_msg: "bob here" });
  await Promise.all([aliceSees, bobSees]);
});

// Bob's first client saw the whole room live (its join sync reached back to m.room.create), so a
// fresh client for bob starts from a limited initial sync (last 20 events) and must paginate.
await step("bob restarts (fresh store) and paginates back to m.room.create; each message seen once", async () => {
  const fresh = sdk.createClient({ baseUrl: HS, accessToken: bob.getAccessToken(), userId: bobId, deviceId: bob.getDeviceId(), logger });
  bob.stopClient();
  clients[clients.indexOf(bob)] = bob = fresh;
  const seen = new Map(); // event_id -> times emitted on Room.timeline
  bob.on(sdk.RoomEvent.Timeline, (ev, room) => {
    if (room?.roomId === roomId && ev.getType() === "m.room.message") seen.set(ev.getId(), (seen.get(ev.getId()) ?? 0) + 1);
  });
  const ready = waitFor(bob, sdk.ClientEvent.Sync, (state) => state === "PREPARED", "PREPARED for fresh bob client");
  bob.startClient({ initialSyncLimit: 20 });
  await ready;
  const room = bob.getRoom(roomId);
  if (!room) throw new Error("fresh client has no room after initial sync");
  const hasCreate = () => room.getLiveTimeline().getEvents().some((e) => e.getType() === "m.room.create");
  let calls = 0;
  while (!hasCreate()) {
    if (++calls > 10) throw new Error("no m.room.create after 10 scrollback calls");
    const before = room.getLiveTimeline().getEvents().length;
    await bob.scrollback(room, 10);
    if (room.getLiveTimeline().getEvents().length === before && !hasCreate()) {
      throw new Error(`scrollback added no events (timeline has ${before}, pagination token ${room.oldState.paginationToken})`);
    }
  }
  if (calls === 0) throw new Error("initial sync already reached m.room.create: timeline limit 20 not applied?");
  const bodies = room.getLiveTimeline().getEvents().filter((e) => e.getType() === "m.room.message").map((e) => e.getContent().body);
  const want = Array.from({ length: N_MSGS }, (_, i) => `msg ${i}`);
  if (JSON.stringify(bodies) !== JSON.stringify(want)) throw new Error(`timeline messages after ${calls} scrollbacks: ${bodies.join(", ")}`);
  const dup = [...seen].filter(([, n]) => n !== 1);
  if (dup.length) throw new Error(`events emitted more than once: ${JSON.stringify(dup)}`);
  if (seen.size !== N_MSGS) throw new Error(`bob saw ${seen.size} distinct messages, want ${N_MSGS}`);
  console.log(`     (${calls} scrollback calls)`);
});

await step("bob leaves; alice sees the leave", async () => {
  const left = waitFor(alice, sdk.RoomMemberEvent.Membership, (ev, m) =>
    m.roomId === roomId && m.userId === bobId && m.membership === "leave", "bob's leave at alice");
  await bob.leave(roomId);
  await left;
});

finish();
