/**
 * Where a process's replay starts: after its latest checkpoint whose call
 * has a journal record, else at its `replayFrom` (set by an exec), else at
 * its first call; and the journal a fork replays, a copy of its parent's
 * up to the fork. Checkpoints themselves are kept by `syscalls/ckpt.ts`,
 * journal records by `broker/journal.ts`: this module reads them and
 * copies through their owners.
 *
 * @module
 */

import type { CallContext } from "../broker/broker.ts";
import { type JournalRecord, loadJournal, putRecord } from "../broker/journal.ts";
import { readChunked } from "./chunks.ts";
import type { ProcessRecord } from "./process_table.ts";
import { copyCheckpoint } from "./syscalls/ckpt.ts";

/** Where replay of a process starts, and the program state to start it from. */
export interface ReplayStart {
  /** The journal seq of the first call the program makes (or replays). */
  firstSeq: number;
  /** The checkpoint state replay starts from, if any. */
  checkpoint?: unknown;
}

/**
 * Where replay of `record` starts: after its latest checkpoint at or past
 * `replayFrom` that counts (its call has a journal record and its state is
 * stored), or at `replayFrom` (default 1).
 */
export async function replayStart(
  kv: Deno.Kv,
  record: Pick<ProcessRecord, "pid" | "replayFrom">,
): Promise<ReplayStart> {
  const from = record.replayFrom ?? 1;
  const latest = kv.list<{ seq: number }>(
    { start: ["ckpt", record.pid, from], end: ["ckpt", record.pid, Number.MAX_SAFE_INTEGER] },
    { reverse: true, limit: 1 },
  );
  for await (const entry of latest) {
    const state = await readChunked(kv, ["ckpt_state", record.pid, entry.value.seq]);
    const done = (await kv.get<JournalRecord>(["journal", record.pid, entry.value.seq])).value;
    // A checkpoint counts once its call has a journal record.
    if (done && state !== undefined) return { firstSeq: entry.value.seq + 1, checkpoint: state };
  }
  return { firstSeq: from };
}

/**
 * Where replay of `record` starts when its checkpoint `start` cannot be
 * used: at its `replayFrom` (default 1), provided its journal holds, done,
 * every call from there to that checkpoint (a fork's journal starts at the
 * checkpoint it was given, for one). Otherwise replay cannot redo the run
 * without repeating its effects, and this refuses.
 */
export async function replayWithoutCheckpoint(
  kv: Deno.Kv,
  record: Pick<ProcessRecord, "pid" | "replayFrom">,
  start: ReplayStart,
): Promise<ReplayStart> {
  const from = record.replayFrom ?? 1;
  const journal = await loadJournal(kv, record.pid, from);
  for (let seq = from; seq < start.firstSeq; seq++) {
    if (journal.get(seq)?.phase !== "done") {
      throw new Error(
        `Cannot resume process ${record.pid}: its checkpoint at call ${
          start.firstSeq - 1
        } cannot be used and its journal lacks call ${seq}`,
      );
    }
  }
  return { firstSeq: from };
}

/**
 * Gives the fork `child` of `parent`, made by the `proc.fork` call `ctx`,
 * the journal it replays: the checkpoint `parent` replays from (if any)
 * with the record of the call that saved it, so that it counts for the
 * child too (see {@link replayStart}), a copy of `parent`'s records from
 * there up to the fork, and the fork call itself, done, answering
 * `{ pid: 0 }`.
 */
export async function copyJournalToFork(
  kv: Deno.Kv,
  parent: Pick<ProcessRecord, "pid" | "replayFrom">,
  child: number,
  ctx: Pick<CallContext, "seq" | "argsDigest">,
  now: () => number,
): Promise<void> {
  const { firstSeq } = await replayStart(kv, parent);
  const fromCheckpoint = firstSeq > (parent.replayFrom ?? 1);
  if (fromCheckpoint) await copyCheckpoint(kv, parent.pid, child, firstSeq - 1);
  const from = fromCheckpoint ? firstSeq - 1 : firstSeq;
  const records = [...(await loadJournal(kv, parent.pid, from)).values()]
    .filter((r) => r.seq < ctx.seq)
    .map((r) => ({ ...r, pid: child }));
  records.push({
    pid: child,
    seq: ctx.seq,
    name: "proc.fork",
    argsDigest: ctx.argsDigest,
    effect: "effect",
    phase: "done",
    at: now(),
    ok: true,
    value: { pid: 0 },
  });
  for (let i = 0; i < records.length; i += 20) {
    const op = kv.atomic();
    for (const record of records.slice(i, i + 20)) putRecord(op, record);
    await op.commit();
  }
}
