/**
 * The server-sent event stream of `GET /v1/events/stream`: process
 * transitions, pending human requests and audit records, as they are
 * committed to the store.
 *
 * Each event's `id` encodes where the stream stands in all three logs:
 * `<transition seq>.<audit seq>.<human position>`, where the human position
 * is `0` or `<createdAt>-<request id>` of the last human request sent. A
 * client that reconnects with `Last-Event-ID` (or `?after=`) resumes right
 * after that event. Transitions and audit records have gap-free sequence
 * numbers committed in order, so for them nothing is lost and nothing is
 * sent twice. Human requests have no such log: a request is sent once per
 * connection while it is pending, and a resumed stream sends only those
 * after the id's `(createdAt, id)` position; one answered while no client
 * was connected shows up as its process's transitions and audit records.
 *
 * The streams of one server share a {@link StreamFeed}: one reader of the
 * store that polls it (every `pollMs`), reads at once after a transition
 * this host commits, and keeps the newest records of each log (its window)
 * for every stream to take from. A hundred streams cost the store what one
 * does. A stream whose position is outside the window (a client catching up
 * from the beginning, or reading more slowly than the logs grow) reads the
 * store itself, at most `batch` records of each log at a time, until it is
 * back inside: no stream is ever dropped or skipped ahead, and what a slow
 * client has not read stays in the store, not in the server's memory. A
 * stream sends a comment as a heartbeat when idle and stops when the client
 * goes away or `signal` aborts.
 *
 * @module
 */

import type { AuditLog, AuditRecord } from "../broker/audit.ts";
import type { HumanQueue, HumanRequest } from "../runtime/human_queue.ts";
import type { ProcessEvent, ProcessTable } from "../runtime/process_table.ts";
import { ApiError } from "./errors.ts";

/** The kinds of events the stream sends. */
export type StreamKind = "transition" | "human" | "audit";

/** Where a stream stands in each log. */
export interface StreamCursor {
  /** Seq of the last transition passed. */
  transition: number;
  /** Seq of the last audit record passed. */
  audit: number;
  /** The last human request passed, by `(createdAt, id)`; undefined for none. */
  human?: { createdAt: number; id: string };
}

/** What the stream reads. */
export interface StreamSource {
  /** The process table (transition events and their notifications). */
  processes: Pick<ProcessTable, "events" | "subscribe">;
  /** The audit trail. */
  audit: Pick<AuditLog, "list">;
  /** The human queue, when the kernel has one. */
  humans?: Pick<HumanQueue, "pending">;
}

/** Options of {@link StreamFeed}. */
export interface StreamFeedOptions {
  /** How often to poll the store, in milliseconds (default 200). */
  pollMs?: number;
  /** Records read from each log per read (default 200). */
  batch?: number;
  /** Newest records of each log kept for the streams to share (default 1000). */
  window?: number;
}

/** Options of {@link eventStream}. */
export interface EventStreamOptions {
  /** Start after this position (default: the beginning of every log). */
  after?: StreamCursor;
  /** Only events of this pid. */
  pid?: number;
  /** Only these kinds (default: all). */
  kinds?: readonly StreamKind[];
  /**
   * The feed the stream shares with others (default: a feed of its own,
   * made with `pollMs` and `batch`).
   */
  feed?: StreamFeed;
  /**
   * How often to poll the store, in milliseconds (default 200): its own
   * feed's, and its own while it is outside the feed's window.
   */
  pollMs?: number;
  /** Idle time before a heartbeat comment, in milliseconds (default 15000). */
  heartbeatMs?: number;
  /** Records read from each log at a time (default 200). */
  batch?: number;
  /** Ends the stream when aborted (e.g. at server shutdown). */
  signal?: AbortSignal;
}

/** The start of every log. */
export const STREAM_START: Readonly<StreamCursor> = Object.freeze({ transition: 0, audit: 0 });

/**
 * The event id of a cursor.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatEventId, parseEventId } from "./sse.ts";
 * const id = formatEventId({ transition: 4, audit: 17, human: { createdAt: 5, id: "ab-1" } });
 * assert(id === "4.17.5-ab-1");
 * assert(parseEventId(id).human?.id === "ab-1");
 * ```
 */
export function formatEventId(cursor: StreamCursor): string {
  const human = cursor.human ? `${cursor.human.createdAt}-${cursor.human.id}` : "0";
  return `${cursor.transition}.${cursor.audit}.${human}`;
}

/**
 * Parses an event id made by {@link formatEventId}; throws a 400 for
 * anything else.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseEventId } from "./sse.ts";
 * assert(parseEventId("3.9.0").audit === 9);
 * ```
 */
export function parseEventId(text: string): StreamCursor {
  const match = /^(0|[1-9]\d{0,14})\.(0|[1-9]\d{0,14})\.(?:0|(\d{1,15})-([A-Za-z0-9_-]{1,100}))$/
    .exec(text.trim());
  if (!match) {
    throw new ApiError(
      400,
      `Cannot resume the event stream after "${
        text.slice(0, 100)
      }": not an event id of this stream`,
    );
  }
  const cursor: StreamCursor = { transition: Number(match[1]), audit: Number(match[2]) };
  if (match[3] !== undefined) cursor.human = { createdAt: Number(match[3]), id: match[4] };
  return cursor;
}

interface _Item {
  kind: StreamKind;
  at: number;
  pid: number;
  data: unknown;
  advance(cursor: StreamCursor): void;
}

const ENCODER = new TextEncoder();
const DEFAULT_POLL_MS = 200;
const DEFAULT_BATCH = 200;
const DEFAULT_WINDOW = 1000;

/** The newest records of one log that a feed holds: those after `from`, up to `head`. */
interface _Window<T extends { seq: number }> {
  /** The seq the window starts after. */
  from: number;
  /** The seq of the last record read. */
  head: number;
  /** The records after `from` up to `head`, in seq order. */
  records: T[];
}

/** What a feed holds while streams are attached to it. */
interface _FeedRun {
  transitions: _Window<ProcessEvent>;
  audit: _Window<AuditRecord>;
  /** The pending human requests as last read; undefined before the first read. */
  pending?: HumanRequest[];
  /** Set once a read failed (the store went away): the streams end. */
  failed: boolean;
  stop(): void;
}

/**
 * One reader of the logs for every event stream of a server. While streams
 * are attached it polls the store every `pollMs`, reads at once after a
 * transition this host commits, keeps the newest `window` records of each
 * log, and calls each stream's listener after a read that found something
 * new. It reads from where the first stream attached to it stands, and
 * stops, keeping nothing, when the last one detaches.
 *
 * @example
 * ```ts ignore
 * const feed = new StreamFeed(kernel);
 * const a = eventStream(kernel, { feed });
 * const b = eventStream(kernel, { feed, kinds: ["audit"] });
 * ```
 */
export class StreamFeed {
  #source: StreamSource;
  #pollMs: number;
  #batch: number;
  #window: number;
  #listeners = new Set<() => void>();
  #run: _FeedRun | undefined;

  /** A feed of `source`'s logs. */
  constructor(source: StreamSource, options: StreamFeedOptions = {}) {
    this.#source = source;
    this.#pollMs = options.pollMs ?? DEFAULT_POLL_MS;
    this.#batch = options.batch ?? DEFAULT_BATCH;
    this.#window = options.window ?? DEFAULT_WINDOW;
  }

  /**
   * Calls `listener` after every read that finds something new, and once
   * a read fails. The first stream attached starts the feed at `from`.
   * Returns the detach function.
   */
  attach(listener: () => void, from: StreamCursor): () => void {
    this.#listeners.add(listener);
    if (!this.#run) this.#start(from);
    return () => {
      if (!this.#listeners.delete(listener) || this.#listeners.size > 0) return;
      this.#run?.stop();
      this.#run = undefined;
    };
  }

  /** True once a read failed: attached streams end. */
  get failed(): boolean {
    return this.#run?.failed ?? false;
  }

  /**
   * The pending human requests as last read; undefined before the first
   * read, which calls the listeners.
   */
  get pending(): HumanRequest[] | undefined {
    return this.#run?.pending;
  }

  /**
   * Up to `batch` transitions after `seq` from the window, or undefined
   * when `seq` is outside it (read the store then).
   */
  transitionsAfter(seq: number): ProcessEvent[] | undefined {
    return this.#run && _after(this.#run.transitions, seq, this.#batch);
  }

  /**
   * Up to `batch` audit records after `seq` from the window, or undefined
   * when `seq` is outside it (read the store then).
   */
  auditAfter(seq: number): AuditRecord[] | undefined {
    return this.#run && _after(this.#run.audit, seq, this.#batch);
  }

  #start(from: StreamCursor): void {
    let stopped = false;
    let dirty = true;
    let wake: (() => void) | undefined;
    const rouse = () => {
      dirty = true;
      const resolve = wake;
      wake = undefined;
      resolve?.();
    };
    const unsubscribe = this.#source.processes.subscribe(rouse);
    const run: _FeedRun = {
      transitions: { from: from.transition, head: from.transition, records: [] },
      audit: { from: from.audit, head: from.audit, records: [] },
      failed: false,
      stop: () => {
        stopped = true;
        unsubscribe();
        rouse();
      },
    };
    this.#run = run;
    (async () => {
      while (!stopped) {
        dirty = false;
        let read: { changed: boolean; more: boolean };
        try {
          read = await this.#read(run);
        } catch {
          run.failed = true;
          read = { changed: true, more: false };
        }
        if (stopped) return;
        if (read.changed) { for (const listener of [...this.#listeners]) listener(); }
        if (run.failed) return;
        if (read.more || dirty) continue;
        let timer: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(rouse, this.#pollMs);
        });
        clearTimeout(timer);
      }
    })();
  }

  /** Reads what is new in each log into `run`'s windows. */
  async #read(run: _FeedRun): Promise<{ changed: boolean; more: boolean }> {
    const source = this.#source;
    const batch = this.#batch;
    const events: ProcessEvent[] = [];
    for await (const event of source.processes.events({ afterSeq: run.transitions.head })) {
      events.push(event);
      if (events.length >= batch) break;
    }
    const records = await Array.fromAsync(
      source.audit.list({ afterSeq: run.audit.head, limit: batch }),
    );
    let changed = events.length > 0 || records.length > 0;
    _append(run.transitions, events, this.#window);
    _append(run.audit, records, this.#window);
    if (source.humans) {
      const pending = await source.humans.pending();
      changed ||= !run.pending || _ids(pending) !== _ids(run.pending);
      run.pending = pending;
    }
    return { changed, more: events.length >= batch || records.length >= batch };
  }
}

/**
 * A `text/event-stream` body of the events after `options.after`.
 *
 * @example
 * ```ts ignore
 * const body = eventStream(kernel, { kinds: ["transition"], signal });
 * return new Response(body, { headers: { "content-type": "text/event-stream" } });
 * ```
 */
export function eventStream(
  source: StreamSource,
  options: EventStreamOptions = {},
): ReadableStream<Uint8Array> {
  const kinds = new Set<StreamKind>(options.kinds ?? ["transition", "human", "audit"]);
  const pollMs = options.pollMs ?? DEFAULT_POLL_MS;
  const heartbeatMs = options.heartbeatMs ?? 15_000;
  const batch = options.batch ?? DEFAULT_BATCH;
  const feed = options.feed ?? new StreamFeed(source, { pollMs, batch });
  const cursor: StreamCursor = { ...STREAM_START, ...options.after };
  const resumedHuman = options.after?.human;
  /** Pending requests already sent on this connection. */
  const sentHumans = new Set<string>();
  let closed = false;
  let wake: (() => void) | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let lastSent = Date.now();

  /** Set by the feed's call; cleared when a read starts, so none is lost while reading. */
  let dirty = false;
  const rouse = () => {
    dirty = true;
    const resolve = wake;
    wake = undefined;
    resolve?.();
  };
  let detach: (() => void) | undefined;
  const stop = () => {
    closed = true;
    detach?.();
    detach = undefined;
    if (timer !== undefined) clearTimeout(timer);
    options.signal?.removeEventListener("abort", stop);
    rouse();
  };
  // Attaches on the first read, so a body nobody reads (a HEAD request) holds nothing.
  const begin = () => {
    if (detach || closed) return;
    detach = feed.attach(rouse, cursor);
    options.signal?.addEventListener("abort", stop);
    if (options.signal?.aborted) stop();
  };

  /** True when the last read went to the store: the stream polls it then. */
  let stored = false;
  const read = async (): Promise<_Item[][]> => {
    dirty = false;
    stored = false;
    if (feed.failed) throw new Error("Cannot read the event logs: the store went away");
    const lists: _Item[][] = [];
    if (kinds.has("transition")) {
      let events = feed.transitionsAfter(cursor.transition);
      if (!events) {
        stored = true;
        events = [];
        for await (const event of source.processes.events({ afterSeq: cursor.transition })) {
          events.push(event);
          if (events.length >= batch) break;
        }
      }
      lists.push(events.map(_transition));
    }
    if (kinds.has("human") && source.humans) {
      // Before the feed's first read there are none yet: its call follows that read.
      const pending = feed.pending ?? [];
      const ids = new Set(pending.map((r) => r.id));
      for (const id of sentHumans) if (!ids.has(id)) sentHumans.delete(id);
      const fresh = pending
        .filter((r) =>
          !sentHumans.has(r.id) && _isSafeId(r.id) &&
          (!resumedHuman || _byPosition(r, resumedHuman) > 0)
        )
        .sort(_byPosition);
      lists.push(fresh.slice(0, batch).map((r) => _human(r, sentHumans)));
    }
    if (kinds.has("audit")) {
      let records = feed.auditAfter(cursor.audit);
      if (!records) {
        stored = true;
        records = await Array.fromAsync(
          source.audit.list({ afterSeq: cursor.audit, limit: batch }),
        );
      }
      lists.push(records.map(_audit));
    }
    return lists;
  };

  const frames = (lists: _Item[][]): string => {
    let out = "";
    const heads = lists.map(() => 0);
    for (;;) {
      let pick = -1;
      for (let i = 0; i < lists.length; i++) {
        const item = lists[i][heads[i]];
        if (item && (pick < 0 || item.at < lists[pick][heads[pick]].at)) pick = i;
      }
      if (pick < 0) return out;
      const item = lists[pick][heads[pick]++];
      item.advance(cursor);
      if (options.pid !== undefined && item.pid !== options.pid) continue;
      out += `id: ${formatEventId(cursor)}\nevent: ${item.kind}\ndata: ${_json(item.data)}\n\n`;
    }
  };

  const idle = (ms: number) =>
    dirty || closed ? Promise.resolve() : new Promise<void>((resolve) => {
      wake = resolve;
      timer = setTimeout(rouse, ms);
    }).finally(() => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    });

  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(ENCODER.encode(`: libos event stream\nretry: 1000\n\n`));
    },
    async pull(controller) {
      begin();
      while (!closed) {
        let text: string;
        try {
          text = frames(await read());
        } catch {
          // The store went away (shutdown); end the stream and let the client resume.
          stop();
          controller.close();
          return;
        }
        if (closed) break;
        if (text) {
          lastSent = Date.now();
          controller.enqueue(ENCODER.encode(text));
          return;
        }
        const quiet = Date.now() - lastSent;
        if (quiet >= heartbeatMs) {
          lastSent = Date.now();
          controller.enqueue(ENCODER.encode(": heartbeat\n\n"));
          return;
        }
        // Served by the feed, the stream waits for its call; else it polls the store.
        await idle(stored ? Math.min(pollMs, heartbeatMs - quiet) : heartbeatMs - quiet);
      }
      if (options.signal?.aborted) controller.close();
    },
    cancel() {
      stop();
    },
  });
}

function _transition(event: ProcessEvent): _Item {
  return {
    kind: "transition",
    at: event.at,
    pid: event.pid,
    data: event,
    advance: (cursor) => {
      cursor.transition = event.seq;
    },
  };
}

function _audit(record: AuditRecord): _Item {
  return {
    kind: "audit",
    at: record.at,
    pid: record.pid,
    data: record,
    advance: (cursor) => {
      cursor.audit = record.seq;
    },
  };
}

function _human(request: HumanRequest, sent: Set<string>): _Item {
  return {
    kind: "human",
    at: request.createdAt,
    pid: request.pid,
    data: request,
    advance: (cursor) => {
      sent.add(request.id);
      const position = { createdAt: request.createdAt, id: request.id };
      if (!cursor.human || _byPosition(position, cursor.human) > 0) cursor.human = position;
    },
  };
}

function _byPosition(
  a: { createdAt: number; id: string },
  b: { createdAt: number; id: string },
): number {
  return a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function _isSafeId(id: string): boolean {
  return /^[A-Za-z0-9_-]{1,100}$/.test(id);
}

/** The records of `window` after `seq`, at most `batch`; undefined when `seq` is outside it. */
function _after<T extends { seq: number }>(
  window: _Window<T>,
  seq: number,
  batch: number,
): T[] | undefined {
  if (seq < window.from || seq > window.head) return undefined;
  const records = window.records;
  let low = 0;
  let high = records.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (records[middle].seq <= seq) low = middle + 1;
    else high = middle;
  }
  return records.slice(low, low + batch);
}

/** Adds `records` (the next ones in seq order) to `window`, keeping the newest `keep`. */
function _append<T extends { seq: number }>(window: _Window<T>, records: T[], keep: number): void {
  if (records.length === 0) return;
  window.records.push(...records);
  window.head = records[records.length - 1].seq;
  const excess = window.records.length - keep;
  if (excess > 0) {
    window.from = window.records[excess - 1].seq;
    window.records.splice(0, excess);
  }
}

function _ids(requests: readonly HumanRequest[]): string {
  return requests.map((r) => r.id).join(",");
}

/** JSON of an event's data, made once per record however many streams send it. */
const _texts = new WeakMap<object, string>();
function _json(data: unknown): string {
  if (typeof data !== "object" || data === null) return JSON.stringify(data);
  let text = _texts.get(data);
  if (text === undefined) _texts.set(data, text = JSON.stringify(data));
  return text;
}
