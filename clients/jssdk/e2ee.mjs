// End-to-end encryption check of Repeater with matrix-js-sdk's Rust crypto (the stack Element uses):
// encrypted DMs on one server and across two federating servers, including a second device that
// appears mid-conversation (device-list updates over federation).
// Usage: HS0_URL=http://127.0.0.1:P0 HS1_URL=http://127.0.0.1:P1 node e2ee.mjs   (exit 0 = all passed)
// HS0 and HS1 must federate with each other. SDK_LOG=debug shows the SDK's and the Rust crypto's logging.
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { harness, poll, quietSDK, register } from "./harness.mjs";

const HS0 = process.env.HS0_URL || "http://127.0.0.1:18118";
const HS1 = process.env.HS1_URL || "http://127.0.0.1:18119";
const OVERALL_MS = 110_000;
const STEP_MS = 60_000;
const PASSWORD = "correct-horse-battery-staple";
const MEGOLM = "m.megolm.v1.aes-sha2";
const suffix = Math.random().toString(36).slice(2, 8);

quietSDK();
// The Rust crypto's tracing writes straight to console.debug/info/warn/error: silence those as
// well (this script reports through console.log only).
if (!process.env.SDK_LOG) for (const k of ["debug", "info", "warn", "error", "trace"]) console[k] = () => {};

const { clients, finish, step, waitFor } = harness({ label: "jssdk-e2ee", overallMs: OVERALL_MS, stepMs: STEP_MS, fatalByDefault: true });

async function login(hs, userId) {
  const anon = sdk.createClient({ baseUrl: hs, logger });
  return anon.loginRequest({
    type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password: PASSWORD,
    initial_device_display_name: "e2ee check second device",
  });
}

// A client with Rust crypto (in-memory store), started and PREPARED, whose device keys the
// server has (checked with /keys/query, i.e. what other users' clients will see).
// Like Element: lazy-loaded members (the crypto then loads the full member list via /members).
// Records the users each client's /sync responses listed in device_lists.changed, and the state
// event types its /sync delivered for joined rooms (state and timeline sections), for diagnostics.
const changedSeen = new Map(); // client -> Set of user IDs
const joinedStateSeen = new Map(); // client -> Map room ID -> Set of state event types
async function cryptoClient(hs, creds) {
  const changed = new Set();
  const joinedState = new Map();
  const fetchFn = async (url, init) => {
    const res = await fetch(url, init);
    if (String(url).includes("/sync?") && res.ok) {
      res.clone().json().then((b) => {
        b.device_lists?.changed?.forEach((u) => changed.add(u));
        for (const [rid, r] of Object.entries(b.rooms?.join ?? {})) {
          const types = joinedState.get(rid) ?? new Set();
          joinedState.set(rid, types);
          for (const e of [...(r.state?.events ?? []), ...(r.timeline?.events ?? [])]) {
            if (e.state_key !== undefined) types.add(e.type);
          }
        }
      }, () => {});
    }
    return res;
  };
  const c = sdk.createClient({ baseUrl: hs, accessToken: creds.access_token, userId: creds.user_id, deviceId: creds.device_id, logger, fetchFn });
  clients.push(c);
  changedSeen.set(c, changed);
  joinedStateSeen.set(c, joinedState);
  await c.initRustCrypto({ useIndexedDB: false });
  const ready = waitFor(c, sdk.ClientEvent.Sync, (s) => s === "PREPARED", `PREPARED for ${creds.user_id}`);
  const failed = waitFor(c, sdk.ClientEvent.Sync, (s) => s === "ERROR", "sync ERROR");
  c.startClient({ initialSyncLimit: 20, lazyLoadMembers: true });
  await Promise.race([ready, failed.then(([, , data]) => { throw data?.error ?? new Error("sync ERROR"); })])
    .finally(() => { ready.cancel(); failed.cancel(); });
  await poll(async () => {
    const r = await c.http.authedRequest(sdk.Method.Post, "/keys/query", undefined, { device_keys: { [creds.user_id]: [] } });
    const dev = r.device_keys?.[creds.user_id]?.[creds.device_id];
    return dev && dev.keys?.[`curve25519:${creds.device_id}`] && dev.keys?.[`ed25519:${creds.device_id}`];
  }, `device keys of ${creds.user_id}/${creds.device_id} on its server`);
  return c;
}

const isMsg = (ev, roomId) => ev.getRoomId() === roomId && ev.getType() === "m.room.message";

// Resolves with the event once `c` has decrypted an m.room.message with this body in the room.
// Looks at what is already in the timeline too, and explains a timeout (encrypted event seen or
// not, decryption failure code).
function waitDecrypted(c, roomId, body, who, ms = STEP_MS) {
  const ok = (ev) => isMsg(ev, roomId) && ev.isEncrypted() && !ev.isDecryptionFailure() && ev.getClearContent()?.body === body;
  let done, timer;
  const p = new Promise((resolve, reject) => {
    const check = (ev) => { if (ev && ok(ev)) { done(); resolve(ev); } };
    const onTimeline = (ev) => check(ev);
    const onDecrypted = (ev) => check(ev);
    done = () => { clearTimeout(timer); c.off(sdk.RoomEvent.Timeline, onTimeline); c.off(sdk.MatrixEventEvent.Decrypted, onDecrypted); };
    c.on(sdk.RoomEvent.Timeline, onTimeline);
    c.on(sdk.MatrixEventEvent.Decrypted, onDecrypted);
    timer = setTimeout(() => {
      done();
      const evs = c.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
      const enc = evs.filter((e) => e.getWireType() === "m.room.encrypted");
      const detail = enc.map((e) => `${e.getId()}:${e.isDecryptionFailure() ? e.decryptionFailureReason : JSON.stringify(e.getClearContent()?.body ?? null)}`);
      reject(new Error(`timed out after ${ms} ms waiting for ${who} to decrypt ${JSON.stringify(body)}; ` +
        `room ${c.getRoom(roomId) ? "known" : "unknown"}, ${evs.length} timeline events, encrypted ones: [${detail.join(", ")}]`));
    }, ms);
    for (const ev of c.getRoom(roomId)?.getLiveTimeline().getEvents() ?? []) check(ev);
  });
  p.catch(() => {});
  return p;
}

// Sends an encrypted text message and checks that what the server stored is ciphertext.
async function sendEncrypted(c, roomId, body) {
  const { event_id: eventId } = await c.sendTextMessage(roomId, body);
  const raw = await c.http.authedRequest(sdk.Method.Get, `/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(eventId)}`);
  if (raw.type !== "m.room.encrypted" || raw.content?.algorithm !== MEGOLM || typeof raw.content?.ciphertext !== "string") {
    throw new Error(`server has ${eventId} as ${JSON.stringify(raw)}, want an ${MEGOLM} m.room.encrypted event`);
  }
  if (JSON.stringify(raw).includes(body)) throw new Error(`plaintext visible on the server: ${JSON.stringify(raw)}`);
  return eventId;
}

// Element's DM flow: createRoom(trusted_private_chat, is_direct, invite, m.room.encryption in
// initial_state), m.direct account data on both sides; the invitee sees is_direct on its invite
// and joins without via servers.
async function dm(a, b, label) {
  const aId = a.getUserId(), bId = b.getUserId();
  const invited = waitFor(b, sdk.RoomMemberEvent.Membership, (ev, m) => m.userId === bId && m.membership === "invite",
    `${label}: bob's invite`);
  const { room_id: roomId } = await a.createRoom({
    preset: sdk.Preset.TrustedPrivateChat, visibility: sdk.Visibility.Private, is_direct: true, invite: [bId],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }],
  });
  await a.setAccountData(sdk.EventType.Direct, { [bId]: [roomId] });
  const [, member] = await invited;
  if (member.roomId !== roomId) throw new Error(`bob was invited to ${member.roomId}, want ${roomId}`);
  if (member.events.member?.getContent().is_direct !== true || member.getDMInviter() !== aId) {
    throw new Error(`bob's invite is not marked is_direct by ${aId}: ${JSON.stringify(member.events.member?.getContent())}`);
  }
  const joined = waitFor(a, sdk.RoomMemberEvent.Membership, (ev, m) =>
    m.roomId === roomId && m.userId === bId && m.membership === "join", `${label}: bob's join as seen by alice`);
  await b.joinRoom(roomId);
  await b.setAccountData(sdk.EventType.Direct, { [aId]: [roomId] });
  await joined;
  for (const [c, who] of [[a, "alice"], [b, "bob"]]) {
    await poll(() => c.getCrypto().isEncryptionEnabledInRoom(roomId), `${label}: ${who}'s client treating the room as encrypted`)
      .catch((e) => {
        const types = [...(joinedStateSeen.get(c).get(roomId) ?? [])].sort().join(", ");
        throw new Error(`${e.message}; state event types /sync delivered for the joined room (rooms.join state + timeline): ${types || "none"}`);
      });
  }
  return roomId;
}

// Sender sends; every receiver decrypts.
async function exchange(from, roomId, body, receivers) {
  const waits = receivers.map(([c, who]) => waitDecrypted(c, roomId, body, who));
  const eventId = await sendEncrypted(from, roomId, body);
  const evs = await Promise.all(waits);
  for (const ev of evs) {
    if (ev.getId() !== eventId) throw new Error(`decrypted event ${ev.getId()}, sent ${eventId}`);
    if (ev.getSender() !== from.getUserId()) throw new Error(`sender ${ev.getSender()}, want ${from.getUserId()}`);
  }
}

// ---------------------------------------------------------------- one server
let alice, bob, room;

await step("s0: alice and bob register, init Rust crypto, sync; device keys uploaded", async () => {
  const [ra, rb] = await Promise.all([register(HS0, `alice-${suffix}`), register(HS0, `bob-${suffix}`)]);
  [alice, bob] = await Promise.all([cryptoClient(HS0, ra), cryptoClient(HS0, rb)]);
});

await step("s0: alice opens an encrypted DM with bob (is_direct, m.room.encryption); bob joins", async () => {
  room = await dm(alice, bob, "s0");
});

await step("s0: alice sends an encrypted message; bob decrypts it", async () => {
  await exchange(alice, room, `hello bob, secretly ${suffix}`, [[bob, "bob"]]);
});

await step("s0: bob replies encrypted; alice decrypts it", async () => {
  await exchange(bob, room, `hi alice, secretly ${suffix}`, [[alice, "alice"]]);
});

// ---------------------------------------------------------------- two servers
let fAlice, fBob, fBob2, fRoom, fBobId;

await step("federation: alice on s0 and bob on s1 register, init Rust crypto, sync", async () => {
  const [ra, rb] = await Promise.all([register(HS0, `falice-${suffix}`), register(HS1, `fbob-${suffix}`)]);
  fBobId = rb.user_id;
  if (ra.user_id.split(":")[1] === fBobId.split(":")[1]) throw new Error(`both users on ${fBobId.split(":")[1]}`);
  [fAlice, fBob] = await Promise.all([cryptoClient(HS0, ra), cryptoClient(HS1, rb)]);
});

await step("federation: alice opens an encrypted DM with bob (invite over federation); bob joins", async () => {
  fRoom = await dm(fAlice, fBob, "federation");
});

await step("federation: alice sends encrypted; bob decrypts (keys/query + keys/claim over federation)", async () => {
  await exchange(fAlice, fRoom, `hello remote bob ${suffix}`, [[fBob, "bob"]]);
});

await step("federation: bob replies encrypted; alice decrypts", async () => {
  await exchange(fBob, fRoom, `hi remote alice ${suffix}`, [[fAlice, "alice"]]);
});

await step("federation: bob logs in a second device on s1 (Rust crypto, keys uploaded)", async () => {
  changedSeen.get(fAlice).clear();
  fBob2 = await cryptoClient(HS1, await login(HS1, fBobId));
  if (fBob2.getDeviceId() === fBob.getDeviceId()) throw new Error("login returned the same device");
});

await step("federation: alice's client learns bob's new device (device_lists.changed over federation)", async () => {
  const id = fBob2.getDeviceId();
  await poll(async () => {
    const devs = await fAlice.getCrypto().getUserDeviceInfo([fBobId]);
    return devs.get(fBobId)?.has(id);
  }, `bob's device ${id} in alice's device list`);
  // Rust crypto re-queries a tracked user's keys only when /sync lists them as changed.
  if (!changedSeen.get(fAlice).has(fBobId)) throw new Error(`alice's /sync never listed ${fBobId} in device_lists.changed`);
});

await step("federation: alice sends encrypted; both of bob's devices decrypt", async () => {
  await exchange(fAlice, fRoom, `to both of your devices ${suffix}`, [[fBob, "bob's first device"], [fBob2, "bob's second device"]]);
});

await step("federation: bob's second device replies encrypted; alice and bob's first device decrypt", async () => {
  await exchange(fBob2, fRoom, `from my new device ${suffix}`, [[fAlice, "alice"], [fBob, "bob's first device"]]);
});

finish();
