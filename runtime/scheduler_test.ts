import assert from "node:assert/strict";
import { SyscallError } from "../broker/errors.ts";
import type { JournalRecord } from "../broker/journal.ts";
import { type NewProcess, type ProcessRecord, ProcessTable } from "./process_table.ts";
import { type ScheduledExecution, Scheduler, type SchedulerHost } from "./scheduler.ts";
import { newProcess } from "./_fixtures.ts";

/** An execution whose program runs until the test ends it or the scheduler stops it. */
class FakeExecution implements ScheduledExecution {
  readonly pid: number;
  readonly stops: { reason: string; abortCalls?: boolean }[] = [];
  ended = false;
  /** The call its program waits in, while it lingers. */
  waitingSeq: number | undefined = undefined;
  /** The records it was woken with. */
  readonly woken: JournalRecord[] = [];
  #gone = Promise.withResolvers<void>();

  constructor(pid: number) {
    this.pid = pid;
  }

  stop(reason: string, options: { abortCalls?: boolean } = {}): void {
    this.stops.push({ reason, ...options });
    this.#gone.resolve();
  }

  settled(): Promise<void> {
    return this.#gone.promise;
  }

  get done(): Promise<void> {
    return this.#gone.promise;
  }

  wake(recorded: JournalRecord): Promise<boolean> {
    if (recorded.seq !== this.waitingSeq) return Promise.resolve(false);
    this.woken.push(recorded);
    this.waitingSeq = undefined;
    return Promise.resolve(true);
  }

  markEnded(): void {
    this.ended = true;
  }

  /** The program ends by itself. */
  exit(): void {
    this.#gone.resolve();
  }
}

/** A host over a real process table, recording what the scheduler asks of it. */
class TestHost implements SchedulerHost<FakeExecution> {
  readonly processes: ProcessTable;
  readonly now = () => 42;
  readonly launched: FakeExecution[] = [];
  readonly finished: { pid: number; message: string }[] = [];
  waitsStarted = 0;
  readonly waits = { start: () => void this.waitsStarted++ };
  /** Journal records a wake-up reads, by `pid:seq`. */
  readonly records = new Map<string, JournalRecord>();
  /** Every execution made, started or not. */
  readonly made: FakeExecution[] = [];
  /** While set, preparing a run waits for it. */
  gate: Promise<void> | undefined;
  #listeners = new Set<() => void>();

  constructor(processes: ProcessTable) {
    this.processes = processes;
  }

  async finish(pid: number, state: "failed", outcome: { error: { message: string } }) {
    this.finished.push({ pid, message: outcome.error.message });
    await this.processes.transition(pid, state, { patch: { error: outcome.error } });
    this.#notify();
  }

  waitRecord(pid: number, seq: number): Promise<JournalRecord | undefined> {
    return Promise.resolve(this.records.get(`${pid}:${seq}`));
  }

  async prepare(record: ProcessRecord) {
    if (record.image === "missing@1.0.0") {
      throw new SyscallError("ENOENT", `Cannot find image "${record.image}"`);
    }
    await this.gate;
    return (running: ProcessRecord) => {
      const execution = new FakeExecution(running.pid);
      this.made.push(execution);
      this.#notify();
      return Promise.resolve({
        execution,
        start: () => {
          this.launched.push(execution);
          this.#notify();
          return Promise.resolve();
        },
      });
    };
  }

  /** Resolves once `predicate` holds, checked after each launch or finish. */
  until(predicate: () => boolean | Promise<boolean>): Promise<void> {
    return new Promise((resolve) => {
      const check = async () => {
        if (await predicate()) {
          this.#listeners.delete(check);
          resolve();
        }
      };
      this.#listeners.add(check);
      check();
    });
  }

  #notify(): void {
    for (const listener of [...this.#listeners]) listener();
  }
}

function init(extra: Partial<NewProcess> = {}): NewProcess {
  return newProcess({ image: "demo@1.0.0", ...extra });
}

async function withScheduler(
  options: { maxRunning?: number; maxStarting?: number; runs?: boolean; waitGraceMs?: number },
  fn: (scheduler: Scheduler<FakeExecution>, host: TestHost, table: ProcessTable) => Promise<void>,
): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  const table = new ProcessTable(kv);
  const host = new TestHost(table);
  const scheduler = new Scheduler(host, {
    maxRunning: options.maxRunning ?? 16,
    maxStarting: options.maxStarting,
    runs: options.runs ?? true,
    waitGraceMs: options.waitGraceMs ?? 0,
  });
  try {
    await fn(scheduler, host, table);
  } finally {
    await scheduler.close();
    await scheduler.shutdown();
    kv.close();
  }
}

Deno.test("no more than maxRunning processes run at once; the next starts when one leaves its Worker", async () => {
  await withScheduler({ maxRunning: 2 }, async (scheduler, host, table) => {
    const pids: number[] = [];
    for (let i = 0; i < 3; i++) pids.push((await table.create(init(), 0, { runnable: true })).pid);
    for (const pid of pids) scheduler.start(pid);
    await host.until(() => host.launched.length === 2);
    // The first two in line run (in whichever order their launches finish).
    assert.deepEqual(host.launched.map((e) => e.pid).sort(), pids.slice(0, 2));
    assert.equal((await table.require(pids[2])).state, "runnable");
    for (const pid of pids.slice(0, 2)) {
      const record = await table.require(pid);
      assert.deepEqual([record.state, record.startedAt], ["running", 42]);
      assert.equal(scheduler.executionOf(pid), host.launched.find((e) => e.pid === pid));
    }
    const first = host.launched[0];
    first.exit();
    await host.until(() => host.launched.length === 3);
    assert.equal(host.launched[2].pid, pids[2]);
    assert.equal(scheduler.executionOf(first.pid), undefined);
    assert.ok(host.waitsStarted >= 3);
  });
});

Deno.test("a place held for a process being made counts against the bounds until it is launched or given back", async () => {
  await withScheduler({ maxRunning: 2 }, async (scheduler, host, table) => {
    const first = scheduler.admit()!;
    const second = scheduler.admit()!;
    assert.ok(first && second);
    assert.equal(scheduler.admit(), undefined, "no third place while two are held");
    // A queued start waits for a held place too.
    const queued = (await table.create(init(), 0, { runnable: true })).pid;
    scheduler.start(queued);
    assert.equal(scheduler.runQueue.queued, 1);
    const made = await table.create(init(), 0, { running: true });
    first.launch(made);
    first.launch(made); // a second launch of one place does nothing
    await host.until(() => host.launched.length === 1);
    assert.equal(host.launched[0].pid, made.pid);
    assert.equal(scheduler.executionOf(made.pid), host.launched[0]);
    assert.equal((await table.require(queued)).state, "runnable", "both places are still taken");
    second.cancel();
    await host.until(() => host.launched.length === 2);
    assert.equal(host.launched[1].pid, queued);
    assert.equal(scheduler.runQueue.running, 2);
    assert.equal(scheduler.admit(), undefined, "the bounds are reached");
  });
});

Deno.test("a process made running and killed while its run is prepared never starts", async () => {
  await withScheduler({}, async (scheduler, host, table) => {
    const opened = Promise.withResolvers<void>();
    host.gate = opened.promise;
    const place = scheduler.admit()!;
    const made = await table.create(init(), 0, { running: true });
    place.launch(made);
    // Its parent is killed meanwhile, and the child with it: no execution to stop yet.
    await table.transition(made.pid, "killed");
    scheduler.ending(made.pid);
    opened.resolve();
    await host.until(() => host.made.length === 1);
    const [execution] = host.made;
    await execution.settled();
    assert.deepEqual(host.launched, [], "the killed process's program was started");
    assert.ok(execution.ended);
    assert.equal((await table.require(made.pid)).state, "killed");
  });
});

Deno.test("a process made running while the host closes is put back to runnable", async () => {
  await withScheduler({}, async (scheduler, host, table) => {
    const place = scheduler.admit()!;
    const made = await table.create(init(), 0, { running: true });
    await scheduler.close();
    place.launch(made);
    await scheduler.shutdown();
    assert.deepEqual(host.launched, []);
    assert.equal((await table.require(made.pid)).state, "runnable");
  });
});

Deno.test("a kernel that runs no processes holds no place for one being made", async () => {
  await withScheduler({ runs: false }, (scheduler) => {
    assert.equal(scheduler.admit(), undefined);
    return Promise.resolve();
  });
});

Deno.test("a process runs once however often it is started, and only when runnable", async () => {
  await withScheduler({}, async (scheduler, host, table) => {
    const created = await table.create(init());
    const runnable = await table.create(init(), 0, { runnable: true });
    scheduler.start(created.pid);
    scheduler.start(runnable.pid);
    scheduler.start(runnable.pid);
    await host.until(() => host.launched.length === 1);
    scheduler.start(runnable.pid); // already running: nothing happens
    await scheduler.stopExecution(runnable.pid);
    assert.deepEqual(host.launched.map((e) => e.pid), [runnable.pid]);
    assert.deepEqual(host.launched[0].stops, [{ reason: "The operator stopped the process" }]);
    assert.equal((await table.require(created.pid)).state, "created");
  });
});

Deno.test("a process that cannot be prepared fails from runnable, without running", async () => {
  await withScheduler({}, async (scheduler, host, table) => {
    const proc = await table.create(init({ image: "missing@1.0.0" }), 0, { runnable: true });
    scheduler.start(proc.pid);
    await host.until(async () => (await table.require(proc.pid)).state === "failed");
    assert.deepEqual(host.finished, [{
      pid: proc.pid,
      message: 'Cannot find image "missing@1.0.0"',
    }]);
    const states = [];
    for await (const event of table.events({ pid: proc.pid })) states.push(event.to);
    assert.deepEqual(states, ["created", "runnable", "failed"]);
    assert.equal(host.launched.length, 0);
  });
});

Deno.test("a kernel that does not run processes starts none", async () => {
  await withScheduler({ runs: false }, async (scheduler, host, table) => {
    const proc = await table.create(init(), 0, { runnable: true });
    scheduler.start(proc.pid);
    await scheduler.close();
    await scheduler.shutdown();
    assert.equal(scheduler.runs, false);
    assert.equal(host.waitsStarted, 0);
    assert.equal((await table.require(proc.pid)).state, "runnable");
  });
});

Deno.test("shutdown stops every execution, aborting calls, and puts running processes back", async () => {
  await withScheduler({}, async (scheduler, host, table) => {
    const a = await table.create(init(), 0, { runnable: true });
    const b = await table.create(init(), 0, { runnable: true });
    scheduler.start(a.pid);
    scheduler.start(b.pid);
    await host.until(() => host.launched.length === 2);
    await table.transition(b.pid, "blocked");
    await scheduler.close();
    assert.equal(scheduler.closed, true);
    await scheduler.shutdown();
    for (const execution of host.launched) {
      assert.deepEqual(execution.stops, [{
        reason: "The host is shutting down",
        abortCalls: true,
      }]);
    }
    assert.equal((await table.require(a.pid)).state, "runnable");
    assert.equal((await table.require(b.pid)).state, "blocked");
    const last = [];
    for await (const event of table.events({ pid: a.pid })) last.push(event);
    assert.equal(last.at(-1)?.reason, "the host shut down");
    // Nothing starts once closed.
    scheduler.start(a.pid);
    assert.equal(host.launched.length, 2);
  });
});

Deno.test("ending a process tells its execution and idle waits for the last live one", async () => {
  await withScheduler({}, async (scheduler, host, table) => {
    const proc = await table.create(init(), 0, { runnable: true });
    scheduler.start(proc.pid);
    await host.until(() => host.launched.length === 1);
    let idle = false;
    const idling = scheduler.idle().then(() => idle = true);
    scheduler.ending(proc.pid);
    assert.equal(host.launched[0].ended, true);
    assert.equal(idle, false);
    await table.transition(proc.pid, "exited");
    await idling;
  });
});

Deno.test("transitions another kernel commits stop executions here and start what this host runs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "libos-scheduler-" });
  const kvHere = await Deno.openKv(`${dir}/store.db`);
  const kvThere = await Deno.openKv(`${dir}/store.db`);
  const here = new ProcessTable(kvHere);
  const there = new ProcessTable(kvThere);
  const host = new TestHost(here);
  const scheduler = new Scheduler(host, { maxRunning: 16, runs: true, waitGraceMs: 0 });
  try {
    await scheduler.follow({ pollMs: 10 });
    const mine = await here.create(init(), 0, { runnable: true });
    scheduler.start(mine.pid);
    await host.until(() => host.launched.length === 1);
    // A process another kernel makes runnable is not this host's (it neither
    // started it nor serves the store); then that kernel kills the one here.
    const theirs = await there.create(init(), 0, { runnable: true });
    await there.transition(mine.pid, "killed");
    // The execution here stops and reports nothing more.
    await host.launched[0].settled();
    assert.equal(host.launched[0].ended, true);
    assert.deepEqual(host.launched[0].stops, [{ reason: "The process is killed" }]);
    // Once it serves the store, what another kernel makes runnable starts here.
    const served = await there.create(init(), 0);
    scheduler.serve();
    await there.transition(served.pid, "runnable");
    await host.until(() => host.launched.length === 2);
    assert.equal(host.launched[1].pid, served.pid);
    assert.equal((await here.require(theirs.pid)).state, "runnable");
  } finally {
    await scheduler.close();
    await scheduler.shutdown();
    kvHere.close();
    kvThere.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a blocked process lingers in its Worker: a wake-up answers it in place, no new run", async () => {
  await withScheduler({ waitGraceMs: 60_000 }, async (scheduler, host, table) => {
    const proc = await table.create(init(), 0, { runnable: true });
    scheduler.start(proc.pid);
    await host.until(() => host.launched.length === 1);
    const [run] = host.launched;
    // Its program blocks in call 3: the row says so, then the run lingers.
    await table.update(proc.pid, () => ({ state: "blocked", waitSeq: 3 }));
    run.waitingSeq = 3;
    scheduler.linger(run);
    while (!scheduler.isLingering(proc.pid)) await new Promise((r) => setTimeout(r, 1));
    const done = { pid: proc.pid, seq: 3, phase: "done", ok: true, value: 7 } as JournalRecord;
    host.records.set(`${proc.pid}:3`, done);
    await table.update(proc.pid, () => ({ state: "runnable" }));
    scheduler.start(proc.pid);
    while (run.woken.length === 0) await new Promise((r) => setTimeout(r, 1));
    assert.deepEqual(run.woken, [done]);
    assert.equal(host.launched.length, 1, "no second run");
    assert.deepEqual(run.stops, [], "its Worker was kept");
    assert.equal((await table.require(proc.pid)).state, "running");
  });
});

Deno.test("with no grace period a blocked process parks at once", async () => {
  await withScheduler({ waitGraceMs: 0 }, async (scheduler, host, table) => {
    const proc = await table.create(init(), 0, { runnable: true });
    scheduler.start(proc.pid);
    await host.until(() => host.launched.length === 1);
    const [run] = host.launched;
    run.waitingSeq = 3;
    scheduler.linger(run);
    assert.deepEqual(run.stops.map((s) => s.reason), ["The process is waiting"]);
  });
});
