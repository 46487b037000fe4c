import assert from "node:assert/strict";
import type { AuditEntry } from "../broker/audit.ts";
import { type CallContext, PARKED } from "../broker/broker.ts";
import type { CapabilitySpec } from "../broker/capability.ts";
import { CapabilityStore } from "../broker/capability_store.ts";
import type { SyscallError } from "../broker/errors.ts";
import type { WaitSpec } from "../broker/journal.ts";
import { HumanQueue, type HumanQueueKernel, ScriptedHuman } from "./human_queue.ts";
import { ProcessTable } from "./process_table.ts";
import type { WaitOutcome } from "./waits.ts";
import { newProcess, withMemoryKv } from "./_fixtures.ts";

/**
 * What the human queue sees of a kernel: a real process table and
 * capability store over the store, a fixed clock, a journal that keeps the
 * audit entries written, and waits that park a call (a `wait` record, with
 * the queue's writes in the same commit) and complete it with the queue's
 * check and writes in one commit, as `Waits` does.
 */
class HumanHost implements HumanQueueKernel {
  readonly store: { kv: Deno.Kv };
  readonly processes: ProcessTable;
  readonly caps: CapabilityStore;
  readonly now = (): number => 5_000;
  /** The audit entries written. */
  readonly audited: AuditEntry[] = [];
  readonly journal: HumanQueueKernel["journal"] = {
    write: (write) => {
      if (write.audit) this.audited.push(write.audit);
      return Promise.resolve();
    },
  };
  /** Every wait parked, in order. */
  readonly parked: { pid: number; seq: number; wait: WaitSpec }[] = [];
  /** Every wait completed, in order. */
  readonly completed: { pid: number; seq: number; outcome: WaitOutcome }[] = [];
  /** Called after each completion. */
  onComplete: () => void = () => {};
  readonly waits: HumanQueueKernel["waits"] = {
    park: async (call, wait, options = {}) => {
      const op = this.store.kv.atomic().set(["journal", call.pid, call.seq], { phase: "wait" });
      options.extra?.(op);
      assert.equal((await op.commit()).ok, true);
      this.parked.push({ pid: call.pid, seq: call.seq, wait });
      return PARKED;
    },
    complete: async (pid, seq, outcome, options = {}) => {
      const kv = this.store.kv;
      const wait = await kv.get<{ phase: string }>(["journal", pid, seq]);
      if (wait.value?.phase !== "wait") return false;
      const op = kv.atomic().check(wait).set(["journal", pid, seq], { phase: "done" });
      if (options.check) op.check(options.check);
      options.extra?.(op);
      if (!(await op.commit()).ok) return false;
      const change = options.change;
      if (change) await this.processes.update(pid, change);
      this.completed.push({ pid, seq, outcome });
      this.onComplete();
      return true;
    },
  };

  constructor(kv: Deno.Kv) {
    this.store = { kv };
    this.processes = new ProcessTable(kv);
    this.caps = new CapabilityStore(kv);
  }

  /** A process to ask from. */
  async asker(): Promise<number> {
    return (await this.processes.create(newProcess())).pid;
  }
}

async function withQueue(
  body: (queue: HumanQueue, host: HumanHost) => Promise<void>,
  responder?: ScriptedHuman,
): Promise<void> {
  await withMemoryKv((kv) => {
    const host = new HumanHost(kv);
    return body(new HumanQueue(host, responder), host);
  });
}

/** The call `fs.write` of `pid` at journal seq `seq`, as the broker hands it to the queue. */
function writeCall(pid: number, seq: number): CallContext {
  return { pid, seq, image: "t@1", workspace: "/ws", policy: [], argsDigest: `digest-${seq}` };
}

const WRITE: CapabilitySpec = { resource: "fs", rights: ["write"], scope: "/ws/notes.txt" };

async function askToWrite(queue: HumanQueue, pid: number, seq: number): Promise<string> {
  await queue.permission(writeCall(pid, seq), {
    name: "fs.write",
    args: { path: "notes.txt", content: "hello" },
    capability: WRITE,
  });
  const [request] = await queue.pending();
  return request.id;
}

Deno.test("a question parks its asker, and a typed answer completes the wait with the value", async () => {
  await withQueue(async (queue, host) => {
    const pid = await host.asker();
    const parked = await queue.file(
      { pid, seq: 3, name: "human.ask", argsDigest: "q", image: "t@1" },
      { kind: "question", question: { text: "How many?", kind: "number" } },
    );
    assert.equal(parked, PARKED);
    const [request] = await queue.pending();
    assert.equal(request.state, "pending");
    assert.equal(request.pid, pid);
    assert.deepEqual(host.parked, [{ pid, seq: 3, wait: { kind: "human", request: request.id } }]);

    const answered = await queue.answer(request.id, { answer: "42" }, { by: "alice" });
    assert.deepEqual(answered.answer, { by: "alice", at: 5_000, value: 42 });
    assert.deepEqual(host.completed, [{ pid, seq: 3, outcome: { ok: true, value: 42 } }]);
    assert.equal((await queue.get(request.id))?.state, "answered");
    assert.deepEqual(await queue.pending(), []);
  });
});

Deno.test("an answer of the wrong kind is refused and the request stays pending", async () => {
  await withQueue(async (queue, host) => {
    const pid = await host.asker();
    await queue.file(
      { pid, seq: 1, name: "human.ask", argsDigest: "q", image: "t@1" },
      { kind: "question", question: { text: "Pick", kind: "choice", choices: ["a", "b"] } },
    );
    const [request] = await queue.pending();
    await assert.rejects(
      queue.answer(request.id, { answer: "c" }, { by: "alice" }),
      (error: SyscallError) =>
        error.code === "EINVAL" && error.message === 'Cannot answer "Pick": expected one of a, b',
    );
    await assert.rejects(
      queue.answer(request.id, { decision: "allow_once" }, { by: "alice" }),
      (error: SyscallError) =>
        error.code === "EINVAL" &&
        error.message ===
          `Cannot answer request "${request.id}": it is a question, not a permission`,
    );
    assert.deepEqual(host.completed, []);
    assert.equal((await queue.pending()).length, 1);
  });
});

Deno.test("allow_once grants one use bound to the asked operation, and the call runs again", async () => {
  await withQueue(async (queue, host) => {
    const pid = await host.asker();
    const id = await askToWrite(queue, pid, 7);
    const request = (await queue.get(id))!;
    assert.equal(request.operation?.args, '{"path":"notes.txt","content":"hello"}');
    assert.equal(request.operation?.capability, "fs:write:/ws/notes.txt");
    assert.deepEqual(await host.caps.list(pid, 5_000), []);

    const answered = await queue.answer(id, { decision: "allow_once", argsDigest: "digest-7" }, {
      by: "alice",
    });
    assert.deepEqual(host.completed, [{ pid, seq: 7, outcome: { retry: true } }]);
    const caps = await host.caps.list(pid, 5_000);
    assert.equal(caps.length, 1);
    assert.equal(caps[0].id, answered.answer?.capability);
    assert.equal(caps[0].uses, 1);
    assert.equal(caps[0].boundTo, "digest-7");
    assert.equal(caps[0].grantedBy, `human:${id}`);
    assert.equal(caps[0].scope, "/ws/notes.txt");
  });
});

Deno.test("deny_always fails the call, audits the denial and adds a policy rule", async () => {
  await withQueue(async (queue, host) => {
    const pid = await host.asker();
    const id = await askToWrite(queue, pid, 2);
    await queue.answer(id, { decision: "deny_always" }, { by: "bob" });

    const [{ outcome }] = host.completed;
    assert.ok("ok" in outcome && !outcome.ok);
    assert.equal(outcome.error.code, "EPERM");
    assert.match(outcome.error.message, /^Cannot fs\.write .*notes\.txt.*: denied by bob$/);
    assert.deepEqual(await host.caps.list(pid, 5_000), []);
    assert.equal(host.audited.length, 1);
    assert.equal(host.audited[0].decision, "deny");
    assert.equal(host.audited[0].approval, id);
    assert.equal(host.audited[0].syscall, "fs.write");
    const { policy } = await host.processes.require(pid);
    assert.deepEqual(policy.map((r) => [r.pattern, r.decision, r.source]), [
      ["fs:write:/ws/notes.txt", "deny", `human:${id}`],
    ]);
  });
});

Deno.test("an approval naming another operation, or a second answer, is refused and grants nothing", async () => {
  await withQueue(async (queue, host) => {
    const pid = await host.asker();
    const id = await askToWrite(queue, pid, 4);
    await assert.rejects(
      queue.answer(id, { decision: "allow_always", argsDigest: "digest-of-else" }, { by: "eve" }),
      (error: SyscallError) =>
        error.code === "EINVAL" &&
        error.message ===
          `Cannot answer request "${id}": the approval names a different operation than the one asked`,
    );
    assert.deepEqual(await host.caps.list(pid, 5_000), []);
    assert.equal((await queue.pending()).length, 1);

    await queue.answer(id, { decision: "deny_once" }, { by: "alice" });
    await assert.rejects(
      queue.answer(id, { decision: "allow_always" }, { by: "eve" }),
      (error: SyscallError) =>
        error.code === "EEXIST" &&
        error.message === `Cannot answer request "${id}": it was already answered`,
    );
    assert.deepEqual(await host.caps.list(pid, 5_000), []);
    assert.equal(host.completed.length, 1);
  });
});

Deno.test("an approval for an asker that no longer waits grants nothing and closes the request", async () => {
  await withQueue(async (queue, host) => {
    const pid = await host.asker();
    const id = await askToWrite(queue, pid, 9);
    // The asker ended (killed, restored) and its wait record is gone.
    await host.store.kv.delete(["journal", pid, 9]);
    await assert.rejects(
      queue.answer(id, { decision: "allow_always" }, { by: "alice" }),
      (error: SyscallError) =>
        error.code === "ENOENT" &&
        error.message === `Cannot answer request "${id}": process ${pid} no longer waits for it`,
    );
    assert.deepEqual(await host.caps.list(pid, 5_000), []);
    assert.equal((await queue.get(id))?.state, "answered");
    assert.deepEqual(await queue.pending(), []);
  });
});

Deno.test("a permission request whose arguments are too long to show a human is refused", async () => {
  await withQueue(async (queue, host) => {
    const pid = await host.asker();
    await assert.rejects(
      queue.permission(writeCall(pid, 1), {
        name: "fs.write",
        args: { path: "x".repeat(40_000), content: "" },
        capability: WRITE,
      }),
      (error: SyscallError) => error.code === "EPERM",
    );
    assert.deepEqual(host.parked, []);
    assert.deepEqual(await queue.pending(), []);
  });
});

Deno.test("a responder answers a request as it arrives", async () => {
  await withQueue(async (queue, host) => {
    const pid = await host.asker();
    const answered = new Promise<void>((resolve) => host.onComplete = resolve);
    await queue.file(
      { pid, seq: 2, name: "human.ask", argsDigest: "q", image: "t@1" },
      { kind: "question", question: { text: "Go on?", kind: "boolean" } },
    );
    await answered;
    assert.deepEqual(host.completed, [{ pid, seq: 2, outcome: { ok: true, value: true } }]);
    assert.deepEqual(await queue.pending(), []);
  }, new ScriptedHuman({ answers: [{ answer: "yes" }] }));
});
