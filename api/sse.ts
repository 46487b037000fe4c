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
 * The stream polls the store (every `pollMs`), wakes at once on a
 * transition this host commits, sends a comment as a heartbeat when idle,
 * reads at most `batch` records of each log per poll, and stops when the
 * client goes away or `signal` aborts.
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

/** Options of {@link eventStream}. */
export interface EventStreamOptions {
  /** Start after this position (default: the beginning of every log). */
  after?: StreamCursor;
  /** Only events of this pid. */
  pid?: number;
  /** Only these kinds (default: all). */
  kinds?: readonly StreamKind[];
  /** How often to poll the store, in milliseconds (default 200). */
  pollMs?: number;
  /** Idle time before a heartbeat comment, in milliseconds (default 15000). */
  heartbeatMs?: number;
  /** Records read from each log per poll (default 200). */
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
  const pollMs = options.pollMs ?? 200;
  const heartbeatMs = options.heartbeatMs ?? 15_000;
  const batch = options.batch ?? 200;
  const cursor: StreamCursor = { ...STREAM_START, ...options.after };
  const resumedHuman = options.after?.human;
  /** Pending requests already sent on this connection. */
  const sentHumans = new Set<string>();
  let closed = false;
  let wake: (() => void) | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let lastSent = Date.now();

  /** Set by a notification; cleared when a read starts, so none is lost while reading. */
  let dirty = false;
  const rouse = () => {
    dirty = true;
    const resolve = wake;
    wake = undefined;
    resolve?.();
  };
  let unsubscribe: (() => void) | undefined;
  const stop = () => {
    closed = true;
    unsubscribe?.();
    unsubscribe = undefined;
    if (timer !== undefined) clearTimeout(timer);
    options.signal?.removeEventListener("abort", stop);
    rouse();
  };
  // Subscribes on the first read, so a body nobody reads (a HEAD request) holds nothing.
  const begin = () => {
    if (unsubscribe || closed) return;
    unsubscribe = kinds.has("transition") ? source.processes.subscribe(rouse) : () => {};
    options.signal?.addEventListener("abort", stop);
    if (options.signal?.aborted) stop();
  };

  const read = async (): Promise<_Item[][]> => {
    dirty = false;
    const lists: _Item[][] = [];
    if (kinds.has("transition")) {
      const items: _Item[] = [];
      for await (const event of source.processes.events({ afterSeq: cursor.transition })) {
        items.push(_transition(event));
        if (items.length >= batch) break;
      }
      lists.push(items);
    }
    if (kinds.has("human") && source.humans) {
      const pending = await source.humans.pending();
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
      const items: _Item[] = [];
      for await (const record of source.audit.list({ afterSeq: cursor.audit, limit: batch })) {
        items.push(_audit(record));
      }
      lists.push(items);
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
      out += `id: ${formatEventId(cursor)}\nevent: ${item.kind}\ndata: ${
        JSON.stringify(item.data)
      }\n\n`;
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
        await idle(Math.min(pollMs, heartbeatMs - quiet));
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
