import assert from "node:assert/strict";
import { type AuditEntry, AuditLog } from "./audit.ts";
import { Journal, type JournalOptions, type JournalRecord } from "./journal.ts";

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
