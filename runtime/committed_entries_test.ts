import assert from "node:assert/strict";
import { CommittedEntries } from "./committed_entries.ts";
import { withMemoryKv } from "./_fixtures.ts";

/** A KV handle that counts the keys it reads. */
async function countingKv(): Promise<{ kv: Deno.Kv; reads: () => number }> {
  const kv = await Deno.openKv(":memory:");
  let reads = 0;
  const getMany = kv.getMany.bind(kv);
  kv.getMany = ((keys: Deno.KvKey[], options?: { consistency?: Deno.KvConsistencyLevel }) => {
    reads += keys.length;
    return getMany(keys, options);
  }) as typeof kv.getMany;
  return { kv, reads: () => reads };
}

/** Entries holding `["n"] = 1` as the commit that stored it left it. */
async function committedOne(
  kv: Deno.Kv,
): Promise<{ entries: CommittedEntries<number>; versionstamp: string }> {
  const entries = new CommittedEntries<number>();
  const result = await kv.atomic().set(["n"], 1).commit();
  assert(result.ok);
  entries.record(["n"], 1, result.versionstamp);
  return { entries, versionstamp: result.versionstamp };
}

Deno.test("an entry recorded after a commit is handed out once, then the store is read", async () => {
  const { kv, reads } = await countingKv();
  try {
    const { entries, versionstamp } = await committedOne(kv);
    const taken = await entries.take(kv, ["n"]);
    assert.deepEqual(taken, { key: ["n"], value: 1, versionstamp });
    assert.equal(reads(), 0);
    // Taken once: the next reader reads the store (and sees what another writer put there).
    await kv.set(["n"], 2);
    assert.equal((await entries.take(kv, ["n"])).value, 2);
    assert.equal(reads(), 1);
  } finally {
    kv.close();
  }
});

Deno.test("a fresh take reads the store and drops what was recorded", async () => {
  const { kv, reads } = await countingKv();
  try {
    const { entries } = await committedOne(kv);
    await kv.set(["n"], 5);
    assert.equal((await entries.take(kv, ["n"], { fresh: true })).value, 5);
    assert.equal((await entries.take(kv, ["n"])).value, 5);
    assert.equal(reads(), 2);
  } finally {
    kv.close();
  }
});

Deno.test("an older commit recorded late does not replace a newer one", () =>
  withMemoryKv(async (kv) => {
    const entries = new CommittedEntries<string>();
    const older = await kv.atomic().set(["k"], "a").commit();
    const newer = await kv.atomic().set(["k"], "b").commit();
    assert(older.ok && newer.ok);
    entries.record(["k"], "b", newer.versionstamp);
    entries.record(["k"], "a", older.versionstamp);
    assert.deepEqual((await entries.take(kv, ["k"])).value, "b");
  }));

Deno.test("keys that print alike stay apart: a number and a string, bytes and a list", () =>
  withMemoryKv(async (kv) => {
    const entries = new CommittedEntries<string>();
    const result = await kv.atomic().set(["k", 1], "number").set(["k", "1"], "string").commit();
    assert(result.ok);
    entries.record(["k", 1], "number", result.versionstamp);
    entries.record(["k", new Uint8Array([1])], "bytes", result.versionstamp);
    assert.equal((await entries.take(kv, ["k", "1"])).value, "string");
    assert.equal((await entries.take(kv, ["k", 1])).value, "number");
    assert.equal((await entries.take(kv, ["k", new Uint8Array([1])])).value, "bytes");
  }));

Deno.test("past its limit the oldest entries are dropped", async () => {
  const { kv, reads } = await countingKv();
  try {
    const entries = new CommittedEntries<number>(2);
    for (const n of [1, 2, 3]) entries.record(["k", n], n, "0".repeat(20));
    assert.deepEqual((await entries.takeMany(kv, [["k", 2], ["k", 3]])).map((e) => e.value), [
      2,
      3,
    ]);
    assert.equal(reads(), 0);
    assert.equal((await entries.take(kv, ["k", 1])).value, null);
    assert.equal(reads(), 1);
  } finally {
    kv.close();
  }
});

Deno.test("a key forgotten at a commit ignores what an older commit records late, and peeking takes nothing", async () => {
  await withMemoryKv(async (kv) => {
    const entries = new CommittedEntries<number>();
    const older = await kv.atomic().set(["n"], 1).commit();
    const newer = await kv.atomic().set(["n"], 2).commit();
    assert(older.ok && newer.ok);
    // Another path of this host changed the key at `newer`; the commit at `older` answers after.
    entries.forget(["n"], newer.versionstamp);
    entries.record(["n"], 1, older.versionstamp);
    assert.equal(entries.peek(["n"]), undefined);
    // A later commit records as before; peeking leaves it to be taken.
    const latest = await kv.atomic().set(["n"], 3).commit();
    assert(latest.ok);
    entries.record(["n"], 3, latest.versionstamp);
    assert.equal(entries.peek(["n"])?.value, 3);
    assert.equal((await entries.take(kv, ["n"])).versionstamp, latest.versionstamp);
    assert.equal(entries.peek(["n"]), undefined);
  });
});
