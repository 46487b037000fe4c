import assert from "node:assert/strict";
import type { SyscallError } from "../broker/errors.ts";
import { type TopicEvent, TopicEvents, type TopicEventsKernel } from "./events.ts";
import { type Budget, ProcessTable } from "./process_table.ts";
import { StorageQuotas } from "./storage_quota.ts";
import type { WaitOutcome } from "./waits.ts";
import { countCommits, newProcess, withMemoryKv } from "./_fixtures.ts";

/**
 * What the topic events see of a kernel: real storage quotas over the
 * store, a clock set by the test, and waits that record each completion.
 */
class EventHost implements TopicEventsKernel {
  readonly store: { kv: Deno.Kv };
  readonly processes: ProcessTable;
  readonly quotas: StorageQuotas;
  /** When it is, in ms. */
  at = 1_000;
  readonly now = (): number => this.at;
  /** Every wait completed, in order. */
  readonly completed: { pid: number; seq: number; outcome: WaitOutcome }[] = [];
  readonly waits: TopicEventsKernel["waits"] = {
    complete: (pid, seq, outcome) => {
      this.completed.push({ pid, seq, outcome });
      return Promise.resolve(true);
    },
  };

  constructor(kv: Deno.Kv) {
    this.store = { kv };
    this.processes = new ProcessTable(kv);
    this.quotas = new StorageQuotas(kv, this.processes);
  }

  /** A process with `budget`, whose events are charged to it. */
  async process(budget: Budget = {}): Promise<number> {
    return (await this.processes.create(newProcess({ budget }))).pid;
  }

  /** Parks `pid`'s call `seq` in `event.wait` on `topic`, as `Waits.park` indexes it. */
  async waiting(topic: string, pid: number, seq: number): Promise<void> {
    await this.store.kv.set(["wait_event", topic, pid, seq], true);
  }
}

async function withEvents(
  body: (events: TopicEvents, host: EventHost) => Promise<void>,
): Promise<void> {
  await withMemoryKv((kv) => {
    const host = new EventHost(kv);
    return body(new TopicEvents(host), host);
  });
}

Deno.test("events on a topic are numbered in order and read after a cursor", async () => {
  await withEvents(async (events, host) => {
    assert.equal(await events.latestSeq("deploy"), 0);
    assert.deepEqual(await events.post("deploy", "a", null), { seq: 1 });
    host.at = 1_500;
    assert.deepEqual(await events.post("deploy", { b: 2 }, null), { seq: 2 });
    assert.deepEqual(await events.post("other", undefined, null), { seq: 1 });

    assert.equal(await events.latestSeq("deploy"), 2);
    assert.deepEqual(await events.firstAfter("deploy", 0), {
      topic: "deploy",
      seq: 1,
      data: "a",
      from: null,
      at: 1_000,
    });
    assert.deepEqual(await events.firstAfter("deploy", 1), {
      topic: "deploy",
      seq: 2,
      data: { b: 2 },
      from: null,
      at: 1_500,
    });
    assert.equal(await events.firstAfter("deploy", 2), undefined);
    assert.equal((await events.firstAfter("other", 0))?.data, null);
  });
});

Deno.test("an event posted past the waiters' cursor completes the wait of each waiter on its topic", async () => {
  await withEvents(async (events, host) => {
    await events.post("deploy", "before", null);
    await host.waiting("deploy", 3, 9);
    await host.waiting("deploy", 4, 2);
    await host.waiting("deployed", 5, 1);

    const emitter = await host.process();
    await events.post("deploy", { ok: true }, emitter);
    const event: TopicEvent = {
      topic: "deploy",
      seq: 2,
      data: { ok: true },
      from: emitter,
      at: 1_000,
    };
    assert.deepEqual(host.completed, [
      { pid: 3, seq: 9, outcome: { ok: true, value: event } },
      { pid: 4, seq: 2, outcome: { ok: true, value: event } },
    ]);
  });
});

Deno.test("a process's event is charged to its storage quota, and refused over it", async () => {
  await withEvents(async (events, host) => {
    const emitter = await host.process({ storageBytes: 200 });
    await events.post("deploy", "x".repeat(50), emitter);
    const first = await events.firstAfter("deploy", 0);
    assert.equal((await host.quotas.usage(emitter)).storageBytes, JSON.stringify(first).length);

    await host.waiting("deploy", 8, 1);
    await assert.rejects(
      events.post("deploy", "y".repeat(150), emitter),
      (error: SyscallError) =>
        error.code === "EBUDGET" && error.message.startsWith('Cannot emit on "deploy":'),
    );
    assert.equal(await events.latestSeq("deploy"), 1);
    assert.equal((await host.quotas.usage(emitter)).storageBytes, JSON.stringify(first).length);
    assert.deepEqual(host.completed, []);

    // Events posted from outside are not charged to anyone.
    await events.post("deploy", "z".repeat(500), null);
    assert.equal(host.completed.length, 1);
  });
});

Deno.test("an event whose data is too large is refused before anything is stored", async () => {
  await withEvents(async (events, host) => {
    await host.waiting("deploy", 2, 1);
    await assert.rejects(
      events.post("deploy", "x".repeat(60_000), null),
      (error: SyscallError) =>
        error.code === "EINVAL" &&
        error.message === 'Cannot emit on "deploy": data is over 60000 bytes',
    );
    assert.equal(await events.latestSeq("deploy"), 0);
    assert.deepEqual(host.completed, []);
  });
});

Deno.test("posts side by side on one topic commit in turns: each once, in order, without gaps", async () => {
  await withEvents(async (events, host) => {
    await host.waiting("deploy", 7, 1);
    const emitter = await host.process();
    const tried = countCommits(host.store.kv);
    const posts = Array.from(
      { length: 30 },
      (_, i) => events.post("deploy", { i }, i === 10 ? emitter : null),
    );
    const tooLarge = assert.rejects(
      events.post("deploy", "x".repeat(60_000), null),
      (error: SyscallError) => error.code === "EINVAL",
    );
    const seqs = (await Promise.all(posts)).map((posted) => posted.seq);
    await tooLarge;
    // Side by side, every commit but one failed on the topic's counter and was tried again.
    assert.ok(tried() <= 30, `${tried()} commits for 30 posts`);
    assert.deepEqual(seqs, Array.from({ length: 30 }, (_, i) => i + 1));
    for (let i = 0; i < 30; i++) {
      const event = await events.firstAfter("deploy", i);
      assert.deepEqual([event?.seq, event?.data, event?.from], [
        i + 1,
        { i },
        i === 10 ? emitter : null,
      ]);
    }
    assert.deepEqual(host.completed[0], {
      pid: 7,
      seq: 1,
      outcome: { ok: true, value: await events.firstAfter("deploy", 0) },
    });
  });
});
