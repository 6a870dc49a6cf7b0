// Element's ways on an amateur-radio (FCC Part 97) node, with matrix-js-sdk and its Rust crypto
// (the stack Element uses): callsign sign-up, an Element-style DM that asks for encryption and
// gets a plain room, messages in the clear both ways, and a refused attempt to turn encryption on.
// Usage: HS_URL=http://127.0.0.1:P node part97.mjs   (exit 0 = all passed; the server must be in
// part97 mode with registration open). SDK_LOG=debug shows the SDK's logging.
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { harness, poll, quietSDK, register } from "./harness.mjs";

const HS = process.env.HS_URL || "http://127.0.0.1:18120";
const MEGOLM = "m.megolm.v1.aes-sha2";
quietSDK();
if (!process.env.SDK_LOG) for (const k of ["debug", "info", "warn", "error", "trace"]) console[k] = () => {};

const { clients, finish, step, waitFor } = harness({ label: "jssdk-part97", overallMs: 90_000, stepMs: 30_000, fatalByDefault: true });

// A started client with Rust crypto, as Element runs it.
async function elementClient(creds) {
  const c = sdk.createClient({ baseUrl: HS, accessToken: creds.access_token, userId: creds.user_id, deviceId: creds.device_id, logger });
  clients.push(c);
  await c.initRustCrypto({ useIndexedDB: false });
  const ready = waitFor(c, sdk.ClientEvent.Sync, (s) => s === "PREPARED", `PREPARED for ${creds.user_id}`);
  c.startClient({ initialSyncLimit: 20, lazyLoadMembers: true });
  await ready;
  return c;
}

let alice, bob, room;

await step("the node tells clients encryption is off (well-known, versions)", async () => {
  const wk = await (await fetch(`${HS}/.well-known/matrix/client`)).json();
  if (wk["io.element.e2ee"]?.force_disable !== true || wk["io.element.e2ee"]?.default !== false) {
    throw new Error(`well-known: ${JSON.stringify(wk)}`);
  }
  const v = await (await fetch(`${HS}/_matrix/client/versions`)).json();
  if (v.unstable_features?.["io.repeater.part97"] !== true) throw new Error(`versions: ${JSON.stringify(v)}`);
});

await step("a non-callsign user name is refused; callsigns register and sync with Rust crypto", async () => {
  try {
    await register(HS, "alice");
    throw new Error("registration of 'alice' succeeded");
  } catch (e) {
    if (e.errcode !== "M_INVALID_USERNAME") throw e;
  }
  const [ra, rb] = await Promise.all([register(HS, "k5dlq-1"), register(HS, "w1aw-2")]);
  [alice, bob] = await Promise.all([elementClient(ra), elementClient(rb)]);
  const dn = (await alice.getProfileInfo(alice.getUserId())).displayname;
  if (dn !== "K5DLQ-1") throw new Error(`display name ${dn}, want the callsign in capitals`);
});

await step("an Element DM (is_direct, m.room.encryption in initial_state) is made unencrypted, and says so", async () => {
  const bId = bob.getUserId();
  const invited = waitFor(bob, sdk.RoomMemberEvent.Membership, (ev, m) => m.userId === bId && m.membership === "invite", "bob's invite");
  const res = await alice.createRoom({
    preset: sdk.Preset.TrustedPrivateChat, visibility: sdk.Visibility.Private, is_direct: true, invite: [bId],
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } }],
  });
  room = res.room_id;
  if (res["io.repeater.part97"]?.encryption_removed !== true) throw new Error(`createRoom answer: ${JSON.stringify(res)}`);
  await alice.setAccountData(sdk.EventType.Direct, { [bId]: [room] });
  await invited;
  const joined = waitFor(alice, sdk.RoomMemberEvent.Membership, (ev, m) => m.roomId === room && m.userId === bId && m.membership === "join", "bob's join");
  await bob.joinRoom(room);
  await joined;
  for (const [c, who] of [[alice, "alice"], [bob, "bob"]]) {
    if (await c.getCrypto().isEncryptionEnabledInRoom(room)) throw new Error(`${who}'s client treats the room as encrypted`);
  }
});

await step("messages go in the clear both ways, stored as plain m.room.message", async () => {
  for (const [from, to, body] of [[alice, bob, "QST de K5DLQ"], [bob, alice, "K5DLQ de W1AW, 73"]]) {
    const seen = waitFor(to, sdk.RoomEvent.Timeline, (ev) => ev.getRoomId() === room && ev.getType() === "m.room.message" && ev.getContent().body === body, `"${body}"`);
    const { event_id: id } = await from.sendTextMessage(room, body);
    const [ev] = await seen;
    if (ev.isEncrypted() || ev.getId() !== id) throw new Error(`received ${ev.getId()} encrypted=${ev.isEncrypted()}`);
    const raw = await from.http.authedRequest(sdk.Method.Get, `/rooms/${encodeURIComponent(room)}/event/${encodeURIComponent(id)}`);
    if (raw.type !== "m.room.message" || raw.content?.body !== body) throw new Error(`stored as ${JSON.stringify(raw)}`);
  }
  for (const [c, who] of [[alice, "alice"], [bob, "bob"]]) {
    if (await c.getCrypto().isEncryptionEnabledInRoom(room)) throw new Error(`${who}'s client now treats the room as encrypted`);
  }
});

await step("turning encryption on is refused with 403 M_FORBIDDEN naming Part 97", async () => {
  try {
    await alice.sendStateEvent(room, "m.room.encryption", { algorithm: MEGOLM }, "");
    throw new Error("m.room.encryption accepted");
  } catch (e) {
    if (e.httpStatus !== 403 || e.errcode !== "M_FORBIDDEN" || !String(e.data?.error).includes("Part 97")) throw e;
  }
  await poll(async () => !(await alice.getCrypto().isEncryptionEnabledInRoom(room)), "the room staying unencrypted", 2000);
});

finish();
