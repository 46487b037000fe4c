/**
 * Process mailboxes (`msg.send`, `msg.recv`): ordered, durable, and each
 * message taken exactly once, in the same commit that completes the
 * receiver's wait.
 *
 * Keys: `["mail_seq", pid]` the counter, `["mail", pid, seq]` a message.
 *
 * A message from a process is charged to the sender's `storageBytes` quota
 * (`runtime/storage_quota.ts`) in the commit that stores it, and given back
 * in the commit that takes it: a sender cannot fill the store with mail
 * nobody reads.
 *
 * {@link Mailbox.prepareSend} prepares a message as a change of the store
 * for a commit of the caller's: the broker commits a `msg.send` with the
 * call's journal and audit records.
 *
 * @module
 */

import { SyscallError } from "../broker/errors.ts";
import { commitStoreChange, type StoreChange } from "../broker/store_change.ts";
import type { StorageQuotas } from "./storage_quota.ts";
import type { Store } from "./store.ts";
import type { Waits } from "./waits.ts";

/** A message in a mailbox. */
export interface MailMessage {
  /** The message's position in the recipient's mailbox, counting from 1. */
  seq: number;
  /** The sending pid, or null when sent from outside. */
  from: number | null;
  /** The message's payload (`null` when none was given). */
  data: unknown;
  /** When the message was sent, in ms since the epoch (kernel clock). */
  at: number;
}

/** What the mailboxes need from the kernel. */
export interface MailboxKernel {
  /** The store the mailboxes are kept in. */
  readonly store: Pick<Store, "kv">;
  /** The storage quotas a process's messages are charged to. */
  readonly quotas: Pick<StorageQuotas, "prepare">;
  /** The waits, to complete a receiver's `msg.recv` with its message. */
  readonly waits: Pick<Waits, "complete">;
  /** The clock. */
  readonly now: () => number;
}

const MAX_DATA_CHARS = 60_000;

/**
 * Mailboxes of a kernel.
 *
 * @example
 * ```ts ignore
 * await kernel.mailbox.send(7, { hello: "world" }, 1);
 * ```
 */
export class Mailbox {
  #kernel: MailboxKernel;

  /** Mailboxes of `kernel`. */
  constructor(kernel: MailboxKernel) {
    this.#kernel = kernel;
  }

  /** Appends a message to `to`'s mailbox and wakes it if it waits. */
  send(to: number, data: unknown, from: number | null): Promise<{ seq: number }> {
    return commitStoreChange(this.#kernel.store.kv, () => this.prepareSend(to, data, from));
  }

  /**
   * Prepares {@link send} as a change of the store: the message takes the
   * mailbox's next seq, checked against the counter as read now, and is
   * charged to the sender (`EBUDGET` over its quota). Its `wake` hands the
   * oldest message to `to` when it waits for one.
   */
  async prepareSend(
    to: number,
    data: unknown,
    from: number | null,
  ): Promise<StoreChange<{ seq: number }>> {
    const kv = this.#kernel.store.kv;
    if (JSON.stringify(data ?? null).length > MAX_DATA_CHARS) {
      throw new SyscallError(
        "EINVAL",
        `Cannot send to process ${to}: data is over ${MAX_DATA_CHARS} bytes`,
      );
    }
    const counter = await kv.get<number>(["mail_seq", to]);
    const seq = (counter.value ?? 0) + 1;
    const message: MailMessage = { seq, from, data: data ?? null, at: this.#kernel.now() };
    const charge = await this.#charge(message, 1, `Cannot send to process ${to}`);
    return {
      result: { seq },
      apply: (op) => {
        op.check(counter).set(["mail_seq", to], seq).set(["mail", to, seq], message);
        charge?.(op);
      },
      wake: async () => {
        for await (const waiter of kv.list({ prefix: ["wait_mail", to] })) {
          await this.deliver(to, waiter.key[2] as number);
        }
      },
    };
  }

  /** Takes the oldest message, if any (for a `msg.recv` that need not wait). */
  async take(pid: number): Promise<MailMessage | undefined> {
    const kv = this.#kernel.store.kv;
    for (;;) {
      const entry = await this.#oldest(pid);
      if (!entry) return undefined;
      const op = kv.atomic().check(entry).delete(entry.key);
      (await this.#charge(entry.value, -1, "Cannot take a message"))?.(op);
      if ((await op.commit()).ok) return entry.value;
    }
  }

  /** Completes the wait `(pid, seq)` with the oldest message, taking it in the same commit. */
  async deliver(pid: number, seq: number): Promise<boolean> {
    for (;;) {
      const entry = await this.#oldest(pid);
      if (!entry) return false;
      const refund = await this.#charge(entry.value, -1, "Cannot take a message");
      const done = await this.#kernel.waits.complete(pid, seq, { ok: true, value: entry.value }, {
        check: entry,
        extra: (op) => {
          op.delete(entry.key);
          refund?.(op);
        },
      });
      if (done) return true;
      // Either the wait is over or someone took the message: look again.
      const still = await this.#kernel.store.kv.get(["journal", pid, seq]);
      if ((still.value as { phase?: string } | null)?.phase !== "wait") return false;
    }
  }

  /**
   * The mutations that charge (`sign` 1) or give back (`sign` -1) a
   * message's bytes to its sender's storage quota; none for an operator's.
   */
  async #charge(
    message: MailMessage,
    sign: 1 | -1,
    action: string,
  ): Promise<((op: Deno.AtomicOperation) => void) | undefined> {
    if (message.from === null) return undefined;
    const bytes = sign * JSON.stringify(message).length;
    return await this.#kernel.quotas.prepare([{ pid: message.from, bytes }], action);
  }

  async #oldest(pid: number): Promise<Deno.KvEntry<MailMessage> | undefined> {
    const iter = this.#kernel.store.kv.list<MailMessage>({ prefix: ["mail", pid] }, { limit: 1 });
    for await (const entry of iter) return entry;
    return undefined;
  }
}
