// relay browser forwarder: posts what a page sees in a LiveKit room to relay's
// POST /v1/ingest. Dependency-free ES module; types in forwarder.d.ts. See docs/ingest.md.
//
//   const fwd = createForwarder({ endpoint: "https://relay.example/v1/ingest", token });
//   fwd.attachRoom(room);  // or fwd.attachLiveAvatar(session) / fwd.attachLiveLayer(session)

const KIND_NAMES = ["standard", "ingress", "egress", "sip", "agent"];
const TEXT_TOPICS = ["lk.transcription", "lk.chat"];
const LIVEAVATAR_AGENT_EVENTS = [
  "session.updated", "session.state_updated", "user.speak_started", "user.speak_ended",
  "user.transcription", "user.transcription.chunk", "avatar.transcription",
  "avatar.transcription.chunk", "avatar.speak_started", "avatar.speak_ended",
  "elevenlabs_agent_event", "session.stopped",
];
const DEFAULTS = {
  batchSize: 50,            // items per request (the relay caps it too)
  flushIntervalMs: 1000,    // a partial batch waits at most this long
  maxQueue: 2000,           // items kept while the relay is away; beyond it the oldest go
  maxBatchBytes: 60000,     // below the browsers' 64 KiB keepalive/beacon budget
  retryInitialMs: 500,
  retryMaxMs: 30000,
};

/** The room and session a token was minted for (its payload, not verified here). */
export function tokenClaims(token) {
  const part = token.split(".")[1] || "";
  const text = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(text, (c) => c.charCodeAt(0))));
}

/** A participant as the contract names it: identity, sid, kind. */
export function senderOf(participant) {
  if (!participant) return null;
  const kind = typeof participant.kind === "number" ? KIND_NAMES[participant.kind] : participant.kind;
  return { identity: participant.identity, sid: participant.sid || null, kind: kind || "unknown" };
}

function randomId() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

export function createForwarder(options) {
  return new Forwarder(options);
}

export class Forwarder {
  constructor(options) {
    this.options = { ...DEFAULTS, ...options };
    if (!this.options.endpoint) throw new Error("forwarder: 'endpoint' is required");
    if (!this.options.token) throw new Error("forwarder: 'token' is required");
    const claims = tokenClaims(this._token());
    this.room = this.options.room || claims.room;
    this.session = this.options.session || claims.session;
    this.client = randomId();
    this.queue = [];          // items not yet acknowledged, oldest first
    this.beaconed = 0;        // the first `beaconed` of the queue went out in a beacon
    this.seq = 0;
    this.dropped = 0;         // dropped since the last acknowledged batch
    this.stats = { sent: 0, accepted: 0, duplicate: 0, rejected: 0, dropped: 0, failures: 0 };
    this._fetch = this.options.fetch || globalThis.fetch.bind(globalThis);
    this._inFlight = null;
    this._retryMs = 0;
    this._timer = null;
    this._detachers = [];
    // Hidden: beacon what is queued. Visible again: send it for real (answered duplicate
    // if the beacon got there), so nothing rests on a beacon nobody confirmed.
    this._onHidden = () => {
      if (document.visibilityState === "hidden") this.flushOnExit();
      else if (this.beaconed > 0) this.flush();
    };
    this._onPageHide = () => this.flushOnExit();
    if (typeof document !== "undefined") {
      document.addEventListener("visibilitychange", this._onHidden);
      window.addEventListener("pagehide", this._onPageHide);
    }
  }

  _token() {
    const t = this.options.token;
    return typeof t === "function" ? t() : t;
  }

  /** Queue one item (`type` and its fields); `seq` and `ts` are stamped here. */
  push(item) {
    this.seq += 1;
    this.queue.push({ seq: this.seq, ts: Date.now(), ...item });
    if (this.queue.length > this.options.maxQueue) {
      this.queue.shift();
      this.beaconed = Math.max(0, this.beaconed - 1);
      this.dropped += 1;
      this.stats.dropped += 1;
    }
    if (this.queue.length - this.beaconed >= this.options.batchSize) this.flush();
    else this._schedule(this.options.flushIntervalMs);
  }

  _schedule(delayMs) {
    if (this._timer !== null) return;
    this._timer = setTimeout(() => { this._timer = null; this.flush(); }, delayMs);
  }

  _body(items, withToken) {
    const body = { room: this.room, session: this.session, client: this.client, items };
    if (this.dropped) body.dropped = this.dropped;
    if (withToken) body.token = this._token();
    return JSON.stringify(body);
  }

  /** The next batch from `start`: at most batchSize items and maxBatchBytes of JSON. */
  _batch(start, withToken) {
    const items = this.queue.slice(start, start + this.options.batchSize);
    let body = this._body(items, withToken);
    while (items.length > 1 && new Blob([body]).size > this.options.maxBatchBytes) {
      items.splice(Math.ceil(items.length / 2));
      body = this._body(items, withToken);
    }
    return { items, body, reported: this.dropped };
  }

  /** Send what is queued, one request at a time; resolves when this flush is done. */
  async flush() {
    if (this._inFlight) return this._inFlight;
    if (this.queue.length === 0) return;
    this._inFlight = this._send().finally(() => { this._inFlight = null; });
    return this._inFlight;
  }

  async _send() {
    while (this.queue.length > 0) {
      const { items, body, reported } = this._batch(0, false);
      let response;
      try {
        response = await this._fetch(this.options.endpoint, {
          method: "POST", body, keepalive: true,
          headers: { "Content-Type": "application/json", Authorization: `Bearer ${this._token()}` },
        });
      } catch (err) {
        return this._retryLater(null);
      }
      const refreshable = response.status === 401 && typeof this.options.token === "function";
      if (response.status === 429 || response.status >= 500 || refreshable) {
        return this._retryLater(response);  // a token function may give a fresh token
      }
      // The answer is read before the items leave the queue, so that an empty queue means
      // the stats count them.
      const answer = response.ok ? await response.json().catch(() => ({})) : null;
      const error = response.ok ? null : `${response.status} ${await response.text()}`;
      this.stats.sent += items.length;
      this._acknowledge(items[items.length - 1].seq, reported);
      if (answer) {
        this.stats.accepted += answer.accepted || 0;
        this.stats.duplicate += answer.duplicate || 0;
        this.stats.rejected += answer.rejected || 0;
      } else {
        // 4xx: the relay will never take this batch (the reason is counted there).
        this.stats.rejected += items.length;
        this.lastError = error;
      }
    }
    this._retryMs = 0;
  }

  _acknowledge(lastSeq, reported) {
    // By seq: items dropped from a full queue meanwhile shifted the queue.
    let count = 0;
    while (count < this.queue.length && this.queue[count].seq <= lastSeq) count += 1;
    this.queue.splice(0, count);
    this.beaconed = Math.max(0, this.beaconed - count);
    this.dropped = Math.max(0, this.dropped - reported);
  }

  _retryLater(response) {
    this.stats.failures += 1;
    const o = this.options;
    this._retryMs = Math.min(o.retryMaxMs, this._retryMs ? this._retryMs * 2 : o.retryInitialMs);
    const after = response && Number(response.headers.get("Retry-After"));
    const delayMs = after ? after * 1000 : this._retryMs * (0.5 + Math.random() / 2);
    clearTimeout(this._timer);
    this._timer = null;
    this._schedule(delayMs);
  }

  /** The page is going away (hidden, pagehide): beacon what is queued, the token in the
   * body (a beacon sets no headers). Beaconed items stay queued until a later request is
   * answered: if the page comes back they are sent again and answered `duplicate`. */
  flushOnExit() {
    const canBeacon = typeof navigator !== "undefined" && navigator.sendBeacon;
    while (this.beaconed < this.queue.length) {
      const { items, body } = this._batch(this.beaconed, true);
      const blob = new Blob([body], { type: "text/plain" });
      if (canBeacon && navigator.sendBeacon(this.options.endpoint, blob)) {
        this.beaconed += items.length;
        continue;
      }
      // No beacon, or the keepalive budget is spent: a keepalive fetch as the fallback.
      this._fetch(this.options.endpoint, { method: "POST", body: blob, keepalive: true })
        .catch(() => {});
      this.beaconed += items.length;
      break;
    }
  }

  /** Forward a livekit-client Room's data packets, attributes, speakers, participants and
   * (unless `textStreams: false`) text streams on lk.transcription / lk.chat. If the page
   * handles those topics itself, pass `textStreams: false` and wrap its handler in
   * `teeTextStream` instead (livekit-client allows one handler per topic). */
  attachRoom(room, { textStreams = true } = {}) {
    const on = (name, fn) => { room.on(name, fn); this._detachers.push(() => room.off(name, fn)); };
    const decoder = new TextDecoder();
    on("dataReceived", (payload, participant, _kind, topic) => {
      const text = decoder.decode(payload);
      this.push({ type: "data", topic: topic || "", sender: senderOf(participant), payload: text });
    });
    on("participantAttributesChanged", (changed, participant) => {
      const attributes = { ...(participant.attributes || {}) };
      this.push({ type: "attributes", sender: senderOf(participant), changed, attributes });
    });
    on("activeSpeakersChanged", (speakers) => {
      this.push({ type: "speakers", identities: speakers.map((p) => p.identity) });
    });
    on("participantConnected", (p) => this._participant(p, "joined"));
    on("participantDisconnected", (p) => this._participant(p, "left"));
    on("connected", () => this._snapshot(room));
    if (room.state === "connected") this._snapshot(room);
    if (textStreams) {
      for (const topic of TEXT_TOPICS) {
        room.registerTextStreamHandler(topic, this.teeTextStream(null));
        this._detachers.push(() => room.unregisterTextStreamHandler(topic));
      }
    }
    return () => this.detach();
  }

  _participant(participant, change) {
    const attributes = { ...(participant.attributes || {}) };
    this.push({ type: "participant", change, sender: senderOf(participant), attributes });
  }

  _snapshot(room) {
    if (room.localParticipant) this._participant(room.localParticipant, "joined");
    for (const p of room.remoteParticipants.values()) this._participant(p, "joined");
  }

  /** A text stream handler that forwards each stream once it ended and hands the page's
   * own `handler` (if any) a reader with the same `info`, `readAll()` and iteration. */
  teeTextStream(handler) {
    return (reader, participantInfo) => {
      const tee = new TeeReader(reader.info);
      if (handler) handler(tee, participantInfo);
      this._readStream(reader, tee, participantInfo);
    };
  }

  async _readStream(reader, tee, participantInfo) {
    let text = "";
    try {
      for await (const chunk of reader) { text += chunk; tee._chunk(chunk); }
    } catch (err) {
      tee._end(err);
      return;
    }
    tee._end(null);
    const info = reader.info;
    this.push({
      type: "text", topic: info.topic, stream_id: info.id, text,
      sender: { identity: participantInfo.identity, sid: null, kind: "unknown" },
      attributes: { ...(info.attributes || {}) },
    });
  }

  /** Forward a LiveAvatarSession's public agent events (@heygen/liveavatar-web-sdk) as the
   * agent-response packets they came from. The SDK hands on event_id, event_type and the
   * event's own fields (not source_event_id); the session id is the session's. */
  attachLiveAvatar(session) {
    for (const name of LIVEAVATAR_AGENT_EVENTS) {
      const fn = (event) => {
        const sessionId = event.session_id || session.sessionId || "";
        const envelope = { ...event, event_type: name };
        if (sessionId) envelope.session_id = sessionId;
        const sender = { identity: `liveavatar-agent-${sessionId}`, sid: null, kind: "agent" };
        this.push({ type: "data", topic: "agent-response", sender, payload: JSON.stringify(envelope) });
      };
      session.on(name, fn);
      this._detachers.push(() => session.off(name, fn));
    }
    return () => this.detach();
  }

  /** Forward a LiveLayer ControlledSession's data messages (`subscribeToDataMessages`):
   * each message is posted as the topic-less data packet it arrived as. */
  attachLiveLayer(session) {
    const unsubscribe = session.subscribeToDataMessages((message, participant) => {
      const payload = typeof message === "string" ? message : JSON.stringify(message);
      this.push({ type: "data", topic: "", sender: senderOf(participant), payload });
    });
    if (typeof unsubscribe === "function") this._detachers.push(unsubscribe);
    return () => this.detach();
  }

  /** Stop listening (what is queued is still sent). */
  detach() {
    for (const undo of this._detachers.splice(0)) undo();
  }

  /** Stop listening and send what is left. */
  async close() {
    this.detach();
    if (typeof document !== "undefined") {
      document.removeEventListener("visibilitychange", this._onHidden);
      window.removeEventListener("pagehide", this._onPageHide);
    }
    clearTimeout(this._timer);
    this._timer = null;
    await this.flush();
  }
}

/** What the page's own text stream handler reads: the forwarder's copy of the stream. */
class TeeReader {
  constructor(info) {
    this.info = info;
    this._chunks = [];
    this._waiters = [];
    this._done = false;
    this._error = null;
  }

  _chunk(text) {
    this._chunks.push(text);
    this._wake();
  }

  _end(error) {
    this._done = true;
    this._error = error;
    this._wake();
  }

  _wake() {
    for (const wake of this._waiters.splice(0)) wake();
  }

  async *[Symbol.asyncIterator]() {
    let next = 0;
    for (;;) {
      if (next < this._chunks.length) { yield this._chunks[next++]; continue; }
      if (this._error) throw this._error;
      if (this._done) return;
      await new Promise((resolve) => this._waiters.push(resolve));
    }
  }

  async readAll() {
    let text = "";
    for await (const chunk of this) text += chunk;
    return text;
  }
}
