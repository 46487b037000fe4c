import assert from "node:assert/strict";
import { AuditLog } from "../broker/audit.ts";
import { Journal } from "../broker/journal.ts";
import type { HumanRequest } from "../runtime/human_queue.ts";
import { newProcess } from "../runtime/_fixtures.ts";
import { ProcessTable } from "../runtime/process_table.ts";
import { SseReader } from "./_testing.ts";
import { ApiError } from "./errors.ts";
import {
  eventStream,
  type EventStreamOptions,
  formatEventId,
  parseEventId,
  StreamFeed,
  type StreamSource,
} from "./sse.ts";

interface Fixture {
  kv: Deno.Kv;
  processes: ProcessTable;
  audit: AuditLog;
  pending: HumanRequest[];
  listeners: () => number;
  source: StreamSource;
  spawn(): Promise<number>;
  record(pid: number, syscall: string): Promise<void>;
}

async function withFixture(body: (f: Fixture) => Promise<void>): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  const processes = new ProcessTable(kv);
  const audit = new AuditLog(kv);
  const journal = new Journal(kv, audit);
  const pending: HumanRequest[] = [];
  let listeners = 0;
  const source: StreamSource = {
    processes: {
      events: (options) => processes.events(options),
      subscribe: (listener) => {
        listeners++;
        const off = processes.subscribe(listener);
        return () => {
          listeners--;
          off();
        };
      },
    },
    audit,
    humans: { pending: () => Promise.resolve([...pending]) },
  };
  let clock = 1000;
  const fixture: Fixture = {
    kv,
    processes,
    audit,
    pending,
    listeners: () => listeners,
    source,
    async spawn() {
      const proc = await processes.create(newProcess({ image: "demo@1.0.0" }), clock++);
      return proc.pid;
    },
    async record(pid, syscall) {
      await journal.write({
        audit: {
          at: clock++,
          pid,
          image: "demo@1.0.0",
          syscall,
          args: "{}",
          argsDigest: "0".repeat(64),
          decision: "allow",
          outcome: "ok",
        },
      }, { durable: true });
    },
  };
  try {
    await body(fixture);
  } finally {
    await journal.close();
    kv.close();
  }
}

function open(f: Fixture, options: EventStreamOptions = {}): SseReader {
  return new SseReader(eventStream(f.source, { pollMs: 20, ...options }));
}

Deno.test("event ids encode every position and parse back", () => {
  const cursor = { transition: 12, audit: 40, human: { createdAt: 1700, id: "3f2a-b" } };
  assert.equal(formatEventId(cursor), "12.40.1700-3f2a-b");
  assert.deepEqual(parseEventId("12.40.1700-3f2a-b"), cursor);
  assert.deepEqual(parseEventId("0.0.0"), { transition: 0, audit: 0 });
  for (const bad of ["", "1.2", "a.b.c", "1.2.3.4", "01.2.0", "1.2.x-y", "1.2.0\nid: 9"]) {
    assert.throws(() => parseEventId(bad), (e) => e instanceof ApiError && e.status === 400, bad);
  }
});

Deno.test("the stream sends transitions and audit records with resumable ids", async () => {
  await withFixture(async (f) => {
    const pid = await f.spawn();
    await f.record(pid, "fs.read");
    await f.processes.transition(pid, "runnable");
    const reader = open(f);
    const first = await reader.next();
    assert.match(first?.comment ?? "", /libos event stream/);
    const events = await reader.events(3);
    assert.deepEqual(events.map((e) => e.event), ["transition", "audit", "transition"]);
    assert.deepEqual(events.map((e) => e.id), ["1.0.0", "1.1.0", "2.1.0"]);
    assert.equal(JSON.parse(events[1].data!).syscall, "fs.read");
    assert.equal(JSON.parse(events[2].data!).to, "runnable");
    await reader.cancel();
  });
});

Deno.test("resuming after any event id sends exactly the events after it", async () => {
  await withFixture(async (f) => {
    for (let i = 0; i < 3; i++) {
      const pid = await f.spawn();
      await f.record(pid, `call.${i}`);
      await f.processes.transition(pid, "runnable");
    }
    const all = open(f);
    const events = await all.events(9);
    await all.cancel();
    const keys = events.map((e) => `${e.event}:${e.data}`);
    assert.equal(new Set(keys).size, 9, "no duplicates in one stream");
    for (let k = 0; k < events.length; k++) {
      const rest = open(f, { after: parseEventId(events[k].id!) });
      const got = await rest.events(events.length - k - 1);
      assert.deepEqual(got.map((e) => `${e.event}:${e.data}`), keys.slice(k + 1), `after #${k}`);
      await rest.cancel();
    }
  });
});

Deno.test("pid and kind filters select events; skipped ones still advance the id", async () => {
  await withFixture(async (f) => {
    const one = await f.spawn();
    const two = await f.spawn();
    await f.record(one, "a");
    await f.record(two, "b");
    const audits = open(f, { kinds: ["audit"], pid: two });
    const [event] = await audits.events(1);
    assert.equal(event.event, "audit");
    assert.equal(JSON.parse(event.data!).syscall, "b");
    assert.equal(event.id, "0.2.0", "the skipped record of pid 1 is behind the id");
    await audits.cancel();
    const transitions = open(f, { kinds: ["transition"], pid: one });
    const [t] = await transitions.events(1);
    assert.deepEqual([t.event, JSON.parse(t.data!).pid], ["transition", one]);
    await transitions.cancel();
  });
});

Deno.test("pending human requests are sent once, in order, and not again after a resume", async () => {
  await withFixture(async (f) => {
    const request = (id: string, createdAt: number): HumanRequest => ({
      id,
      pid: 1,
      seq: 1,
      image: "demo@1.0.0",
      kind: "question",
      question: { text: "ok?", kind: "boolean" },
      createdAt,
      state: "pending",
    });
    f.pending.push(request("b-2", 5), request("a-1", 5));
    const reader = open(f, { kinds: ["human"] });
    const events = await reader.events(2);
    assert.deepEqual(events.map((e) => JSON.parse(e.data!).id), ["a-1", "b-2"]);
    assert.equal(events[1].id, "0.0.5-b-2");
    f.pending.push(request("c-3", 9));
    const [third] = await reader.events(1);
    assert.equal(JSON.parse(third.data!).id, "c-3", "only the new request follows");
    await reader.cancel();
    const resumed = open(f, { kinds: ["human"], after: parseEventId(events[1].id!) });
    const [next] = await resumed.events(1);
    assert.equal(JSON.parse(next.data!).id, "c-3");
    await resumed.cancel();
  });
});

Deno.test("a transition committed here wakes an idle stream at once", async () => {
  await withFixture(async (f) => {
    const reader = open(f, { pollMs: 60_000, kinds: ["transition"] });
    await reader.next();
    const pid = await f.spawn();
    const started = performance.now();
    const [event] = await reader.events(1, 30_000);
    assert.equal(JSON.parse(event.data!).pid, pid);
    assert.ok(performance.now() - started < 30_000, "waited for the 60 s poll");
    await reader.cancel();
  });
});

Deno.test("an idle stream sends heartbeat comments", async () => {
  await withFixture(async (f) => {
    const reader = open(f, { heartbeatMs: 30 });
    await reader.next();
    const frame = await reader.next(3000);
    assert.equal(frame?.comment, "heartbeat");
    assert.equal(frame?.event, undefined);
    await reader.cancel();
  });
});

Deno.test("cancelling the body stops the stream and drops its subscription", async () => {
  await withFixture(async (f) => {
    const reader = open(f);
    await reader.next();
    assert.equal(f.listeners(), 1);
    await reader.cancel();
    assert.equal(f.listeners(), 0);
  });
});

Deno.test("aborting the signal ends the stream for the client", async () => {
  await withFixture(async (f) => {
    const controller = new AbortController();
    const reader = open(f, { signal: controller.signal, pollMs: 60_000 });
    await reader.next();
    const ended = reader.next(3000);
    controller.abort();
    assert.equal(await ended, undefined);
    assert.equal(f.listeners(), 0);
  });
});

Deno.test("a body nobody reads (a HEAD request) holds no subscription", async () => {
  await withFixture(async (f) => {
    const body = eventStream(f.source, { pollMs: 20 });
    assert.equal(f.listeners(), 0);
    await body.cancel();
    assert.equal(f.listeners(), 0);
  });
});

Deno.test("a failing store ends the stream instead of erroring it", async () => {
  await withFixture(async (f) => {
    const failing: StreamSource = {
      ...f.source,
      audit: {
        // deno-lint-ignore require-yield
        list: async function* () {
          throw new Error("the store is closed");
        },
      },
    };
    const reader = new SseReader(eventStream(failing, { pollMs: 20 }));
    await reader.next();
    assert.equal(await reader.next(), undefined);
    assert.equal(f.listeners(), 0);
  });
});

Deno.test("a stream that falls behind the shared window reads the store and misses nothing", async () => {
  await withFixture(async (f) => {
    const feed = new StreamFeed(f.source, { pollMs: 20, window: 3, batch: 2 });
    const fast = new SseReader(eventStream(f.source, { feed, kinds: ["transition"] }));
    const slow = new SseReader(eventStream(f.source, { feed, kinds: ["transition"] }));
    await fast.next();
    await slow.next();
    const pids: number[] = [];
    for (let i = 0; i < 10; i++) {
      pids.push(await f.spawn());
      const [event] = await fast.events(1);
      assert.equal(JSON.parse(event.data!).pid, pids[i]);
    }
    // The slow client read nothing meanwhile: ten transitions, past a window of three.
    const events = await slow.events(10);
    assert.deepEqual(events.map((e) => JSON.parse(e.data!).pid), pids);
    assert.deepEqual(events.map((e) => e.id), pids.map((_, i) => `${i + 1}.0.0`));
    const pid = await f.spawn();
    assert.equal(JSON.parse((await slow.events(1))[0].data!).pid, pid);
    assert.equal(JSON.parse((await fast.events(1))[0].data!).pid, pid);
    await fast.cancel();
    assert.equal(f.listeners(), 1, "the feed reads on while a stream is attached");
    await slow.cancel();
    assert.equal(f.listeners(), 0, "the last stream gone, the feed stops");
  });
});
