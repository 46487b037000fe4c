/**
 * Long-running processes (SPEC sections 3, 5, 7): parking, wake-ups,
 * events, messages, human queues and approvals, signals, fork, exec,
 * checkpoints, replay and recovery.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { SyscallError } from "../broker/errors.ts";
import type { JournalRecord } from "../broker/journal.ts";
import { Kernel } from "../runtime/kernel.ts";
import type { HumanRequest } from "../runtime/human_queue.ts";
import { type Harness, reach, withHarness } from "./_harness.ts";

/** Resolves with the first pending human request of `pid`. */
async function requestOf(h: Harness, pid: number): Promise<HumanRequest> {
  await reach(h, pid, "blocked");
  const request = (await h.kernel.humans.pending()).find((r) => r.pid === pid);
  assert.ok(request, "a pending request");
  return request;
}

async function start(
  h: Harness,
  source: string,
  image: Record<string, unknown> = {},
  input?: unknown,
) {
  const tag = await h.program(`p${crypto.randomUUID().slice(0, 8)}`, source, image);
  const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace, input });
  h.kernel.start(proc.pid);
  return proc.pid;
}

Deno.test("a sleeping process holds no cell, and replay does not repeat its effects", async () => {
  await withHarness(async (h) => {
    h.kernel.waits.start(50);
    const pid = await start(
      h,
      `export default async function main(sys) {
        const before = Date.now();
        await sys.fs.append("log.txt", "once\\n");
        await sys.time.sleep(200);
        await sys.fs.append("log.txt", "after\\n");
        return { slept: Date.now() - before };
      }`,
      { capabilities: ["fs:read,write:**", "time:sleep:*"] },
    );
    const blocked = await reach(h, pid, "blocked");
    assert.equal(blocked.waitingOn, "sleep");
    // The cell is gone while the process is still parked.
    await h.kernel.executionOf(pid)?.cell?.exited;
    assert.equal((await h.kernel.processes.require(pid)).state, "blocked");
    const end = await h.kernel.waitFor(pid);
    assert.equal(end.state, "exited");
    assert.ok((end.result as { slept: number }).slept >= 200);
    assert.equal(await Deno.readTextFile(join(h.workspace, "log.txt")), "once\nafter\n");
  });
});

Deno.test("sleep needs a time capability", async () => {
  await withHarness(async (h) => {
    const end = await h.run(`export default async (sys) => {
      try { await sys.time.sleep(10); return "slept"; } catch (e) { return e.code; }
    }`);
    assert.equal(end.result, "EPERM");
  });
});

Deno.test("event.wait is woken by an event posted from outside, and times out otherwise", async () => {
  await withHarness(async (h) => {
    h.kernel.waits.start(50);
    const pid = await start(
      h,
      `export default async function main(sys) {
        const event = await sys.event.wait("deploy");
        let timedOut = "no";
        try { await sys.event.wait("never", { timeoutMs: 50 }); } catch (e) { timedOut = e.code; }
        return { data: event.data, timedOut };
      }`,
      { capabilities: ["event:wait:*"] },
    );
    const blocked = await reach(h, pid, "blocked");
    assert.equal(blocked.waitingOn, "event");
    await h.kernel.postEvent("deploy", { version: 7 });
    const end = await h.kernel.waitFor(pid);
    assert.deepEqual(end.result, { data: { version: 7 }, timedOut: "ETIMEDOUT" });
  });
});

Deno.test("messages between processes are ordered, durable and taken once", async () => {
  await withHarness(async (h) => {
    const receiver = await start(
      h,
      `export default async function main(sys) {
        const got = [];
        for (let i = 0; i < 3; i++) got.push((await sys.msg.recv()).data);
        return got;
      }`,
    );
    await reach(h, receiver, "blocked");
    await start(
      h,
      `export default async function main(sys, to) {
        for (const n of [1, 2, 3]) await sys.msg.send(to, n);
        return "sent";
      }`,
      { capabilities: ["proc:send:*"] },
      receiver,
    );
    const end = await h.kernel.waitFor(receiver);
    assert.deepEqual(end.result, [1, 2, 3]);
    assert.equal(await h.kernel.mailbox.take(receiver), undefined);
  });
});

Deno.test("human.ask takes a typed answer and refuses bad, repeated and unknown answers", async () => {
  await withHarness(async (h) => {
    const pid = await start(
      h,
      `export default async function main(sys) {
        const n = await sys.human.ask("How many?", { kind: "number" });
        const c = await sys.human.ask("Which?", { choices: ["red", "blue"] });
        return { n, c };
      }`,
      { capabilities: ["human:ask:*"] },
    );
    const first = await requestOf(h, pid);
    assert.equal(first.question?.kind, "number");
    await assert.rejects(
      h.kernel.humans.answer(first.id, { answer: "many" }, { by: "t" }),
      /expected a number/,
    );
    await assert.rejects(
      h.kernel.humans.answer(first.id, { decision: "allow_once" }, { by: "t" }),
      /a question, not a permission/,
    );
    await h.kernel.humans.answer(first.id, { answer: "3" }, { by: "t" });
    await assert.rejects(
      h.kernel.humans.answer(first.id, { answer: 4 }, { by: "t" }),
      /already answered/,
    );
    await assert.rejects(
      h.kernel.humans.answer("nope", { answer: 4 }, { by: "t" }),
      /no such request/,
    );
    const second = await requestOf(h, pid);
    await assert.rejects(
      h.kernel.humans.answer(second.id, { answer: "green" }, { by: "t" }),
      /one of red, blue/,
    );
    await h.kernel.humans.answer(second.id, { answer: "blue" }, { by: "t" });
    const end = await h.kernel.waitFor(pid);
    assert.deepEqual(end.result, { n: 3, c: "blue" });
  });
});

const ASKING = `export default async function main(sys) {
  const out = [];
  for (const name of ["a.txt", "a.txt"]) {
    try { await sys.fs.write(name, "x"); out.push("ok"); } catch (e) { out.push(e.code); }
  }
  try { await sys.fs.write("b.txt", "x"); out.push("ok"); } catch (e) { out.push(e.code); }
  return out;
}`;

async function asking(h: Harness, answers: (r: HumanRequest, i: number) => Promise<unknown>) {
  const pid = await start(h, ASKING, {
    capabilities: ["fs:write:**"],
    policy: { "fs:write:**": "ask" },
  });
  const seen: HumanRequest[] = [];
  for (let i = 0;; i++) {
    const next = await Promise.race([
      requestOf(h, pid),
      h.kernel.waitFor(pid).then(() => undefined),
    ]);
    if (!next) break;
    seen.push(next);
    await answers(next, i);
  }
  return { end: await h.kernel.waitFor(pid), seen };
}

Deno.test("allow_once grants exactly that operation once", async () => {
  await withHarness(async (h) => {
    const { end, seen } = await asking(
      h,
      (r) => h.kernel.humans.answer(r.id, { decision: "allow_once" }, { by: "t" }),
    );
    assert.deepEqual(end.result, ["ok", "ok", "ok"]);
    assert.equal(seen.length, 3, "each write asked again: a one-shot grant is used once");
    assert.match(seen[0].operation!.capability, /^fs:write:.*a\.txt$/);
    assert.equal(
      (await h.kernel.caps.list(end.pid)).filter((c) => c.grantedBy.startsWith("human:")).length,
      0,
    );
  });
});

Deno.test("allow_always grants lasting authority for that exact target", async () => {
  await withHarness(async (h) => {
    const { end, seen } = await asking(
      h,
      (r) => h.kernel.humans.answer(r.id, { decision: "allow_always", ttl: "1h" }, { by: "t" }),
    );
    assert.deepEqual(end.result, ["ok", "ok", "ok"]);
    assert.equal(seen.length, 2, "a.txt asked once, b.txt asked once");
  });
});

Deno.test("deny_once fails the call; deny_always also stops asking", async () => {
  await withHarness(async (h) => {
    const once = await asking(
      h,
      (r) => h.kernel.humans.answer(r.id, { decision: "deny_once" }, { by: "t" }),
    );
    assert.deepEqual(once.end.result, ["EPERM", "EPERM", "EPERM"]);
    assert.equal(once.seen.length, 3);
    await assert.rejects(Deno.stat(join(h.workspace, "a.txt")), Deno.errors.NotFound);
  });
  await withHarness(async (h) => {
    const always = await asking(
      h,
      (r) => h.kernel.humans.answer(r.id, { decision: "deny_always" }, { by: "t" }),
    );
    assert.deepEqual(always.end.result, ["EPERM", "EPERM", "EPERM"]);
    assert.equal(always.seen.length, 2, "the second a.txt write was denied without asking");
  });
});

Deno.test("a request shows only once its asker waits, so an answer given at once wakes it", async () => {
  await withHarness(async (h) => {
    const pid = await start(
      h,
      `export default async (sys) => {
        try { await sys.fs.write("a.txt", "x"); return "ok"; } catch (e) { return e.code; }
      }`,
      { capabilities: ["fs:write:**"], policy: { "fs:write:**": "ask" } },
    );
    let request: HumanRequest | undefined;
    while (!request) { // no sleep: look as often as the store answers
      request = (await h.kernel.humans.pending()).find((r) => r.pid === pid);
    }
    const asker = await h.kernel.processes.get(pid);
    assert.equal(asker?.state, "blocked", "the asker already waits when its request shows");
    assert.equal(asker?.waitSeq, request.seq);
    await h.kernel.humans.answer(request.id, { decision: "deny_once" }, { by: "t" });
    const end = await h.kernel.waitFor(pid);
    assert.equal(end.state, "exited");
    assert.equal(end.result, "EPERM");
  });
});

Deno.test("an approval naming another operation is refused and grants nothing", async () => {
  await withHarness(async (h) => {
    const { end } = await asking(h, async (r, i) => {
      if (i === 0) {
        await assert.rejects(
          h.kernel.humans.answer(r.id, { decision: "allow_once", argsDigest: "0".repeat(64) }, {
            by: "t",
          }),
          /different operation/,
        );
        assert.equal((await h.kernel.humans.get(r.id))?.state, "pending");
      }
      await h.kernel.humans.answer(r.id, {
        decision: "deny_once",
        argsDigest: r.operation!.argsDigest,
      }, {
        by: "t",
      });
    });
    assert.deepEqual(end.result, ["EPERM", "EPERM", "EPERM"]);
  });
});

Deno.test("a one-shot approval bound to one call cannot serve another", async () => {
  await withHarness(async (h) => {
    // The process is paused, so the grant stays unused while we look at it.
    const pid = await start(h, ASKING, {
      capabilities: ["fs:write:**"],
      policy: { "fs:write:**": "ask" },
    });
    const request = await requestOf(h, pid);
    await h.kernel.signal(pid, "pause");
    await h.kernel.humans.answer(request.id, { decision: "allow_once" }, { by: "t" });
    const [cap] = (await h.kernel.caps.list(pid)).filter((c) => c.grantedBy.startsWith("human:"));
    assert.equal(cap.boundTo, request.operation!.argsDigest);
    assert.equal(cap.uses, 1);
    const { pickCapability } = await import("../broker/broker.ts");
    const op = { resource: "fs" as const, right: "write", target: join(h.workspace, "a.txt") };
    assert.equal(pickCapability([cap], op, request.operation!.argsDigest, Date.now()), cap);
    assert.equal(pickCapability([cap], op, "f".repeat(64), Date.now()), undefined);
    await h.kernel.signal(pid, "kill");
  });
});

Deno.test("ask without a capability can only grant within the image ceiling", async () => {
  await withHarness(async (h) => {
    const end = await h.run(
      `export default async (sys) => {
        try { await sys.fs.write("/etc/libos-test", "x"); return "wrote"; } catch (e) { return e.message; }
      }`,
      { image: { capabilities: ["fs:write:out/**"], policy: { "fs:write:**": "ask" } } },
    );
    assert.match(String(end.result), /never allows/);
    assert.equal((await h.kernel.humans.pending()).length, 0);
  });
});

Deno.test("cap.request asks a human for a capability within the ceiling", async () => {
  await withHarness(async (h) => {
    const pid = await start(
      h,
      `export default async (sys) => {
        const id = await sys.cap.request("fs:read:notes.txt", "to read notes");
        return { id, text: await sys.fs.read("notes.txt") };
      }`,
      { capabilities: ["fs:read:**"] },
    );
    await Deno.writeTextFile(join(h.workspace, "notes.txt"), "hello");
    const r = await requestOf(h, pid);
    assert.equal(r.reason, "to read notes");
    await h.kernel.humans.answer(r.id, { decision: "allow_once" }, { by: "t" });
    const end = await h.kernel.waitFor(pid);
    assert.equal((end.result as { text: string }).text, "hello");
  });
});

Deno.test("pause and resume a running and a blocked process; interrupt gives EINTR", async () => {
  await withHarness(async (h) => {
    const pid = await start(
      h,
      `export default async (sys) => {
        try { await sys.msg.recv(); return "received"; } catch (e) { return e.code; }
      }`,
    );
    await reach(h, pid, "blocked");
    await h.kernel.signal(pid, "pause");
    assert.equal((await h.kernel.processes.require(pid)).state, "paused");
    await h.kernel.signal(pid, "resume");
    assert.equal((await h.kernel.processes.require(pid)).state, "blocked");
    await h.kernel.signal(pid, "interrupt");
    assert.equal((await h.kernel.waitFor(pid)).result, "EINTR");
    await assert.rejects(h.kernel.signal(pid, "resume"), /has exited/);
  });
});

Deno.test("terminate and kill end a process and its children unless they are orphans", async () => {
  await withHarness(async (h) => {
    const child = await h.program(
      "child",
      `export default async (sys) => { await sys.msg.recv(); return 1; }`,
    );
    const parent = await start(
      h,
      `export default async (sys) => {
        await sys.proc.spawn({ image: "${child}" });
        await sys.proc.spawn({ image: "${child}", onParentExit: "orphan" });
        await sys.msg.recv();
      }`,
      { capabilities: [`proc:spawn:${child}`] },
    );
    await reach(h, parent, "blocked");
    const [killed, orphan] = await h.kernel.processes.children(parent);
    await reach(h, orphan, "blocked");
    await h.kernel.signal(parent, "terminate");
    assert.equal((await h.kernel.waitFor(parent)).state, "killed");
    assert.equal((await h.kernel.waitFor(killed)).state, "killed");
    assert.equal((await h.kernel.processes.require(orphan)).state, "blocked");
    await h.kernel.signal(orphan, "kill");
    assert.equal((await h.kernel.waitFor(orphan)).state, "killed");
  });
});

Deno.test("fork copies the namespace and replays to the fork point; a child sees pid 0", async () => {
  await withHarness(async (h) => {
    const pid = await start(
      h,
      `export default async (sys) => {
        await sys.obj.put("self", "note", { v: 1 });
        await sys.fs.append("log.txt", "before\\n");
        const { pid } = await sys.proc.fork();
        if (pid === 0) {
          const note = await sys.obj.get("self", "note");
          await sys.fs.append("log.txt", "child\\n");
          return { child: true, note: note.value };
        }
        const child = await sys.proc.wait(pid);
        return { child: false, childResult: child.result };
      }`,
      { capabilities: ["fs:read,write:**", "proc:fork:self"] },
    );
    const end = await h.kernel.waitFor(pid);
    assert.deepEqual(end.result, { child: false, childResult: { child: true, note: { v: 1 } } });
    assert.equal(await Deno.readTextFile(join(h.workspace, "log.txt")), "before\nchild\n");
  });
});

Deno.test("a fork made after a checkpoint replays from it and repeats no earlier effect", async () => {
  await withHarness(async (h) => {
    const pid = await start(
      h,
      `export default async (sys, input, { checkpoint }) => {
        if (!checkpoint) {
          await sys.fs.append("log.txt", "before\\n");
          await sys.ckpt.save({ saved: true });
        }
        await sys.fs.append("log.txt", "after\\n");
        const { pid } = await sys.proc.fork();
        if (pid === 0) {
          await sys.fs.append("log.txt", "child\\n");
          return { child: true, fromCheckpoint: checkpoint !== undefined };
        }
        const child = await sys.proc.wait(pid);
        return { child: false, childResult: child.result };
      }`,
      { capabilities: ["fs:read,write:**", "proc:fork:self"] },
    );
    const end = await h.kernel.waitFor(pid);
    assert.deepEqual(end.result, {
      child: false,
      childResult: { child: true, fromCheckpoint: true },
    });
    // The child's calls before the checkpoint are not run again: "before" is written once.
    assert.equal(await Deno.readTextFile(join(h.workspace, "log.txt")), "before\nafter\nchild\n");
  });
});

Deno.test("fork cannot widen authority", async () => {
  await withHarness(async (h) => {
    const end = await h.run(
      `export default async (sys) => {
        try { await sys.proc.fork({ capabilities: ["fs:write:**"] }); return "forked"; } catch (e) { return e.code; }
      }`,
      { image: { capabilities: ["fs:read:**", "proc:fork:self"] } },
    );
    assert.equal(end.result, "EPERM");
    assert.deepEqual(await h.kernel.processes.children(end.pid), []);
  });
});

Deno.test("exec replaces the image, keeps the pid and drops authority beyond the new ceiling", async () => {
  await withHarness(async (h) => {
    const next = await h.program(
      "next",
      `export default async (sys, input) => {
      const self = await sys.proc.self();
      let write = "ok";
      try { await sys.fs.write("x.txt", "x"); } catch (e) { write = e.code; }
      return { image: self.image, input, write };
    }`,
      { capabilities: ["fs:read:**"] },
    );
    const pid = await start(
      h,
      `export default async (sys) => { await sys.proc.exec({ image: "${next}", input: "handed over" }); }`,
      { capabilities: ["fs:read,write:**", `proc:exec:${next}`] },
    );
    const end = await h.kernel.waitFor(pid);
    assert.equal(end.pid, pid);
    assert.deepEqual(end.result, { image: next, input: "handed over", write: "EPERM" });
  });
});

Deno.test("a checkpoint moves the replay start", async () => {
  await withHarness(async (h) => {
    h.kernel.waits.start(50);
    const pid = await start(
      h,
      `export default async (sys, input, { checkpoint }) => {
        let state = checkpoint ?? { count: 0 };
        if (!checkpoint) {
          for (let i = 0; i < 5; i++) await sys.time.now();
          await sys.ckpt.save({ count: 5 });
          state = { count: 5 };
        }
        await sys.time.sleep(20);
        return { resumedFrom: checkpoint ?? null, count: state.count };
      }`,
      { capabilities: ["time:sleep:*"] },
    );
    const end = await h.kernel.waitFor(pid);
    assert.deepEqual(end.result, { resumedFrom: { count: 5 }, count: 5 });
  });
});

Deno.test("a journal that disagrees with the program fails it with a non-determinism error", async () => {
  await withHarness(async (h) => {
    h.kernel.waits.start(50);
    const pid = await start(
      h,
      `export default async (sys) => { await sys.time.now(); await sys.time.sleep(30); return "done"; }`,
      { capabilities: ["time:sleep:*"] },
    );
    await reach(h, pid, "blocked");
    await h.kernel.journal.flush();
    const kv = h.kernel.store.kv;
    const first = await kv.get<JournalRecord>(["journal", pid, 1]);
    await kv.set(["journal", pid, 1], { ...first.value!, name: "fs.stat" });
    const end = await h.kernel.waitFor(pid);
    assert.equal(end.state, "failed");
    assert.match(
      end.error!.message,
      /Non-determinism at journal seq 1: the journal has fs\.stat but the program called time\.now/,
    );
  });
});

Deno.test("an interrupted effect is redone when idempotent and reported EUNCERTAIN otherwise", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir());
  const kvPath = join(root, "kv.db");
  const source = `export default async (sys) => {
    await sys.fs.write("w.txt", "whole");
    let append = "ok";
    try { await sys.fs.append("a.txt", "line\\n"); } catch (e) { append = e.code; }
    return append;
  }`;
  try {
    let pid: number;
    {
      const kernel = await Kernel.open({ store: kvPath });
      const image = await kernel.images.register({
        name: "fx",
        version: "1",
        entry: "./m.ts",
        tools: [],
        capabilities: ["fs:read,write:**"],
        policy: {},
      } as never, { entrySource: source });
      const proc = await kernel.spawn({ image: image.tag, workspace: root });
      pid = proc.pid;
      // As if the host died inside both effects: intents journaled, completions not.
      const op = kernel.store.kv.atomic();
      const { callDigest } = await import("../broker/broker.ts");
      for (
        const [seq, name, args, effect] of [
          [1, "fs.write", { path: "w.txt", content: "whole" }, "idempotent"],
          [2, "fs.append", { path: "a.txt", content: "line\n" }, "effect"],
        ] as const
      ) {
        op.set(["journal", pid, seq], {
          pid,
          seq,
          name,
          argsDigest: await callDigest(name, args),
          effect,
          phase: "intent",
          at: Date.now(),
        });
      }
      await op.commit();
      await kernel.close();
    }
    const kernel = await Kernel.open({ store: kvPath });
    try {
      await kernel.recover();
      const end = await kernel.waitFor(pid);
      assert.equal(end.result, "EUNCERTAIN");
      assert.equal(await Deno.readTextFile(join(root, "w.txt")), "whole");
      await assert.rejects(Deno.stat(join(root, "a.txt")), Deno.errors.NotFound);
      await kernel.journal.flush();
      const flagged = [];
      for await (const r of kernel.audit.list({ pid })) {
        if (r.outcome === "uncertain") flagged.push(r);
      }
      assert.equal(flagged.length, 1);
      assert.equal(flagged[0].syscall, "fs.append");
    } finally {
      await kernel.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("a host that reopens the store resumes running and sleeping processes", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir());
  const kvPath = join(root, "kv.db");
  try {
    const source = `export default async (sys) => {
      await sys.fs.append("log.txt", "start\\n");
      await sys.time.sleep(150);
      await sys.fs.append("log.txt", "end\\n");
      return "finished";
    }`;
    let pid: number;
    {
      const kernel = await Kernel.open({ store: kvPath });
      const image = await kernel.images.register({
        name: "rec",
        version: "1",
        entry: "./m.ts",
        tools: [],
        capabilities: ["fs:read,write:**", "time:sleep:*"],
        policy: {},
      } as never, { entrySource: source });
      pid = (await kernel.spawn({ image: image.tag, workspace: root })).pid;
      kernel.start(pid);
      await new Promise<void>((resolve) => {
        const off = kernel.processes.subscribe((r) => {
          if (r.pid === pid && r.state === "blocked") {
            off();
            resolve();
          }
        });
      });
      await kernel.close();
    }
    const kernel = await Kernel.open({ store: kvPath });
    try {
      await kernel.recover();
      await kernel.idle();
      const end = await kernel.processes.require(pid);
      assert.equal(end.result, "finished");
      assert.equal(await Deno.readTextFile(join(root, "log.txt")), "start\nend\n");
    } finally {
      await kernel.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("operator signals on an ended process fail clearly", async () => {
  await withHarness(async (h) => {
    const end = await h.run(`export default async () => 1;`);
    await assert.rejects(
      h.kernel.signal(end.pid, "kill"),
      (e: unknown) => e instanceof SyscallError && /has exited/.test(e.message),
    );
  });
});
