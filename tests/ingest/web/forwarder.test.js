// The forwarder's unit tests, run in the browser by tests/ingest/test_forwarder_unit.py.
// A fake fetch and fake clients stand in for relay and the SDKs; the real ones are in
// test_browser.py. `run()` returns [{name, ok, error}].
import { createForwarder, tokenClaims, senderOf } from "./forwarder.js";

const b64 = (o) => btoa(JSON.stringify(o)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const TOKEN = `${b64({ alg: "HS256" })}.${b64({ room: "r1", session: "s1", exp: 9e9 })}.sig`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function fakeFetch(answers = []) {
  const calls = [];
  const fn = async (url, init) => {
    const body = init.body instanceof Blob ? await init.body.text() : init.body;
    calls.push({ url, init, body: JSON.parse(body) });
    const answer = answers.length ? answers.shift() : { status: 200 };
    if (answer.throws) throw new TypeError("Failed to fetch");
    const n = JSON.parse(body).items.length;
    const json = answer.json || { accepted: n, duplicate: 0, rejected: 0 };
    return new Response(JSON.stringify(json), { status: answer.status, headers: answer.headers || {} });
  };
  fn.calls = calls;
  return fn;
}

function forwarder(fetch, options = {}) {
  return createForwarder({ endpoint: "http://relay/v1/ingest", token: TOKEN, fetch,
    flushIntervalMs: 10, retryInitialMs: 5, retryMaxMs: 20, ...options });
}

async function until(check, what, timeoutMs = 3000) {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`never: ${what}`);
    await sleep(5);
  }
}

function eq(actual, expected, what) {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: ${a} != ${e}`);
}

class FakeEmitter {
  constructor() { this.handlers = {}; }
  on(name, fn) { (this.handlers[name] ||= []).push(fn); }
  off(name, fn) { this.handlers[name] = (this.handlers[name] || []).filter((h) => h !== fn); }
  emit(name, ...args) { for (const fn of this.handlers[name] || []) fn(...args); }
}

class FakeRoom extends FakeEmitter {
  constructor() {
    super();
    this.state = "connected";
    this.localParticipant = { identity: "me", sid: "PA_me", kind: 0, attributes: {} };
    this.remoteParticipants = new Map([["a", { identity: "agent-1", sid: "PA_a", kind: 4, attributes: { "lk.agent.state": "idle" } }]]);
    this.textHandlers = {};
  }
  registerTextStreamHandler(topic, fn) {
    if (this.textHandlers[topic]) throw new Error(`A text stream handler for topic "${topic}" has already been set.`);
    this.textHandlers[topic] = fn;
  }
  unregisterTextStreamHandler(topic) { delete this.textHandlers[topic]; }
}

function fakeReader(id, topic, chunks, attributes = {}) {
  return {
    info: { id, topic, attributes },
    async *[Symbol.asyncIterator]() { for (const c of chunks) { await sleep(1); yield c; } },
  };
}

const tests = {
  async "the token's room and session are the batch's"() {
    eq(tokenClaims(TOKEN).room, "r1", "claims");
    const fetch = fakeFetch();
    const fwd = forwarder(fetch);
    fwd.push({ type: "speakers", identities: ["a"] });
    await until(() => fetch.calls.length === 1, "a request");
    const { body, init } = fetch.calls[0];
    eq([body.room, body.session, body.items[0].seq], ["r1", "s1", 1], "body");
    eq([init.keepalive, init.headers.Authorization], [true, `Bearer ${TOKEN}`], "request");
    if (body.token !== undefined) throw new Error("a header request carries no token in the body");
    await fwd.close();
  },

  async "batches hold at most batchSize items, in seq order, one request at a time"() {
    const fetch = fakeFetch();
    const fwd = forwarder(fetch, { batchSize: 2 });
    for (let n = 0; n < 5; n++) fwd.push({ type: "speakers", identities: [String(n)] });
    await until(() => fwd.queue.length === 0, "all sent");
    eq(fetch.calls.map((c) => c.body.items.map((i) => i.seq)), [[1, 2], [3, 4], [5]], "batches");
    eq(fwd.stats.accepted, 5, "accepted");
    await fwd.close();
  },

  async "a partial batch goes out after flushIntervalMs"() {
    const fetch = fakeFetch();
    const fwd = forwarder(fetch, { flushIntervalMs: 30 });
    fwd.push({ type: "speakers", identities: [] });
    await sleep(5);
    eq(fetch.calls.length, 0, "not at once");
    await until(() => fetch.calls.length === 1, "after the interval");
    await fwd.close();
  },

  async "a full queue drops the oldest and reports the drops in the next batch"() {
    const fetch = fakeFetch([{ throws: true }, { throws: true }, { throws: true }]);
    const fwd = forwarder(fetch, { maxQueue: 3, batchSize: 100, retryInitialMs: 50, retryMaxMs: 50 });
    for (let n = 0; n < 5; n++) fwd.push({ type: "speakers", identities: [String(n)] });
    eq([fwd.queue.length, fwd.stats.dropped], [3, 2], "bounded");
    await until(() => fwd.queue.length === 0, "delivered after the failures");
    const good = fetch.calls[fetch.calls.length - 1].body;
    eq([good.dropped, good.items.map((i) => i.seq)], [2, [3, 4, 5]], "drops reported");
    fwd.push({ type: "speakers", identities: [] });
    await until(() => fwd.queue.length === 0, "next batch");
    eq(fetch.calls[fetch.calls.length - 1].body.dropped, undefined, "reported once");
    await fwd.close();
  },

  async "5xx and network errors are retried with backoff until delivered once"() {
    const fetch = fakeFetch([{ status: 503 }, { throws: true }, { status: 200 }]);
    const fwd = forwarder(fetch);
    fwd.push({ type: "speakers", identities: ["x"] });
    await until(() => fwd.queue.length === 0, "delivered");
    eq([fetch.calls.length, fwd.stats.failures, fwd.stats.accepted], [3, 2, 1], "retries");
    eq(fetch.calls.map((c) => c.body.items[0].seq), [1, 1, 1], "the same item each time");
    await fwd.close();
  },

  async "429 waits for Retry-After"() {
    const fetch = fakeFetch([{ status: 429, headers: { "Retry-After": "1" } }]);
    const fwd = forwarder(fetch);
    fwd.push({ type: "speakers", identities: [] });
    await until(() => fetch.calls.length === 1, "first try");
    const first = Date.now();
    await until(() => fetch.calls.length === 2, "second try", 3000);
    if (Date.now() - first < 900) throw new Error("retried before Retry-After");
    await fwd.close();
  },

  async "a 4xx batch is given up (relay will never take it), not retried"() {
    const fetch = fakeFetch([{ status: 400, json: { error: "x", reason: "malformed" } }]);
    const fwd = forwarder(fetch);
    fwd.push({ type: "speakers", identities: [] });
    await until(() => fwd.queue.length === 0, "given up");
    await sleep(30);
    eq([fetch.calls.length, fwd.stats.rejected], [1, 1], "once");
    await fwd.close();
  },

  async "a 401 with a token function is retried with the next token"() {
    const fetch = fakeFetch([{ status: 401, json: { error: "expired", reason: "expired_token" } }]);
    const tokens = [TOKEN, TOKEN, `${TOKEN}.fresh`];
    const fwd = forwarder(fetch, { token: () => (tokens.length > 1 ? tokens.shift() : tokens[0]) });
    fwd.push({ type: "speakers", identities: [] });
    await until(() => fwd.queue.length === 0, "delivered with the fresh token");
    eq(fetch.calls.map((c) => c.init.headers.Authorization.endsWith(".fresh")), [false, true], "tokens");
    await fwd.close();
  },

  async "no request is above maxBatchBytes"() {
    const fetch = fakeFetch();
    const fwd = forwarder(fetch, { batchSize: 50, maxBatchBytes: 5000 });
    for (let n = 0; n < 20; n++) fwd.push({ type: "data", topic: "t", sender: null, payload: "x".repeat(900) });
    await until(() => fwd.queue.length === 0, "all sent");
    const sizes = fetch.calls.map((c) => JSON.stringify(c.body).length);
    if (Math.max(...sizes) > 5000) throw new Error(`a body of ${Math.max(...sizes)} bytes`);
    eq(fetch.calls.flatMap((c) => c.body.items.map((i) => i.seq)).length, 20, "every item");
    await fwd.close();
  },

  async "hidden: the queue goes in a beacon with the token in the body, then for real"() {
    const fetch = fakeFetch();
    const beacons = [];
    const original = navigator.sendBeacon;
    navigator.sendBeacon = (url, blob) => { beacons.push({ url, blob }); return true; };
    try {
      const fwd = forwarder(fetch, { flushIntervalMs: 60000 });
      fwd.push({ type: "speakers", identities: ["a"] });
      fwd.push({ type: "speakers", identities: ["b"] });
      window.hide();
      eq([beacons.length, fwd.beaconed], [1, 2], "one beacon");
      const body = JSON.parse(await beacons[0].blob.text());
      eq([body.token, body.items.length, beacons[0].blob.type], [TOKEN, 2, "text/plain"], "beacon");
      window.show();
      await until(() => fwd.queue.length === 0, "sent again for real");
      eq(fetch.calls[0].body.items.map((i) => i.seq), [1, 2], "the same items");
      await fwd.close();
    } finally {
      navigator.sendBeacon = original;
    }
  },

  async "pagehide without a beacon budget falls back to a keepalive fetch"() {
    const fetch = fakeFetch();
    const original = navigator.sendBeacon;
    navigator.sendBeacon = () => false;
    try {
      const fwd = forwarder(fetch, { flushIntervalMs: 60000 });
      fwd.push({ type: "speakers", identities: [] });
      window.dispatchEvent(new Event("pagehide"));
      await until(() => fetch.calls.length === 1, "the fallback");
      const { init, body } = fetch.calls[0];
      eq([init.keepalive, init.headers, body.token], [true, undefined, TOKEN], "no headers");
      await fwd.close();
    } finally {
      navigator.sendBeacon = original;
    }
  },

  async "attachRoom forwards packets, speakers, attributes, participants and a snapshot"() {
    const fetch = fakeFetch();
    const fwd = forwarder(fetch, { batchSize: 100 });
    const room = new FakeRoom();
    fwd.attachRoom(room);
    const agent = room.remoteParticipants.get("a");
    room.emit("dataReceived", new TextEncoder().encode('{"x":1}'), agent, 0, "agent-response");
    room.emit("dataReceived", new TextEncoder().encode("server"), undefined, 0, undefined);
    room.emit("activeSpeakersChanged", [agent, room.localParticipant]);
    room.emit("participantAttributesChanged", { k: "v" }, { ...agent, attributes: { k: "v" } });
    room.emit("participantDisconnected", agent);
    const items = fwd.queue.map(({ seq, ts, ...rest }) => rest);
    eq(items[0], { type: "participant", change: "joined", sender: { identity: "me", sid: "PA_me", kind: "standard" }, attributes: {} }, "local");
    eq(items[1].sender.kind, "agent", "kind 4");
    eq(items[1].attributes, { "lk.agent.state": "idle" }, "attributes at join");
    eq(items[2], { type: "data", topic: "agent-response", sender: senderOf(agent), payload: '{"x":1}' }, "data");
    eq([items[3].topic, items[3].sender], ["", null], "server packet");
    eq(items[4], { type: "speakers", identities: ["agent-1", "me"] }, "speakers");
    eq([items[5].type, items[5].changed], ["attributes", { k: "v" }], "attributes");
    eq([items[6].type, items[6].change], ["participant", "left"], "left");
    eq(Object.keys(room.textHandlers).sort(), ["lk.chat", "lk.transcription"], "text topics");
    fwd.detach();
    eq(Object.keys(room.textHandlers), [], "detached");
    room.emit("activeSpeakersChanged", []);
    eq(fwd.queue.length, 7, "nothing after detach");
    await fwd.close();
  },

  async "teeTextStream: the page's handler reads the stream and the forwarder forwards it"() {
    const fetch = fakeFetch();
    const fwd = forwarder(fetch, { batchSize: 100 });
    const room = new FakeRoom();
    let read = null;
    const mine = async (reader, who) => { read = [who.identity, reader.info.id, await reader.readAll()]; };
    room.registerTextStreamHandler("lk.transcription", fwd.teeTextStream(mine));
    fwd.attachRoom(room, { textStreams: false });  // the page keeps its own registration
    room.textHandlers["lk.transcription"](fakeReader("TS_1", "lk.transcription", ["Hel", "lo"], { "lk.segment_id": "S1" }), { identity: "agent-1" });
    await until(() => read !== null && fwd.queue.some((i) => i.type === "text"), "both read it");
    eq(read, ["agent-1", "TS_1", "Hello"], "the page's handler");
    const { seq, ts, ...text } = fwd.queue.find((i) => i.type === "text");
    eq(text, { type: "text", topic: "lk.transcription", stream_id: "TS_1", text: "Hello",
      sender: { identity: "agent-1", sid: null, kind: "unknown" }, attributes: { "lk.segment_id": "S1" } }, "forwarded");
    let threw = false;
    try { fwd.attachRoom(new FakeRoom()); room.registerTextStreamHandler("lk.transcription", () => {}); } catch (e) { threw = true; }
    if (!threw) throw new Error("livekit-client refuses a second handler; so does the fake");
    await fwd.close();
  },

  async "attachLiveAvatar forwards the SDK's agent events as agent-response packets"() {
    const fetch = fakeFetch();
    const fwd = forwarder(fetch, { batchSize: 100 });
    const session = new FakeEmitter();
    session.sessionId = "sess9";
    fwd.attachLiveAvatar(session);
    session.emit("user.transcription", { event_id: "e1", event_type: "user.transcription", text: "hi" });
    session.emit("session.stopped", { event_id: "e2", event_type: "session.stopped", session_id: undefined, stop_reason: "USER_CLOSED" });
    eq(fwd.queue.length, 2, "two events");
    const first = fwd.queue[0];
    eq([first.topic, first.sender.identity, first.sender.kind], ["agent-response", "liveavatar-agent-sess9", "agent"], "as sent");
    eq(JSON.parse(first.payload), { event_id: "e1", event_type: "user.transcription", text: "hi", session_id: "sess9" }, "envelope");
    eq(JSON.parse(fwd.queue[1].payload).stop_reason, "USER_CLOSED", "fields kept");
    fwd.detach();
    session.emit("user.transcription", { event_id: "e3", event_type: "user.transcription", text: "x" });
    eq(fwd.queue.length, 2, "detached");
    await fwd.close();
  },

  async "attachLiveLayer forwards ControlledSession data messages"() {
    const fetch = fakeFetch();
    const fwd = forwarder(fetch, { batchSize: 100 });
    let callback = null;
    let unsubscribed = false;
    const session = { subscribeToDataMessages(cb) { callback = cb; return () => { unsubscribed = true; }; } };
    fwd.attachLiveLayer(session);
    callback({ type: "avatar_start_talking" }, { identity: "avatar", sid: "PA_v", kind: 0 });
    callback('{"type":"user_start_talking"}', undefined);
    eq(fwd.queue.map((i) => [i.topic, i.payload, i.sender && i.sender.identity]),
      [["", '{"type":"avatar_start_talking"}', "avatar"], ["", '{"type":"user_start_talking"}', null]], "items");
    fwd.detach();
    eq(unsubscribed, true, "unsubscribed");
    await fwd.close();
  },
};

export async function run() {
  const results = [];
  for (const [name, test] of Object.entries(tests)) {
    try {
      await test();
      results.push({ name, ok: true, error: null });
    } catch (err) {
      results.push({ name, ok: false, error: String(err && err.stack || err) });
    }
  }
  return results;
}
