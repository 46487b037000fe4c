import assert from "node:assert/strict";
import type { SyscallError } from "../broker/errors.ts";
import { commitStoreChange } from "../broker/store_change.ts";
import {
  budgetLeft,
  narrowBudget,
  type NewProcess,
  type ProcessEvent,
  type ProcessRecord,
  ProcessTable,
} from "./process_table.ts";
import { countCommits, newProcess } from "./_fixtures.ts";

function init(ppid: number | null = null, extra: Partial<NewProcess> = {}): NewProcess {
  return newProcess({ ppid, image: "demo@1.0.0", digest: "d".repeat(64), ...extra });
}

async function withTable(fn: (table: ProcessTable, kv: Deno.Kv) => Promise<void>): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  try {
    await fn(new ProcessTable(kv), kv);
  } finally {
    kv.close();
  }
}

async function eventsOf(table: ProcessTable, pid?: number): Promise<ProcessEvent[]> {
  const out: ProcessEvent[] = [];
  for await (const event of table.events({ pid })) out.push(event);
  return out;
}

Deno.test("concurrent creates get distinct pids with no gaps", async () => {
  await withTable(async (table) => {
    const records = await Promise.all(Array.from({ length: 25 }, () => table.create(init())));
    const pids = records.map((r) => r.pid);
    assert.equal(new Set(pids).size, 25);
    assert.deepEqual([...pids].sort((a, b) => a - b), Array.from({ length: 25 }, (_, i) => i + 1));
    for (const record of records) {
      assert.equal(record.state, "created");
      assert.equal((await table.get(record.pid))?.pid, record.pid);
    }
  });
});

Deno.test("pids allocated by two tables over one store never collide", async () => {
  await withTable(async (first, kv) => {
    const second = new ProcessTable(kv);
    const records = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 ? first : second).create(init())),
    );
    assert.equal(new Set(records.map((r) => r.pid)).size, 20);
  });
});

Deno.test("pids keep increasing and are not reused after a process ends", async () => {
  await withTable(async (table) => {
    const a = await table.create(init());
    await table.transition(a.pid, "killed");
    const b = await table.create(init());
    const c = await table.create(init());
    assert.ok(b.pid > a.pid && c.pid > b.pid);
    assert.equal((await table.get(a.pid))?.state, "killed");
  });
});

Deno.test("illegal transitions are refused and leave the record and events alone", async () => {
  await withTable(async (table) => {
    const proc = await table.create(init());
    const before = await eventsOf(table);
    await assert.rejects(
      table.transition(proc.pid, "running"),
      (error: SyscallError) => {
        assert.equal(error.code, "EINVAL");
        assert.match(error.message, /from created to running/);
        return true;
      },
    );
    await table.transition(proc.pid, "runnable");
    await table.transition(proc.pid, "running");
    await table.transition(proc.pid, "exited", { patch: { result: 1 } });
    for (const state of ["running", "runnable", "killed", "failed"] as const) {
      await assert.rejects(table.transition(proc.pid, state), { code: "EINVAL" });
    }
    const after = await table.require(proc.pid);
    assert.equal(after.state, "exited");
    assert.equal(after.result, 1);
    assert.equal((await eventsOf(table)).length, before.length + 3);
  });
});

Deno.test("a transition of a missing process fails with ENOENT", async () => {
  await withTable(async (table) => {
    await assert.rejects(table.transition(42, "runnable"), { code: "ENOENT" });
    await assert.rejects(table.require(42), { code: "ENOENT" });
    assert.equal(await table.get(42), undefined);
  });
});

Deno.test("every transition is recorded as an event, in order, with its reason", async () => {
  await withTable(async (table) => {
    const proc = await table.create(init(), 1000);
    const seen: ProcessEvent[] = [];
    const unsubscribe = table.subscribe((_record, event) => seen.push(event));
    await table.transition(proc.pid, "runnable");
    await table.transition(proc.pid, "running");
    await table.transition(proc.pid, "blocked", { patch: { waitingOn: "sleep" } });
    assert.equal((await table.require(proc.pid)).waitingOn, "sleep");
    await table.transition(proc.pid, "runnable");
    assert.equal((await table.require(proc.pid)).waitingOn, undefined);
    await table.transition(proc.pid, "running");
    await table.transition(proc.pid, "killed", { reason: "kill signal from operator" });
    unsubscribe();
    const events = await eventsOf(table, proc.pid);
    assert.deepEqual(
      events.map((e) => [e.from, e.to]),
      [
        [null, "created"],
        ["created", "runnable"],
        ["runnable", "running"],
        ["running", "blocked"],
        ["blocked", "runnable"],
        ["runnable", "running"],
        ["running", "killed"],
      ],
    );
    assert.equal(events[0].at, 1000);
    assert.equal(events.at(-1)?.reason, "kill signal from operator");
    for (let i = 1; i < events.length; i++) assert.ok(events[i].seq > events[i - 1].seq);
    assert.deepEqual(seen, events.slice(1));
    const ended = await table.require(proc.pid);
    assert.equal(typeof ended.endedAt, "number");
  });
});

Deno.test("events of many processes form one gap-free ordered log", async () => {
  await withTable(async (table) => {
    const procs = await Promise.all(Array.from({ length: 8 }, () => table.create(init())));
    await Promise.all(procs.map((p) => table.transition(p.pid, "runnable")));
    const events = await eventsOf(table);
    assert.deepEqual(events.map((e) => e.seq), Array.from({ length: 16 }, (_, i) => i + 1));
    for (const p of procs) {
      assert.deepEqual((await eventsOf(table, p.pid)).map((e) => e.to), ["created", "runnable"]);
    }
    const after = [];
    for await (const event of table.events({ afterSeq: 10 })) after.push(event.seq);
    assert.deepEqual(after, [11, 12, 13, 14, 15, 16]);
  });
});

Deno.test("the children index lists a parent's children and nobody else's", async () => {
  await withTable(async (table) => {
    const parent = await table.create(init());
    const other = await table.create(init());
    const a = await table.create(init(parent.pid));
    const stranger = await table.create(init(other.pid));
    const b = await table.create(init(parent.pid));
    const grandchild = await table.create(init(a.pid));
    assert.deepEqual(await table.children(parent.pid), [a.pid, b.pid]);
    assert.deepEqual(await table.children(other.pid), [stranger.pid]);
    assert.deepEqual(await table.children(a.pid), [grandchild.pid]);
    assert.deepEqual(await table.children(b.pid), []);
    assert.equal((await table.require(b.pid)).ppid, parent.pid);
  });
});

Deno.test("concurrent updates of one record are not lost", async () => {
  await withTable(async (table) => {
    const proc = await table.create(init());
    await Promise.all(
      Array.from(
        { length: 20 },
        () =>
          table.update(proc.pid, (r) => ({ usage: { ...r.usage, tokens: r.usage.tokens + 1 } })),
      ),
    );
    assert.equal((await table.require(proc.pid)).usage.tokens, 20);
  });
});

Deno.test("concurrent creates and transitions commit each change once, not once per lost race", async () => {
  await withTable(async (table, kv) => {
    const tried = countCommits(kv);
    const records = await Promise.all(Array.from({ length: 40 }, () => table.create(init())));
    // Side by side, every commit but one failed on the log's counter and was tried again: 820 in all.
    assert.ok(tried() <= 40, `${tried()} commits for 40 creates`);
    const before = tried();
    await Promise.all(records.map((r) => table.transition(r.pid, "runnable", { reason: "go" })));
    assert.ok(tried() - before <= 40, `${tried() - before} commits for 40 transitions`);
    const events = await eventsOf(table);
    assert.deepEqual(events.map((e) => e.seq), Array.from({ length: 80 }, (_, i) => i + 1));
    for (const record of records) {
      assert.deepEqual(
        events.filter((e) => e.pid === record.pid).map((e) => e.to),
        ["created", "runnable"],
      );
      assert.equal((await table.require(record.pid)).state, "runnable");
    }
  });
});

Deno.test("a change that cannot be made fails alone; those committed with it land", async () => {
  await withTable(async (table) => {
    const proc = await table.create(init());
    const results = await Promise.allSettled([
      table.create(init()),
      table.transition(999, "runnable"),
      table.transition(proc.pid, "exited"),
      table.create(init(), Date.now(), {
        setup: () => {
          throw new Error("no grant");
        },
      }),
      table.transition(proc.pid, "runnable"),
      table.create(init()),
    ]);
    assert.deepEqual(results.map((r) => r.status), [
      "fulfilled",
      "rejected",
      "rejected",
      "rejected",
      "fulfilled",
      "fulfilled",
    ]);
    assert.equal(((results[1] as PromiseRejectedResult).reason as SyscallError).code, "ENOENT");
    assert.equal(((results[2] as PromiseRejectedResult).reason as SyscallError).code, "EINVAL");
    assert.match(((results[3] as PromiseRejectedResult).reason as Error).message, /no grant/);
    assert.deepEqual((await table.list()).map((r) => [r.pid, r.state]), [
      [1, "runnable"],
      [2, "created"],
      [3, "created"],
    ]);
    const events = await eventsOf(table);
    assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4]);
  });
});

Deno.test("changes that check and write one key are not committed blind to each other", async () => {
  await withTable(async (table, kv) => {
    const records = await Promise.all(Array.from({ length: 6 }, () => table.create(init())));
    const counter = ["test", "started"];
    await Promise.all(records.map((r) =>
      table.update(r.pid, () => ({ state: "runnable" }), {
        prepare: async () => {
          const entry = await kv.get<number>(counter);
          return (op) => op.check(entry).set(counter, (entry.value ?? 0) + 1);
        },
      })
    ));
    assert.equal((await kv.get<number>(counter)).value, 6, "no increment lost");
  });
});

Deno.test("list returns every process in pid order", async () => {
  await withTable(async (table) => {
    for (let i = 0; i < 12; i++) await table.create(init());
    assert.deepEqual(
      (await table.list()).map((p) => p.pid),
      Array.from({ length: 12 }, (_, i) => i + 1),
    );
  });
});

/** Resolves once `table` has handed on `count` transitions committed elsewhere. */
function foreignEvents(table: ProcessTable, count: number): Promise<ProcessEvent[]> {
  const seen: ProcessEvent[] = [];
  return new Promise((resolve) => {
    const off = table.subscribe((_, event, foreign) => {
      if (!foreign) return;
      seen.push(event);
      if (seen.length === count) {
        off();
        resolve(seen);
      }
    });
  });
}

Deno.test("follow hands on the transitions another table commits, in order, and not its own", async () => {
  await withTable(async (here, kv) => {
    const elsewhere = new ProcessTable(kv);
    const before = await elsewhere.create(init());
    await here.follow({ watch: true });
    try {
      const local: ProcessEvent[] = [];
      here.subscribe((_, event, foreign) => {
        if (!foreign) local.push(event);
      });
      const arriving = foreignEvents(here, 3);
      await elsewhere.transition(before.pid, "runnable", { reason: "an answer" });
      const mine = await here.create(init(), Date.now(), { runnable: true });
      const theirs = await elsewhere.create(init());
      await elsewhere.transition(before.pid, "killed", { reason: "kill signal" });
      const events = await arriving;
      assert.deepEqual(events.map((e) => [e.pid, e.from, e.to]), [
        [before.pid, "created", "runnable"],
        [theirs.pid, null, "created"],
        [before.pid, "runnable", "killed"],
      ], "the transition before follow began is not handed on");
      assert.deepEqual(local.map((e) => [e.pid, e.to]), [[mine.pid, "created"], [
        mine.pid,
        "runnable",
      ]]);
    } finally {
      await here.unfollow();
    }
  });
});

Deno.test("follow reads a store file another handle writes by polling its counter", async () => {
  const dir = await Deno.makeTempDir({ prefix: "libos-table-" });
  const path = `${dir}/store.db`;
  const kvHere = await Deno.openKv(path);
  const kvThere = await Deno.openKv(path);
  const here = new ProcessTable(kvHere);
  try {
    await here.follow({ pollMs: 10 });
    const arriving = foreignEvents(here, 1);
    const record = await new ProcessTable(kvThere).create(init(), Date.now());
    const [event] = await arriving;
    assert.equal(event.pid, record.pid);
  } finally {
    await here.unfollow();
    kvHere.close();
    kvThere.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("restore puts a record back in any state and logs it as a transition", async () => {
  await withTable(async (table) => {
    const created = await table.create(init(), Date.now(), { runnable: true });
    await table.transition(created.pid, "killed");
    const restored = await table.restore({ ...created, state: "runnable" }, {
      reason: "snapshot s1 was restored",
    });
    assert.equal(restored.state, "runnable");
    assert.equal((await table.get(created.pid))?.state, "runnable");
    const last = (await eventsOf(table, created.pid)).at(-1)!;
    assert.deepEqual([last.from, last.to, last.reason], [
      "killed",
      "runnable",
      "snapshot s1 was restored",
    ]);
  });
});

Deno.test("lineage runs from a process to its root; requireChild and requireDescendant follow it", async () => {
  await withTable(async (table) => {
    const root = await table.create(init());
    const child = await table.create(init(root.pid));
    const grandchild = await table.create(init(child.pid));
    const other = await table.create(init());
    assert.deepEqual((await table.lineage(grandchild.pid)).map((r) => r.pid), [
      grandchild.pid,
      child.pid,
      root.pid,
    ]);
    await assert.rejects(table.lineage(99), { code: "ENOENT" });
    await table.requireChild(root.pid, child.pid, "wait for");
    await assert.rejects(table.requireChild(root.pid, grandchild.pid, "wait for"), {
      code: "EPERM",
      message: `Cannot wait for process ${grandchild.pid}: it is not a child of ${root.pid}`,
    });
    await table.requireDescendant(root.pid, grandchild.pid);
    for (
      const [pid, target] of [[child.pid, root.pid], [other.pid, child.pid], [root.pid, root.pid]]
    ) {
      await assert.rejects(table.requireDescendant(pid, target, "delegate to"), {
        code: "EPERM",
        message: `Cannot delegate to process ${target}: it is not a descendant of ${pid}`,
      });
    }
    await assert.rejects(table.requireDescendant(other.pid, child.pid), {
      message: `Cannot signal process ${child.pid}: it is not a descendant of ${other.pid}`,
    });
  });
});

Deno.test("a budget an ancestor has spent stops its descendants; one it has not stops nothing", async () => {
  await withTable(async (table) => {
    const root = await table.create(init(null, { budget: { toolCalls: 2 } }));
    const child = await table.create(init(root.pid, { budget: { tokens: 100 } }));
    assert.equal(await table.isBudgeted(child.pid, "toolCalls"), true);
    assert.equal(await table.isBudgeted(child.pid, "tokens"), true);
    assert.equal(await table.isBudgeted(root.pid, "tokens"), false);
    assert.equal(await table.isBudgeted(child.pid, "children"), false);
    await table.checkBudget(child.pid, "toolCalls");
    assert.equal(await table.reserve(child.pid, "toolCalls", { least: 1, most: 5 }), 2);
    assert.deepEqual((await table.require(root.pid)).usage.toolCalls, 2);
    await assert.rejects(table.checkBudget(child.pid, "toolCalls"), {
      code: "EBUDGET",
      message: `Cannot continue: process ${root.pid} has spent its toolCalls budget of 2`,
    });
    // Nothing is charged when a budget on the way is short.
    await assert.rejects(table.reserve(child.pid, "toolCalls", { least: 1 }), { code: "EBUDGET" });
    assert.equal((await table.require(child.pid)).usage.toolCalls, 2);
    await table.charge(child.pid, { toolCalls: -1 });
    await table.checkBudget(child.pid, "toolCalls");
    assert.deepEqual(
      [(await table.require(root.pid)).usage.toolCalls, (await table.require(child.pid)).usage],
      [1, { toolCalls: 1, tokens: 0, children: 0 }],
    );
  });
});

/** Counts the reads of process records through `kv` from now on. */
function countRecordReads(kv: Deno.Kv): () => number {
  let reads = 0;
  const isRecord = (key: Deno.KvKey) => key[0] === "proc";
  const { get, getMany } = { get: kv.get.bind(kv), getMany: kv.getMany.bind(kv) };
  kv.get = ((key: Deno.KvKey, options?: { consistency?: Deno.KvConsistencyLevel }) => {
    if (isRecord(key)) reads++;
    return get(key, options);
  }) as Deno.Kv["get"];
  kv.getMany = ((keys: Deno.KvKey[], options?: { consistency?: Deno.KvConsistencyLevel }) => {
    reads += keys.filter(isRecord).length;
    return getMany(keys, options);
  }) as Deno.Kv["getMany"];
  return () => reads;
}

Deno.test("a charge checks the records this host last charged without reading them, and reads those changed since", async () => {
  await withTable(async (table, kv) => {
    const root = await table.create(init(null, { budget: { toolCalls: 3 } }));
    const child = await table.create(init(root.pid));
    await table.charge(child.pid, { toolCalls: 1 });
    const reads = countRecordReads(kv);
    const commits = countCommits(kv);
    // The records the last charge committed are checked in the commit, not
    // read back, and plan the next charge.
    await table.charge(child.pid, { toolCalls: 1 });
    assert.deepEqual([reads(), commits()], [0, 1]);
    assert.deepEqual(
      (await table.chargedLineage(child.pid)).map((r) => [r.pid, r.usage.toolCalls]),
      [[child.pid, 2], [root.pid, 2]],
    );
    assert.equal(reads(), 0);
    // A record this host changes otherwise (an exec's new image) is read again.
    await table.update(child.pid, () => ({ image: "next@1.0.0" }));
    const before = reads();
    assert.equal((await table.chargedLineage(child.pid))[0].image, "next@1.0.0");
    assert.equal(reads() - before, 1);
    // This host changed the child otherwise: its record is read again, and committed once.
    await table.transition(child.pid, "runnable");
    await table.charge(child.pid, { toolCalls: 1 });
    assert.equal(commits(), 4);
    // Another host gives two back: this host's copies are behind, and the
    // refusal they would give (3 used of 3) is confirmed from the store,
    // where 1 is used: the charge goes through, counted once.
    await new ProcessTable(kv).charge(child.pid, { toolCalls: -2 });
    const change = await table.prepareCharge(child.pid, { toolCalls: 2 }, {
      within: ["toolCalls"],
    });
    const op = kv.atomic();
    change.apply(op);
    const committed = await op.commit();
    assert.ok(committed.ok);
    change.committed?.(committed.versionstamp);
    assert.deepEqual(
      [
        (await table.require(root.pid)).usage.toolCalls,
        (await table.require(child.pid)).usage.toolCalls,
      ],
      [3, 3],
    );
    // Spent, confirmed from the store: refused.
    await assert.rejects(
      table.prepareCharge(child.pid, { toolCalls: 1 }, { within: ["toolCalls"] }),
      { code: "EBUDGET" },
    );
    // Another host charges one without a limit: this host's next charge
    // fails its check once, is read again, and counts every charge once.
    await new ProcessTable(kv).charge(child.pid, { toolCalls: 1 });
    await table.charge(child.pid, { toolCalls: -1 });
    assert.deepEqual(
      [
        (await table.require(root.pid)).usage.toolCalls,
        (await table.require(child.pid)).usage.toolCalls,
      ],
      [3, 3],
    );
  });
});

Deno.test("budgetLeft is what a process has not spent, wall time included; narrowBudget the tighter", () => {
  const record = {
    budget: { toolCalls: 10, tokens: 5, wallMs: 1_000 },
    usage: { toolCalls: 3, tokens: 9, children: 4 },
    startedAt: 500,
  } as ProcessRecord;
  assert.deepEqual(budgetLeft(record, 1_200), { toolCalls: 7, tokens: 0, wallMs: 300 });
  assert.deepEqual(budgetLeft(record, 9_000).wallMs, 0);
  assert.deepEqual(budgetLeft({ ...record, startedAt: undefined }, 9_000).wallMs, 1_000);
  assert.deepEqual(narrowBudget({ toolCalls: 7, tokens: 1 }, { toolCalls: 3, children: 2 }), {
    toolCalls: 3,
    tokens: 1,
    children: 2,
  });
  assert.deepEqual(narrowBudget({ toolCalls: 3 }, { toolCalls: 7 }), { toolCalls: 3 });
});

Deno.test("children made side by side are charged in their create commit and never exceed a budget", async () => {
  await withTable(async (table) => {
    const root = await table.create(init(null, { budget: { children: 5 } }));
    const parent = await table.create(init(root.pid, { budget: { children: 9 } }), Date.now(), {
      chargeParent: true,
    });
    const made = await Promise.allSettled(
      Array.from(
        { length: 10 },
        () => table.create(init(parent.pid), Date.now(), { chargeParent: true }),
      ),
    );
    const children = made.filter((r) => r.status === "fulfilled");
    const refused = made.filter((r) => r.status === "rejected");
    // The root's budget of 5 holds the parent (1) and 4 grandchildren.
    assert.equal(children.length, 4);
    for (const r of refused) {
      assert.equal(((r as PromiseRejectedResult).reason as SyscallError).code, "EBUDGET");
    }
    assert.equal((await table.require(root.pid)).usage.children, 5);
    assert.equal((await table.require(parent.pid)).usage.children, 4);
    assert.equal((await table.children(parent.pid)).length, 4, "a charge never lacks its child");
  });
});

Deno.test("a child of a parent with no children left is not made, and nothing is charged", async () => {
  await withTable(async (table) => {
    const parent = await table.create(init(null, { budget: { children: 0 } }));
    await assert.rejects(
      table.create(init(parent.pid), Date.now(), { chargeParent: true }),
      { code: "EBUDGET" },
    );
    assert.deepEqual(await table.children(parent.pid), []);
    assert.equal((await table.require(parent.pid)).usage.children, 0);
  });
});

Deno.test("a table reads its counters once, and again only after another table moved them", async () => {
  await withTable(async (table, kv) => {
    const getMany = kv.getMany.bind(kv);
    let counterReads = 0;
    kv.getMany = ((keys: Deno.KvKey[], options?: { consistency?: Deno.KvConsistencyLevel }) => {
      if (keys.some((key) => key[0] === "meta")) counterReads++;
      return getMany(keys, options);
    }) as Deno.Kv["getMany"];
    const first = await table.create(init());
    const second = await table.create(init());
    await table.transition(second.pid, "runnable");
    assert.equal(counterReads, 1, "the counters its own commits left are not read again");
    // Another host's table on the same store makes a process: this table's copy is stale.
    const other = await new ProcessTable(kv).create(init());
    const third = await table.create(init());
    assert.deepEqual([first.pid, second.pid, other.pid, third.pid], [1, 2, 3, 4]);
    const seqs = (await eventsOf(table)).map((e) => e.seq);
    assert.equal(new Set(seqs).size, seqs.length, "no event seq was used twice");
    assert.equal(counterReads, 3, "the stale copy failed its check and was read again");
  });
});

Deno.test("a charge held within a budget another table set since its copy is refused from the store", async () => {
  await withTable(async (a, kv) => {
    const b = new ProcessTable(kv);
    const parent = await a.create(init(), Date.now(), { runnable: true, running: true });
    const child = await a.create(init(parent.pid), Date.now(), { runnable: true, running: true });
    await b.charge(child.pid, { tokens: 1 }); // b now holds copies of the child and the parent
    // Another host gives the parent a tokens budget (as an exec into a budgeted image does).
    await a.update(parent.pid, () => ({ budget: { tokens: 100 } }));
    await assert.rejects(
      commitStoreChange(
        kv,
        () => b.prepareCharge(child.pid, { tokens: 5000 }, { within: ["tokens"] }),
      ),
      { code: "EBUDGET" },
    );
    assert.equal((await a.require(parent.pid)).usage.tokens, 1, "nothing more was charged");
  });
});
