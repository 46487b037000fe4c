import assert from "node:assert/strict";
import { newProcess } from "./_fixtures.ts";
import { ProcessTable } from "./process_table.ts";
import {
  DEFAULT_JOURNAL_BYTES,
  DEFAULT_STORAGE_BYTES,
  type StorageChange,
  StorageQuotas,
} from "./storage_quota.ts";
import type { Budget } from "./process_table.ts";

async function withQuotas(
  body: (
    quotas: StorageQuotas,
    spawn: (ppid: number | null, budget?: Budget) => Promise<number>,
    kv: Deno.Kv,
  ) => Promise<void>,
): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  try {
    const table = new ProcessTable(kv);
    const spawn = async (ppid: number | null, budget: Budget = {}) =>
      (await table.create(newProcess({ ppid, budget }))).pid;
    await body(new StorageQuotas(kv, table), spawn, kv);
  } finally {
    kv.close();
  }
}

async function apply(kv: Deno.Kv, quotas: StorageQuotas, changes: StorageChange[]): Promise<void> {
  const charge = await quotas.prepare(changes, "Cannot store");
  const op = kv.atomic();
  charge(op);
  assert.equal((await op.commit()).ok, true);
}

Deno.test("a process without a storageBytes budget gets the default quota", async () => {
  await withQuotas(async (quotas, spawn, kv) => {
    const pid = await spawn(null);
    await apply(kv, quotas, [{ pid, bytes: DEFAULT_STORAGE_BYTES }]);
    await assert.rejects(
      quotas.prepare([{ pid, bytes: 1 }], "Cannot store"),
      (error: Error & { code?: string }) =>
        error.code === "EBUDGET" &&
        error.message ===
          `Cannot store: process ${pid} would store ${
            DEFAULT_STORAGE_BYTES + 1
          } bytes, over its storageBytes quota of ${DEFAULT_STORAGE_BYTES}`,
    );
    assert.equal((await quotas.usage(pid)).storageBytes, DEFAULT_STORAGE_BYTES);
  });
});

Deno.test("charges go up the tree and the tightest quota on the way refuses", async () => {
  await withQuotas(async (quotas, spawn, kv) => {
    const root = await spawn(null, { storageBytes: 1000 });
    const a = await spawn(root);
    const b = await spawn(root);
    await apply(kv, quotas, [{ pid: a, bytes: 600 }]);
    await assert.rejects(
      quotas.prepare([{ pid: b, bytes: 500 }], "Cannot store"),
      /process \d+ would store 1100 bytes/,
    );
    await apply(kv, quotas, [{ pid: b, bytes: 400 }]);
    assert.deepEqual(
      [
        (await quotas.usage(root)).storageBytes,
        (await quotas.usage(a)).storageBytes,
        (await quotas.usage(b)).storageBytes,
      ],
      [1000, 600, 400],
    );
    // A credit in the same move makes room for a charge.
    await apply(kv, quotas, [{ pid: b, bytes: 500 }, { pid: a, bytes: -600 }]);
    assert.equal((await quotas.usage(root)).storageBytes, 900);
    assert.equal((await quotas.usage(a)).storageBytes, 0);
  });
});

Deno.test("a prepared charge does not commit after a counter moved", async () => {
  await withQuotas(async (quotas, spawn, kv) => {
    const pid = await spawn(null, { storageBytes: 1000 });
    const first = await quotas.prepare([{ pid, bytes: 800 }], "Cannot store");
    const second = await quotas.prepare([{ pid, bytes: 800 }], "Cannot store");
    const op1 = kv.atomic();
    first(op1);
    assert.equal((await op1.commit()).ok, true);
    const op2 = kv.atomic();
    second(op2);
    assert.equal((await op2.commit()).ok, false);
    assert.equal((await quotas.usage(pid)).storageBytes, 800);
  });
});

Deno.test("journal bytes are summed up the tree and admission stops at the quota", async () => {
  await withQuotas(async (quotas, spawn, kv) => {
    const root = await spawn(null, { journalBytes: 1000 });
    const child = await spawn(root);
    const lone = await spawn(null);
    await quotas.admitJournal(child, "Cannot call");
    for (let i = 0; i < 2; i++) {
      const charge = await quotas.chargeJournal(child, 600);
      const op = kv.atomic();
      charge(op);
      await op.commit();
    }
    assert.equal((await quotas.usage(child)).journalBytes, 1200);
    assert.equal((await quotas.usage(root)).journalBytes, 1200);
    await assert.rejects(
      quotas.admitJournal(child, "Cannot call"),
      new RegExp(`process ${root} has used its journalBytes quota of 1000`),
    );
    await quotas.admitJournal(lone, "Cannot call");
    assert.ok(DEFAULT_JOURNAL_BYTES > 1000);
  });
});

Deno.test("a charge checks the counter this host committed last; one another writer moved since is read again", async () => {
  await withQuotas(async (quotas, spawn, kv) => {
    const pid = await spawn(null, { storageBytes: 1000 });
    const commitCharge = async (bytes: number) => {
      const change = await quotas.prepareCharges([{ pid, bytes }], "Cannot store");
      const op = kv.atomic();
      change.apply(op);
      const result = await op.commit();
      if (result.ok) change.committed?.(result.versionstamp);
      return result.ok;
    };
    assert.equal(await commitCharge(900), true);
    // Another writer gives back 800 bytes: the counter this host knows (900) is stale.
    await kv.set(["storage_used", pid], 100);
    // 500 more would pass the quota by the known counter, not by the stored one: no refusal.
    assert.equal(await commitCharge(500), true);
    assert.equal((await quotas.usage(pid)).storageBytes, 600);
    // Another writer charges 300: a charge made from the known counter (600) fails its commit.
    await kv.set(["storage_used", pid], 900);
    assert.equal(await commitCharge(50), false);
    assert.equal((await quotas.usage(pid)).storageBytes, 900);
    // Prepared again, it reads the store, and refuses what does not fit.
    await assert.rejects(
      quotas.prepareCharges([{ pid, bytes: 200 }], "Cannot store"),
      /EBUDGET|quota/,
    );
    assert.equal(await commitCharge(50), true);
    assert.equal((await quotas.usage(pid)).storageBytes, 950);
  });
});

Deno.test("changes that leave a counter as it is neither check nor set it", async () => {
  await withQuotas(async (quotas, spawn, kv) => {
    const root = await spawn(null, { storageBytes: 1000 });
    const child = await spawn(root);
    await apply(kv, quotas, [{ pid: child, bytes: 400 }]);
    // An object of 100 bytes charged to the child replaced by one of the same size.
    const same = await quotas.prepareCharges(
      [{ pid: child, bytes: 100 }, { pid: child, bytes: -100 }],
      "Cannot store",
    );
    // Meanwhile another writer moves both counters: the change does not depend on them.
    await kv.atomic().set(["storage_used", root], 700).set(["storage_used", child], 700).commit();
    const op = kv.atomic();
    same.apply(op);
    assert.equal((await op.commit()).ok, true);
    assert.equal((await quotas.usage(root)).storageBytes, 700);
    assert.equal((await quotas.usage(child)).storageBytes, 700);
    // A change of size still moves (and checks) them.
    const grow = await quotas.prepareCharges(
      [{ pid: child, bytes: 150 }, { pid: child, bytes: -100 }],
      "Cannot store",
    );
    const grown = kv.atomic();
    grow.apply(grown);
    assert.equal((await grown.commit()).ok, true);
    assert.equal((await quotas.usage(root)).storageBytes, 750);
  });
});

Deno.test("a quota an exec narrows holds from the next charge, not the one the lineage was first read with", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const table = new ProcessTable(kv);
    const quotas = new StorageQuotas(kv, table);
    const pid = (await table.create(newProcess({ budget: {} }), Date.now(), { runnable: true }))
      .pid;
    await apply(kv, quotas, [{ pid, bytes: 1_000 }]); // the lineage is read and kept
    // As `proc.exec` does: the process goes back to runnable with a narrower budget.
    await table.transition(pid, "running");
    await table.transition(pid, "runnable", { patch: { budget: { storageBytes: 1_500 } } });
    await assert.rejects(quotas.prepare([{ pid, bytes: 1_000 }], "Cannot store"), {
      code: "EBUDGET",
    });
  } finally {
    kv.close();
  }
});
