/**
 * Kernel behaviour through real processes (SPEC sections 3 to 8 and 12):
 * the process table, images, capabilities, policy, budgets, the `proc`
 * syscalls, model access, filesystem containment, the audit trail and the
 * journal. Every program runs in a cell; every assertion is about what the
 * kernel did or refused to do.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { parsePolicyAssignment } from "../broker/policy.ts";
import type { AgentImage } from "../runtime/image.ts";
import { DenyingHuman } from "../runtime/human_queue.ts";
import { Kernel } from "../runtime/kernel.ts";
import {
  type ModelProvider,
  type ModelReply,
  type ModelRequest,
  ScriptedModel,
  type ScriptTurn,
} from "../runtime/model.ts";
import type { ProcessEvent } from "../runtime/process_table.ts";
import type { Harness } from "./_harness.ts";
import { until } from "./_processes.ts";
import {
  afterSyscall,
  type Attempt,
  auditOf,
  everythingAbout,
  failed,
  holdSyscall,
  IDLE,
  journalOf,
  program,
  runRecorded,
  succeeded,
  whenState,
  withKernel,
} from "./_programs.ts";

const CANARY = "CANARY-" + crypto.randomUUID();

/** A program that returns its input. */
const ECHO = program(`return input ?? null;`);

async function eventsOf(h: Harness, pid: number): Promise<ProcessEvent[]> {
  const out: ProcessEvent[] = [];
  for await (const event of h.kernel.processes.events({ pid })) out.push(event);
  return out;
}

async function rejectsWith(promise: Promise<unknown>, code: string, message?: RegExp) {
  await assert.rejects(promise, (error: Error & { code?: string }) => {
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return true;
  });
}

/** Registers a `libos:agent` image. */
async function agentImage(h: Harness, name: string, image: Partial<AgentImage> = {}) {
  const registered = await h.kernel.images.register({
    name,
    version: "1.0.0",
    entry: "libos:agent",
    tools: [],
    capabilities: [],
    policy: {},
    ...image,
  } as AgentImage);
  return registered.tag;
}

function writeTurn(path: string, content: string): ScriptTurn {
  return { tool_calls: [{ name: "write_file", arguments: { path, content } }] };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

// ---------------------------------------------------------------------------
// Process table

Deno.test("concurrent spawns get distinct pids that later spawns never reuse", async () => {
  await withKernel(async (h) => {
    const tag = await h.program("echo", ECHO);
    const procs = await Promise.all(
      Array.from(
        { length: 8 },
        (_, i) => h.kernel.spawn({ image: tag, workspace: h.workspace, input: i }),
      ),
    );
    const pids = procs.map((p) => p.pid);
    assert.equal(new Set(pids).size, pids.length);
    for (const pid of pids) h.kernel.start(pid);
    const ends = await Promise.all(pids.map((pid) => h.kernel.waitFor(pid)));
    assert.deepEqual(ends.map((e) => e.result), [0, 1, 2, 3, 4, 5, 6, 7]);
    const later = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    assert.ok(later.pid > Math.max(...pids));
  });
});

Deno.test("a process made running in its create commit starts without reading a journal or checkpoints it cannot have", async () => {
  await withKernel(async (h) => {
    const tag = await h.program("idle", IDLE);
    const kv = h.kernel.store.kv;
    const list = kv.list.bind(kv);
    const listed: Deno.KvKey[] = [];
    kv.list = ((selector: Deno.KvListSelector, options?: Deno.KvListOptions) => {
      listed.push("prefix" in selector ? selector.prefix : selector.start!);
      return list(selector, options);
    }) as Deno.Kv["list"];
    const first = afterSyscall(h.kernel, (_ctx, request) => request.name === "time.now");
    const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace }, { start: true });
    await first;
    assert.equal(proc.state, "running", "made running in its create commit");
    const own = listed.filter((key) =>
      (key[0] === "journal" || key[0] === "ckpt") && key[1] === proc.pid
    );
    assert.deepEqual(own, [], "nothing of its own was listed before its first call");
    // A process started from runnable (another host's, or one resumed) reads both.
    listed.length = 0;
    const queued = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    const second = afterSyscall(h.kernel, (c) => c.pid === queued.pid);
    h.kernel.start(queued.pid);
    await second;
    assert.deepEqual(
      listed.filter((key) => key[1] === queued.pid).map((key) => key[0]).sort(),
      ["ckpt", "journal"],
    );
  });
});

/**
 * Records the pid of every call that reaches the broker, and holds every
 * run's preparation (its image's lookup) until `prepared()`.
 */
function holdPreparation(h: Harness): { callers: number[]; prepared: () => void } {
  const callers: number[] = [];
  const broker = h.kernel.broker;
  const dispatch = broker.dispatch.bind(broker);
  broker.dispatch = (ctx, request) => (callers.push(ctx.pid), dispatch(ctx, request));
  let prepared!: () => void;
  const preparing = new Promise<void>((resolve) => prepared = resolve);
  const imageOf = h.kernel.imageOf.bind(h.kernel);
  h.kernel.imageOf = async (proc) => (await preparing, imageOf(proc));
  return { callers, prepared };
}

Deno.test("a process killed between its create commit and its run's start never makes a call", async () => {
  await withKernel(async (h) => {
    const tag = await h.program("idle", IDLE);
    // Its run is prepared (its image looked up) only once the kill has committed.
    const { callers, prepared: release } = holdPreparation(h);
    const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace }, { start: true });
    assert.equal(proc.state, "running", "made running in its create commit");
    await h.kernel.signal(proc.pid, "kill");
    release();
    const end = await h.kernel.waitFor(proc.pid);
    assert.equal(end.state, "killed");
    // Its start runs on: it sees the kill and ends the program, which would otherwise make its call.
    await until(() => h.kernel.runQueue?.starting === 0, "its start is done");
    await until(
      () => callers.includes(proc.pid) || !h.kernel.executionOf(proc.pid),
      "its run has ended or called",
    );
    // Its program, started while it was made, asked for the time at once: that call never ran.
    assert.deepEqual(callers.filter((pid) => pid === proc.pid), []);
    await until(() => h.kernel.cells.table().length === 0, "the cell it took has ended");
  });
});

Deno.test("a process whose kill is being committed while its run is prepared never makes a call", async () => {
  await withKernel(async (h) => {
    const tag = await h.program("idle", IDLE);
    const { callers, prepared } = holdPreparation(h);
    const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace }, { start: true });
    // The kill's commit waits until the run has been prepared and registered.
    const processes = h.kernel.processes;
    const update = processes.update.bind(processes);
    let committing!: () => void;
    const commit = new Promise<void>((resolve) => committing = resolve);
    let held = false;
    processes.update = (async (...args: Parameters<typeof update>) => {
      if (args[0] === proc.pid && !held) {
        held = true;
        await commit;
      }
      return update(...args);
    }) as typeof update;
    const killing = h.kernel.signal(proc.pid, "kill");
    await until(() => held, "the kill reached its commit");
    prepared();
    await until(() => h.kernel.runQueue?.starting === 0, "its start is done");
    await until(
      () => callers.includes(proc.pid) || !h.kernel.executionOf(proc.pid),
      "its run has ended or called",
    );
    assert.deepEqual(callers.filter((pid) => pid === proc.pid), [], "no call of it ran");
    committing();
    await killing;
    assert.equal((await h.kernel.waitFor(proc.pid)).state, "killed");
    await until(() => h.kernel.cells.table().length === 0, "the cell it took has ended");
  });
});

Deno.test("a process's entry module of types only runs as JavaScript once this host erased its types", async () => {
  await withKernel(async (h) => {
    const tag = await h.program(
      "typed",
      `interface In { n: number }
      export default async function main(sys: unknown, input: In): Promise<number> {
        return (input as In).n + 1;
      }`,
    );
    const image = (await h.kernel.images.get(tag))!;
    const first = h.kernel.entries.entryOf(image);
    assert.ok(first.kind === "module" && !first.javascript, "TypeScript at first");
    await h.kernel.entries.erase(image);
    const started: { javascript?: boolean; source: string }[] = [];
    const cells = h.kernel.cells;
    const placeEarly = cells.placeEarly.bind(cells);
    cells.placeEarly = (placement, start) => {
      if (start.entry.kind === "module") started.push(start.entry);
      return placeEarly(placement, start);
    };
    const end = await h.kernel.run({ image: tag, workspace: h.workspace, input: { n: 41 } });
    assert.equal(end.result, 42);
    assert.equal(started.length, 1);
    assert.equal(started[0].javascript, true, "handed to its Worker as JavaScript");
    assert.doesNotMatch(started[0].source, /interface|: In|as In|Promise</);
  });
});

Deno.test("a run records each transition as an event, in order", async () => {
  await withKernel(async (h) => {
    const end = await h.run(program(`return "done";`));
    assert.equal(end.state, "exited");
    assert.equal(end.result, "done");
    const events = await eventsOf(h, end.pid);
    assert.deepEqual(events.map((e) => [e.from, e.to]), [
      [null, "created"],
      ["created", "runnable"],
      ["runnable", "running"],
      ["running", "exited"],
    ]);
    for (let i = 1; i < events.length; i++) assert.ok(events[i].seq > events[i - 1].seq);
  });
});

Deno.test("a failed program ends as failed and cannot be moved again", async () => {
  await withKernel(async (h) => {
    const end = await h.run(program(`throw new Error("program gave up");`));
    assert.equal(end.state, "failed");
    assert.match(end.error!.message, /program gave up/);
    assert.deepEqual((await eventsOf(h, end.pid)).at(-1)?.to, "failed");
    const count = (await eventsOf(h, end.pid)).length;
    await rejectsWith(h.kernel.processes.transition(end.pid, "running"), "EINVAL");
    await rejectsWith(h.kernel.signal(end.pid, "kill"), "EINVAL", /it has failed/);
    assert.equal((await h.kernel.processes.require(end.pid)).state, "failed");
    assert.equal((await eventsOf(h, end.pid)).length, count);
  });
});

Deno.test("the children index matches proc.children and each child's ppid", async () => {
  await withKernel(async (h) => {
    const child = await h.program("child", ECHO);
    const end = await h.run(
      program(`
        const a = await sys.proc.spawn({ image: input.child, input: "a" });
        const b = await sys.proc.spawn({ image: input.child, input: "b" });
        await sys.proc.wait(a.pid);
        await sys.proc.wait(b.pid);
        return { a: a.pid, b: b.pid, children: await sys.proc.children() };
      `),
      { input: { child }, image: { capabilities: ["proc:spawn:*"] } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as {
      a: number;
      b: number;
      children: { pid: number; image: string; state: string }[];
    };
    assert.deepEqual(result.children, [
      { pid: result.a, image: child, state: "exited" },
      { pid: result.b, image: child, state: "exited" },
    ]);
    assert.deepEqual(await h.kernel.processes.children(end.pid), [result.a, result.b]);
    for (const pid of [result.a, result.b]) {
      assert.equal((await h.kernel.processes.require(pid)).ppid, end.pid);
    }
  });
});

// ---------------------------------------------------------------------------
// Images

Deno.test("spawning an unknown image fails with ENOENT and creates nothing", async () => {
  await withKernel(async (h) => {
    await rejectsWith(
      h.kernel.spawn({ image: "nowhere@1.0.0", workspace: h.workspace }),
      "ENOENT",
      /"nowhere@1\.0\.0"/,
    );
    assert.deepEqual(await h.kernel.processes.list(), []);
    const end = await h.run(
      program(`return {
        spawn: await attempt(() => sys.proc.spawn({ image: "nowhere@1.0.0" })),
        children: await sys.proc.children(),
      };`),
      { image: { capabilities: ["proc:spawn:*"] } },
    );
    const result = end.result as { spawn: Attempt; children: unknown[] };
    failed(result.spawn, "ENOENT", /nowhere@1\.0\.0/);
    assert.deepEqual(result.children, []);
    assert.equal((await h.kernel.processes.list()).length, 1);
  });
});

Deno.test("capabilities beyond the image ceiling are refused at spawn", async () => {
  await withKernel(async (h) => {
    const tag = await h.program("narrow", ECHO, { capabilities: ["fs:read:docs/**"] });
    for (const cap of ["fs:read:**", "fs:write:docs/**", "fs:read:/etc/**", "exec:run:git"]) {
      await rejectsWith(
        h.kernel.spawn({ image: tag, workspace: h.workspace, capabilities: [cap] }),
        "EPERM",
        /beyond the ceiling of image "narrow@1\.0\.0"/,
      );
    }
    assert.deepEqual(await h.kernel.processes.list(), []);
    const ok = await h.kernel.spawn({
      image: tag,
      workspace: h.workspace,
      capabilities: ["fs:read:docs/a.md;uses=1"],
    });
    assert.equal(ok.state, "runnable");
  });
});

Deno.test("a process is granted its image's ceiling by default", async () => {
  await withKernel(async (h) => {
    const end = await h.run(program(`return await sys.cap.list();`), {
      image: { capabilities: ["fs:read:docs/**", "fs:write:out/**", "time:sleep:*"] },
    });
    const caps = end.result as { text: string; grantedBy: string }[];
    assert.deepEqual(caps.map((c) => c.text).sort(), [
      `fs:read:${h.workspace}/docs/**`,
      `fs:write:${h.workspace}/out/**`,
      `obj:read,write,delete:proc/${end.pid}`,
      "time:sleep:*",
    ]);
  });
});

Deno.test("a child cannot be given capabilities beyond its own image's ceiling", async () => {
  await withKernel(async (h) => {
    const child = await h.program("reader", ECHO, { capabilities: ["fs:read:**"] });
    const end = await h.run(
      program(`return {
        spawn: await attempt(() =>
          sys.proc.spawn({ image: input.child, capabilities: ["fs:write:**"] })),
        children: await sys.proc.children(),
      };`),
      { input: { child }, image: { capabilities: ["proc:spawn:*", "fs:read,write:**"] } },
    );
    const result = end.result as { spawn: Attempt; children: unknown[] };
    failed(result.spawn, "EPERM", /beyond the ceiling of image "reader@1\.0\.0"/);
    assert.deepEqual(result.children, []);
  });
});

Deno.test("spawning needs a proc:spawn capability that names the image", async () => {
  await withKernel(async (h) => {
    const helper = await h.program("helper", ECHO);
    const other = await h.program("other", ECHO);
    const source = program(`return {
      helper: await attempt(() => sys.proc.spawn({ image: input.helper })),
      other: await attempt(() => sys.proc.spawn({ image: input.other })),
    };`);
    const none = await h.run(source, { input: { helper, other } });
    const n = none.result as Record<string, Attempt>;
    failed(n.helper, "EPERM", /no capability grants proc:spawn/);
    failed(n.other, "EPERM");
    assert.deepEqual(await h.kernel.processes.children(none.pid), []);
    const scoped = await h.run(source, {
      input: { helper, other },
      image: { capabilities: ["proc:spawn:helper@*"] },
    });
    const s = scoped.result as Record<string, Attempt>;
    succeeded(s.helper);
    failed(s.other, "EPERM");
    assert.equal((await h.kernel.processes.children(scoped.pid)).length, 1);
  });
});

// ---------------------------------------------------------------------------
// Capabilities

const READ_BOTH = program(`return {
  public: await attempt(() => sys.fs.read("public.txt")),
  secret: await attempt(() => sys.fs.read("private/secret.txt")),
  list: await attempt(() => sys.fs.list("private")),
  stat: await attempt(() => sys.fs.stat("private/secret.txt")),
};`);

Deno.test("a program reads inside its grant; denied bytes appear nowhere", async () => {
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "public.txt"), "hello");
    await Deno.mkdir(join(h.workspace, "private"));
    await Deno.writeTextFile(join(h.workspace, "private", "secret.txt"), CANARY);
    const end = await h.run(READ_BOTH, {
      capabilities: ["fs:read:public.txt"],
      image: { capabilities: ["fs:read:**"] },
    });
    assert.equal(end.state, "exited");
    const result = end.result as Record<string, Attempt>;
    assert.equal(succeeded(result.public), "hello");
    failed(result.secret, "EPERM", /no capability grants fs:read/);
    failed(result.list, "EPERM");
    failed(result.stat, "EPERM");
    assert.ok(!(await everythingAbout(h.kernel, end.pid)).includes(CANARY));
    // Control: with the image's whole ceiling, the same program reads the secret.
    const control = await h.run(READ_BOTH, { image: { capabilities: ["fs:read:**"] } });
    assert.equal(succeeded((control.result as Record<string, Attempt>).secret), CANARY);
  });
});

Deno.test("an attenuated child is denied a write its parent can make", async () => {
  await withKernel(async (h) => {
    const child = await h.program(
      "child",
      program(`return await attempt(() => sys.fs.write("out.txt", "from the child"));`),
      { capabilities: ["fs:read,write:**"] },
    );
    const end = await h.run(
      program(`
        const { pid } = await sys.proc.spawn({ image: input.child, capabilities: ["fs:read:**"] });
        const child = await sys.proc.wait(pid);
        const own = await attempt(() => sys.fs.write("out.txt", "from the parent"));
        return { child: child.result, own };
      `),
      { input: { child }, image: { capabilities: ["proc:spawn:*", "fs:read,write:**"] } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as { child: Attempt; own: Attempt };
    failed(result.child, "EPERM", /no capability grants fs:write/);
    succeeded(result.own);
    assert.equal(await Deno.readTextFile(join(h.workspace, "out.txt")), "from the parent");
  });
});

Deno.test("a child asking for more than its parent holds is not created", async () => {
  await withKernel(async (h) => {
    const child = await h.program("child", ECHO, { capabilities: ["fs:read,write:**"] });
    const end = await h.run(
      program(`return {
        wider: await attempt(() =>
          sys.proc.spawn({ image: input.child, capabilities: ["fs:write:**"] })),
        outside: await attempt(() =>
          sys.proc.spawn({ image: input.child, capabilities: ["fs:read:/**"] })),
        children: await sys.proc.children(),
      };`),
      { input: { child }, image: { capabilities: ["proc:spawn:*", "fs:read:**"] } },
    );
    const result = end.result as { wider: Attempt; outside: Attempt; children: unknown[] };
    failed(result.wider, "EPERM", /parent holds no capability that covers it/);
    failed(result.outside, "EPERM");
    assert.deepEqual(result.children, []);
    assert.equal((await h.kernel.processes.list()).length, 1);
  });
});

Deno.test("a child gets by default the part of its ceiling its parent holds", async () => {
  await withKernel(async (h) => {
    const child = await h.program("child", program(`return await sys.cap.list();`), {
      capabilities: ["fs:read:**", "fs:write:**", "time:sleep:*"],
    });
    const end = await h.run(
      program(`
        const { pid } = await sys.proc.spawn({ image: input.child });
        return { own: await sys.cap.list(), child: (await sys.proc.wait(pid)).result, pid };
      `),
      { input: { child }, image: { capabilities: ["proc:spawn:*", "fs:read:**"] } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    type View = { id: string; text: string; parent?: string; grantedBy: string };
    const result = end.result as { own: View[]; child: View[]; pid: number };
    const parentRead = result.own.find((c) => c.text === `fs:read:${h.workspace}/**`)!;
    assert.ok(parentRead);
    const fsCaps = result.child.filter((c) => c.text.startsWith("fs:"));
    assert.deepEqual(fsCaps.map((c) => [c.text, c.parent, c.grantedBy]), [
      [`fs:read:${h.workspace}/**`, parentRead.id, `pid:${end.pid}`],
    ]);
    assert.ok(!result.child.some((c) => c.text.startsWith("time:")));
    assert.ok(result.child.some((c) => c.text === `obj:read,write,delete:proc/${result.pid}`));
  });
});

Deno.test("cap.drop revokes a capability and what was derived from it for a child", async () => {
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "a.txt"), "readable");
    const child = await h.program(
      "child",
      program(`return {
        read: await attempt(() => sys.fs.read("a.txt")),
        caps: (await sys.cap.list()).map((c) => c.text),
      };`),
      { capabilities: ["fs:read:**"] },
    );
    const parent = program(`
      const { pid } = await sys.proc.spawn({ image: input.child });
      let dropped = null;
      if (input.drop) {
        const cap = (await sys.cap.list()).find((c) => c.text.startsWith("fs:read:"));
        dropped = await sys.cap.drop(cap.id);
      }
      return {
        child: (await sys.proc.wait(pid)).result,
        own: await attempt(() => sys.fs.read("a.txt")),
        dropped,
      };
    `);
    const image = { capabilities: ["proc:spawn:*", "fs:read:**"] };
    const tag = await h.program("parent", parent, image);
    for (const drop of [false, true]) {
      // The child's read waits until the parent is done dropping (or not).
      const gate = holdSyscall(
        h.kernel,
        (ctx, req) => ctx.image === child && req.name === "fs.read",
      );
      const parentDone = afterSyscall(
        h.kernel,
        (ctx, req) => ctx.image === tag && req.name === (drop ? "cap.drop" : "proc.spawn"),
      );
      const proc = await h.kernel.spawn({
        image: tag,
        workspace: h.workspace,
        input: { child, drop },
      });
      h.kernel.start(proc.pid);
      await Promise.race([
        Promise.all([gate.reached, parentDone]),
        h.kernel.waitFor(proc.pid).then((end) => {
          throw new Error(`The parent ${end.state} early: ${end.error?.message}`);
        }),
      ]);
      gate.release();
      const end = await h.kernel.waitFor(proc.pid);
      assert.equal(end.state, "exited", end.error?.message);
      const result = end.result as {
        child: { read: Attempt; caps: string[] };
        own: Attempt;
        dropped: unknown;
      };
      if (!drop) {
        assert.equal(succeeded(result.child.read), "readable");
        assert.equal(succeeded(result.own), "readable");
        continue;
      }
      failed(result.child.read, "EPERM");
      failed(result.own, "EPERM");
      assert.ok(!result.child.caps.some((text) => text.startsWith("fs:")));
      const dropped = result.dropped as { dropped: string[] };
      assert.equal(dropped.dropped.length, 2, "the parent's capability and the child's");
      const [childPid] = await h.kernel.processes.children(proc.pid);
      assert.ok(!(await h.kernel.caps.list(childPid)).some((c) => c.resource === "fs"));
    }
  });
});

Deno.test("a capability id is not a bearer token", async () => {
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "a.txt"), "mine");
    const owner = await h.kernel.spawn({
      image: await h.program("owner", ECHO, { capabilities: ["fs:read:**"] }),
      workspace: h.workspace,
    });
    const [cap] = (await h.kernel.caps.list(owner.pid)).filter((c) => c.resource === "fs");
    const end = await h.run(
      program(`return {
        drop: await attempt(() => sys.cap.drop(input)),
        read: await attempt(() => sys.fs.read("a.txt")),
      };`),
      { input: cap.id },
    );
    const result = end.result as Record<string, Attempt>;
    failed(result.drop, "ENOENT", /holds no such capability/);
    failed(result.read, "EPERM");
    assert.deepEqual((await h.kernel.caps.list(owner.pid)).map((c) => c.id).includes(cap.id), true);
  });
});

Deno.test("a one-shot capability works once, also under concurrent use", async () => {
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "a.txt"), "once");
    const image = { capabilities: ["fs:read:**"] };
    const sequential = await h.run(
      program(`return [
        await attempt(() => sys.fs.read("a.txt")),
        await attempt(() => sys.fs.read("a.txt")),
      ];`),
      { capabilities: ["fs:read:a.txt;uses=1"], image },
    );
    const [first, second] = sequential.result as Attempt[];
    assert.equal(succeeded(first), "once");
    failed(second, "EPERM");
    const concurrent = await h.run(
      program(`return await Promise.all([
        attempt(() => sys.fs.read("a.txt")),
        attempt(() => sys.fs.read("a.txt")),
      ]);`),
      { capabilities: ["fs:read:a.txt;uses=1"], image },
    );
    const results = concurrent.result as Attempt[];
    assert.equal(results.filter((r) => r.ok).length, 1, JSON.stringify(results));
    failed(results.find((r) => !r.ok), "EPERM");
    assert.ok(!(await h.kernel.caps.list(concurrent.pid)).some((c) => c.resource === "fs"));
  });
});

Deno.test("an expired ttl capability is refused", async () => {
  let clock = 1_700_000_000_000;
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "a.txt"), "fresh");
    const tag = await h.program(
      "reader",
      program(`return await attempt(() => sys.fs.read("a.txt"));`),
      {
        capabilities: ["fs:read:**"],
      },
    );
    const spawn = () =>
      h.kernel.spawn({
        image: tag,
        workspace: h.workspace,
        capabilities: ["fs:read:a.txt;ttl=1m"],
      });
    const early = await spawn();
    const late = await spawn();
    h.kernel.start(early.pid);
    assert.equal(succeeded((await h.kernel.waitFor(early.pid)).result), "fresh");
    clock += 61_000;
    h.kernel.start(late.pid);
    failed((await h.kernel.waitFor(late.pid)).result, "EPERM");
  }, { now: () => clock });
});

// ---------------------------------------------------------------------------
// Policy

Deno.test("a deny rule beats a capability", async () => {
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "secret.txt"), CANARY);
    await Deno.writeTextFile(join(h.workspace, "open.txt"), "open");
    const end = await h.run(
      program(`return {
        secret: await attempt(() => sys.fs.read("secret.txt")),
        open: await attempt(() => sys.fs.read("open.txt")),
      };`),
      { image: { capabilities: ["fs:read:**"], policy: { "fs:read:secret.txt": "deny" } } },
    );
    const result = end.result as Record<string, Attempt>;
    failed(result.secret, "EPERM", /denied by policy "fs:read:secret\.txt"/);
    assert.equal(succeeded(result.open), "open");
    assert.ok(!(await everythingAbout(h.kernel, end.pid)).includes(CANARY));
  });
});

const ASK_IMAGE = { capabilities: ["fs:write:out/**"], policy: { "fs:write:**": "ask" } } as const;

Deno.test("an ask rule fails closed and names the rule beyond the ceiling", async () => {
  await withKernel(async (h) => {
    await Deno.mkdir(join(h.workspace, "out"));
    const end = await runRecorded(
      h,
      program(`return {
        held: await attempt(() => sys.fs.write("out/a.txt", "x")),
        beyond: await attempt(() => sys.fs.write("b.txt", "x")),
      };`),
      { image: { ...ASK_IMAGE, capabilities: [...ASK_IMAGE.capabilities] } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as Record<string, Attempt>;
    failed(result.held, "EPERM", /denied/);
    failed(result.beyond, "EPERM", /policy "fs:write:\*\*" asks, but no human may grant/);
    assert.equal(await exists(join(h.workspace, "out", "a.txt")), false);
    assert.equal(await exists(join(h.workspace, "b.txt")), false);
    const writes = (await auditOf(h.kernel, end.pid)).filter((r) => r.syscall === "fs.write");
    assert.ok(writes.some((r) => r.decision === "ask"), "the held write was asked about");
  }, { human: new DenyingHuman() });
});

Deno.test("an unanswered ask leaves the process waiting and the file untouched", async () => {
  await withKernel(async (h) => {
    await Deno.mkdir(join(h.workspace, "out"));
    const tag = await h.program(
      "asker",
      program(`return await attempt(() => sys.fs.write("out/a.txt", "x"));`),
      { ...ASK_IMAGE, capabilities: [...ASK_IMAGE.capabilities], policy: { ...ASK_IMAGE.policy } },
    );
    const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    h.kernel.start(proc.pid);
    const blocked = await whenState(h.kernel, proc.pid, "blocked");
    assert.equal(blocked.state, "blocked");
    assert.equal(blocked.waitingOn, "human");
    const [request] = await h.kernel.humans.pending();
    assert.equal(request.pid, proc.pid);
    assert.match(request.reason ?? "", /policy "fs:write:\*\*" asks/);
    assert.equal(request.operation?.syscall, "fs.write");
    assert.equal(await exists(join(h.workspace, "out", "a.txt")), false);
  });
});

Deno.test("the most specific policy rule wins", async () => {
  await withKernel(async (h) => {
    const source = program(`return {
      inside: await attempt(() => sys.fs.write("out/a.txt", "x")),
      outside: await attempt(() => sys.fs.write("b.txt", "x")),
    };`);
    await Deno.mkdir(join(h.workspace, "out"));
    const narrowAllow = await h.run(source, {
      image: {
        capabilities: ["fs:write:**"],
        policy: { "fs:write:**": "deny", "fs:write:out/**": "allow" },
      },
    });
    const a = narrowAllow.result as Record<string, Attempt>;
    succeeded(a.inside);
    failed(a.outside, "EPERM", /denied by policy "fs:write:\*\*"/);
    await Deno.remove(join(h.workspace, "out", "a.txt"));
    const narrowDeny = await h.run(source, {
      image: {
        capabilities: ["fs:write:**"],
        policy: { "fs:write:**": "allow", "fs:write:out/**": "deny" },
      },
    });
    const b = narrowDeny.result as Record<string, Attempt>;
    failed(b.inside, "EPERM", /denied by policy "fs:write:out\/\*\*"/);
    succeeded(b.outside);
    assert.equal(await exists(join(h.workspace, "out", "a.txt")), false);
  });
});

Deno.test("operator policy rules apply to the process and its children", async () => {
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "secret.txt"), CANARY);
    const child = await h.program(
      "child",
      program(`return await attempt(() => sys.fs.read("secret.txt"));`),
      { capabilities: ["fs:read:**"] },
    );
    const source = program(`
      const own = await attempt(() => sys.fs.read("secret.txt"));
      const { pid } = await sys.proc.spawn({ image: input.child });
      return { own, child: (await sys.proc.wait(pid)).result };
    `);
    const image = { capabilities: ["proc:spawn:*", "fs:read:**"] };
    const policy = [parsePolicyAssignment("fs:read:secret.txt=deny", "operator")];
    const denied = await h.run(source, { input: { child }, image, policy });
    const d = denied.result as Record<string, Attempt>;
    failed(d.own, "EPERM", /denied by policy "fs:read:secret\.txt"/);
    failed(d.child, "EPERM", /denied by policy/);
    assert.ok(!(await everythingAbout(h.kernel, denied.pid)).includes(CANARY));
    // Control: without the operator's rule both reads succeed.
    const allowed = await h.run(source, { input: { child }, image });
    const a = allowed.result as Record<string, Attempt>;
    assert.equal(succeeded(a.own), CANARY);
    assert.equal(succeeded(a.child), CANARY);
  });
});

Deno.test("a spawner may tighten its child's policy but never loosen it", async () => {
  await withKernel(async (h) => {
    await Deno.mkdir(join(h.workspace, "private"));
    await Deno.writeTextFile(join(h.workspace, "private", "key.txt"), CANARY);
    await Deno.writeTextFile(join(h.workspace, "open.txt"), "open");
    const child = await h.program(
      "child",
      program(`return {
        key: await attempt(() => sys.fs.read("private/key.txt")),
        open: await attempt(() => sys.fs.read("open.txt")),
      };`),
      { capabilities: ["fs:read:**"] },
    );
    const end = await h.run(
      program(`
        const loosen = await attempt(() => sys.proc.spawn({
          image: input.child, policy: { "fs:read:private/key.txt": "allow" } }));
        const { pid } = await sys.proc.spawn({
          image: input.child, policy: { "fs:read:open.txt": "deny" } });
        return { loosen, tightened: (await sys.proc.wait(pid)).result };
      `),
      {
        input: { child },
        image: { capabilities: ["fs:read:**", "proc:spawn:*"] },
        policy: [parsePolicyAssignment("fs:read:private/**=deny", "operator")],
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as { loosen: Attempt; tightened: Record<string, Attempt> };
    failed(result.loosen, "EPERM", /may only add deny or ask rules/);
    failed(result.tightened.key, "EPERM", /denied by policy "fs:read:private\/\*\*"/);
    failed(result.tightened.open, "EPERM", /denied by policy "fs:read:open\.txt"/);
    assert.equal((await h.kernel.processes.children(end.pid)).length, 1);
    assert.ok(!(await everythingAbout(h.kernel, end.pid)).includes(CANARY));
  });
});

// ---------------------------------------------------------------------------
// Budgets

Deno.test("the toolCalls budget stops an agent with EBUDGET", async () => {
  const model = new ScriptedModel({
    turns: [writeTurn("a.txt", "1"), writeTurn("b.txt", "2"), { content: "done", exit: true }],
  });
  await withKernel(async (h) => {
    const image = { tools: ["write_file", "exit"], capabilities: ["fs:write:**"] };
    const tight = await agentImage(h, "tight", { ...image, budget: { toolCalls: 1 } });
    const end = await h.kernel.run({ image: tight, workspace: h.workspace });
    assert.equal(end.state, "failed");
    assert.equal(end.error?.code, "EBUDGET");
    assert.match(end.error!.message, /toolCalls budget of 1/);
    assert.equal(await Deno.readTextFile(join(h.workspace, "a.txt")), "1");
    assert.equal(await exists(join(h.workspace, "b.txt")), false);
    // Control: a larger budget lets the same script finish.
    await Deno.remove(join(h.workspace, "a.txt"));
    const roomy = await agentImage(h, "roomy", { ...image, budget: { toolCalls: 5 } });
    const ok = await h.kernel.run({ image: roomy, workspace: h.workspace });
    assert.equal(ok.state, "exited", ok.error?.message);
    assert.equal(await Deno.readTextFile(join(h.workspace, "b.txt")), "2");
    assert.equal(ok.usage.toolCalls, 2);
  }, { model });
});

Deno.test("the tokens budget stops an agent with EBUDGET", async () => {
  const model = new ScriptedModel({
    turns: [writeTurn("a.txt", "1"), writeTurn("b.txt", "2"), { content: "done", exit: true }],
  });
  await withKernel(async (h) => {
    const tag = await agentImage(h, "wordy", {
      tools: ["write_file", "exit"],
      capabilities: ["fs:write:**"],
      budget: { tokens: 30 },
    });
    const end = await h.kernel.run({
      image: tag,
      workspace: h.workspace,
      input: "x".repeat(200),
    });
    assert.equal(end.state, "failed");
    assert.equal(end.error?.code, "EBUDGET");
    assert.match(end.error!.message, /tokens budget of 30/);
    // The 200-character input alone may need more than 30 tokens: the call is refused before it runs.
    assert.ok(end.usage.tokens <= 30, `charged ${end.usage.tokens} tokens`);
    assert.equal(await exists(join(h.workspace, "a.txt")), false);
  }, { model });
});

Deno.test("a child's model usage is charged to its parent's budget", async () => {
  const listing = { tool_calls: [{ name: "list_dir", arguments: { path: "." } }] };
  const model = new ScriptedModel({
    turns: [],
    images: { "helper@1.0.0": { turns: Array.from({ length: 20 }, () => listing) } },
  });
  await withKernel(async (h) => {
    await agentImage(h, "helper", { tools: ["list_dir", "exit"] });
    const end = await h.run(
      program(`
        const { pid } = await sys.proc.spawn({ image: "helper@1.0.0", input: "list" });
        return await sys.proc.wait(pid);
      `),
      { image: { capabilities: ["proc:spawn:*"], budget: { tokens: 2000 } } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const waited = end.result as {
      pid: number;
      state: string;
      error: { code: string; message: string };
    };
    assert.equal(waited.state, "failed");
    assert.equal(waited.error.code, "EBUDGET");
    // The child's budget is what its parent had left; it runs out with its parent's.
    assert.match(
      waited.error.message,
      new RegExp(`process ${waited.pid} has .*its tokens budget of 2000`),
    );
    const child = await h.kernel.processes.require(waited.pid);
    assert.deepEqual(child.budget, { tokens: 2000 });
    assert.ok(child.usage.tokens > 0 && child.usage.tokens <= 2000, `${child.usage.tokens}`);
    assert.equal(end.usage.tokens, child.usage.tokens);
    assert.equal(end.usage.toolCalls, child.usage.toolCalls);
    assert.ok(child.usage.toolCalls > 0);
  }, { model });
});

Deno.test("the children budget is charged up the tree", async () => {
  await withKernel(async (h) => {
    const leaf = await h.program("leaf", ECHO);
    const mid = await h.program(
      "mid",
      program(`
        const first = await attempt(() => sys.proc.spawn({ image: input.leaf }));
        const second = await attempt(() => sys.proc.spawn({ image: input.leaf }));
        return { first, second, children: (await sys.proc.children()).length };
      `),
      { capabilities: ["proc:spawn:*"] },
    );
    const end = await h.run(
      program(`
        const { pid } = await sys.proc.spawn({ image: input.mid, input });
        const mid = (await sys.proc.wait(pid)).result;
        const again = await attempt(() => sys.proc.spawn({ image: input.leaf }));
        return { mid, again };
      `),
      {
        input: { mid, leaf },
        image: { capabilities: ["proc:spawn:*"], budget: { children: 2 } },
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const result = end.result as {
      mid: { first: Attempt; second: Attempt; children: number };
      again: Attempt;
    };
    succeeded(result.mid.first);
    // mid may have only the one child its parent had left.
    const [midPid] = await h.kernel.processes.children(end.pid);
    assert.deepEqual((await h.kernel.processes.require(midPid)).budget, { children: 1 });
    failed(result.mid.second, "EBUDGET", new RegExp(`process ${midPid} has spent its children`));
    assert.equal(result.mid.children, 1);
    failed(result.again, "EBUDGET");
    assert.equal(end.usage.children, 2);
    assert.equal((await h.kernel.processes.list()).length, 3);
  });
});

Deno.test({
  name: "concurrent spawns cannot exceed the children budget",
  fn: async () => {
    await withKernel(async (h) => {
      const leaf = await h.program("leaf", ECHO);
      const end = await h.run(
        program(`
          const spawns = await Promise.all(
            [1, 2, 3].map(() => attempt(() => sys.proc.spawn({ image: input.leaf }))));
          return { spawns, children: (await sys.proc.children()).length };
        `),
        { input: { leaf }, image: { capabilities: ["proc:spawn:*"], budget: { children: 1 } } },
      );
      const result = end.result as { spawns: Attempt[]; children: number };
      assert.equal(result.spawns.filter((s) => s.ok).length, 1, JSON.stringify(result.spawns));
      assert.equal(result.children, 1);
      assert.equal(end.usage.children, 1);
    });
  },
});

// ---------------------------------------------------------------------------
// proc

Deno.test("proc.self describes the caller", async () => {
  await withKernel(async (h) => {
    const child = await h.program("child", program(`return await sys.proc.self();`));
    const end = await h.run(
      program(`
        const { pid } = await sys.proc.spawn({ image: input.child });
        return { self: await sys.proc.self(), child: (await sys.proc.wait(pid)).result, pid };
      `),
      { input: { child }, image: { capabilities: ["proc:spawn:*"] } },
    );
    const result = end.result as { self: unknown; child: unknown; pid: number };
    const tag = (await h.kernel.processes.require(end.pid)).image;
    assert.deepEqual(result.self, {
      pid: end.pid,
      ppid: null,
      image: tag,
      cwd: h.workspace,
      state: "running",
    });
    assert.deepEqual(result.child, {
      pid: result.pid,
      ppid: end.pid,
      image: child,
      cwd: h.workspace,
      state: "running",
    });
  });
});

Deno.test("proc.chdir moves the cwd that relative paths and children use", async () => {
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "a.txt"), "root");
    await Deno.mkdir(join(h.workspace, "sub"));
    await Deno.writeTextFile(join(h.workspace, "sub", "a.txt"), "sub");
    await Deno.mkdir(join(h.workspace, "other"));
    const child = await h.program("child", program(`return await sys.proc.cwd();`));
    const end = await h.run(
      program(`
        const out = { before: await sys.proc.cwd() };
        out.chdir = await attempt(() => sys.proc.chdir("sub"));
        out.read = await attempt(() => sys.fs.read("a.txt"));
        out.toFile = await attempt(() => sys.proc.chdir("a.txt"));
        out.noRead = await attempt(() => sys.proc.chdir("../other"));
        out.missing = await attempt(() => sys.proc.chdir("nowhere"));
        out.after = await sys.proc.cwd();
        const { pid } = await sys.proc.spawn({ image: input.child });
        out.child = (await sys.proc.wait(pid)).result;
        return out;
      `),
      { input: { child }, image: { capabilities: ["fs:read:sub/**", "proc:spawn:*"] } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const out = end.result as Record<string, unknown>;
    const sub = join(h.workspace, "sub");
    assert.equal(out.before, h.workspace);
    assert.equal(succeeded(out.chdir), sub);
    assert.equal(succeeded(out.read), "sub");
    failed(out.toFile, "EINVAL", /not a directory/);
    failed(out.noRead, "EPERM");
    failed(out.missing, "ENOENT");
    assert.equal(out.after, sub);
    assert.equal(out.child, sub);
    assert.equal((await h.kernel.processes.require(end.pid)).cwd, sub);
  });
});

Deno.test({
  name: "a child's cwd needs the same read authority as proc.chdir",
  fn: async () => {
    await withKernel(async (h) => {
      const child = await h.program("child", program(`return await sys.proc.cwd();`));
      const end = await h.run(
        program(`return {
          outside: await attempt(() => sys.proc.spawn({ image: input.child, cwd: "../outside" })),
          chdir: await attempt(() => sys.proc.chdir("../outside")),
        };`),
        { input: { child }, image: { capabilities: ["proc:spawn:*", "fs:read:sub/**"] } },
      );
      const result = end.result as Record<string, Attempt>;
      failed(result.chdir, "EPERM");
      failed(result.outside, "EPERM");
      assert.deepEqual(await h.kernel.processes.children(end.pid), []);
    });
  },
});

Deno.test("proc.wait waits for a child and refuses any other process", async () => {
  await withKernel(async (h) => {
    const sibling = await h.run(ECHO, { input: "sibling" });
    const child = await h.program("child", ECHO);
    const end = await h.run(
      program(`
        const { pid } = await sys.proc.spawn({ image: input.child, input: "child result" });
        return {
          child: await attempt(() => sys.proc.wait(pid)),
          sibling: await attempt(() => sys.proc.wait(input.sibling)),
          self: await attempt(async () => sys.proc.wait((await sys.proc.self()).pid)),
          missing: await attempt(() => sys.proc.wait(999999)),
        };
      `),
      { input: { child, sibling: sibling.pid }, image: { capabilities: ["proc:spawn:*"] } },
    );
    const result = end.result as Record<string, Attempt>;
    const waited = succeeded<{ state: string; result: unknown }>(result.child);
    assert.equal(waited.state, "exited");
    assert.equal(waited.result, "child result");
    failed(result.sibling, "EPERM", /not a child/);
    failed(result.self, "EPERM");
    failed(result.missing, "ENOENT");
  });
});

Deno.test("proc.signal ends a child only with proc:signal:children", async () => {
  await withKernel(async (h) => {
    const idle = await h.program("idle", IDLE);
    const stranger = await h.kernel.spawn({ image: idle, workspace: h.workspace });
    h.kernel.start(stranger.pid);
    const source = program(`
      const { pid } = await sys.proc.spawn({ image: input.idle });
      const signal = await attempt(() => sys.proc.signal(pid, "kill"));
      const stranger = await attempt(() => sys.proc.signal(input.stranger, "kill"));
      const seen = (await sys.proc.children())[0].state;
      const waited = signal.ok ? await sys.proc.wait(pid) : null;
      return { pid, signal, stranger, seen, waited };
    `);
    const input = { idle, stranger: stranger.pid };
    type Result = {
      pid: number;
      signal: Attempt;
      stranger: Attempt;
      seen: string;
      waited: { state: string } | null;
    };

    const without = await h.run(source, { input, image: { capabilities: ["proc:spawn:*"] } });
    const denied = without.result as Result;
    failed(denied.signal, "EPERM", /no capability grants proc:signal/);
    assert.notEqual(denied.seen, "killed");
    // The child ended only when its parent exited.
    const orphaned = await h.kernel.waitFor(denied.pid);
    assert.equal(orphaned.state, "killed");
    assert.match((await eventsOf(h, denied.pid)).at(-1)!.reason!, /parent .* exited/);

    const withCap = await h.run(source, {
      input,
      image: { capabilities: ["proc:spawn:*", "proc:signal:children"] },
    });
    const allowed = withCap.result as Result;
    succeeded(allowed.signal);
    assert.equal(allowed.waited?.state, "killed");
    assert.match((await eventsOf(h, allowed.pid)).at(-1)!.reason!, /signal from pid:/);
    failed(allowed.stranger, "EPERM", /not a descendant/);
    assert.equal((await h.kernel.processes.require(stranger.pid)).state, "running");
    await h.kernel.signal(stranger.pid, "kill");
  });
});

Deno.test("children are killed when their parent exits or fails, unless orphaned", async () => {
  await withKernel(async (h) => {
    const idle = await h.program("idle", IDLE);
    const image = { capabilities: ["proc:spawn:*"] };
    const spawnBoth = `
      const orphan = await sys.proc.spawn({ image: input.idle, onParentExit: "orphan" });
      const doomed = await sys.proc.spawn({ image: input.idle });
    `;
    for (
      const ending of [
        "return { orphan: orphan.pid, doomed: doomed.pid };",
        "throw new Error('parent broke');",
      ]
    ) {
      const end = await h.run(program(spawnBoth + ending), { input: { idle }, image });
      const [orphan, doomed] = await h.kernel.processes.children(end.pid);
      assert.equal(end.state, ending.startsWith("return") ? "exited" : "failed");
      const killed = await h.kernel.waitFor(doomed);
      assert.equal(killed.state, "killed");
      const reason = (await eventsOf(h, doomed)).at(-1)!.reason!;
      assert.match(reason, new RegExp(`parent ${end.pid} ${end.state}`));
      const survivor = await h.kernel.processes.require(orphan);
      assert.ok(["runnable", "running"].includes(survivor.state), survivor.state);
      assert.equal(survivor.ppid, end.pid);
      await h.kernel.signal(orphan, "kill");
      assert.equal((await h.kernel.waitFor(orphan)).state, "killed");
    }
  });
});

Deno.test("an operator kill ends a running process and its cell", async () => {
  await withKernel(async (h) => {
    const tag = await h.program("idle", IDLE);
    const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    const started = afterSyscall(
      h.kernel,
      (ctx, req) => ctx.pid === proc.pid && req.name === "time.now",
    );
    h.kernel.start(proc.pid);
    await started;
    assert.equal((await h.kernel.processes.require(proc.pid)).state, "running");
    const execution = h.kernel.executionOf(proc.pid)!;
    assert.ok(execution.slot);
    await h.kernel.signal(proc.pid, "kill");
    const end = await h.kernel.waitFor(proc.pid);
    assert.equal(end.state, "killed");
    assert.equal(end.result, undefined);
    assert.match((await eventsOf(h, proc.pid)).at(-1)!.reason!, /kill signal from operator/);
    // The program's Worker is gone.
    assert.ok((await execution.slot!.ended).closed);
    await rejectsWith(h.kernel.signal(proc.pid, "kill"), "EINVAL", /it has killed/);
  });
});

// Kernel.close() waits only for the executions it knows, so an execution
// must stay known until the calls it was making are answered.
Deno.test("a killed process's in-flight call stays tracked until it is answered", async () => {
  await withKernel(async (h) => {
    const tag = await h.program("idle", IDLE);
    const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    const gate = holdSyscall(
      h.kernel,
      (ctx, req) => ctx.pid === proc.pid && req.name === "time.now",
    );
    h.kernel.start(proc.pid);
    await gate.reached;
    const execution = h.kernel.executionOf(proc.pid)!;
    try {
      await h.kernel.signal(proc.pid, "kill");
      await execution.done;
      assert.equal(h.kernel.executionOf(proc.pid), execution);
    } finally {
      gate.release();
    }
    await execution.settled();
    assert.equal(h.kernel.executionOf(proc.pid), undefined);
    const [record] = (await auditOf(h.kernel, proc.pid)).filter((r) => r.syscall === "time.now");
    assert.ok(record, "the call that was in flight is audited");
  });
});

Deno.test({
  name: "a call still in flight when its process is killed has no effect",
  fn: async () => {
    await withKernel(async (h) => {
      const tag = await h.program(
        "late",
        program(`await sys.fs.write("late.txt", "written after the kill");`),
        { capabilities: ["fs:write:**"] },
      );
      const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace });
      const gate = holdSyscall(
        h.kernel,
        (ctx, req) => ctx.pid === proc.pid && req.name === "fs.write",
      );
      h.kernel.start(proc.pid);
      await gate.reached;
      const execution = h.kernel.executionOf(proc.pid)!;
      try {
        await h.kernel.signal(proc.pid, "kill");
        await execution.done;
      } finally {
        gate.release();
      }
      await execution.settled();
      assert.equal((await h.kernel.processes.require(proc.pid)).state, "killed");
      assert.equal(await exists(join(h.workspace, "late.txt")), false);
    });
  },
});

// ---------------------------------------------------------------------------
// Model

/**
 * A model whose calls end only when aborted (or after 20 s, so that a host
 * which never aborts them still closes). `started` and `aborted` resolve
 * when a call begins and when its signal fires.
 */
class HangingModel implements ModelProvider {
  readonly name = "hanging";
  readonly started: PromiseWithResolvers<void> = Promise.withResolvers();
  readonly aborted: PromiseWithResolvers<void> = Promise.withResolvers();

  complete(_request: ModelRequest, options: { signal?: AbortSignal } = {}): Promise<ModelReply> {
    this.started.resolve();
    return new Promise((_, reject) => {
      const timer = setTimeout(() => reject(new Error("The call was never aborted")), 20_000);
      options.signal?.addEventListener("abort", () => {
        clearTimeout(timer);
        this.aborted.resolve();
        reject(options.signal!.reason);
      }, { once: true });
    });
  }
}

Deno.test("killing a process aborts its model call", async () => {
  const model = new HangingModel();
  await withKernel(async (h) => {
    const tag = await h.program(
      "asks",
      program(`return await sys.model.complete({ messages: [{ role: "user", content: "hi" }] });`),
    );
    const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    h.kernel.start(proc.pid);
    await model.started.promise;
    await h.kernel.signal(proc.pid, "kill");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      model.aborted.promise.then(() => "aborted"),
      new Promise((resolve) => timer = setTimeout(() => resolve("still running"), 5_000)),
    ]);
    clearTimeout(timer);
    assert.equal(outcome, "aborted");
  }, { model });
});

Deno.test("a process may call its image's model; another model needs a capability", async () => {
  const model = new ScriptedModel({ turns: [{ content: "hi there" }] });
  await withKernel(async (h) => {
    const source = program(`
      const messages = [{ role: "user", content: "hello" }];
      return {
        own: await attempt(() => sys.model.complete({ messages })),
        named: await attempt(() => sys.model.complete({ messages, model: "openai/gpt-4o-mini" })),
        other: await attempt(() => sys.model.complete({ messages, model: "openai/gpt-4o" })),
      };
    `);
    const image = { model: { provider: "openai", name: "gpt-4o-mini" } };
    const without = (await h.run(source, { image })).result as Record<string, Attempt>;
    assert.equal(
      succeeded<{ message: { content: string } }>(without.own).message.content,
      "hi there",
    );
    succeeded(without.named);
    failed(without.other, "EPERM", /no capability grants model:complete/);
    const withCap = (await h.run(source, {
      image: { ...image, capabilities: ["model:complete:openai/gpt-4o"] },
    })).result as Record<string, Attempt>;
    succeeded(withCap.other);
  }, { model });
});

// ---------------------------------------------------------------------------
// Filesystem containment

Deno.test("a symlink in the workspace that points outside is refused", async () => {
  await withKernel(async (h) => {
    const secret = join(h.outside, "secret.txt");
    await Deno.writeTextFile(secret, CANARY);
    await Deno.symlink(secret, join(h.workspace, "link.txt"));
    await Deno.symlink(h.outside, join(h.workspace, "dirlink"));
    const end = await h.run(
      program(`return {
        read: await attempt(() => sys.fs.read("link.txt")),
        readDir: await attempt(() => sys.fs.read("dirlink/secret.txt")),
        list: await attempt(() => sys.fs.list("dirlink")),
        write: await attempt(() => sys.fs.write("link.txt", "overwritten")),
        append: await attempt(() => sys.fs.append("dirlink/secret.txt", "more")),
        create: await attempt(() => sys.fs.write("dirlink/new.txt", "x")),
        chdir: await attempt(() => sys.proc.chdir("dirlink")),
      };`),
      { image: { capabilities: ["fs:read,write:**"] } },
    );
    assert.equal(end.state, "exited");
    for (const [name, attempt] of Object.entries(end.result as Record<string, Attempt>)) {
      assert.equal(attempt.ok, false, `${name} was allowed`);
      assert.equal((attempt as { code: string }).code, "EPERM", name);
    }
    assert.equal(await Deno.readTextFile(secret), CANARY);
    assert.equal(await exists(join(h.outside, "new.txt")), false);
    assert.ok(!(await everythingAbout(h.kernel, end.pid)).includes(CANARY));
    // Control: the host itself reads through the link.
    assert.equal(await Deno.readTextFile(join(h.workspace, "link.txt")), CANARY);
  });
});

Deno.test("dot-dot escapes, absolute paths outside and NUL bytes are refused", async () => {
  await withKernel(async (h) => {
    const secret = join(h.outside, "secret.txt");
    await Deno.writeTextFile(secret, CANARY);
    await Deno.mkdir(join(h.workspace, "sub"));
    const end = await h.run(
      program(`return {
        dotdot: await attempt(() => sys.fs.read("../outside/secret.txt")),
        deep: await attempt(() => sys.fs.read("sub/../../outside/secret.txt")),
        absolute: await attempt(() => sys.fs.read(input.secret)),
        write: await attempt(() => sys.fs.write("../outside/secret.txt", "overwritten")),
        create: await attempt(() => sys.fs.write("../outside/new.txt", "x")),
        remove: await attempt(() => sys.fs.remove("../outside/secret.txt")),
        nul: await attempt(() => sys.fs.read("a.txt\\u0000../../outside/secret.txt")),
        inside: await attempt(() => sys.fs.write("sub/../ok.txt", "fine")),
      };`),
      { input: { secret }, image: { capabilities: ["fs:read,write,delete:**"] } },
    );
    const result = end.result as Record<string, Attempt>;
    for (const name of ["dotdot", "deep", "absolute", "write", "create", "remove"]) {
      failed(result[name], "EPERM");
    }
    failed(result.nul, "EINVAL", /NUL/);
    succeeded(result.inside);
    assert.equal(await Deno.readTextFile(join(h.workspace, "ok.txt")), "fine");
    assert.equal(await Deno.readTextFile(secret), CANARY);
    assert.equal(await exists(join(h.outside, "new.txt")), false);
    assert.ok(!(await everythingAbout(h.kernel, end.pid)).includes(CANARY));
  });
});

Deno.test("/proc, /dev and /sys are refused even with fs:read:/**", async () => {
  Deno.env.set("LIBOS_TEST_CANARY", CANARY);
  try {
    await withKernel(async (h) => {
      const end = await h.run(
        program(`return {
          environ: await attempt(() => sys.fs.read("/proc/self/environ")),
          mem: await attempt(() => sys.fs.read("/proc/self/mem")),
          zero: await attempt(() => sys.fs.read("/dev/zero", { maxBytes: 16 })),
          list: await attempt(() => sys.fs.list("/proc/self")),
          sys: await attempt(() => sys.fs.list("/sys")),
          viaDots: await attempt(() => sys.fs.read("/tmp/../proc/self/environ")),
        };`),
        { image: { capabilities: ["fs:read:/**"] } },
      );
      assert.equal(end.state, "exited");
      for (const [name, attempt] of Object.entries(end.result as Record<string, Attempt>)) {
        assert.equal(attempt.ok, false, `${name} was allowed`);
        assert.equal((attempt as { code: string }).code, "EPERM", name);
      }
      assert.ok(!(await everythingAbout(h.kernel, end.pid)).includes(CANARY));
    });
  } finally {
    Deno.env.delete("LIBOS_TEST_CANARY");
  }
});

Deno.test("the KV store is out of reach even with fs:read,write,delete:/**", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-test-" }));
  const workspace = join(root, "ws");
  const db = join(workspace, ".libos", "libos.db");
  await Deno.mkdir(workspace);
  const kernel = await Kernel.open({ store: db });
  try {
    await Deno.symlink(db, join(workspace, "db-link"));
    await kernel.images.register({
      name: "thief",
      version: "1.0.0",
      entry: "./main.ts",
      capabilities: ["fs:read,write,delete:/**"],
    } as AgentImage, {
      entrySource: program(`return {
        read: await attempt(() => sys.fs.read(".libos/libos.db")),
        absolute: await attempt(() => sys.fs.read(input.db)),
        link: await attempt(() => sys.fs.read("db-link")),
        wal: await attempt(() => sys.fs.read(".libos/libos.db-wal")),
        stat: await attempt(() => sys.fs.stat(".libos/libos.db")),
        write: await attempt(() => sys.fs.write(".libos/libos.db", "gone")),
        journal: await attempt(() => sys.fs.write(".libos/libos.db-journal", "x")),
        remove: await attempt(() => sys.fs.remove(".libos", { recursive: true })),
        rename: await attempt(() => sys.fs.rename(".libos", "moved")),
        removeWs: await attempt(() => sys.fs.remove(".", { recursive: true })),
      };`),
    });
    const end = await kernel.run({ image: "thief@1.0.0", workspace, input: { db } });
    assert.equal(end.state, "exited", end.error?.message);
    for (const [name, attempt] of Object.entries(end.result as Record<string, Attempt>)) {
      assert.equal(attempt.ok, false, `${name} was allowed`);
      assert.equal((attempt as { code: string }).code, "EPERM", name);
    }
    assert.ok((await Deno.stat(db)).size > 0);
    assert.equal(await exists(join(workspace, "moved")), false);
    await kernel.journal.flush();
    assert.equal((await kernel.audit.verify()).ok, true);
  } finally {
    await kernel.close();
    await Deno.remove(root, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// Audit

const WRITTEN = "WRITTEN-" + crypto.randomUUID();

Deno.test("every syscall, allowed or denied, has an audit record", async () => {
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "a.txt"), CANARY);
    const end = await runRecorded(
      h,
      program(`
        await sys.time.now();
        await sys.fs.read("a.txt");
        await attempt(() => sys.fs.write("a.txt", input));
        await attempt(() => sys.fs.read("../outside/x"));
        await attempt(() => sys.call("fs.read", { path: 7 }));
        await attempt(() => sys.call("fs.chmod", { path: "a.txt" }));
        await sys.cap.list();
        return "ok";
      `),
      { input: WRITTEN, image: { capabilities: ["fs:read:**"] } },
    );
    assert.equal(end.state, "exited");
    const records = await auditOf(h.kernel, end.pid);
    assert.deepEqual(records.map((r) => [r.syscall, r.decision, r.outcome, r.code]), [
      ["time.now", "allow", "ok", undefined],
      ["fs.read", "allow", "ok", undefined],
      ["fs.write", "deny", "error", "EPERM"],
      ["fs.read", "deny", "error", "EPERM"],
      ["fs.read", "deny", "error", "EINVAL"],
      ["fs.chmod", "deny", "error", "ENOSYS"],
      ["cap.list", "allow", "ok", undefined],
      ["proc.exit", "allow", "ok", undefined],
    ]);
    const tag = (await h.kernel.processes.require(end.pid)).image;
    for (const record of records) assert.equal(record.image, tag);
    assert.ok(records[1].capability, "the allowed read names its capability");
    const text = JSON.stringify(records);
    assert.ok(!text.includes(CANARY), "what the program read stays out of the audit");
    assert.ok(!text.includes(WRITTEN), "what the program tried to write stays out of the audit");
  });
});

Deno.test({
  name: "an asked call that a human denies is audited as denied",
  fn: async () => {
    await withKernel(async (h) => {
      await Deno.mkdir(join(h.workspace, "out"));
      const end = await runRecorded(
        h,
        program(`return await attempt(() => sys.fs.write("out/a.txt", "x"));`),
        { image: { ...ASK_IMAGE, capabilities: [...ASK_IMAGE.capabilities] } },
      );
      failed(end.result, "EPERM", /denied/);
      const writes = (await auditOf(h.kernel, end.pid)).filter((r) => r.syscall === "fs.write");
      assert.ok(
        writes.some((r) => r.outcome === "error" && r.code === "EPERM"),
        JSON.stringify(writes.map((r) => [r.decision, r.outcome, r.code])),
      );
    }, { human: new DenyingHuman() });
  },
});

Deno.test("audit verify passes after a run and detects edits, removals, reordering", async () => {
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "a.txt"), "x");
    await runRecorded(
      h,
      program(`
        for (let i = 0; i < 5; i++) await attempt(() => sys.fs.read("a.txt"));
        return "ok";
      `),
      { image: { capabilities: ["fs:read:**"] } },
    );
    await h.kernel.journal.flush();
    const kv = h.kernel.store.kv;
    const verified = await h.kernel.audit.verify();
    assert.equal(verified.ok, true);
    assert.ok(verified.count >= 6);
    const key = (seq: number) => ["audit", "rec", seq];
    const [two, three] = await Promise.all([kv.get(key(2)), kv.get(key(3))]);
    const restore = async () => {
      await kv.set(key(2), two.value);
      await kv.set(key(3), three.value);
      assert.equal((await h.kernel.audit.verify()).ok, true);
    };
    const tampers: [string, () => Promise<unknown>, RegExp][] = [
      ["edit", () => kv.set(key(2), { ...two.value as object, decision: "deny" }), /edited/],
      ["delete", () => kv.delete(key(3)), /missing|removed/],
      ["reorder", async () => {
        await kv.set(key(2), three.value);
        await kv.set(key(3), two.value);
      }, /reordered/],
    ];
    for (const [what, tamper, reason] of tampers) {
      await tamper();
      const result = await h.kernel.audit.verify();
      assert.equal(result.ok, false, `${what} went unnoticed`);
      if (!result.ok) assert.match(result.reason, reason, what);
      await restore();
    }
  });
});

// ---------------------------------------------------------------------------
// Journal

Deno.test("every syscall of a run has a journal record, with consecutive seqs", async () => {
  await withKernel(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "a.txt"), "x");
    const end = await runRecorded(
      h,
      program(`
        await sys.time.now();
        await sys.fs.read("a.txt");
        await attempt(() => sys.fs.write("a.txt", "denied"));
        await Promise.all([1, 2, 3].map(() => sys.fs.read("a.txt")));
        return "ok";
      `),
      { image: { capabilities: ["fs:read:**"] } },
    );
    const records = await journalOf(h.kernel, end.pid);
    assert.deepEqual(records.map((r) => r.seq), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(records.map((r) => r.name), [
      "time.now",
      "fs.read",
      "fs.write",
      "fs.read",
      "fs.read",
      "fs.read",
      "proc.exit",
    ]);
    for (const record of records) assert.equal(record.pid, end.pid);
    assert.equal(records[2].ok, false);
    assert.equal(records[2].error?.code, "EPERM");
    assert.equal(records[1].value, "x");
  });
});

Deno.test("concurrent durable writes from running programs are group-committed", async () => {
  await withKernel(async (h) => {
    const source = program(`
      const names = Array.from({ length: 40 }, (_, i) => input + i + ".txt");
      await Promise.all(names.map((name) => sys.fs.write(name, "x")));
      return "ok";
    `);
    const tag = await h.program("writer", source, { capabilities: ["fs:write:**"] });
    const before = { ...h.kernel.journal.stats };
    const procs = await Promise.all(
      ["a", "b", "c"].map((input) => h.kernel.spawn({ image: tag, workspace: h.workspace, input })),
    );
    for (const p of procs) h.kernel.start(p.pid);
    for (const p of procs) assert.equal((await h.kernel.waitFor(p.pid)).state, "exited");
    await h.kernel.journal.flush();
    const commits = h.kernel.journal.stats.commits - before.commits;
    const writes = h.kernel.journal.stats.writes - before.writes;
    // 120 durable intents and 120 outcomes, plus each process's exit.
    assert.ok(writes >= 240, `${writes} writes`);
    assert.ok(commits < writes / 2, `${commits} commits for ${writes} writes`);
    assert.ok(h.kernel.journal.stats.largestBatch > 1);
  });
});
