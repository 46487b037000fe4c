import assert from "node:assert/strict";
import { type AuditEntry, AuditLog, type AuditRecord, GENESIS } from "./audit.ts";
import { canonicalJson, sha256Hex } from "./digest.ts";
import {
  chain,
  Journal,
  type JournalOptions,
  type JournalRecord,
  StaleWriteError,
} from "./journal.ts";
import { rawControls } from "../test/_terminal.ts";

function record(pid: number, seq: number): JournalRecord {
  return {
    pid,
    seq,
    name: "fs.write",
    argsDigest: "a".repeat(64),
    effect: "idempotent",
    phase: "intent",
    at: 1_700_000_000_000,
  };
}

function audit(pid: number): AuditEntry {
  return {
    at: 1_700_000_000_000,
    pid,
    image: "demo@1.0.0",
    syscall: "fs.write",
    args: '{"path":"a.txt"}',
    argsDigest: "a".repeat(64),
    decision: "allow",
    outcome: "ok",
  };
}

async function withJournal(
  options: JournalOptions,
  fn: (journal: Journal, kv: Deno.Kv, log: AuditLog) => Promise<void>,
): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  const log = new AuditLog(kv);
  const journal = new Journal(kv, log, options);
  try {
    await fn(journal, kv, log);
  } finally {
    await journal.close();
    kv.close();
  }
}

async function stored(kv: Deno.Kv, pid: number, seq: number): Promise<JournalRecord | null> {
  return (await kv.get<JournalRecord>(["journal", pid, seq])).value;
}

Deno.test("many concurrent durable writes share few commits", async () => {
  await withJournal({}, async (journal, kv) => {
    const writes = Array.from(
      { length: 100 },
      (_, i) => journal.write({ journal: record(1, i + 1) }, { durable: true }),
    );
    await Promise.all(writes);
    assert.equal(journal.stats.writes, 100);
    assert.ok(journal.stats.commits < 10, `${journal.stats.commits} commits for 100 writes`);
    assert.ok(journal.stats.largestBatch >= 50, `largest batch ${journal.stats.largestBatch}`);
    for (let seq = 1; seq <= 100; seq++) assert.ok(await stored(kv, 1, seq), `seq ${seq}`);
  });
});

Deno.test("a commit never holds more than maxBatch writes", async () => {
  await withJournal({ maxBatch: 10 }, async (journal) => {
    await Promise.all(
      Array.from(
        { length: 45 },
        (_, i) => journal.write({ journal: record(1, i + 1) }, { durable: true }),
      ),
    );
    assert.ok(journal.stats.largestBatch <= 10);
    assert.ok(journal.stats.commits >= 5);
  });
});

Deno.test("buffered writes wait for flush()", async () => {
  await withJournal({ flushMs: 600_000 }, async (journal, kv) => {
    await journal.write({ journal: record(1, 1) }, { durable: false });
    await journal.write({ journal: record(1, 2) }, { durable: false });
    assert.equal(await stored(kv, 1, 1), null);
    assert.equal(journal.stats.commits, 0);
    await journal.flush();
    assert.ok(await stored(kv, 1, 1));
    assert.ok(await stored(kv, 1, 2));
    assert.equal(journal.stats.commits, 1);
  });
});

Deno.test("buffered writes ride along with the next durable write", async () => {
  await withJournal({ flushMs: 600_000 }, async (journal, kv) => {
    for (let seq = 1; seq <= 3; seq++) {
      await journal.write({ journal: record(1, seq), audit: audit(1) }, { durable: false });
    }
    await journal.write({ journal: record(1, 4) }, { durable: true });
    assert.equal(journal.stats.commits, 1);
    assert.equal(journal.stats.writes, 4);
    for (let seq = 1; seq <= 4; seq++) assert.ok(await stored(kv, 1, seq));
  });
});

Deno.test("buffered writes are committed after flushMs without a flush", async () => {
  await withJournal({ flushMs: 1 }, async (journal, kv) => {
    await journal.write({ journal: record(1, 1) }, { durable: false });
    const deadline = Date.now() + 5000;
    while (!(await stored(kv, 1, 1)) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    assert.ok(await stored(kv, 1, 1), "the buffered write was committed by the timer");
  });
});

Deno.test("a write whose own check fails is rejected alone", async () => {
  await withJournal({ flushMs: 600_000 }, async (journal, kv) => {
    await kv.set(["guard"], 1);
    const stale = await kv.get(["guard"]);
    await kv.set(["guard"], 2);
    await journal.write({ journal: record(1, 1) }, { durable: false });
    const failing = journal.write({
      journal: record(1, 2),
      atomic: (op) => op.check(stale).set(["guarded"], true),
    }, { durable: true });
    const passing = journal.write({ journal: record(1, 3) }, { durable: true });
    await assert.rejects(failing);
    await passing;
    assert.ok(await stored(kv, 1, 1));
    assert.equal(await stored(kv, 1, 2), null);
    assert.equal((await kv.get(["guarded"])).value, null);
    assert.ok(await stored(kv, 1, 3));
  });
});

Deno.test("writes that carry checks batch, and a stale one fails alone as stale", async () => {
  await withJournal({ flushMs: 600_000 }, async (journal, kv) => {
    await kv.set(["guard"], 1);
    const stale = await kv.get(["guard"]);
    await kv.set(["guard"], 2);
    const fresh = await kv.get(["guard"]);
    const write = (seq: number, check?: Deno.AtomicCheck) =>
      journal.write({
        journal: record(1, seq),
        audit: audit(1),
        checks: check && ((op) => op.check(check)),
      }, { durable: true });
    // While a commit is in flight, the writes after it queue into one batch.
    await Promise.all([write(1), write(2, fresh), write(3, fresh), write(4)]);
    assert.equal(journal.stats.largestBatch, 3);
    const first = write(5);
    const failing = write(6, stale);
    const others = [write(7, fresh), write(8)];
    await first;
    await assert.rejects(failing, StaleWriteError);
    await Promise.all(others);
    assert.equal(await stored(kv, 1, 6), null);
    for (const seq of [5, 7, 8]) assert.ok(await stored(kv, 1, seq), `seq ${seq}`);
  });
});

Deno.test("a write with its own mutations fails as stale when its check fails, the chain's head unmoved", async () => {
  await withJournal({}, async (journal, kv, log) => {
    await journal.write({ audit: audit(1) }, { durable: true });
    await kv.set(["guard"], 1);
    const stale = await kv.get(["guard"]);
    await kv.set(["guard"], 2);
    await assert.rejects(
      journal.write({
        journal: record(1, 1),
        audit: audit(1),
        atomic: (op) => op.check(stale).set(["guarded"], true),
      }, { durable: true }),
      StaleWriteError,
    );
    assert.equal((await kv.get(["guarded"])).value, null);
    assert.deepEqual(await log.verify(), { ok: true, count: 1 });
  });
});

Deno.test("audit records committed through the journal form a valid chain", async () => {
  await withJournal({}, async (journal, _kv, log) => {
    await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        journal.write(
          { journal: record(1 + (i % 3), i + 1), audit: audit(1 + (i % 3)) },
          { durable: i % 4 === 0 },
        )),
    );
    await journal.flush();
    const result = await log.verify();
    assert.deepEqual(result, { ok: true, count: 60 });
  });
});

Deno.test("two journals over one store keep one audit chain", async () => {
  await withJournal({}, async (first, kv, log) => {
    const second = new Journal(kv, log);
    try {
      await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          (i % 2 ? first : second).write(
            { journal: record(i % 2 ? 1 : 2, i + 1), audit: audit(1) },
            { durable: true },
          )),
      );
    } finally {
      await second.close();
    }
    assert.deepEqual(await log.verify(), { ok: true, count: 40 });
  });
});

Deno.test("a closed journal refuses writes", async () => {
  await withJournal({}, async (journal) => {
    await journal.close();
    await assert.rejects(
      journal.write({ journal: record(1, 1) }, { durable: true }),
      /journal: it is closed/,
    );
  });
});

Deno.test("a durable write that arrives as a drain ends is still committed", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const journal = new Journal(kv, new AuditLog(kv), { flushMs: 1 });
    // Many rounds of writes timed against the end of the previous drain: each must resolve.
    for (let round = 0; round < 200; round++) {
      const first = journal.write({
        journal: {
          pid: 1,
          seq: round * 2 + 1,
          name: "x",
          argsDigest: "d",
          effect: "effect",
          phase: "intent",
          at: 0,
        },
      }, { durable: true });
      await Promise.resolve();
      const second = first.then(() =>
        journal.write({
          journal: {
            pid: 1,
            seq: round * 2 + 2,
            name: "x",
            argsDigest: "d",
            effect: "effect",
            phase: "intent",
            at: 0,
          },
        }, { durable: true })
      );
      const timeout = new Promise<"stuck">((resolve) => setTimeout(() => resolve("stuck"), 2000));
      assert.notEqual(
        await Promise.race([second.then(() => "ok"), timeout]),
        "stuck",
        `round ${round}`,
      );
    }
    await journal.close();
  } finally {
    kv.close();
  }
});

Deno.test("chain() numbers, links and hashes records", async () => {
  const { records, head } = await chain(GENESIS, [audit(1), audit(2)]);
  assert.deepEqual(records.map((r) => r.seq), [1, 2]);
  assert.equal(records[0].prevHash, GENESIS.hash);
  assert.equal(records[1].prevHash, records[0].hash);
  const { hash, ...body } = records[1];
  assert.equal(hash, await sha256Hex(canonicalJson(body)));
  assert.deepEqual(head, { seq: 2, hash: records[1].hash });

  const next = await chain(head, [audit(3)]);
  assert.equal(next.records[0].seq, 3);
  assert.equal(next.records[0].prevHash, records[1].hash);
});

Deno.test("chain() drops undefined fields and cuts overlong text", async () => {
  const { records } = await chain(GENESIS, [{
    ...audit(1),
    tool: undefined,
    reason: "x".repeat(10_000),
  }]);
  assert.equal("tool" in records[0], false);
  assert.ok(records[0].reason!.length <= 500);
  assert.ok(records[0].reason!.endsWith("…"));
});

Deno.test("chain() stores text fields with their control characters escaped", async () => {
  const forged = "fs.read\u001b[2K\r\n    9  1  fs.write\u202e";
  const { records } = await chain(GENESIS, [{
    ...audit(1),
    syscall: forged,
    args: '{"path":"a\u009bb"}',
    reason: "Cannot \u001b]0;x\u0007",
  }]);
  const [record] = records;
  for (const text of [record.syscall, record.args, record.reason!]) {
    assert.deepEqual(rawControls(text), [], text);
  }
  assert.equal(record.syscall, "fs.read\\u001b[2K\\r\\n    9  1  fs.write\\u202e");
  assert.deepEqual(JSON.parse(record.args), { path: "a\u009bb" });
});

Deno.test("an audit record commits in one transaction with its journal record, or not at all", async () => {
  await withJournal({ flushMs: 600_000 }, async (journal, kv, log) => {
    await journal.write({ journal: record(1, 1), audit: audit(1) }, { durable: true });
    assert.ok(await stored(kv, 1, 1));
    assert.deepEqual(await log.verify(), { ok: true, count: 1 });

    // A write whose own check fails leaves neither record, and the chain as it was.
    await kv.set(["guard"], 1);
    const stale = await kv.get(["guard"]);
    await kv.set(["guard"], 2);
    await assert.rejects(journal.write({
      journal: record(1, 2),
      audit: audit(1),
      atomic: (op) => op.check(stale),
    }, { durable: true }));
    assert.equal(await stored(kv, 1, 2), null);
    assert.deepEqual(await log.verify(), { ok: true, count: 1 });
    assert.equal((await log.head()).head.seq, 1);
  });
});

Deno.test("concurrent writers over one store keep one valid chain, each batch in one piece", async () => {
  const kv = await Deno.openKv(":memory:");
  const log = new AuditLog(kv);
  try {
    const writers = Array.from({ length: 12 }, () => new Journal(kv, log));
    await Promise.all(writers.map((writer, i) => {
      writer.write({ audit: audit(i + 1) }, { durable: false });
      return writer.write({ audit: audit(i + 1) }, { durable: true });
    }));
    await Promise.all(writers.map((writer) => writer.close()));
    assert.deepEqual(await log.verify(), { ok: true, count: 24 });
    const records = await Array.fromAsync(log.list());
    // Each writer's two records stay adjacent: one transaction each.
    for (let i = 0; i < records.length; i += 2) {
      assert.equal(records[i + 1].pid, records[i].pid, `records ${i + 1} and ${i + 2}`);
    }
    assert.equal(new Set(records.map((r) => r.pid)).size, 12);
  } finally {
    kv.close();
  }
});

/** The origin of a call of process 7, with the digest of `{ name, args }`. */
async function origin(seq: number, name: string, args: unknown, tool?: string) {
  const argsDigest = await sha256Hex(canonicalJson({ name, args }));
  return { pid: 7, seq, image: "demo@1.0.0", tool, argsDigest };
}

Deno.test("writeCall() journals a call and audits it in the trail's pinned format", async () => {
  await withJournal({}, async (journal, kv, log) => {
    const at = 1_700_000_000_000;
    const write = { path: "notes.txt?token=sk-1", content: "hello" };
    await journal.writeCall({
      ctx: await origin(3, "fs.write", write, "t@1"),
      name: "fs.write",
      args: write,
      at,
      decision: "allow",
      capabilities: [],
      note: "a\u001b note",
      end: { effect: "idempotent", outcome: { ok: true, value: { bytes: 5 } } },
    }, { durable: false });
    const chmod = { path: "x" };
    await journal.writeCall({
      ctx: await origin(4, "fs.chmod\u001b", chmod),
      name: "fs.chmod\u001b",
      args: chmod,
      at,
      decision: "deny",
      end: {
        effect: "none",
        outcome: {
          ok: false,
          error: { code: "ENOSYS", message: 'Unknown syscall "fs.chmod\\u001b"' },
        },
      },
    }, { durable: true });
    // Records, hashes and journal entries exactly as the trail has always stored them.
    assert.deepEqual(
      await Array.fromAsync(log.list()),
      [
        {
          at,
          pid: 7,
          image: "demo@1.0.0",
          tool: "t@1",
          syscall: "fs.write",
          args: '{"path":"notes.txt?token=<redacted>","content":"<7 bytes>"}',
          argsDigest: "623bc2550b18fe34bba3c7d2b81ec1be342dab7e736ec026db795bccc11b2ea7",
          decision: "allow",
          outcome: "ok",
          note: "a\\u001b note",
          seq: 1,
          prevHash: "0".repeat(64),
          hash: "51d379c12227bf69c933640e02264b7f423a972848d8478bf1974a6ac49e0bad",
        },
        {
          at,
          pid: 7,
          image: "demo@1.0.0",
          syscall: "fs.chmod\\u001b",
          args: '{"path":"x"}',
          argsDigest: "90bfdb85e5268498659caf63b55de74294a6ba34d1c8fc4f6d6f43a0c262b31a",
          decision: "deny",
          outcome: "error",
          code: "ENOSYS",
          reason: 'Unknown syscall "fs.chmod\\u001b"',
          seq: 2,
          prevHash: "51d379c12227bf69c933640e02264b7f423a972848d8478bf1974a6ac49e0bad",
          hash: "6e4132d05c82df8dc5c61cf51b3dad9d4497bbb6c347e6729148a494f9052958",
        },
      ] satisfies AuditRecord[],
    );
    assert.deepEqual(await stored(kv, 7, 3), {
      pid: 7,
      seq: 3,
      name: "fs.write",
      argsDigest: "623bc2550b18fe34bba3c7d2b81ec1be342dab7e736ec026db795bccc11b2ea7",
      effect: "idempotent",
      at,
      phase: "done",
      ok: true,
      value: { bytes: 5 },
    });
  });
});

Deno.test("writeCall() audits a parked call without journaling it, and an uncertain one as such", async () => {
  await withJournal({}, async (journal, kv, log) => {
    const sleep = { ms: 5 };
    await journal.writeCall({
      ctx: await origin(1, "time.sleep", sleep),
      name: "time.sleep",
      args: sleep,
      at: 10,
      decision: "allow",
      capabilities: [{ id: "cap-a" }, { id: "cap-b" }, { id: "cap-a" }],
    }, { durable: false });
    const rename = { from: "a", to: "b" };
    const error = { code: "EUNCERTAIN", message: "Cannot tell whether fs.rename took effect" };
    await journal.writeCall({
      ctx: await origin(2, "fs.rename", rename),
      name: "fs.rename",
      args: rename,
      at: 11,
      decision: "allow",
      end: { effect: "effect", outcome: { ok: false, error }, uncertain: true },
    }, { durable: true });
    const [parked, uncertain] = await Array.fromAsync(log.list());
    assert.equal(parked.outcome, "ok");
    assert.equal(parked.capability, "cap-a,cap-b");
    assert.equal(await stored(kv, 7, 1), null);
    assert.equal(uncertain.outcome, "uncertain");
    assert.equal(uncertain.code, "EUNCERTAIN");
    assert.equal(uncertain.reason, error.message);
    assert.deepEqual((await stored(kv, 7, 2))?.error, error);
  });
});

Deno.test("writeCall() charges the bytes of both records in their commit", async () => {
  await withJournal({}, async (journal, kv) => {
    const args = { path: "a.txt" };
    let charged = 0;
    await journal.writeCall({
      ctx: await origin(1, "fs.read", args),
      name: "fs.read",
      args,
      at: 1,
      decision: "allow",
      end: { effect: "none", outcome: { ok: true, value: "x".repeat(1000) } },
    }, {
      durable: true,
      charge: (bytes) => {
        charged = bytes;
        return Promise.resolve((op) => op.sum(["charged"], BigInt(bytes)));
      },
    });
    assert.ok(charged > 1000, `${charged} bytes charged`);
    assert.equal((await kv.get<Deno.KvU64>(["charged"])).value?.value, BigInt(charged));
  });
});

/**
 * A change of process `pid` as a store-only syscall makes it: its `done`
 * record and audit entry, a check-and-set of `key` against `read`, and a
 * sum that counts how many times the change was applied.
 */
function change(pid: number, key: Deno.KvKey, read: Deno.KvEntryMaybe<unknown>, value: unknown) {
  return {
    journal: { ...record(pid, 1), phase: "done" as const, ok: true },
    audit: audit(pid),
    atomic: (op: Deno.AtomicOperation) =>
      op.check(read).set(key, value).sum(["applied", ...key], 1n),
  };
}

/** How many times the changes on `key` were applied. */
async function applied(kv: Deno.Kv, key: Deno.KvKey): Promise<number> {
  return Number((await kv.get<Deno.KvU64>(["applied", ...key])).value?.value ?? 0n);
}

Deno.test("changes of many processes queued while a commit is in flight share one commit", async () => {
  await withJournal({}, async (journal, kv, log) => {
    const first = journal.write({ journal: record(100, 1) }, { durable: true });
    const reads = await Promise.all(
      Array.from({ length: 20 }, (_, i) => kv.get(["obj", `proc/${i + 1}`, "k"])),
    );
    const before = journal.stats.commits;
    await Promise.all([
      first,
      ...reads.map((read, i) => journal.write(change(i + 1, read.key, read, i), { durable: true })),
    ]);
    assert.ok(journal.stats.commits - before < 20, `${journal.stats.commits - before} commits`);
    assert.ok(journal.stats.largestBatch >= 2, `largest batch ${journal.stats.largestBatch}`);
    assert.equal(journal.stats.splits, 0);
    for (let i = 0; i < 20; i++) {
      assert.equal((await kv.get(["obj", `proc/${i + 1}`, "k"])).value, i);
      assert.equal(await applied(kv, ["obj", `proc/${i + 1}`, "k"]), 1);
      assert.equal((await stored(kv, i + 1, 1))?.phase, "done");
    }
    assert.deepEqual(await log.verify(), { ok: true, count: 20 });
  });
});

Deno.test("a stale change in a shared commit fails alone; every other change commits exactly once", async () => {
  await withJournal({}, async (journal, kv, log) => {
    const reads = await Promise.all(
      Array.from({ length: 6 }, (_, i) => kv.get(["obj", `proc/${i + 1}`, "k"])),
    );
    // Process 4's object changes after it was read: its check no longer holds.
    await kv.set(["obj", "proc/4", "k"], "theirs");
    const first = journal.write({ journal: record(100, 1) }, { durable: true });
    const writes = reads.map((read, i) =>
      journal.write(change(i + 1, read.key, read, `mine ${i + 1}`), { durable: true })
    );
    const [outcomes] = await Promise.all([Promise.allSettled(writes), first]);
    assert.equal(journal.stats.splits, 1, "the shared commit failed once, then went one by one");
    for (const [i, outcome] of outcomes.entries()) {
      const key = ["obj", `proc/${i + 1}`, "k"];
      if (i + 1 === 4) {
        assert.equal(outcome.status, "rejected");
        assert.ok((outcome as PromiseRejectedResult).reason instanceof StaleWriteError);
        assert.equal((await kv.get(key)).value, "theirs");
        assert.equal(await applied(kv, key), 0);
        assert.equal(await stored(kv, 4, 1), null);
      } else {
        assert.equal(outcome.status, "fulfilled", `process ${i + 1}`);
        assert.equal((await kv.get(key)).value, `mine ${i + 1}`);
        assert.equal(await applied(kv, key), 1, `process ${i + 1}'s change applied once`);
        assert.equal((await stored(kv, i + 1, 1))?.phase, "done");
      }
    }
    // Each committed change has its one audit record, in queue order, on a valid chain.
    assert.deepEqual(await log.verify(), { ok: true, count: 5 });
    const pids = (await Array.fromAsync(log.list())).map((r) => r.pid);
    assert.deepEqual(pids, [1, 2, 3, 5, 6]);
  });
});

Deno.test("changes that check or write one key never share a commit: the later one is stale", async () => {
  await withJournal({}, async (journal, kv) => {
    const key = ["obj", "shared/a", "k"];
    const read = await kv.get(key);
    const first = journal.write({ journal: record(100, 1) }, { durable: true });
    // Both were prepared from the same read; committed one after the other, the second is stale.
    const a = journal.write(change(1, key, read, "a"), { durable: true });
    const b = journal.write(change(2, key, read, "b"), { durable: true });
    const c = journal.write(change(3, ["obj", "shared/b", "k"], read, "c"), { durable: true });
    await Promise.all([
      first,
      a,
      assert.rejects(b, StaleWriteError),
      assert.rejects(c, StaleWriteError, "c checks a version of shared/a's key, which a moved"),
    ]);
    assert.equal((await kv.get(key)).value, "a");
    assert.equal(await applied(kv, key), 1);
    assert.equal(await stored(kv, 2, 1), null);
  });
});

Deno.test("sums of one key share a commit, and each is counted", async () => {
  await withJournal({}, async (journal, kv) => {
    const first = journal.write({ journal: record(100, 1) }, { durable: true });
    const charges = Array.from({ length: 10 }, (_, i) =>
      journal.write({
        journal: record(i + 1, 1),
        charges: (op) => op.sum(["journal_used", 1], 5n),
      }, { durable: true }));
    await Promise.all([first, ...charges]);
    assert.ok(journal.stats.largestBatch >= 2, `largest batch ${journal.stats.largestBatch}`);
    assert.equal((await kv.get<Deno.KvU64>(["journal_used", 1])).value?.value, 50n);
  });
});

Deno.test("a shared commit stays within KV's limit of checks per commit", async () => {
  await withJournal({}, async (journal, kv) => {
    const first = journal.write({ journal: record(100, 1) }, { durable: true });
    // 60 changes of 3 checks each: 180 checks, more than one commit may hold.
    const writes = Array.from({ length: 60 }, (_, i) => {
      const keys = [0, 1, 2].map((j) => ["guard", i, j]);
      return journal.write({
        journal: record(i + 1, 1),
        audit: audit(i + 1),
        atomic: (op) => {
          for (const key of keys) op.check({ key, versionstamp: null });
          op.set(["done", i], true);
        },
      }, { durable: true });
    });
    await Promise.all([first, ...writes]);
    assert.equal(journal.stats.splits, 0, "no commit was refused for its size");
    assert.ok(journal.stats.largestBatch >= 2);
    for (let i = 0; i < 60; i++) assert.equal((await kv.get(["done", i])).value, true);
  });
});

Deno.test("a write that passes a KV limit alone fails alone; the writes queued with it commit", async () => {
  await withJournal({}, async (journal, kv) => {
    const first = journal.write({ journal: record(100, 1) }, { durable: true });
    const before = journal.write({ journal: record(1, 1) }, { durable: true });
    const tooMany = journal.write({
      journal: record(2, 1),
      checks: (op) => {
        for (let i = 0; i < 101; i++) op.check({ key: ["guard", i], versionstamp: null });
      },
    }, { durable: true });
    const after = journal.write({ journal: record(3, 1) }, { durable: true });
    await Promise.all([first, before, after, assert.rejects(tooMany, /Too many checks/)]);
    assert.ok(await stored(kv, 1, 1));
    assert.equal(await stored(kv, 2, 1), null);
    assert.ok(await stored(kv, 3, 1));
  });
});

Deno.test("claimed buffered writes of a process commit in another change's commit, audited on the chain", async () => {
  await withJournal({ flushMs: 600_000 }, async (journal, kv, log) => {
    await journal.write({ journal: record(1, 1), audit: audit(1) }, { durable: false });
    await journal.write({ journal: record(2, 1), audit: audit(2) }, { durable: false });
    await journal.write({ journal: record(1, 2), audit: audit(1) }, { durable: false });
    const claimed = await journal.claim(1);
    await claimed.link();
    const op = kv.atomic().set(["change"], "made");
    claimed.apply(op);
    const result = await op.commit();
    assert.ok(result.ok);
    claimed.committed(result.versionstamp);
    // Both records of process 1 landed with the change; process 2's did not.
    assert.ok(await stored(kv, 1, 1));
    assert.ok(await stored(kv, 1, 2));
    assert.equal(await stored(kv, 2, 1), null);
    assert.equal(journal.stats.commits, 1);
    // The writer goes on from the chain's new head: one more commit, one valid chain.
    await journal.flush();
    assert.ok(await stored(kv, 2, 1));
    assert.equal(journal.stats.commits, 2);
    assert.deepEqual(await log.verify(), { ok: true, count: 3 });
  });
});

Deno.test("while a process's writes are claimed, its later writes wait; released, all commit in order", async () => {
  await withJournal({ flushMs: 600_000 }, async (journal, kv, log) => {
    await journal.write({ journal: record(1, 1), audit: audit(1) }, { durable: false });
    const claimed = await journal.claim(1);
    // A durable write of the same process queued meanwhile must not land
    // before the record it follows: it waits for the claim.
    let later = false;
    const durable = journal.write({ journal: record(1, 2), audit: audit(1) }, { durable: true })
      .then(() => later = true);
    // Another process is not held up.
    await journal.write({ journal: record(2, 1), audit: audit(2) }, { durable: true });
    assert.equal(later, false);
    assert.equal(await stored(kv, 1, 2), null);
    claimed.release();
    await durable;
    assert.ok(await stored(kv, 1, 1));
    assert.ok(await stored(kv, 1, 2));
    assert.deepEqual(await log.verify(), { ok: true, count: 3 });
  });
});

Deno.test("while claimed writes are linked onto the audit head, the writer commits nothing: their commit does not fail on it", async () => {
  await withJournal({ flushMs: 600_000 }, async (journal, kv, log) => {
    await journal.write({ journal: record(1, 1), audit: audit(1) }, { durable: false });
    const claimed = await journal.claim(1);
    await claimed.link();
    // Another process's durable write arrives meanwhile: it waits for the claim's commit.
    let written = false;
    const other = journal.write({ journal: record(2, 1), audit: audit(2) }, { durable: true })
      .then(() => written = true);
    const op = kv.atomic();
    claimed.apply(op);
    const result = await op.commit();
    assert.ok(result.ok, "the claimed writes commit on the head they were linked to");
    assert.equal(written, false);
    claimed.committed(result.versionstamp);
    await other;
    assert.ok(await stored(kv, 1, 1));
    assert.ok(await stored(kv, 2, 1));
    assert.deepEqual(await log.verify(), { ok: true, count: 2 });
  });
});

Deno.test("while a claim carries audit records, another process's are committed, not claimed: each change commits once", async () => {
  await withJournal({ flushMs: 600_000 }, async (journal, kv, log) => {
    await journal.write({ journal: record(1, 1), audit: audit(1) }, { durable: false });
    await journal.write({ journal: record(2, 1), audit: audit(2) }, { durable: false });
    const first = await journal.claim(1);
    // Claimed too, both would link onto one head and the later commit would fail its check.
    const second = await journal.claim(2);
    try {
      const process2Stored = await stored(kv, 2, 1) !== null;
      await first.link();
      await second.link();
      const ends = [1, 2].map((pid) => kv.atomic().set(["end", pid], true));
      first.apply(ends[0]);
      second.apply(ends[1]);
      const results = [];
      for (const [i, claimed] of [first, second].entries()) {
        const result = await ends[i].commit();
        results.push(result.ok);
        if (result.ok) claimed.committed(result.versionstamp);
      }
      assert.deepEqual(results, [true, true], "each change commits at its first attempt");
      assert.ok(process2Stored, "the second process's records are stored when its claim returns");
      assert.ok(await stored(kv, 1, 1));
      assert.deepEqual(await log.verify(), { ok: true, count: 2 });
    } finally {
      first.release();
      second.release();
    }
  });
});

Deno.test("writes too large to share another commit are not claimed: they are committed first", async () => {
  await withJournal({ flushMs: 600_000 }, async (journal, kv) => {
    // Each record about 20 KB: together far past the share of a commit a claim may take.
    const big = "x".repeat(20_000);
    for (let seq = 1; seq <= 20; seq++) {
      await journal.write({ journal: { ...record(1, seq), error: { code: "E", message: big } } }, {
        durable: false,
      });
    }
    const claimed = await journal.claim(1);
    const op = kv.atomic().set(["change"], "made");
    claimed.apply(op);
    assert.ok((await op.commit()).ok);
    for (let seq = 1; seq <= 20; seq++) assert.ok(await stored(kv, 1, seq));
  });
});

Deno.test("claimed writes whose commit failed on a head another journal moved are linked from the stored head", async () => {
  await withJournal({ flushMs: 600_000 }, async (journal, kv, log) => {
    const other = new Journal(kv, new AuditLog(kv));
    await journal.write({ journal: record(1, 1), audit: audit(1) }, { durable: true });
    await journal.write({ journal: record(1, 2), audit: audit(1) }, { durable: false });
    const claimed = await journal.claim(1);
    await claimed.link();
    // Another writer over the same store (another host) moves the head.
    await other.write({ journal: record(2, 1), audit: audit(2) }, { durable: true });
    let committed = false;
    for (let attempt = 0; attempt < 3 && !committed; attempt++) {
      if (attempt > 0) await claimed.link();
      const op = kv.atomic();
      claimed.apply(op);
      const result = await op.commit();
      if (result.ok) {
        claimed.committed(result.versionstamp);
        committed = true;
      }
    }
    assert.ok(committed, "linked again from the head as stored, the writes commit");
    await journal.write({ journal: record(1, 3), audit: audit(1) }, { durable: true });
    assert.deepEqual(await log.verify(), { ok: true, count: 4 });
    await other.close();
  });
});

Deno.test("a flush waits for writes claimed before it: none of them lands after what follows the flush", async () => {
  await withJournal({ flushMs: 600_000 }, async (journal, kv) => {
    await journal.write({ journal: record(1, 1), audit: audit(1) }, { durable: false });
    const claimed = await journal.claim(1);
    const order: string[] = [];
    const flush = journal.flush().then(() => void order.push("flushed"));
    // Nothing else is queued: a flush that did not wait for the claim would
    // end within this turn of the event loop.
    await new Promise((resolve) => setTimeout(resolve, 0));
    order.push("claim released");
    claimed.release();
    await flush;
    assert.deepEqual(order, ["claim released", "flushed"]);
    assert.ok(await stored(kv, 1, 1));
  });
});

Deno.test("a claim made while a flush runs leaves it the writes queued before it: they are stored when it returns", async () => {
  await withJournal({ flushMs: 600_000 }, async (journal, kv, log) => {
    // A commit of process 2 in flight, and process 1's buffered record behind it.
    const inFlight = journal.write({ journal: record(2, 1), audit: audit(2) }, { durable: true });
    await journal.write({ journal: record(1, 1), audit: audit(1) }, { durable: false });
    // A flush begins (a park's readyToBlock, a resume); then a change of process 1 claims its writes.
    const flushed = journal.flush();
    const claimed = journal.claim(1);
    await flushed;
    assert.ok(
      await stored(kv, 1, 1),
      "the record queued before the flush is stored when it returns",
    );
    (await claimed).release();
    await inFlight;
    await journal.flush();
    assert.deepEqual(await log.verify(), { ok: true, count: 2 });
  });
});
