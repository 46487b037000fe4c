import assert from "node:assert/strict";
import { PARKED } from "../broker/broker.ts";
import type { JournalRecord, WaitSpec } from "../broker/journal.ts";
import { TopicEvents } from "./events.ts";
import { type ProcessRecord, ProcessTable } from "./process_table.ts";
import { StorageQuotas } from "./storage_quota.ts";
import { type ParkedCall, Waits, type WaitsKernel } from "./waits.ts";
import { newProcess, withMemoryKv } from "./_fixtures.ts";

/**
 * What the waits see of a kernel: a real process table over the store; the
 * clock set by the test; the processes started, the message deliveries
 * asked for and the events on each topic kept in lists.
 */
class WaitsHost implements WaitsKernel {
  readonly store: { kv: Deno.Kv };
  readonly processes: ProcessTable;
  readonly journal = {
    flush: (): Promise<void> => Promise.resolve(),
    claim: () => Promise.reject(new Error("No journal records are claimed here")),
  };
  readonly closed = false;
  /** When it is, in ms. */
  at = 1_000;
  readonly now = (): number => this.at;
  /** Pids started, in order. */
  readonly started: number[] = [];
  /** `(pid, seq)` of every delivery asked of the mailboxes. */
  readonly deliveries: [number, number][] = [];
  /** Events on each topic, oldest first. */
  readonly posted: { topic: string; seq: number }[] = [];
  events: WaitsKernel["events"] = {
    firstAfter: (topic, afterSeq) =>
      Promise.resolve(this.posted.find((e) => e.topic === topic && e.seq > afterSeq)),
  };
  readonly mailbox = {
    deliver: (pid: number, seq: number): Promise<boolean> => {
      this.deliveries.push([pid, seq]);
      return Promise.resolve(false);
    },
  };

  constructor(kv: Deno.Kv) {
    this.store = { kv };
    this.processes = new ProcessTable(kv);
  }

  start(pid: number): void {
    this.started.push(pid);
  }

  /** Pids that keep their Worker here. */
  readonly lingering = new Set<number>();
  /** Lingering processes answered in place, with their call's record. */
  readonly resumed: { pid: number; state: string; seq: number }[] = [];

  isLingering(pid: number): boolean {
    return this.lingering.has(pid);
  }

  resumeClaimed(current: ProcessRecord, recorded: JournalRecord): void {
    this.resumed.push({ pid: current.pid, state: current.state, seq: recorded.seq });
  }
}

async function withWaits(
  body: (waits: Waits, host: WaitsHost, kv: Deno.Kv) => Promise<void>,
): Promise<void> {
  await withMemoryKv(async (kv) => {
    const host = new WaitsHost(kv);
    const waits = new Waits(host);
    try {
      await body(waits, host, kv);
    } finally {
      waits.stop();
      await waits.settled();
    }
  });
}

/** A process in state `running`, as one is while its program makes the call that parks. */
async function running(host: WaitsHost): Promise<ProcessRecord> {
  const proc = await host.processes.create(
    newProcess(),
    host.at,
    { runnable: true },
  );
  return await host.processes.transition(proc.pid, "running");
}

function call(proc: ProcessRecord, seq: number, name: string): ParkedCall {
  return { pid: proc.pid, seq, name, argsDigest: `digest-of-${name}` };
}

async function record(kv: Deno.Kv, pid: number, seq: number): Promise<JournalRecord | null> {
  return (await kv.get<JournalRecord>(["journal", pid, seq])).value;
}

async function keys(kv: Deno.Kv, prefix: Deno.KvKey): Promise<Deno.KvKey[]> {
  const out: Deno.KvKey[] = [];
  for await (const entry of kv.list({ prefix })) out.push(entry.key);
  return out;
}

Deno.test("a parked call blocks its process; the first completion wakes it, a second does nothing", async () => {
  await withWaits(async (waits, host, kv) => {
    const proc = await running(host);
    const wait: WaitSpec = { kind: "message" };
    assert.equal(await waits.park(call(proc, 4, "msg.recv"), wait), PARKED);

    const blocked = await host.processes.require(proc.pid);
    assert.equal(blocked.state, "blocked");
    assert.equal(blocked.waitingOn, "message");
    assert.equal(blocked.waitSeq, 4);
    assert.equal((await record(kv, proc.pid, 4))?.phase, "wait");
    assert.deepEqual(await keys(kv, ["wait_mail", proc.pid]), [["wait_mail", proc.pid, 4]]);
    // Parking looked once for a message that arrived meanwhile.
    assert.deepEqual(host.deliveries, [[proc.pid, 4]]);
    assert.deepEqual(host.started, []);

    const message = { seq: 1, from: null, data: "hi", at: 5 };
    assert.equal(await waits.complete(proc.pid, 4, { ok: true, value: message }), true);
    const done = await record(kv, proc.pid, 4);
    assert.equal(done?.phase, "done");
    assert.equal(done?.ok, true);
    assert.deepEqual(done?.value, message);
    assert.equal(done?.wait, undefined);
    assert.deepEqual(await keys(kv, ["wait_mail", proc.pid]), []);
    assert.equal((await host.processes.require(proc.pid)).state, "runnable");
    assert.deepEqual(host.started, [proc.pid]);

    assert.equal(await waits.complete(proc.pid, 4, { ok: true, value: "late" }), false);
    assert.deepEqual((await record(kv, proc.pid, 4))?.value, message);
    assert.deepEqual(host.started, [proc.pid]);
  });
});

Deno.test("a completion whose check no longer holds leaves the wait and its extra writes undone", async () => {
  await withWaits(async (waits, host, kv) => {
    const proc = await running(host);
    await waits.park(call(proc, 2, "msg.recv"), { kind: "message" });
    await kv.set(["mail", proc.pid, 1], "first");
    const entry = await kv.get(["mail", proc.pid, 1]);
    await kv.set(["mail", proc.pid, 1], "taken by someone else");

    const done = await waits.complete(proc.pid, 2, { ok: true, value: "first" }, {
      check: entry,
      extra: (op) => op.delete(["mail", proc.pid, 1]),
    });
    assert.equal(done, false);
    assert.equal((await record(kv, proc.pid, 2))?.phase, "wait");
    assert.equal((await kv.get(["mail", proc.pid, 1])).value, "taken by someone else");
    assert.equal((await host.processes.require(proc.pid)).state, "blocked");
    assert.deepEqual(host.started, []);
  });
});

Deno.test("a sleep's timer fires when its time comes, not before", async () => {
  await withWaits(async (waits, host, kv) => {
    const proc = await running(host);
    await waits.park(call(proc, 1, "time.sleep"), { kind: "sleep", until: host.at + 500 });
    assert.deepEqual(await keys(kv, ["timer"]), [["timer", 1_500, proc.pid, 1]]);

    host.at = 1_499;
    assert.equal(await waits.fireDue(), 0);
    assert.equal((await host.processes.require(proc.pid)).state, "blocked");

    host.at = 1_500;
    assert.equal(await waits.fireDue(), 1);
    const done = await record(kv, proc.pid, 1);
    assert.equal(done?.phase, "done");
    assert.equal(done?.ok, true);
    assert.equal(done?.value, null);
    assert.deepEqual(await keys(kv, ["timer"]), []);
    assert.deepEqual(host.started, [proc.pid]);
    assert.equal(await waits.fireDue(), 0);
  });
});

Deno.test("a sleep that is already due when it parks ends at once", async () => {
  await withWaits(async (waits, host, kv) => {
    const proc = await running(host);
    await waits.park(call(proc, 1, "time.sleep"), { kind: "sleep", until: host.at });
    assert.equal((await record(kv, proc.pid, 1))?.phase, "done");
    assert.equal((await host.processes.require(proc.pid)).state, "runnable");
    assert.deepEqual(await keys(kv, ["timer"]), []);
  });
});

Deno.test("a wait with a deadline that passes ends in ETIMEDOUT and drops its indexes", async () => {
  await withWaits(async (waits, host, kv) => {
    const proc = await running(host);
    await waits.park(call(proc, 3, "event.wait"), {
      kind: "event",
      topic: "deploy",
      afterSeq: 0,
      deadline: host.at + 100,
    });
    assert.deepEqual(await keys(kv, ["wait_event", "deploy"]), [
      ["wait_event", "deploy", proc.pid, 3],
    ]);
    host.at += 100;
    assert.equal(await waits.fireDue(), 1);
    const done = await record(kv, proc.pid, 3);
    assert.equal(done?.ok, false);
    assert.deepEqual(done?.error, {
      code: "ETIMEDOUT",
      message: "Cannot finish event.wait: timed out",
    });
    assert.deepEqual(await keys(kv, ["wait_event"]), []);
    assert.deepEqual(await keys(kv, ["timer"]), []);
  });
});

Deno.test("parking on a topic completes at once with an event past the cursor, and not with one before it", async () => {
  await withWaits(async (waits, host, kv) => {
    host.posted.push({ topic: "deploy", seq: 1 }, { topic: "deploy", seq: 2 });
    const late = await running(host);
    await waits.park(call(late, 1, "event.wait"), { kind: "event", topic: "deploy", afterSeq: 1 });
    assert.deepEqual((await record(kv, late.pid, 1))?.value, { topic: "deploy", seq: 2 });
    assert.equal((await host.processes.require(late.pid)).state, "runnable");

    const current = await running(host);
    await waits.park(call(current, 1, "event.wait"), {
      kind: "event",
      topic: "deploy",
      afterSeq: 2,
    });
    assert.equal((await record(kv, current.pid, 1))?.phase, "wait");
    assert.equal((await host.processes.require(current.pid)).state, "blocked");
    assert.deepEqual(host.started, [late.pid]);
  });
});

Deno.test("an event posted on a topic wakes the process waiting on it", async () => {
  await withWaits(async (waits, host, kv) => {
    const quotas = new StorageQuotas(kv, host.processes);
    const events = new TopicEvents({ store: host.store, quotas, waits, now: host.now });
    host.events = events;
    await events.post("deploy", "old", null);
    const proc = await running(host);
    await waits.park(call(proc, 6, "event.wait"), {
      kind: "event",
      topic: "deploy",
      afterSeq: await events.latestSeq("deploy"),
    });
    assert.equal((await host.processes.require(proc.pid)).state, "blocked");

    await events.post("other", "elsewhere", null);
    assert.equal((await host.processes.require(proc.pid)).state, "blocked");

    await events.post("deploy", { ok: true }, null);
    const done = await record(kv, proc.pid, 6);
    assert.deepEqual(done?.value, {
      topic: "deploy",
      seq: 2,
      data: { ok: true },
      from: null,
      at: host.at,
    });
    assert.equal((await host.processes.require(proc.pid)).state, "runnable");
    assert.deepEqual(host.started, [proc.pid]);
  });
});

Deno.test("a proc.wait on a child that already ended completes as it parks", async () => {
  await withWaits(async (waits, host, kv) => {
    const parent = await running(host);
    const child = await running(host);
    await host.processes.transition(child.pid, "exited", { patch: { result: 42 } });
    await waits.park(call(parent, 2, "proc.wait"), { kind: "child", pid: child.pid });
    assert.deepEqual((await record(kv, parent.pid, 2))?.value, {
      pid: child.pid,
      state: "exited",
      result: 42,
      error: undefined,
    });
    assert.deepEqual(await keys(kv, ["wait_child"]), []);
    assert.deepEqual(host.started, [parent.pid]);
  });
});

Deno.test("a retry outcome drops the wait record so the call runs again", async () => {
  await withWaits(async (waits, host, kv) => {
    const proc = await running(host);
    await waits.park(call(proc, 5, "fs.write"), { kind: "human", request: "r-1" });
    assert.equal(await waits.complete(proc.pid, 5, { retry: true }), true);
    assert.equal(await record(kv, proc.pid, 5), null);
    assert.equal((await host.processes.require(proc.pid)).state, "runnable");
  });
});

Deno.test("a paused process whose wait ends stays paused, to resume as runnable", async () => {
  await withWaits(async (waits, host) => {
    const proc = await running(host);
    await waits.park(call(proc, 1, "time.sleep"), { kind: "sleep", until: host.at + 10 });
    await host.processes.update(proc.pid, () => ({ state: "paused", pausedFrom: "blocked" }));
    host.at += 10;
    assert.equal(await waits.fireDue(), 1);
    const paused = await host.processes.require(proc.pid);
    assert.equal(paused.state, "paused");
    assert.equal(paused.pausedFrom, "runnable");
    assert.deepEqual(host.started, []);
  });
});
