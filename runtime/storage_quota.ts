/**
 * Storage quotas: the bytes a process makes the host keep, charged to the
 * process and every ancestor, so a process's quota bounds its whole subtree
 * and a root's quota bounds its tree.
 *
 * Two quotas, each a `budget` field of the process (else the default):
 * - `storageBytes` ({@link DEFAULT_STORAGE_BYTES}): Object Memory values it
 *   wrote (in its private namespace or a shared one), its transcript and its
 *   checkpoints. A write is charged in the same commit as the write, checked
 *   against the versionstamp of every counter it moves, and refused with
 *   `EBUDGET` when it would take a counter over its quota; overwriting or
 *   deleting an object gives its bytes back to whoever was charged for it.
 * - `journalBytes` ({@link DEFAULT_JOURNAL_BYTES}): the journal and audit
 *   records of its syscalls. They are charged with blind sums in the commit
 *   that writes them (a record of what happened cannot be refused), and a
 *   process whose subtree or tree is over the quota fails with `EBUDGET` at
 *   its next call.
 *
 * Keys: `["storage_used", pid]` (a number) and `["journal_used", pid]` (a
 * `Deno.KvU64`), each the bytes charged to the subtree of `pid`.
 *
 * @module
 */

import { SyscallError } from "../broker/errors.ts";
import type { StoreChange } from "../broker/store_change.ts";
import { CommittedEntries } from "./committed_entries.ts";
import type { ProcessRecord, ProcessTable } from "./process_table.ts";

/** Default `storageBytes` quota of a process (and so of a tree): 64 MiB. */
export const DEFAULT_STORAGE_BYTES = 64 * 1024 * 1024;

/** Default `journalBytes` quota of a process (and so of a tree): 256 MiB. */
export const DEFAULT_JOURNAL_BYTES = 256 * 1024 * 1024;

/** Bytes stored for a pid. */
export interface StorageUsage {
  /** Objects, transcript and checkpoints of the pid's subtree. */
  storageBytes: number;
  /** Journal and audit records of the pid's subtree. */
  journalBytes: number;
}

/** A move of stored bytes: a charge to `pid` (positive) or a credit (negative). */
export interface StorageChange {
  /** The process charged or credited (with its ancestors). */
  pid: number;
  /** Bytes added (positive) or given back (negative). */
  bytes: number;
}

/** One process of a lineage with its quotas. */
interface _Link {
  pid: number;
  storageBytes: number;
  journalBytes: number;
}

/**
 * Most lineages and counters kept in memory. A lineage's processes never
 * change, but their quotas may (an exec narrows them): a transition showing
 * other quotas than a kept lineage has drops every kept lineage.
 */
const CACHE_SIZE = 4096;

/**
 * How old a journal counter read from the store may be before admission
 * reads it again; in between, this host adds what it charges itself.
 */
const JOURNAL_REFRESH_MS = 1000;

/**
 * The storage quotas of a kernel's processes.
 *
 * @example
 * ```ts ignore
 * const apply = await kernel.quotas.prepare([{ pid, bytes: 1024 }], 'put object "x"');
 * const op = kv.atomic().set(key, value);
 * apply(op);
 * await op.commit(); // not ok when a counter moved meanwhile: prepare again
 * ```
 */
export class StorageQuotas {
  #kv: Deno.Kv;
  #processes: ProcessTable;
  #lineages = new Map<number, _Link[]>();
  /** The quotas of each process in a kept lineage, as kept. */
  #kept = new Map<number, _Link>();
  #journalSeen = new Map<number, { bytes: number; readAt: number }>();
  /** `storageBytes` counters this host committed, checked by its next charge (see {@link prepareCharges}). */
  #counters = new CommittedEntries<number>(CACHE_SIZE);

  /** Quotas over `kv`, with the budgets of `processes`. */
  constructor(kv: Deno.Kv, processes: ProcessTable) {
    this.#kv = kv;
    this.#processes = processes;
    processes.subscribe((record, event, foreign) => {
      const kept = this.#kept.get(record.pid);
      if (kept) {
        const now = _link(record);
        if (now.storageBytes !== kept.storageBytes || now.journalBytes !== kept.journalBytes) {
          this.#lineages.clear();
          this.#kept.clear();
        }
      }
      // A process this host makes under a parent whose lineage it knows has
      // that lineage below its own record: known without reading either back.
      if (foreign || event.from !== null || record.ppid === null) return;
      const above = this.#lineages.get(record.ppid);
      if (above) this.#remember(record.pid, [_link(record), ...above]);
    });
  }

  /**
   * The checked mutations that apply `changes` to the `storageBytes`
   * counters of each pid and its ancestors, for one atomic commit with the
   * write they pay for. Throws `EBUDGET`, naming `action` and the quota, when
   * a counter that goes up would end over its quota. When the commit fails
   * (a counter moved meanwhile), prepare again.
   */
  async prepare(
    changes: readonly StorageChange[],
    action: string,
  ): Promise<(op: Deno.AtomicOperation) => void> {
    return (await this.prepareCharges(changes, action)).apply;
  }

  /**
   * {@link prepare} as a change of the store: once it is committed
   * (`committed`), the counters it set are kept with the commit's
   * versionstamp, and the next charge of this host checks them there
   * without reading them back (see `committed_entries.ts`): when another
   * host moved one since, the commit fails and the charge is prepared again
   * from the store. A refusal is always decided from the store.
   */
  async prepareCharges(
    changes: readonly StorageChange[],
    action: string,
  ): Promise<StoreChange<void>> {
    const deltas = new Map<number, { bytes: number; limit: number }>();
    for (const change of changes) {
      if (change.bytes === 0) continue;
      for (const link of await this.#lineage(change.pid)) {
        const delta = deltas.get(link.pid) ?? { bytes: 0, limit: link.storageBytes };
        delta.bytes += change.bytes;
        deltas.set(link.pid, delta);
      }
    }
    // A counter the changes leave as it is (an object replaced by one of its
    // size, charged to the same process) is neither read, checked nor set.
    const pids = [...deltas.keys()].filter((pid) => deltas.get(pid)!.bytes !== 0);
    const keys = pids.map((pid) => ["storage_used", pid]);
    const totals = (entries: Deno.KvEntryMaybe<number>[]): number[] =>
      entries.map((entry, i) => {
        const { bytes, limit } = deltas.get(pids[i])!;
        const total = Math.max(0, (entry.value ?? 0) + bytes);
        if (bytes > 0 && total > limit) {
          throw new SyscallError(
            "EBUDGET",
            `${action}: process ${
              pids[i]
            } would store ${total} bytes, over its storageBytes quota of ${limit}`,
          );
        }
        return total;
      });
    let entries = await this.#counters.takeMany(this.#kv, keys);
    let next: number[];
    try {
      next = totals(entries);
    } catch (error) {
      if (!(error instanceof SyscallError)) throw error;
      // Counters this host committed may be behind another host's: confirm from the store.
      entries = await this.#counters.takeMany(this.#kv, keys, { fresh: true });
      next = totals(entries);
    }
    return {
      result: undefined,
      apply: (op) => {
        entries.forEach((entry, i) => op.check(entry).set(entry.key, next[i]));
      },
      committed: (versionstamp) => {
        entries.forEach((entry, i) => this.#counters.record(entry.key, next[i], versionstamp));
      },
    };
  }

  /**
   * `EBUDGET` when `bytes` more would take `pid` or an ancestor over its
   * `storageBytes` quota now: an early refusal before a large write, which
   * {@link prepare} still checks in its commit.
   */
  async precheck(pid: number, bytes: number, action: string): Promise<void> {
    await this.prepare([{ pid, bytes }], action);
  }

  /**
   * `EBUDGET` when `pid` or an ancestor has used its `journalBytes` quota.
   * Called before every syscall, so it reads a counter from the store at
   * most once a second and otherwise adds what this host charged since
   * (charges count from the moment a record is queued, before the group
   * commit writes it).
   */
  async admitJournal(pid: number, action: string): Promise<void> {
    const lineage = await this.#lineage(pid);
    const now = performance.now();
    const stale = lineage.filter((link) => {
      const seen = this.#journalSeen.get(link.pid);
      return !seen || now - seen.readAt > JOURNAL_REFRESH_MS;
    });
    if (stale.length) {
      const entries = await this.#getMany<Deno.KvU64>(
        stale.map((link) => ["journal_used", link.pid]),
      );
      if (this.#journalSeen.size >= CACHE_SIZE) this.#journalSeen.clear();
      entries.forEach((entry, i) => {
        // The store lags behind charges still queued for the group commit: keep the larger count.
        const counted = this.#journalSeen.get(stale[i].pid)?.bytes ?? 0;
        this.#journalSeen.set(stale[i].pid, {
          bytes: Math.max(counted, Number(entry.value?.value ?? 0n)),
          readAt: now,
        });
      });
    }
    for (const link of lineage) {
      const used = this.#journalSeen.get(link.pid)?.bytes ?? 0;
      if (used >= link.journalBytes) {
        throw new SyscallError(
          "EBUDGET",
          `${action}: process ${link.pid} has used its journalBytes quota of ${link.journalBytes} (${used} bytes of journal)`,
        );
      }
    }
  }

  /**
   * Blind mutations that charge `bytes` of journal to `pid` and its
   * ancestors: they never make a commit fail, so journal writes still batch.
   * The charge counts for admission at once.
   */
  async chargeJournal(pid: number, bytes: number): Promise<(op: Deno.AtomicOperation) => void> {
    const lineage = await this.#lineage(pid);
    const amount = Math.max(0, Math.ceil(bytes));
    for (const link of lineage) {
      const seen = this.#journalSeen.get(link.pid);
      if (seen) seen.bytes += amount;
    }
    return (op) => {
      for (const link of lineage) op.sum(["journal_used", link.pid], BigInt(amount));
    };
  }

  /** The bytes charged to `pid`'s subtree. */
  async usage(pid: number): Promise<StorageUsage> {
    const [storage, journal] = await this.#kv.getMany<[number, Deno.KvU64]>([
      ["storage_used", pid],
      ["journal_used", pid],
    ]);
    return {
      storageBytes: storage.value ?? 0,
      journalBytes: Number(journal.value?.value ?? 0n),
    };
  }

  /** `pid` and its ancestors, with their quotas; a pid with no record is charged alone, without a quota. */
  async #lineage(pid: number): Promise<_Link[]> {
    const cached = this.#lineages.get(pid);
    if (cached) return cached;
    const out: _Link[] = [];
    let record = await this.#processes.get(pid);
    if (!record) {
      return [{ pid, storageBytes: Infinity, journalBytes: Infinity }];
    }
    while (record) {
      out.push(_link(record));
      record = record.ppid === null ? undefined : await this.#processes.get(record.ppid);
    }
    this.#remember(pid, out);
    return out;
  }

  #remember(pid: number, lineage: _Link[]): void {
    if (this.#lineages.size >= CACHE_SIZE) {
      this.#lineages.clear();
      this.#kept.clear();
    }
    this.#lineages.set(pid, lineage);
    for (const link of lineage) this.#kept.set(link.pid, link);
  }

  async #getMany<T>(keys: Deno.KvKey[]): Promise<Deno.KvEntryMaybe<T>[]> {
    const out: Deno.KvEntryMaybe<T>[] = [];
    for (let i = 0; i < keys.length; i += 10) {
      out.push(...await this.#kv.getMany<T[]>(keys.slice(i, i + 10)));
    }
    return out;
  }
}

/** A process's storage and journal quotas. */
function _link(record: ProcessRecord): _Link {
  return {
    pid: record.pid,
    storageBytes: record.budget.storageBytes ?? DEFAULT_STORAGE_BYTES,
    journalBytes: record.budget.journalBytes ?? DEFAULT_JOURNAL_BYTES,
  };
}
