/**
 * Syscalls whose effect is a change of the store alone (`obj.put`,
 * `obj.delete`, `obj.define_type`, `obj.share`, `event.emit`, `msg.send`)
 * through the kernel's broker: each is one KV commit holding the change,
 * the call's `done` record and its audit record, so it never leaves an
 * intent without an outcome; the commit holds only while the caller's
 * capabilities are those that authorized it; and a replay answers it from
 * the journal, even when the host stopped right after it.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import type { SyscallRequest } from "../broker/abi.ts";
import type { AuditRecord } from "../broker/audit.ts";
import type { BrokerReply, CallContext } from "../broker/broker.ts";
import type { JournalRecord } from "../broker/journal.ts";
import { Kernel } from "../runtime/kernel.ts";
import { type Harness, withHarness } from "./_harness.ts";
import { beforeNextCommit, watchCommits } from "./_kv_commits.ts";

/** Buffered records wait this long: only what a call commits itself is in the store. */
const NEVER_FLUSHED = { flushMs: 600_000 };

/** A caller that dispatches syscalls to the kernel's broker as process `pid`, in journal order. */
function caller(h: Harness, pid: number, tag: string) {
  let seq = 0;
  let id = 0;
  return {
    /** The seq of the last call. */
    get seq(): number {
      return seq;
    },
    async call(name: string, args: unknown): Promise<BrokerReply> {
      const ctx: Omit<CallContext, "argsDigest"> = {
        pid,
        image: tag,
        workspace: h.workspace,
        policy: [],
        seq: ++seq,
      };
      const request: SyscallRequest = { id: ++id, name, args };
      const reply = await h.kernel.broker.dispatch(ctx, request);
      assert.equal(typeof reply, "object", "the call was answered, not parked");
      return reply as BrokerReply;
    },
  };
}

async function spawned(h: Harness, capabilities: string[]): Promise<{ pid: number; tag: string }> {
  const tag = await h.program(`p${crypto.randomUUID().slice(0, 8)}`, "export default () => 0;", {
    capabilities,
  });
  const { pid } = await h.kernel.spawn({ image: tag, workspace: h.workspace });
  return { pid, tag };
}

async function auditOf(h: Harness, pid: number): Promise<AuditRecord[]> {
  await h.kernel.journal.flush();
  const out: AuditRecord[] = [];
  for await (const record of h.kernel.audit.list({ pid })) out.push(record);
  return out;
}

Deno.test("a store-only syscall is one KV commit: its change, its done record and its audit record", async () => {
  await withHarness(async (h) => {
    const kv = h.kernel.store.kv;
    const receiver = await spawned(h, []);
    const sender = await spawned(h, [
      "obj:read,write,delete:shared/**",
      "event:emit:*",
      "proc:send:*",
    ]);
    const as = caller(h, sender.pid, sender.tag);
    const calls: [string, unknown, Deno.KvKey][] = [
      ["obj.put", { namespace: "self", name: "k", value: 1 }, ["obj", `proc/${sender.pid}`, "k"]],
      ["obj.put", { namespace: "shared/a", name: "k", value: "x" }, ["obj", "shared/a", "k"]],
      ["obj.delete", { namespace: "self", name: "k" }, ["obj", `proc/${sender.pid}`, "k"]],
      [
        "obj.define_type",
        { namespace: "shared/a", name: "note", schema: { type: "string" } },
        ["obj_type", "shared/a", "note"],
      ],
      ["obj.share", { namespace: "self", pid: receiver.pid, rights: ["read"] }, [
        "cap_ver",
        receiver.pid,
      ]],
      ["event.emit", { topic: "t", data: 1 }, ["topic_event", "t", 1]],
      ["msg.send", { pid: receiver.pid, data: "hi" }, ["mail", receiver.pid, 1]],
    ];
    for (const [name, args, changed] of calls) {
      await h.kernel.journal.flush();
      const watch = watchCommits(kv);
      const reply = await as.call(name, args);
      watch.stop();
      assert.equal(reply.ok, true, `${name}: ${JSON.stringify(reply)}`);
      assert.equal(watch.commits.length, 1, `${name} took ${watch.commits.length} commits`);
      const keys = watch.commits[0].keys.map((key) => JSON.stringify(key));
      for (const key of [changed, ["journal", sender.pid, as.seq], ["audit", "head"]]) {
        assert.ok(keys.includes(JSON.stringify(key)), `${name}: ${JSON.stringify(key)} in ${keys}`);
      }
      // Right after the call, its record is its outcome, never an intent.
      const record = (await kv.get<JournalRecord>(["journal", sender.pid, as.seq])).value;
      assert.equal(record?.phase, "done", name);
      assert.equal(record?.ok, true, name);
    }
    assert.equal((await h.kernel.objects.get("shared/a", "k")).value, "x");
    assert.equal((await h.kernel.events.firstAfter("t", 0))?.data, 1);
  }, { journal: NEVER_FLUSHED });
});

Deno.test("a revocation committed after an obj.put was authorized refuses it with EPERM, and nothing is written", async () => {
  await withHarness(async (h) => {
    const kv = h.kernel.store.kv;
    const writer = await spawned(h, ["obj:write:shared/**"]);
    const cap = (await h.kernel.caps.list(writer.pid)).find((c) => c.scope === "shared/**")!;
    const as = caller(h, writer.pid, writer.tag);
    const used = (await h.kernel.quotas.usage(writer.pid)).storageBytes;
    // The revocation lands once the call has read its capabilities, just before its commit.
    const revoked = beforeNextCommit(kv, async () => {
      assert.deepEqual(await h.kernel.caps.revoke(cap.id), [cap.id]);
    });
    const reply = await as.call("obj.put", { namespace: "shared/a", name: "k", value: "x" });
    await revoked;
    assert.equal(reply.ok, false);
    const error = (reply as Extract<BrokerReply, { ok: false }>).error;
    assert.equal(error.code, "EPERM");
    assert.match(error.message, /Cannot write object namespace "shared\/a"/);
    assert.equal((await kv.get(["obj", "shared/a", "k"])).value, null);
    assert.equal((await h.kernel.quotas.usage(writer.pid)).storageBytes, used);
    const [record] = await auditOf(h, writer.pid);
    assert.deepEqual([record.syscall, record.decision, record.code], ["obj.put", "deny", "EPERM"]);
    const done = (await kv.get<JournalRecord>(["journal", writer.pid, 1])).value;
    assert.deepEqual([done?.phase, done?.ok], ["done", false]);
  });
});

Deno.test("a large obj.put refused by a revocation leaves none of the chunks it staged", async () => {
  await withHarness(async (h) => {
    const kv = h.kernel.store.kv;
    const writer = await spawned(h, ["obj:write:shared/**"]);
    const cap = (await h.kernel.caps.list(writer.pid)).find((c) => c.scope === "shared/**")!;
    const value = "x".repeat(200_000);
    // Its chunks are staged in commits of their own; the revocation lands before the first.
    const revoked = beforeNextCommit(kv, async () => {
      await h.kernel.caps.revoke(cap.id);
    });
    const as = caller(h, writer.pid, writer.tag);
    const reply = await as.call("obj.put", { namespace: "shared/a", name: "big", value });
    await revoked;
    assert.equal((reply as Extract<BrokerReply, { ok: false }>).error?.code, "EPERM");
    assert.equal((await kv.get(["obj", "shared/a", "big"])).value, null);
    const chunks = await Array.fromAsync(kv.list({ prefix: ["obj_chunk", "shared/a", "big"] }));
    assert.equal(chunks.length, 0);
  });
});

Deno.test("a large obj.put through the broker stores its value whole", async () => {
  await withHarness(async (h) => {
    const writer = await spawned(h, []);
    const value = { text: "y".repeat(200_000) };
    const reply = await caller(h, writer.pid, writer.tag).call("obj.put", {
      namespace: "self",
      name: "big",
      value,
    });
    assert.deepEqual((reply as BrokerReply & { ok: true }).value, { version: 1 });
    assert.deepEqual((await h.kernel.objects.get(`proc/${writer.pid}`, "big")).value, value);
  });
});

Deno.test("a revocation committed after an event.emit was authorized refuses it, and no event is posted", async () => {
  await withHarness(async (h) => {
    const kv = h.kernel.store.kv;
    const emitter = await spawned(h, ["event:emit:*"]);
    const cap = (await h.kernel.caps.list(emitter.pid)).find((c) => c.resource === "event")!;
    const revoked = beforeNextCommit(kv, async () => {
      await h.kernel.caps.revoke(cap.id);
    });
    const reply = await caller(h, emitter.pid, emitter.tag).call("event.emit", { topic: "t" });
    await revoked;
    assert.equal(reply.ok, false);
    assert.equal((reply as Extract<BrokerReply, { ok: false }>).error.code, "EPERM");
    assert.equal(await h.kernel.events.latestSeq("t"), 0);
  });
});

Deno.test("an obj.put is answered from the journal on replay, even when the host stopped right after it", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-test-" }));
  const store = join(root, "store.db");
  const source = `export default async (sys) => await sys.obj.put("self", "k", 1);`;
  try {
    // The first host journals the call and stops before anything it buffered is flushed.
    const first = await Kernel.open({ store, runs: false, journal: NEVER_FLUSHED });
    let pid: number;
    try {
      const image = await first.images.register({
        name: "putter",
        version: "1.0.0",
        entry: "./main.ts",
        tools: [],
        capabilities: [],
        policy: {},
      } as never, { entrySource: source });
      pid = (await first.spawn({ image: image.tag, workspace: root })).pid;
      const reply = await first.broker.dispatch(
        { pid, image: image.tag, workspace: root, policy: [], seq: 1 },
        { id: 1, name: "obj.put", args: { namespace: "self", name: "k", value: 1 } },
      );
      assert.deepEqual((reply as BrokerReply & { ok: true }).value, { version: 1 });
      // A second host on the same store runs the program, which replays the call.
      const second = await Kernel.open({ store });
      try {
        second.start(pid);
        const end = await second.waitFor(pid);
        assert.equal(end.state, "exited", end.error?.message);
        assert.deepEqual(end.result, { version: 1 });
        // Answered from the journal: the object was written once.
        assert.equal((await second.objects.get(`proc/${pid}`, "k")).version, 1);
        await second.journal.flush();
        const calls: string[] = [];
        for await (const record of second.audit.list({ pid })) {
          calls.push(`${record.syscall}:${record.outcome}`);
        }
        assert.deepEqual(calls, ["obj.put:ok", "proc.exit:ok"]);
      } finally {
        await second.close();
      }
    } finally {
      await first.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/**
 * Holds the next commit on the store until `count` changes of the store
 * (journal writes with their own checks and mutations) have been queued,
 * so that all after the first wait for one shared commit. Calls
 * `meanwhile` with the pids queued, in order, before releasing it.
 */
function holdUntilQueued(
  h: Harness,
  count: number,
  meanwhile: (queued: number[]) => Promise<void> = async () => {},
): { released: Promise<void>; queued(n: number): Promise<void>; stop(): void } {
  const journal = h.kernel.journal;
  const queued: number[] = [];
  const waiting: { n: number; resolve: () => void }[] = [];
  const queuedAt = (n: number) =>
    new Promise<void>((resolve) => {
      if (queued.length >= n) resolve();
      else waiting.push({ n, resolve });
    });
  journal.write = (write, options) => {
    if (write.atomic && write.journal) {
      queued.push(write.journal.pid);
      for (const w of waiting) if (queued.length >= w.n) w.resolve();
    }
    return Object.getPrototypeOf(journal).write.call(journal, write, options);
  };
  const released = beforeNextCommit(h.kernel.store.kv, async () => {
    await queuedAt(count);
    await meanwhile(queued);
  });
  return {
    released,
    queued: queuedAt,
    stop: () => delete (journal as { write?: unknown }).write,
  };
}

Deno.test("obj.put calls of many processes at once share commits, and each lands exactly once", async () => {
  await withHarness(async (h) => {
    const writers = await Promise.all(Array.from({ length: 8 }, () => spawned(h, [])));
    await h.kernel.journal.flush();
    const before = { ...h.kernel.journal.stats };
    const hold = holdUntilQueued(h, writers.length);
    const replies = await Promise.all(
      writers.map((w, i) =>
        caller(h, w.pid, w.tag).call("obj.put", { namespace: "self", name: "k", value: i })
      ),
    );
    await hold.released;
    hold.stop();
    const commits = h.kernel.journal.stats.commits - before.commits;
    assert.ok(commits < writers.length, `${commits} commits for ${writers.length} calls`);
    assert.equal(h.kernel.journal.stats.splits, before.splits);
    for (const [i, w] of writers.entries()) {
      assert.deepEqual(replies[i], { ...replies[i], ok: true, value: { version: 1 } });
      const stored = await h.kernel.objects.get(`proc/${w.pid}`, "k");
      assert.deepEqual([stored.value, stored.version], [i, 1]);
      const audited = (await auditOf(h, w.pid)).filter((r) => r.syscall === "obj.put");
      assert.deepEqual(audited.map((r) => r.outcome), ["ok"]);
    }
    assert.deepEqual(await h.kernel.audit.verify(), {
      ok: true,
      count: (await Array.fromAsync(h.kernel.audit.list())).length,
    });
  }, { journal: NEVER_FLUSHED });
});

Deno.test("a capability revoked while its obj.put waits in a shared commit refuses that call alone", async () => {
  await withHarness(async (h) => {
    const kv = h.kernel.store.kv;
    const writers = await Promise.all(
      Array.from({ length: 6 }, () => spawned(h, ["obj:write:shared/**"])),
    );
    await h.kernel.journal.flush();
    const splits = h.kernel.journal.stats.splits;
    let revoked = 0;
    // Every call is authorized and queued; the last one's capability is revoked before their commit.
    const hold = holdUntilQueued(h, writers.length, async (queued) => {
      revoked = queued.at(-1)!;
      const cap = (await h.kernel.caps.list(revoked)).find((c) => c.scope === "shared/**")!;
      assert.deepEqual(await h.kernel.caps.revoke(cap.id), [cap.id]);
    });
    const replies = await Promise.all(
      writers.map((w) =>
        caller(h, w.pid, w.tag).call("obj.put", {
          namespace: `shared/p${w.pid}`,
          name: "k",
          value: w.pid,
        })
      ),
    );
    await hold.released;
    hold.stop();
    assert.ok(h.kernel.journal.stats.splits > splits, "the shared commit failed and was split");
    for (const [i, w] of writers.entries()) {
      const stored = (await kv.get<{ version: number }>(["obj", `shared/p${w.pid}`, "k"])).value;
      const audited = (await auditOf(h, w.pid)).filter((r) => r.syscall === "obj.put");
      if (w.pid === revoked) {
        assert.equal(replies[i].ok, false);
        assert.equal((replies[i] as Extract<BrokerReply, { ok: false }>).error.code, "EPERM");
        assert.equal(stored, null, "no effect authorized by the revoked capability committed");
        assert.deepEqual(audited.map((r) => r.decision), ["deny"]);
      } else {
        assert.deepEqual(replies[i], { ...replies[i], ok: true, value: { version: 1 } });
        assert.equal(stored?.version, 1, `process ${w.pid}'s object was written once`);
        assert.deepEqual(audited.map((r) => r.outcome), ["ok"]);
      }
    }
  }, { journal: NEVER_FLUSHED });
});

Deno.test("obj.put calls of many processes on one object with one expected version: exactly one wins", async () => {
  await withHarness(async (h) => {
    const writers = await Promise.all(
      Array.from({ length: 6 }, () => spawned(h, ["obj:write:shared/**"])),
    );
    const lead = await spawned(h, []);
    await h.kernel.journal.flush();
    // A call on another object holds the commit in flight while the six queue behind it.
    const hold = holdUntilQueued(h, writers.length + 1);
    const first = caller(h, lead.pid, lead.tag).call("obj.put", {
      namespace: "self",
      name: "k",
      value: 0,
    });
    await hold.queued(1);
    const replies = await Promise.all(
      writers.map((w) =>
        caller(h, w.pid, w.tag).call("obj.put", {
          namespace: "shared/one",
          name: "k",
          value: w.pid,
          expectedVersion: 0,
        })
      ),
    );
    await hold.released;
    hold.stop();
    assert.equal((await first).ok, true);
    const won = replies.filter((r) => r.ok);
    assert.equal(won.length, 1, JSON.stringify(replies));
    for (const reply of replies.filter((r) => !r.ok)) {
      assert.equal((reply as Extract<BrokerReply, { ok: false }>).error.code, "EEXIST");
    }
    const stored = await h.kernel.objects.get("shared/one", "k");
    assert.equal(stored.version, 1);
    assert.equal(stored.value, writers[replies.indexOf(won[0])].pid);
  }, { journal: NEVER_FLUSHED });
});
