/**
 * Operator snapshots (SPEC section 7): restore puts state, objects and
 * journal back, reports the external effects made since, and never brings
 * back a capability revoked since; fork-from-snapshot starts a new process
 * from the saved point.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { reach, withHarness } from "./_harness.ts";

const PROGRAM = `export default async function main(sys) {
  await sys.obj.put("self", "stage", "one");
  await sys.fs.append("log.txt", "one\\n");
  await sys.msg.recv();
  await sys.obj.put("self", "stage", "two");
  await sys.fs.append("log.txt", "two\\n");
  await sys.msg.recv();
  let read = "ok";
  try { await sys.fs.read("log.txt"); } catch (e) { read = e.code; }
  return { stage: (await sys.obj.get("self", "stage")).value, read };
}`;

Deno.test("restore rewinds state and objects, reports later effects, and keeps revocations", async () => {
  await withHarness(async (h) => {
    const tag = await h.program("staged", PROGRAM, { capabilities: ["fs:read,write:**"] });
    const { pid } = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    h.kernel.start(pid);
    await reach(h, pid, "blocked");
    const snap = await h.kernel.snapshots.save(pid);

    await h.kernel.mailbox.send(pid, "go", null);
    await new Promise<void>((resolve) => {
      const poll = async () => {
        const r = await h.kernel.processes.require(pid);
        if (
          r.state === "blocked" &&
          (await h.kernel.objects.get(`proc/${pid}`, "stage")).value === "two"
        ) {
          resolve();
        } else setTimeout(poll, 10);
      };
      poll();
    });
    // The operator revokes the read grant after the snapshot.
    const read = (await h.kernel.caps.list(pid)).find((c) => c.resource === "fs")!;
    await h.kernel.caps.revoke(read.id);

    const report = await h.kernel.snapshots.restore(snap.id);
    assert.deepEqual(report.restored, [pid]);
    assert.ok(
      report.effectsAfter.some((e) => e.syscall === "fs.append"),
      "the second append is reported",
    );
    assert.ok(report.notRestored.includes(read.id), "the revoked capability stays revoked");
    assert.equal((await h.kernel.objects.get(`proc/${pid}`, "stage")).value, "one");
    assert.equal(
      await Deno.readTextFile(join(h.workspace, "log.txt")),
      "one\ntwo\n",
      "effects are not undone",
    );

    // Running on from the snapshot: it appends again (a new effect), and its reads are now refused.
    await reach(h, pid, "blocked");
    await h.kernel.mailbox.send(pid, "go", null);
    await h.kernel.mailbox.send(pid, "go", null);
    const end = await h.kernel.waitFor(pid);
    assert.equal(end.state, "failed", "with its fs grant revoked, the program's append is refused");
    assert.match(end.error?.message ?? "", /EPERM|no capability/);
  });
});

Deno.test("fork from a snapshot starts a new process at the saved point", async () => {
  await withHarness(async (h) => {
    const tag = await h.program("staged2", PROGRAM, { capabilities: ["fs:read,write:**"] });
    const { pid } = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    h.kernel.start(pid);
    await reach(h, pid, "blocked");
    const snap = await h.kernel.snapshots.save(pid);
    const copy = await h.kernel.snapshots.fork(snap.id);
    assert.notEqual(copy.pid, pid);
    await reach(h, copy.pid, "blocked");
    assert.equal((await h.kernel.objects.get(`proc/${copy.pid}`, "stage")).value, "one");
    for (const target of [copy.pid, copy.pid]) await h.kernel.mailbox.send(target, "go", null);
    const end = await h.kernel.waitFor(copy.pid);
    assert.deepEqual(end.result, { stage: "two", read: "ok" });
    assert.equal(
      await Deno.readTextFile(join(h.workspace, "log.txt")),
      "one\ntwo\n",
      "the copy replayed 'one'",
    );
    await h.kernel.signal(pid, "kill");
  });
});

Deno.test("a process forked from a snapshot gets no copy of a one-shot capability", async () => {
  await withHarness(async (h) => {
    const tag = await h.program(
      "once",
      `export default async function main(sys) {
        await sys.msg.recv();
        try { await sys.fs.append("once.txt", "x\\n"); return "wrote"; } catch (e) { return e.code; }
      }`,
      { capabilities: ["fs:write:once.txt;uses=1"] },
    );
    const { pid } = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    h.kernel.start(pid);
    await reach(h, pid, "blocked");
    const snap = await h.kernel.snapshots.save(pid);
    const copy = await h.kernel.snapshots.fork(snap.id);
    await reach(h, copy.pid, "blocked");
    for (const target of [pid, copy.pid]) await h.kernel.mailbox.send(target, "go", null);
    const ends = [await h.kernel.waitFor(pid), await h.kernel.waitFor(copy.pid)];
    assert.deepEqual(ends.map((e) => e.result), ["wrote", "EPERM"]);
    assert.equal(await Deno.readTextFile(join(h.workspace, "once.txt")), "x\n");
  });
});
