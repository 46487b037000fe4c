import assert from "node:assert/strict";
import type { SyscallError } from "../broker/errors.ts";
import { Mailbox, type MailboxKernel, type MailMessage } from "./mailbox.ts";
import { type Budget, ProcessTable } from "./process_table.ts";
import { StorageQuotas } from "./storage_quota.ts";
import type { WaitOutcome } from "./waits.ts";
import { newProcess, withMemoryKv } from "./_fixtures.ts";

/**
 * What the mailboxes see of a kernel: real storage quotas over the store,
 * a fixed clock, and waits that complete a pending wait (a `wait` record)
 * with the mailbox's own check and writes in one commit, as `Waits` does.
 */
class MailHost implements MailboxKernel {
  readonly store: { kv: Deno.Kv };
  readonly processes: ProcessTable;
  readonly quotas: StorageQuotas;
  readonly now = (): number => 7_000;
  /** Every wait completed, in order. */
  readonly completed: { pid: number; seq: number; outcome: WaitOutcome }[] = [];
  readonly waits: MailboxKernel["waits"] = {
    complete: async (pid, seq, outcome, options = {}) => {
      const kv = this.store.kv;
      const wait = await kv.get<{ phase: string }>(["journal", pid, seq]);
      if (wait.value?.phase !== "wait") return false;
      const op = kv.atomic().check(wait).set(["journal", pid, seq], { phase: "done" })
        .delete(["wait_mail", pid, seq]);
      if (options.check) op.check(options.check);
      options.extra?.(op);
      if (!(await op.commit()).ok) return false;
      this.completed.push({ pid, seq, outcome });
      return true;
    },
  };

  constructor(kv: Deno.Kv) {
    this.store = { kv };
    this.processes = new ProcessTable(kv);
    this.quotas = new StorageQuotas(kv, this.processes);
  }

  /** A process with `budget`: a sender whose messages are charged to it. */
  async process(budget: Budget = {}): Promise<number> {
    return (await this.processes.create(newProcess({ budget }))).pid;
  }

  /** Parks `pid` in `msg.recv` at journal seq `seq`, as `Waits.park` leaves it. */
  async receiving(pid: number, seq: number): Promise<void> {
    await this.store.kv.atomic().set(["journal", pid, seq], { phase: "wait" })
      .set(["wait_mail", pid, seq], true).commit();
  }
}

async function withMailbox(
  body: (mailbox: Mailbox, host: MailHost) => Promise<void>,
): Promise<void> {
  await withMemoryKv((kv) => {
    const host = new MailHost(kv);
    return body(new Mailbox(host), host);
  });
}

const bytesOf = (message: MailMessage): number => JSON.stringify(message).length;

Deno.test("messages are taken oldest first, each exactly once", async () => {
  await withMailbox(async (mailbox, host) => {
    const to = await host.process();
    assert.deepEqual(await mailbox.send(to, "a", null), { seq: 1 });
    assert.deepEqual(await mailbox.send(to, "b", null), { seq: 2 });
    assert.deepEqual(await mailbox.send(to, undefined, null), { seq: 3 });

    assert.deepEqual(await mailbox.take(to), { seq: 1, from: null, data: "a", at: 7_000 });
    const [x, y] = await Promise.all([mailbox.take(to), mailbox.take(to)]);
    assert.deepEqual([x?.data, y?.data].sort(), ["b", null]);
    assert.equal(await mailbox.take(to), undefined);
    assert.equal(await mailbox.take(to + 1), undefined);
  });
});

Deno.test("a message sent to a receiver blocked in msg.recv completes its wait and leaves the mailbox", async () => {
  await withMailbox(async (mailbox, host) => {
    const to = await host.process();
    const other = await host.process();
    await host.receiving(to, 4);

    await mailbox.send(other, "not for it", null);
    assert.deepEqual(host.completed, []);

    await mailbox.send(to, { hello: "world" }, null);
    assert.deepEqual(host.completed, [{
      pid: to,
      seq: 4,
      outcome: { ok: true, value: { seq: 1, from: null, data: { hello: "world" }, at: 7_000 } },
    }]);
    assert.equal(await mailbox.take(to), undefined);
    assert.equal((await mailbox.take(other))?.data, "not for it");

    // The wait is over: the next message stays in the mailbox.
    await mailbox.send(to, "next", null);
    assert.equal(host.completed.length, 1);
    assert.equal((await mailbox.take(to))?.data, "next");
  });
});

Deno.test("a receiver that parks after the message arrived gets it on delivery", async () => {
  await withMailbox(async (mailbox, host) => {
    const to = await host.process();
    await mailbox.send(to, "early", null);
    await host.receiving(to, 2);
    assert.equal(await mailbox.deliver(to, 2), true);
    assert.equal((host.completed[0].outcome as { value: MailMessage }).value.data, "early");
    assert.equal(await mailbox.deliver(to, 2), false);
    assert.equal(await mailbox.take(to), undefined);
  });
});

Deno.test("a process's message is charged to it until it is taken or delivered", async () => {
  await withMailbox(async (mailbox, host) => {
    const from = await host.process({ storageBytes: 10_000 });
    const to = await host.process();
    await mailbox.send(to, "x".repeat(100), from);
    const stored = { seq: 1, from, data: "x".repeat(100), at: 7_000 };
    assert.equal((await host.quotas.usage(from)).storageBytes, bytesOf(stored));
    assert.equal((await host.quotas.usage(to)).storageBytes, 0);

    assert.deepEqual(await mailbox.take(to), stored);
    assert.equal((await host.quotas.usage(from)).storageBytes, 0);

    await host.receiving(to, 3);
    await mailbox.send(to, "y", from);
    assert.equal(host.completed.length, 1);
    assert.equal((await host.quotas.usage(from)).storageBytes, 0);
  });
});

Deno.test("a message over the sender's storage quota is refused and nothing is stored", async () => {
  await withMailbox(async (mailbox, host) => {
    const from = await host.process({ storageBytes: 50 });
    const to = await host.process();
    await host.receiving(to, 1);
    await assert.rejects(
      mailbox.send(to, "x".repeat(100), from),
      (error: SyscallError) =>
        error.code === "EBUDGET" && error.message.startsWith(`Cannot send to process ${to}:`),
    );
    assert.equal((await host.quotas.usage(from)).storageBytes, 0);
    assert.deepEqual(host.completed, []);
    assert.equal(await mailbox.take(to), undefined);
    assert.deepEqual(await mailbox.send(to, "fits", null), { seq: 1 });
  });
});

Deno.test("a message whose data is too large is refused before anything is stored", async () => {
  await withMailbox(async (mailbox, host) => {
    const to = await host.process();
    await assert.rejects(
      mailbox.send(to, "x".repeat(60_000), null),
      (error: SyscallError) =>
        error.code === "EINVAL" &&
        error.message === `Cannot send to process ${to}: data is over 60000 bytes`,
    );
    assert.equal(await mailbox.take(to), undefined);
  });
});
