/**
 * Operator snapshots of a process subtree (SPEC section 7): state,
 * capabilities, private object namespace and journal position of every
 * process in it; restore one, or fork a new process from one.
 *
 * Authority never grows back: a restore or a fork keeps only the
 * capabilities that are in the snapshot AND still exist now, so a snapshot
 * cannot resurrect a revoked capability. External effects are never rolled
 * back: restore reports the effects journaled after the snapshot.
 *
 * Keys: `["snapshot", id]` the manifest; objects are copied to the
 * namespace `_snapshot/<id>/<pid>`.
 *
 * @module
 */

import type { Capability } from "../broker/capability.ts";
import type { CapabilityStore } from "../broker/capability_store.ts";
import { SyscallError } from "../broker/errors.ts";
import {
  deleteRecords,
  type Journal,
  type JournalRecord,
  loadJournal,
  putRecord,
} from "../broker/journal.ts";
import { type ObjectMemory, privateNamespace } from "./object_memory.ts";
import { END_STATES, type ProcessRecord, type ProcessTable } from "./process_table.ts";
import type { Store } from "./store.ts";
import { deleteCheckpointsFrom } from "./syscalls/ckpt.ts";
import type { Waits } from "./waits.ts";

/** What the snapshots need from the kernel. */
export interface SnapshotKernel {
  /** The store the manifests and journals are kept in. */
  readonly store: Pick<Store, "kv">;
  /** The journal, flushed before a snapshot reads it. */
  readonly journal: Pick<Journal, "flush">;
  /** The process table: the subtree, and the rows put back or created. */
  readonly processes: Pick<
    ProcessTable,
    "require" | "children" | "restore" | "create" | "transition"
  >;
  /** The capability store: what a snapshot holds, keeps and derives. */
  readonly caps: Pick<CapabilityStore, "list" | "grant" | "revoke">;
  /** Object Memory: each process's private namespace is copied in and out. */
  readonly objects: Pick<ObjectMemory, "copyNamespace" | "list" | "delete">;
  /** The waits, to put back the pending wait of a blocked process. */
  readonly waits: Pick<Waits, "rearm">;
  /** The clock. */
  readonly now: () => number;
  /** Runs a runnable process. */
  start(pid: number): void;
  /** Stops the cell of `pid`, if it has one, and waits until it is gone. */
  stopExecution(pid: number): Promise<void>;
  /** Kills a process created in the subtree after the snapshot. */
  finish(pid: number, state: "killed", outcome: { reason: string }): Promise<void>;
}

/** One process as a snapshot holds it. */
export interface SnapshotEntry {
  /** The process's row as it was at snapshot time. */
  record: ProcessRecord;
  /** The capabilities the process held at snapshot time. */
  capabilities: Capability[];
  /** The last journal seq at snapshot time. */
  journalSeq: number;
  /** The pending wait of a blocked process, put back on restore. */
  waitRecord?: JournalRecord;
}

/** A snapshot of a process subtree. */
export interface Snapshot {
  /** The snapshot's id. */
  id: string;
  /** When the snapshot was taken, in ms since the epoch. */
  at: number;
  /** The pid at the root of the snapshotted subtree. */
  root: number;
  /** Every process of the subtree. */
  processes: SnapshotEntry[];
}

/** An external effect made after a snapshot, as restore reports it. */
export interface LaterEffect {
  /** The process that made the effect. */
  pid: number;
  /** The journal seq of the call. */
  seq: number;
  /** The syscall name, e.g. `net.fetch`. */
  syscall: string;
  /** When the call was journaled, in ms since the epoch. */
  at: number;
  /** How the call ended: `unknown` when it has no `done` record. */
  outcome: "ok" | "error" | "unknown";
}

/** What a restore did. */
export interface RestoreReport {
  /** The pids put back to their snapshot state. */
  restored: number[];
  /** Processes created after the snapshot in the subtree: killed. */
  killed: number[];
  /** Capabilities in the snapshot that were revoked since, and stay revoked. */
  notRestored: string[];
  /** Effects journaled after the snapshot: they happened and were not undone. */
  effectsAfter: LaterEffect[];
}

const ns = (id: string, pid: number) => `_snapshot/${id}/${pid}`;

/**
 * Snapshots of a kernel.
 *
 * @example
 * ```ts ignore
 * const snap = await kernel.snapshots.save(pid);
 * const report = await kernel.snapshots.restore(snap.id);
 * console.log(report.effectsAfter);
 * ```
 */
export class Snapshots {
  #kernel: SnapshotKernel;

  /** Snapshots of `kernel`. */
  constructor(kernel: SnapshotKernel) {
    this.#kernel = kernel;
  }

  /** Snapshots `root` and its descendants. */
  async save(root: number): Promise<Snapshot> {
    const kernel = this.#kernel;
    await kernel.journal.flush();
    const id = crypto.randomUUID();
    const processes: SnapshotEntry[] = [];
    for (const pid of await this.#subtree(root)) {
      const record = await kernel.processes.require(pid);
      await kernel.objects.copyNamespace(`proc/${pid}`, ns(id, pid));
      const waitRecord = record.waitSeq === undefined
        ? undefined
        : (await kernel.store.kv.get<JournalRecord>(["journal", pid, record.waitSeq])).value;
      processes.push({
        record,
        capabilities: await kernel.caps.list(pid, kernel.now()),
        journalSeq: await this.#lastSeq(pid),
        waitRecord: waitRecord?.phase === "wait" ? waitRecord : undefined,
      });
    }
    const snapshot: Snapshot = { id, at: kernel.now(), root, processes };
    const result = await kernel.store.kv.set(["snapshot", id], snapshot);
    if (!result.ok) throw new SyscallError("EINVAL", `Cannot save snapshot of process ${root}`);
    return snapshot;
  }

  /** Every snapshot, oldest first. */
  async list(): Promise<Snapshot[]> {
    const out: Snapshot[] = [];
    for await (const entry of this.#kernel.store.kv.list<Snapshot>({ prefix: ["snapshot"] })) {
      out.push(entry.value);
    }
    return out.sort((a, b) => a.at - b.at);
  }

  /** One snapshot; `ENOENT` when unknown. */
  async get(id: string): Promise<Snapshot> {
    const snapshot = (await this.#kernel.store.kv.get<Snapshot>(["snapshot", id])).value;
    if (!snapshot) throw new SyscallError("ENOENT", `Cannot find snapshot "${id}"`);
    return snapshot;
  }

  /**
   * Puts every process of a snapshot back: its record (a running process
   * restarts from its journal at the snapshot position), its private
   * objects, and its capabilities that still exist. Processes created in
   * the subtree since are killed.
   */
  async restore(id: string): Promise<RestoreReport> {
    const kernel = this.#kernel;
    const snapshot = await this.get(id);
    const report: RestoreReport = { restored: [], killed: [], notRestored: [], effectsAfter: [] };
    const inSnapshot = new Set(snapshot.processes.map((p) => p.record.pid));
    for (const pid of await this.#subtree(snapshot.root)) {
      if (!inSnapshot.has(pid)) {
        await kernel.finish(pid, "killed", { reason: `snapshot ${id} was restored` });
        report.killed.push(pid);
      }
    }
    for (const entry of snapshot.processes) {
      const pid = entry.record.pid;
      await kernel.stopExecution(pid);
      const later = [...(await loadJournal(kernel.store.kv, pid, entry.journalSeq + 1)).values()];
      for (const r of later) {
        if (r.effect !== "none") {
          report.effectsAfter.push({
            pid,
            seq: r.seq,
            syscall: r.name,
            at: r.at,
            outcome: r.phase !== "done" ? "unknown" : r.ok ? "ok" : "error",
          });
        }
      }
      await deleteRecords(kernel.store.kv, pid, later.map((r) => r.seq));
      await deleteCheckpointsFrom(kernel.store.kv, pid, entry.journalSeq + 1);
      report.notRestored.push(...await this.#keepCapabilities(pid, entry.capabilities));
      for (const object of await kernel.objects.list(`proc/${pid}`)) {
        await kernel.objects.delete(`proc/${pid}`, object.name);
      }
      await kernel.objects.copyNamespace(ns(id, pid), `proc/${pid}`);
      const state = END_STATES.has(entry.record.state) || entry.record.state === "blocked" ||
          entry.record.state === "paused"
        ? entry.record.state
        : "runnable";
      await kernel.processes.restore({ ...entry.record, state }, {
        reason: `snapshot ${id} was restored`,
        now: kernel.now(),
      });
      if (entry.waitRecord) await kernel.waits.rearm(entry.waitRecord);
      if (state === "runnable") kernel.start(pid);
      report.restored.push(pid);
    }
    return report;
  }

  /**
   * Forks a new process from the snapshot of its root: same image, input,
   * cwd, objects and journal up to the snapshot, and the root's
   * capabilities that still exist (derived from the live ones).
   */
  async fork(id: string): Promise<ProcessRecord> {
    const kernel = this.#kernel;
    const snapshot = await this.get(id);
    const root = snapshot.processes.find((p) => p.record.pid === snapshot.root)!;
    const source = root.record;
    const created = await kernel.processes.create({
      ppid: source.ppid,
      image: source.image,
      digest: source.digest,
      cwd: source.cwd,
      workspace: source.workspace,
      input: source.input,
      model: source.model,
      ownModel: source.ownModel,
      policy: source.policy,
      onParentExit: source.onParentExit,
      budget: source.budget,
      limits: source.limits,
      forkedFrom: source.pid,
      replayFrom: source.replayFrom,
      seed: source.seed,
      startedAt: source.startedAt,
    }, kernel.now());
    const live = new Map(
      (await kernel.caps.list(source.pid, kernel.now())).map((c) => [c.id, c]),
    );
    for (const cap of root.capabilities) {
      const from = live.get(cap.id);
      // As for a fork: one-shot grants are not duplicated, and a copy keeps
      // every attribute of the live original (the store checks it is a subset).
      if (!from || from.grantedBy === "kernel" || from.uses !== undefined) continue;
      const { resource, rights, scope, delegable } = from;
      await kernel.caps.grant(created.pid, { resource, rights, scope, delegable }, {
        grantedBy: `snapshot:${id}`,
        parent: from,
        expiresAt: from.expiresAt,
        now: kernel.now(),
      });
    }
    await kernel.caps.grant(created.pid, privateNamespace(created.pid), { grantedBy: "kernel" });
    await kernel.objects.copyNamespace(ns(id, source.pid), `proc/${created.pid}`);
    const records: JournalRecord[] = [
      ...(await loadJournal(kernel.store.kv, source.pid, 1)).values(),
    ].filter((r) => r.seq <= root.journalSeq && r.phase === "done").map((r) => ({
      ...r,
      pid: created.pid,
    }));
    for (let i = 0; i < records.length; i += 20) {
      const op = kernel.store.kv.atomic();
      for (const r of records.slice(i, i + 20)) putRecord(op, r);
      await op.commit();
    }
    const runnable = await kernel.processes.transition(created.pid, "runnable", {
      reason: `forked from snapshot ${id}`,
    });
    kernel.start(runnable.pid);
    return runnable;
  }

  async #keepCapabilities(pid: number, snapshot: Capability[]): Promise<string[]> {
    const kernel = this.#kernel;
    const wanted = new Set(snapshot.map((c) => c.id));
    const live = await kernel.caps.list(pid, kernel.now());
    for (const cap of live) {
      if (!wanted.has(cap.id) && cap.grantedBy !== "kernel") await kernel.caps.revoke(cap.id);
    }
    const liveIds = new Set(live.map((c) => c.id));
    return snapshot.filter((c) => !liveIds.has(c.id)).map((c) => c.id);
  }

  async #subtree(root: number): Promise<number[]> {
    const out: number[] = [];
    const queue = [root];
    while (queue.length) {
      const pid = queue.shift()!;
      await this.#kernel.processes.require(pid);
      out.push(pid);
      queue.push(...await this.#kernel.processes.children(pid));
    }
    return out;
  }

  async #lastSeq(pid: number): Promise<number> {
    const iter = this.#kernel.store.kv.list({ prefix: ["journal", pid] }, {
      reverse: true,
      limit: 1,
    });
    for await (const entry of iter) return entry.key[2] as number;
    return 0;
  }
}
