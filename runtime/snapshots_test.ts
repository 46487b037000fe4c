import assert from "node:assert/strict";
import { parseCapability } from "../broker/capability.ts";
import { CapabilityStore } from "../broker/capability_store.ts";
import { type JournalRecord, loadJournal, putRecord } from "../broker/journal.ts";
import { ObjectMemory } from "./object_memory.ts";
import { type ProcessRecord, ProcessTable } from "./process_table.ts";
import { type SnapshotKernel, Snapshots } from "./snapshots.ts";
import { newProcess, withMemoryKv } from "./_fixtures.ts";

/**
 * What the snapshots see of a kernel: a real process table, capability
 * store and Object Memory over the store, a fixed clock, and the waits put
 * back, the executions stopped, the processes started and those killed
 * recorded (a kill ends the process in the table).
 */
class SnapshotHost implements SnapshotKernel {
  readonly store: { kv: Deno.Kv };
  readonly processes: ProcessTable;
  readonly caps: CapabilityStore;
  readonly objects: ObjectMemory;
  readonly journal = { flush: (): Promise<void> => Promise.resolve() };
  readonly now = (): number => 20_000;
  /** The wait records put back, in order. */
  readonly rearmed: JournalRecord[] = [];
  readonly waits: SnapshotKernel["waits"] = {
    rearm: (record) => {
      this.rearmed.push(record);
      return Promise.resolve();
    },
  };
  /** Pids started, stopped and killed, in order. */
  readonly started: number[] = [];
  readonly stopped: number[] = [];
  readonly killed: { pid: number; reason: string }[] = [];

  constructor(kv: Deno.Kv) {
    this.store = { kv };
    this.processes = new ProcessTable(kv);
    this.caps = new CapabilityStore(kv);
    this.objects = new ObjectMemory(kv, { now: this.now });
  }

  start(pid: number): void {
    this.started.push(pid);
  }

  stopExecution(pid: number): Promise<void> {
    this.stopped.push(pid);
    return Promise.resolve();
  }

  async finish(pid: number, state: "killed", outcome: { reason: string }): Promise<void> {
    this.killed.push({ pid, reason: outcome.reason });
    await this.processes.transition(pid, state, { reason: outcome.reason });
  }

  /** A running process, child of `ppid`. */
  async running(ppid: number | null): Promise<ProcessRecord> {
    const proc = await this.processes.create(
      newProcess({ ppid }),
      this.now(),
      { runnable: true },
    );
    return await this.processes.transition(proc.pid, "running");
  }

  async grant(pid: number, text: string): Promise<string> {
    return (await this.caps.grant(pid, parseCapability(text), { grantedBy: "operator" })).id;
  }

  async journaled(...records: Omit<JournalRecord, "argsDigest" | "at">[]): Promise<void> {
    const op = this.store.kv.atomic();
    for (const r of records) putRecord(op, { ...r, argsDigest: `digest-${r.seq}`, at: 1 });
    assert.equal((await op.commit()).ok, true);
  }

  async stage(pid: number): Promise<unknown> {
    return (await this.objects.get(`proc/${pid}`, "stage")).value;
  }
}

async function withSnapshots(
  body: (snapshots: Snapshots, host: SnapshotHost) => Promise<void>,
): Promise<void> {
  await withMemoryKv((kv) => {
    const host = new SnapshotHost(kv);
    return body(new Snapshots(host), host);
  });
}

/**
 * A root blocked in `msg.recv` at journal seq 3 after an `fs.append`, with a
 * running child, two capabilities and an object; then its snapshot.
 */
async function snapshotted(snapshots: Snapshots, host: SnapshotHost) {
  const root = await host.running(null);
  const child = await host.running(root.pid);
  const read = await host.grant(root.pid, "fs:read:/ws/**");
  const fetch = await host.grant(root.pid, "net:fetch:https://api.example/**");
  await host.objects.put(`proc/${root.pid}`, "stage", "one", { writer: root.pid });
  const wait: JournalRecord = {
    pid: root.pid,
    seq: 3,
    name: "msg.recv",
    argsDigest: "digest-3",
    effect: "none",
    phase: "wait",
    at: 1,
    wait: { kind: "message" },
  };
  await host.journaled(
    { pid: root.pid, seq: 1, name: "fs.append", effect: "effect", phase: "done", ok: true },
    { pid: root.pid, seq: 2, name: "obj.put", effect: "idempotent", phase: "done", ok: true },
  );
  await host.processes.update(root.pid, () => ({
    state: "blocked",
    waitingOn: "message",
    waitSeq: 3,
  }), { prepare: () => Promise.resolve((op: Deno.AtomicOperation) => putRecord(op, wait)) });
  const snapshot = await snapshots.save(root.pid);
  return { root, child, read, fetch, wait, snapshot };
}

Deno.test("a snapshot holds each process of the subtree with its capabilities, journal position and wait", async () => {
  await withSnapshots(async (snapshots, host) => {
    const { root, child, read, fetch, wait, snapshot } = await snapshotted(snapshots, host);
    assert.equal(snapshot.root, root.pid);
    assert.deepEqual(snapshot.processes.map((p) => p.record.pid), [root.pid, child.pid]);
    const [saved] = snapshot.processes;
    assert.equal(saved.record.state, "blocked");
    assert.equal(saved.journalSeq, 3);
    assert.deepEqual(saved.waitRecord, wait);
    assert.deepEqual(saved.capabilities.map((c) => c.id).sort(), [read, fetch].sort());
    assert.deepEqual((await snapshots.get(snapshot.id)).id, snapshot.id);
    assert.deepEqual((await snapshots.list()).map((s) => s.id), [snapshot.id]);
  });
});

Deno.test("a restore puts state and objects back, kills later children, keeps revocations and reports later effects", async () => {
  await withSnapshots(async (snapshots, host) => {
    const { root, child, read, fetch, wait, snapshot } = await snapshotted(snapshots, host);

    // After the snapshot: the wait ends, an effect is done and another left
    // half-way, the object changes, a grant is revoked and another made,
    // and a new child is spawned.
    await host.processes.transition(root.pid, "runnable");
    await host.processes.transition(root.pid, "running");
    await host.journaled(
      { pid: root.pid, seq: 3, name: "msg.recv", effect: "none", phase: "done", ok: true },
      { pid: root.pid, seq: 4, name: "net.fetch", effect: "effect", phase: "done", ok: false },
      { pid: root.pid, seq: 5, name: "fs.write", effect: "effect", phase: "intent" },
    );
    await host.objects.put(`proc/${root.pid}`, "stage", "two", { writer: root.pid });
    await host.caps.revoke(read);
    await host.grant(root.pid, "fs:write:/ws/**");
    const late = await host.running(root.pid);

    const report = await snapshots.restore(snapshot.id);
    assert.deepEqual(report.killed, [late.pid]);
    assert.deepEqual(host.killed, [{
      pid: late.pid,
      reason: `snapshot ${snapshot.id} was restored`,
    }]);
    assert.equal((await host.processes.require(late.pid)).state, "killed");
    assert.deepEqual(report.restored, [root.pid, child.pid]);
    assert.deepEqual(report.notRestored, [read]);
    assert.deepEqual(report.effectsAfter.map((e) => [e.seq, e.syscall, e.outcome]), [
      [4, "net.fetch", "error"],
      [5, "fs.write", "unknown"],
    ]);

    // The grant made since is dropped; the one revoked since stays revoked.
    assert.deepEqual((await host.caps.list(root.pid)).map((c) => c.id), [fetch]);
    assert.equal(await host.stage(root.pid), "one");
    assert.deepEqual([...(await loadJournal(host.store.kv, root.pid, 4)).keys()], []);
    assert.equal((await host.processes.require(root.pid)).state, "blocked");
    assert.deepEqual(host.rearmed, [wait]);
    // The child was running: it restarts from its journal; the blocked root waits.
    assert.equal((await host.processes.require(child.pid)).state, "runnable");
    assert.deepEqual(host.started, [child.pid]);
    assert.deepEqual(host.stopped, [root.pid, child.pid]);
  });
});

Deno.test("a fork from a snapshot gets its objects, finished calls and lasting live capabilities only", async () => {
  await withSnapshots(async (snapshots, host) => {
    const { root, read, fetch } = await snapshotted(snapshots, host);
    const once = await host.grant(root.pid, "fs:write:/ws/out/**;uses=1");
    const snapshotWithOnce = await snapshots.save(root.pid);
    await host.caps.revoke(read);
    await host.objects.put(`proc/${root.pid}`, "stage", "two", { writer: root.pid });

    const forked = await snapshots.fork(snapshotWithOnce.id);
    assert.notEqual(forked.pid, root.pid);
    assert.equal(forked.forkedFrom, root.pid);
    assert.equal(forked.state, "runnable");
    assert.deepEqual(host.started, [forked.pid]);
    assert.equal(await host.stage(forked.pid), "one");

    const caps = await host.caps.list(forked.pid);
    const copied = caps.filter((c) => c.grantedBy === `snapshot:${snapshotWithOnce.id}`);
    assert.deepEqual(copied.map((c) => [c.resource, c.scope, c.parent]), [
      ["net", "https://api.example/**", fetch],
    ]);
    assert.ok(!caps.some((c) => c.parent === once || c.parent === read));
    assert.ok(caps.some((c) => c.grantedBy === "kernel" && c.scope === `proc/${forked.pid}`));

    const journal = await loadJournal(host.store.kv, forked.pid, 1);
    assert.deepEqual([...journal.keys()], [1, 2]);
    assert.ok([...journal.values()].every((r) => r.pid === forked.pid && r.phase === "done"));
  });
});
