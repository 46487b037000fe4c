/**
 * A process blocked in a call keeps its Worker for a grace period: a
 * wake-up within it answers the call in place, without a replay (no read
 * of the journal, the same run goes on); after it, the process parks and
 * replays as before.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Harness, reach, withHarness } from "./_harness.ts";

/** Counts the journal reads of a replay (`kv.list` over `["journal", pid, …]`). */
function countJournalLists(h: Harness): { count: () => number } {
  const kv = h.kernel.store.kv;
  const list = kv.list.bind(kv);
  let count = 0;
  kv.list = ((selector: Deno.KvListSelector, options?: Deno.KvListOptions) => {
    const start = "start" in selector ? selector.start : undefined;
    const prefix = "prefix" in selector ? selector.prefix : undefined;
    if ((start ?? prefix)?.[0] === "journal") count++;
    return list(selector, options);
  }) as typeof kv.list;
  return { count: () => count };
}

const WAITS_TWICE = `export default async (sys) => {
  const first = await sys.event.wait("go");
  const second = await sys.event.wait("go");
  return [first.data, second.data];
}`;

async function blockedRun(h: Harness) {
  const tag = await h.program("waits", WAITS_TWICE, { capabilities: ["event:wait:go"] });
  const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace });
  h.kernel.start(proc.pid);
  await reach(h, proc.pid, "blocked");
  return proc.pid;
}

Deno.test("a wake-up within the grace period answers in the same Worker: no journal read, no replay", async () => {
  await withHarness(async (h) => {
    const pid = await blockedRun(h);
    const run = h.kernel.executionOf(pid);
    assert.ok(run?.slot && !run.slot.isEnded, "the blocked process kept its Worker");
    // From the wake-up to the next wait: the program went on in place.
    const reads = countJournalLists(h);
    await h.kernel.postEvent("go", 1);
    await reach(h, pid, "blocked"); // the second wait
    assert.equal(reads.count(), 0, "the journal was not read back");
    assert.equal(h.kernel.executionOf(pid), run, "the same run goes on");
    await h.kernel.postEvent("go", 2);
    const end = await h.kernel.waitFor(pid);
    assert.equal(end.state, "exited", JSON.stringify(end.error));
    assert.deepEqual(end.result, [1, 2]);
  }, { waitGraceMs: 60_000 });
});

Deno.test("with no grace, the same wake-ups replay the program from its journal", async () => {
  await withHarness(async (h) => {
    const pid = await blockedRun(h);
    const reads = countJournalLists(h);
    await h.kernel.postEvent("go", 1);
    await reach(h, pid, "blocked");
    assert.ok(reads.count() >= 1, "the journal was read back for the replay");
    await h.kernel.postEvent("go", 2);
    const end = await h.kernel.waitFor(pid);
    assert.deepEqual(end.result, [1, 2]);
  }, { waitGraceMs: 0 });
});

Deno.test("past the grace period a blocked process gives its Worker up and still finishes on wake-up", async () => {
  await withHarness(async (h) => {
    const pid = await blockedRun(h);
    const run = h.kernel.executionOf(pid)!;
    const end = await run.slot!.ended;
    assert.deepEqual(end.closed, { clean: true });
    assert.equal((await h.kernel.processes.require(pid)).state, "blocked");
    await h.kernel.postEvent("go", 1);
    await reach(h, pid, "blocked");
    await h.kernel.postEvent("go", 2);
    assert.deepEqual((await h.kernel.waitFor(pid)).result, [1, 2]);
  }, { waitGraceMs: 50 });
});
