import assert from "node:assert/strict";
import { putRecord, type WaitSpec } from "../broker/journal.ts";
import { ProcessControl, type ProcessControlHost } from "./process_control.ts";
import { type NewProcess, type ProcessState, ProcessTable } from "./process_table.ts";
import type { ScheduledExecution } from "./scheduler.ts";
import type { WaitOutcome } from "./waits.ts";
import { newProcess } from "./_fixtures.ts";

/** An execution that records how it was stopped. */
class FakeExecution implements ScheduledExecution {
  readonly stops: string[] = [];
  ended = false;
  readonly pid = 0;
  readonly waitingSeq = undefined;
  readonly done: Promise<void> = Promise.resolve();
  stop(reason: string): void {
    this.stops.push(reason);
  }
  settled(): Promise<void> {
    return Promise.resolve();
  }
  wake(): Promise<boolean> {
    return Promise.resolve(false);
  }
  markEnded(): void {
    this.ended = true;
  }
}

/** A host over a real process table that records what control asks of the rest. */
class TestHost implements ProcessControlHost {
  readonly store: { kv: Deno.Kv };
  readonly processes: ProcessTable;
  flushes = 0;
  readonly invalidated: number[] = [];
  readonly completed: { pid: number; seq: number; outcome: WaitOutcome }[] = [];
  readonly rechecked: { pid: number; seq: number; wait: WaitSpec }[] = [];
  readonly executions = new Map<number, FakeExecution>();
  readonly started: number[] = [];
  readonly ending: number[] = [];
  readonly dequeued: number[] = [];
  serving = false;
  waitsStarted = false;

  /** Processes whose buffered records were claimed, and those committed with their end. */
  readonly claimed: number[] = [];
  readonly committedWithEnd: number[] = [];
  readonly journal = {
    flush: () => Promise.resolve(void this.flushes++),
    claim: (pid: number) => {
      this.claimed.push(pid);
      return Promise.resolve({
        link: () => Promise.resolve(),
        apply: () => {},
        committed: () => void this.committedWithEnd.push(pid),
        release: () => {},
      });
    },
  };
  readonly caps = { invalidate: (pid: number) => void this.invalidated.push(pid) };
  readonly waits = {
    complete: async (pid: number, seq: number, outcome: WaitOutcome) => {
      const value = outcome as { value?: { pid?: number } };
      if (value.value?.pid !== undefined) {
        await this.store.kv.delete(["wait_child", value.value.pid, pid, seq]);
      }
      this.completed.push({ pid, seq, outcome });
      return true;
    },
    // Each wait on the child's end recorded as completed with its value and
    // its index taken out in the ending commit, nothing else committed.
    childEnded: async (child: number, value: () => unknown) => {
      const waits: [number, number][] = [];
      for await (const { key } of this.store.kv.list({ prefix: ["wait_child", child] })) {
        const [, , pid, seq] = key as [string, number, number, number];
        waits.push([pid, seq]);
      }
      // Completed as the ending commit is built: the value is the child's end as it reads it.
      const apply = (op: Deno.AtomicOperation) => {
        for (const [pid, seq] of waits) {
          op.delete(["wait_child", child, pid, seq]);
          this.completed.push({ pid, seq, outcome: { ok: true, value: value() } });
        }
      };
      return { apply, linked: [], woken: () => {} };
    },
    start: () => void (this.waitsStarted = true),
    recheck: (pid: number, seq: number, wait: WaitSpec) => {
      this.rechecked.push({ pid, seq, wait });
      return Promise.resolve();
    },
  };
  readonly scheduler = {
    ending: (pid: number) => {
      this.ending.push(pid);
      this.executions.get(pid)?.markEnded();
    },
    executionOf: (pid: number) => this.executions.get(pid),
    start: (pid: number) => void this.started.push(pid),
    serve: () => void (this.serving = true),
    dequeue: (pid: number) => void this.dequeued.push(pid),
  };

  constructor(kv: Deno.Kv) {
    this.store = { kv };
    this.processes = new ProcessTable(kv);
  }

  /** A process in `state`, through legal transitions. */
  async process(state: ProcessState, extra: Partial<NewProcess> = {}): Promise<number> {
    const { pid } = await this.processes.create(
      newProcess({ image: "demo@1.0.0", ...extra }),
      0,
      { runnable: state !== "created" },
    );
    const path: Record<ProcessState, ProcessState[]> = {
      created: [],
      runnable: [],
      running: ["running"],
      blocked: ["running", "blocked"],
      paused: ["paused"],
      exited: ["running", "exited"],
      failed: ["failed"],
      killed: ["killed"],
    };
    for (const next of path[state]) await this.processes.transition(pid, next);
    return pid;
  }
}

async function withControl(fn: (control: ProcessControl, host: TestHost) => Promise<void>) {
  const kv = await Deno.openKv(":memory:");
  try {
    const host = new TestHost(kv);
    await fn(new ProcessControl(host), host);
  } finally {
    kv.close();
  }
}

Deno.test("finish ends a process once, answers its waiting parent and kills its children", async () => {
  await withControl(async (control, host) => {
    const parent = await host.process("running");
    const waiter = await host.process("blocked");
    const killed = await host.process("running", { ppid: parent });
    const orphan = await host.process("blocked", { ppid: parent, onParentExit: "orphan" });
    const execution = new FakeExecution();
    host.executions.set(parent, execution);
    await host.store.kv.set(["wait_child", parent, waiter, 4], true);
    await control.finish(parent, "exited", { result: { answer: 42 } });
    const ended = await host.processes.require(parent);
    assert.deepEqual([ended.state, ended.result], ["exited", { answer: 42 }]);
    // Its records go with each of the two ends (the parent's, its killed child's).
    assert.deepEqual([host.claimed, host.committedWithEnd], [[parent, killed], [parent, killed]]);
    assert.equal(host.flushes, 0);
    assert.deepEqual(host.ending, [parent, killed]);
    assert.equal(execution.ended, true);
    assert.deepEqual(execution.stops, ["The process exited"]);
    assert.deepEqual(host.invalidated, [parent, killed]);
    assert.deepEqual(host.completed, [{
      pid: waiter,
      seq: 4,
      outcome: {
        ok: true,
        value: { pid: parent, state: "exited", result: { answer: 42 }, error: undefined },
      },
    }]);
    const child = await host.processes.require(killed);
    assert.deepEqual([child.state, child.endedAt !== undefined], ["killed", true]);
    assert.equal((await host.processes.require(orphan)).state, "blocked");
    const last = [];
    for await (const event of host.processes.events({ pid: killed })) last.push(event.reason);
    assert.equal(last.at(-1), `Its parent ${parent} exited`);
    // Again: nothing changes, nothing is claimed or answered twice.
    await control.finish(parent, "failed", { error: { message: "late" } });
    assert.equal((await host.processes.require(parent)).state, "exited");
    assert.deepEqual([host.committedWithEnd.length, host.completed.length], [2, 1]);
  });
});

Deno.test("pause and resume move a process and stop its cell; kill ends it", async () => {
  await withControl(async (control, host) => {
    const pid = await host.process("running");
    const execution = new FakeExecution();
    host.executions.set(pid, execution);
    await host.processes.transition(pid, "runnable");
    await control.signal(pid, "pause", { by: "pid:1" });
    const paused = await host.processes.require(pid);
    assert.deepEqual([paused.state, paused.pausedFrom], ["paused", "runnable"]);
    assert.deepEqual(execution.stops, ["The process was paused"]);
    assert.deepEqual(host.dequeued, [pid]); // a queued start is taken back
    await control.signal(pid, "pause"); // already paused: nothing happens
    await control.signal(pid, "resume");
    assert.equal((await host.processes.require(pid)).state, "runnable");
    assert.deepEqual(host.started, [pid]);
    await assert.rejects(control.signal(pid, "resume"), {
      code: "EINVAL",
      message: `Cannot resume process ${pid}: it is runnable, not paused`,
    });
    await control.signal(pid, "kill");
    const killed = await host.processes.require(pid);
    assert.equal(killed.state, "killed");
    await assert.rejects(control.signal(pid, "terminate"), {
      code: "EINVAL",
      message: `Cannot signal process ${pid}: it has killed`,
    });
  });
});

Deno.test("interrupt fails the blocked call with EINTR and refuses a process that is not blocked", async () => {
  await withControl(async (control, host) => {
    const blocked = await host.process("blocked");
    await host.processes.update(blocked, () => ({ waitSeq: 9 }));
    await control.signal(blocked, "interrupt", { by: "operator" });
    assert.deepEqual(host.completed, [{
      pid: blocked,
      seq: 9,
      outcome: {
        ok: false,
        error: { code: "EINTR", message: "Interrupted by a signal from operator" },
      },
    }]);
    const runnable = await host.process("runnable");
    await assert.rejects(control.signal(runnable, "interrupt"), {
      code: "EINVAL",
      message: `Cannot interrupt process ${runnable}: it is not blocked in a syscall`,
    });
  });
});

Deno.test("waitFor resolves with the ended record and times out on one that does not end", async () => {
  await withControl(async (control, host) => {
    const pid = await host.process("running");
    const waiting = control.waitFor(pid);
    await host.processes.transition(pid, "exited", { patch: { result: 7 } });
    assert.equal((await waiting).result, 7);
    assert.equal((await control.waitFor(pid)).state, "exited");
    const other = await host.process("blocked");
    await assert.rejects(control.waitFor(other, { timeoutMs: 1 }), {
      code: "ETIMEDOUT",
      message: `Cannot wait for process ${other}: timed out`,
    });
    await assert.rejects(control.waitFor(99), { code: "ENOENT" });
  });
});

Deno.test("recover serves the store and resumes every live process by its state", async () => {
  await withControl(async (control, host) => {
    const orphaned = await host.process("running");
    const hosted = await host.process("running");
    host.executions.set(hosted, new FakeExecution());
    const runnable = await host.process("runnable");
    const created = await host.process("created");
    const blocked = await host.process("blocked");
    await host.processes.update(blocked, () => ({ waitSeq: 3 }));
    const wait: WaitSpec = { kind: "sleep", until: 5 };
    const op = host.store.kv.atomic();
    putRecord(op, {
      pid: blocked,
      seq: 3,
      name: "time.sleep",
      argsDigest: "s",
      effect: "none",
      phase: "wait",
      at: 0,
      wait,
    });
    await op.commit();
    assert.equal(await control.recover(), 2);
    assert.deepEqual([host.serving, host.waitsStarted], [true, true]);
    assert.deepEqual(host.started, [orphaned, runnable]);
    assert.equal((await host.processes.require(orphaned)).state, "runnable");
    assert.equal((await host.processes.require(hosted)).state, "running");
    const failed = await host.processes.require(created);
    assert.deepEqual([failed.state, failed.error?.message], [
      "failed",
      "Its creation was interrupted by a host restart",
    ]);
    assert.deepEqual(host.rechecked, [{ pid: blocked, seq: 3, wait }]);
  });
});
