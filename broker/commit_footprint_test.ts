import assert from "node:assert/strict";
import { CommitFootprint, KV_COMMIT_LIMITS } from "./commit_footprint.ts";

/** A footprint made by `make`. */
function footprint(make: (op: Deno.AtomicOperation) => void): CommitFootprint {
  const recorded = new CommitFootprint();
  make(recorded);
  return recorded;
}

const NONE: Deno.AtomicCheck = { key: ["k"], versionstamp: null };

Deno.test("footprints conflict when one checks or writes a key the other writes", () => {
  const cases: [string, (op: Deno.AtomicOperation) => void, (op: Deno.AtomicOperation) => void][] =
    [
      ["check / set", (op) => op.check(NONE), (op) => op.set(["k"], 1)],
      ["set / set", (op) => op.set(["k"], 1), (op) => op.set(["k"], 2)],
      ["check / delete", (op) => op.check(NONE), (op) => op.delete(["k"])],
      ["check / sum", (op) => op.check(NONE), (op) => op.sum(["k"], 1n)],
      ["set / sum", (op) => op.set(["k"], 1), (op) => op.sum(["k"], 1n)],
      ["sum / min", (op) => op.sum(["k"], 1n), (op) => op.min(["k"], 1n)],
      ["check / max", (op) => op.check(NONE), (op) => op.max(["k"], 1n)],
      ["check / mutate", (op) => op.check(NONE), (op) => op.mutate({ key: ["k"], type: "delete" })],
      [
        "check / undelivered key",
        (op) => op.check(NONE),
        (op) => op.enqueue(1, { keysIfUndelivered: [["k"]] }),
      ],
    ];
  for (const [name, a, b] of cases) {
    assert.ok(footprint(a).conflictsWith(footprint(b)), name);
    assert.ok(footprint(b).conflictsWith(footprint(a)), `${name}, reversed`);
  }
});

Deno.test("footprints on different keys, checks of one key, and sums of one key do not conflict", () => {
  const cases: [string, (op: Deno.AtomicOperation) => void, (op: Deno.AtomicOperation) => void][] =
    [
      ["different keys", (op) => op.check(NONE).set(["k"], 1), (op) => op.set(["j"], 1)],
      ["checks of one key", (op) => op.check(NONE), (op) => op.check(NONE)],
      ["sums of one key", (op) => op.sum(["k"], 1n), (op) => op.sum(["k"], 2n)],
      [
        "a string part is not a number part",
        (op) => op.set(["k", 1], 1),
        (op) => op.set(["k", "1"], 1),
      ],
      ["parts are not joined", (op) => op.set(["a,b"], 1), (op) => op.set(["a", "b"], 1)],
    ];
  for (const [name, a, b] of cases) assert.ok(!footprint(a).conflictsWith(footprint(b)), name);
});

Deno.test("a footprint's keys count once included in another", () => {
  const batch = new CommitFootprint();
  batch.include(footprint((op) => op.check(NONE).set(["k"], 1)));
  assert.equal(batch.checks, 1);
  assert.equal(batch.mutations, 1);
  assert.ok(batch.conflictsWith(footprint((op) => op.check({ key: ["k"], versionstamp: null }))));
  assert.ok(!batch.conflictsWith(footprint((op) => op.set(["j"], 1))));
});

Deno.test("a footprint counts checks, mutations and bytes against KV's limits", () => {
  const recorded = footprint((op) => {
    op.check(NONE, { key: ["j"], versionstamp: null });
    op.set(["a"], new Uint8Array(1000)).sum(["b"], 1n).delete(["c"]);
  });
  assert.equal(recorded.checks, 2);
  assert.equal(recorded.mutations, 3);
  assert.ok(recorded.bytes >= 1000 && recorded.bytes < KV_COMMIT_LIMITS.bytes);
  assert.ok(recorded.keyBytes >= 3);
});

Deno.test("the bytes of a stored object's data count as their length, not as their JSON", () => {
  // A stored object keeps its value's bytes in a member of its record; their
  // JSON (`{"0":0,"1":0,…}`) would take several times their size, and the
  // record would be taken as too large to share a commit.
  const data = new Uint8Array(60_000);
  const recorded = footprint((op) => op.set(["obj", "ns", "a"], { name: "a", size: 60_000, data }));
  assert.ok(recorded.bytes >= 60_000 && recorded.bytes < 61_000, `${recorded.bytes} bytes`);
  // Bytes deeper inside a value still count as their JSON: never less than their length.
  const nested = footprint((op) => op.set(["x"], { inner: { data } }));
  assert.ok(nested.bytes >= 60_000);
});

Deno.test("a footprint makes its steps on a real commit, in order, and never commits itself", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    await kv.set(["stale"], 1);
    const stale = await kv.get(["stale"]);
    await kv.set(["stale"], 2);
    const recorded = footprint((op) => op.set(["x"], 1).set(["x"], 2).sum(["n"], 3n));
    const op = kv.atomic();
    recorded.applyTo(op);
    assert.ok((await op.commit()).ok);
    assert.equal((await kv.get(["x"])).value, 2);
    assert.equal((await kv.get<Deno.KvU64>(["n"])).value?.value, 3n);
    const checked = kv.atomic();
    footprint((op) => op.check(stale).set(["y"], 1)).applyTo(checked);
    assert.equal((await checked.commit()).ok, false);
    assert.equal((await kv.get(["y"])).value, null);
    await assert.rejects(recorded.commit(), /Cannot commit a footprint/);
  } finally {
    kv.close();
  }
});
