// Types of relay's browser forwarder (forwarder.js beside this file). docs/ingest.md.

export interface ForwarderOptions {
  /** relay's ingest URL, e.g. "https://relay.example.com/v1/ingest". */
  endpoint: string;
  /** The ingest token the backend minted (or a function returning the current one). */
  token: string | (() => string);
  /** Default: the token's `room` and `session` claims. */
  room?: string;
  session?: string;
  /** Items per request (default 50). */
  batchSize?: number;
  /** A partial batch waits at most this long (default 1000). */
  flushIntervalMs?: number;
  /** Items kept while relay is away; beyond it the oldest are dropped and counted (2000). */
  maxQueue?: number;
  /** JSON bytes per request, below the browsers' 64 KiB keepalive budget (60000). */
  maxBatchBytes?: number;
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** A fetch of your own (tests, instrumentation). */
  fetch?: typeof fetch;
}

export interface Sender {
  identity: string;
  sid: string | null;
  kind: "standard" | "ingress" | "egress" | "sip" | "agent" | "unknown";
}

export type ForwardedItem =
  | { type: "data"; topic: string; sender: Sender | null; payload: string }
  | {
      type: "text";
      topic: string;
      stream_id: string;
      text: string;
      sender: Sender;
      attributes: Record<string, string>;
    }
  | {
      type: "attributes";
      sender: Sender | null;
      changed: Record<string, string>;
      attributes: Record<string, string>;
    }
  | { type: "speakers"; identities: string[] }
  | {
      type: "participant";
      change: "joined" | "left";
      sender: Sender | null;
      attributes: Record<string, string>;
    };

export interface ForwarderStats {
  sent: number;
  accepted: number;
  duplicate: number;
  rejected: number;
  dropped: number;
  failures: number;
}

/** The shape of livekit-client's TextStreamReader that a page's handler reads. */
export interface TextStreamReaderLike extends AsyncIterable<string> {
  info: { id: string; topic: string; attributes?: Record<string, string> };
  readAll(): Promise<string>;
}
export type TextStreamHandlerLike = (
  reader: TextStreamReaderLike,
  participantInfo: { identity: string },
) => void;

/** The parts of the clients the forwarder attaches to (structural: no import needed). */
export interface RoomLike {
  on(event: string, listener: (...args: any[]) => void): unknown;
  off(event: string, listener: (...args: any[]) => void): unknown;
  registerTextStreamHandler(topic: string, handler: TextStreamHandlerLike): void;
  unregisterTextStreamHandler(topic: string): void;
  state: string;
  localParticipant: { identity: string; sid: string; kind?: number | string };
  remoteParticipants: Map<string, { identity: string; sid: string; kind?: number | string }>;
}
export interface LiveAvatarSessionLike {
  on(event: string, listener: (event: Record<string, unknown>) => void): unknown;
  off(event: string, listener: (event: Record<string, unknown>) => void): unknown;
  readonly sessionId: string | null;
}
export interface ControlledSessionLike {
  subscribeToDataMessages(
    callback: (message: unknown, participant?: { identity: string; sid?: string }) => void,
  ): (() => void) | void;
}

export declare class Forwarder {
  constructor(options: ForwarderOptions);
  readonly room: string;
  readonly session: string;
  readonly client: string;
  readonly stats: ForwarderStats;
  /** Queue one item; `seq` and `ts` are stamped by the forwarder. */
  push(item: ForwardedItem): void;
  /** Send what is queued now. */
  flush(): Promise<void>;
  /** What the page does when it goes away: beacon what is queued (called on its own). */
  flushOnExit(): void;
  /** livekit-client Room: data packets, attributes, speakers, participants and (unless
   * `textStreams: false`) text streams on lk.transcription and lk.chat. */
  attachRoom(room: RoomLike, options?: { textStreams?: boolean }): () => void;
  /** Wrap the page's own text stream handler: it reads the stream as before, and the
   * forwarder forwards it (livekit-client allows one handler per topic). */
  teeTextStream(handler: TextStreamHandlerLike | null): TextStreamHandlerLike;
  /** @heygen/liveavatar-web-sdk LiveAvatarSession: its public agent events. */
  attachLiveAvatar(session: LiveAvatarSessionLike): () => void;
  /** LiveLayer ControlledSession: `subscribeToDataMessages`. */
  attachLiveLayer(session: ControlledSessionLike): () => void;
  detach(): void;
  close(): Promise<void>;
}

export declare function createForwarder(options: ForwarderOptions): Forwarder;
export declare function tokenClaims(token: string): {
  room: string;
  session: string;
  exp: number;
  origin?: string;
};
export declare function senderOf(participant: unknown): Sender | null;
