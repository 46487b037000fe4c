import assert from "node:assert/strict";
import { type JournalRecord, loadJournal, putRecord } from "../broker/journal.ts";
import { copyJournalToFork, replayStart, replayWithoutCheckpoint } from "./checkpoints.ts";
import { readChunked, writeChunked } from "./chunks.ts";

function done(pid: number, seq: number, name = "time.now"): JournalRecord {
  return {
    pid,
    seq,
    name,
    argsDigest: `d${seq}`,
    effect: "none",
    phase: "done",
    at: 0,
    ok: true,
    value: seq,
  };
}

/** Writes journal records `seqs` of `pid`, and checkpoints (with their states) at `checkpoints`. */
async function history(kv: Deno.Kv, pid: number, seqs: number[], checkpoints: number[] = []) {
  const op = kv.atomic();
  for (const seq of seqs) putRecord(op, done(pid, seq));
  for (const seq of checkpoints) {
    op.set(["ckpt", pid, seq], { seq, at: 0 });
    writeChunked(op, ["ckpt_state", pid, seq], { step: seq });
  }
  await op.commit();
}

async function withKv(fn: (kv: Deno.Kv) => Promise<void>): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  try {
    await fn(kv);
  } finally {
    kv.close();
  }
}

Deno.test("replay starts after the latest checkpoint whose call is journaled", async () => {
  await withKv(async (kv) => {
    assert.deepEqual(await replayStart(kv, { pid: 1 }), { firstSeq: 1 });
    await history(kv, 1, [1, 2, 3, 4], [2, 4]);
    assert.deepEqual(await replayStart(kv, { pid: 1 }), { firstSeq: 5, checkpoint: { step: 4 } });
    // A checkpoint whose call has no journal record yet does not count.
    await history(kv, 2, [1, 2], [2, 3]);
    assert.deepEqual(await replayStart(kv, { pid: 2 }), { firstSeq: 1 });
  });
});

Deno.test("replay never starts before replayFrom, whatever checkpoints came earlier", async () => {
  await withKv(async (kv) => {
    await history(kv, 1, [1, 2, 3, 4, 5, 6], [2]);
    assert.deepEqual(await replayStart(kv, { pid: 1, replayFrom: 5 }), { firstSeq: 5 });
    await history(kv, 1, [], [6]);
    assert.deepEqual(await replayStart(kv, { pid: 1, replayFrom: 5 }), {
      firstSeq: 7,
      checkpoint: { step: 6 },
    });
  });
});

Deno.test("a fork gets its parent's checkpoint and journal up to the fork, then the fork itself", async () => {
  await withKv(async (kv) => {
    await history(kv, 1, [1, 2, 3, 4, 5, 6], [2]);
    await copyJournalToFork(kv, { pid: 1 }, 9, { seq: 5, argsDigest: "fork" }, () => 77);
    assert.deepEqual((await kv.get(["ckpt", 9, 2])).value, { seq: 2, at: 0 });
    assert.deepEqual(await readChunked(kv, ["ckpt_state", 9, 2]), { step: 2 });
    const journal = [...(await loadJournal(kv, 9)).values()];
    // Records before the checkpoint are not needed (the call that saved it is, for the checkpoint
    // to count); the parent's records after the fork are not the child's.
    assert.deepEqual(journal.map((r) => [r.pid, r.seq, r.name, r.value]), [
      [9, 2, "time.now", 2],
      [9, 3, "time.now", 3],
      [9, 4, "time.now", 4],
      [9, 5, "proc.fork", { pid: 0 }],
    ]);
    assert.deepEqual([journal[3].argsDigest, journal[3].at], ["fork", 77]);
    // So the child replays from the checkpoint, not from its first call.
    assert.deepEqual(await replayStart(kv, { pid: 9 }), { firstSeq: 3, checkpoint: { step: 2 } });
  });
});

Deno.test("replay without a checkpoint starts at replayFrom only over a whole journal", async () => {
  await withKv(async (kv) => {
    await history(kv, 1, [1, 2, 3, 4, 5], [4]);
    const start = await replayStart(kv, { pid: 1 });
    assert.deepEqual(await replayWithoutCheckpoint(kv, { pid: 1 }, start), { firstSeq: 1 });
    await history(kv, 2, [3, 4, 5], [4]);
    assert.deepEqual(await replayWithoutCheckpoint(kv, { pid: 2, replayFrom: 3 }, start), {
      firstSeq: 3,
    });
    // A journal that starts at its checkpoint (as a fork's) cannot replay what came before it.
    await assert.rejects(
      replayWithoutCheckpoint(kv, { pid: 2 }, start),
      /^Error: Cannot resume process 2: its checkpoint at call 4 cannot be used and its journal lacks call 1$/,
    );
  });
});
