/**
 * A parent's wait on a child's end is answered whatever the order of the
 * wait's commit and the end's: the end's commit answers the waits it
 * listed, and a wait committed between that listing and that commit is
 * answered right after it. Several waits of one parent on one child end
 * together and wake the parent once.
 */

import assert from "node:assert/strict";
import type { ParkedCall } from "../runtime/waits.ts";
import { Kernel } from "../runtime/kernel.ts";
import { newProcess } from "../runtime/_fixtures.ts";

async function withParentAndChild(
  body: (kernel: Kernel, parent: number, child: number) => Promise<void>,
): Promise<void> {
  const kernel = await Kernel.open({ store: ":memory:" });
  try {
    const running = { runnable: true, running: true };
    const parent = await kernel.processes.create(newProcess(), kernel.now(), running);
    const child = await kernel.processes.create(
      newProcess({ ppid: parent.pid }),
      kernel.now(),
      running,
    );
    await body(kernel, parent.pid, child.pid);
  } finally {
    await kernel.close();
  }
}

function waitCall(pid: number, seq: number): ParkedCall {
  return { pid, seq, name: "proc.wait", argsDigest: "d".repeat(64) };
}

async function phase(kernel: Kernel, pid: number, seq: number): Promise<string | undefined> {
  return (await kernel.store.kv.get<{ phase: string }>(["journal", pid, seq])).value?.phase;
}

Deno.test("a wait committed after the end listed its waiters, before the end committed, is answered", async () => {
  await withParentAndChild(async (kernel, parent, child) => {
    const waits = kernel.waits;
    const childEnded = waits.childEnded.bind(waits);
    let parked = false;
    waits.childEnded = async (...args: Parameters<typeof childEnded>) => {
      const listed = await childEnded(...args); // no waiter yet
      if (!parked) {
        parked = true;
        await waits.park(waitCall(parent, 1), { kind: "child", pid: child });
      }
      return listed;
    };
    await kernel.finish(child, "exited", { result: 42 });
    assert.equal(await phase(kernel, parent, 1), "done", "the parent's wait was answered");
    assert.equal((await kernel.store.kv.get(["wait_child", child, parent, 1])).value, null);
  });
});

Deno.test("two waits of one parent on one child both end, and the parent is woken", async () => {
  await withParentAndChild(async (kernel, parent, child) => {
    await kernel.waits.park(waitCall(parent, 2), { kind: "child", pid: child });
    await kernel.waits.park(waitCall(parent, 1), { kind: "child", pid: child });
    assert.equal((await kernel.processes.require(parent)).state, "blocked");
    await kernel.finish(child, "exited", { result: 1 });
    assert.equal(await phase(kernel, parent, 1), "done");
    assert.equal(await phase(kernel, parent, 2), "done");
    assert.notEqual((await kernel.processes.require(parent)).state, "blocked");
  });
});
