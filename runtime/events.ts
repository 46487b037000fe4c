/**
 * Topic events (`event.emit`, `event.wait`, and events posted from outside
 * through the library or HTTP): ordered per topic, durable in KV, and waking
 * every process parked on the topic.
 *
 * Keys: `["topic_seq", topic]` the counter, `["topic_event", topic, seq]`.
 *
 * Events are kept for good: one a process emits is charged to its
 * `storageBytes` quota (`runtime/storage_quota.ts`) in the commit that
 * stores it, and refused with `EBUDGET` over it.
 *
 * {@link TopicEvents.preparePost} prepares a post as a change of the store
 * for a commit of the caller's: the broker commits an `event.emit` with the
 * call's journal and audit records.
 *
 * @module
 */

import { SyscallError } from "../broker/errors.ts";
import { commitStoreChange, type StoreChange } from "../broker/store_change.ts";
import type { StorageQuotas } from "./storage_quota.ts";
import type { Store } from "./store.ts";
import type { Waits } from "./waits.ts";

/** One event on a topic. */
export interface TopicEvent {
  /** The topic the event was posted on. */
  topic: string;
  /** The event's position on its topic, counting from 1. */
  seq: number;
  /** The event's payload (`null` when none was given). */
  data: unknown;
  /** The emitting pid, or null when posted from outside. */
  from: number | null;
  /** When the event was posted, in ms since the epoch (kernel clock). */
  at: number;
}

/** What the topic events need from the kernel. */
export interface TopicEventsKernel {
  /** The store the events are kept in. */
  readonly store: Pick<Store, "kv">;
  /** The storage quotas an emitted event is charged to. */
  readonly quotas: Pick<StorageQuotas, "prepare">;
  /** The waits, to wake the processes waiting on a topic. */
  readonly waits: Pick<Waits, "complete">;
  /** The clock. */
  readonly now: () => number;
}

const MAX_DATA_CHARS = 60_000;

/**
 * Topic events of a kernel.
 *
 * @example
 * ```ts ignore
 * await kernel.events.post("deploy.done", { ok: true }, null);
 * ```
 */
export class TopicEvents {
  #kernel: TopicEventsKernel;

  /** Events of `kernel`. */
  constructor(kernel: TopicEventsKernel) {
    this.#kernel = kernel;
  }

  /** Appends an event and wakes the processes waiting on its topic. */
  post(topic: string, data: unknown, from: number | null): Promise<{ seq: number }> {
    return commitStoreChange(this.#kernel.store.kv, () => this.preparePost(topic, data, from));
  }

  /**
   * Prepares {@link post} as a change of the store: the event takes the
   * topic's next seq, checked against the counter as read now, and is
   * charged to the emitting process (`EBUDGET` over its quota). Its `wake`
   * wakes the processes waiting on the topic.
   */
  async preparePost(
    topic: string,
    data: unknown,
    from: number | null,
  ): Promise<StoreChange<{ seq: number }>> {
    const kv = this.#kernel.store.kv;
    if (JSON.stringify(data ?? null).length > MAX_DATA_CHARS) {
      throw new SyscallError(
        "EINVAL",
        `Cannot emit on "${topic}": data is over ${MAX_DATA_CHARS} bytes`,
      );
    }
    const counter = await kv.get<number>(["topic_seq", topic]);
    const seq = (counter.value ?? 0) + 1;
    const event: TopicEvent = { topic, seq, data: data ?? null, from, at: this.#kernel.now() };
    const charge = from === null ? undefined : await this.#kernel.quotas.prepare(
      [{ pid: from, bytes: JSON.stringify(event).length }],
      `Cannot emit on "${topic}"`,
    );
    return {
      result: { seq },
      apply: (op) => {
        op.check(counter).set(["topic_seq", topic], seq).set(["topic_event", topic, seq], event);
        charge?.(op);
      },
      wake: () => this.#wake(event),
    };
  }

  /** Completes the wait of every process waiting on the topic of `event`, with it. */
  async #wake(event: TopicEvent): Promise<void> {
    const kv = this.#kernel.store.kv;
    for await (const waiter of kv.list({ prefix: ["wait_event", event.topic] })) {
      const [, , pid, seq] = waiter.key as [string, string, number, number];
      await this.#kernel.waits.complete(pid, seq, { ok: true, value: event });
    }
  }

  /** The seq of the newest event on a topic (0 when none). */
  async latestSeq(topic: string): Promise<number> {
    return (await this.#kernel.store.kv.get<number>(["topic_seq", topic])).value ?? 0;
  }

  /** The first event on `topic` after `afterSeq`. */
  async firstAfter(topic: string, afterSeq: number): Promise<TopicEvent | undefined> {
    const iter = this.#kernel.store.kv.list<TopicEvent>({
      start: ["topic_event", topic, afterSeq + 1],
      end: ["topic_event", topic, Number.MAX_SAFE_INTEGER],
    }, { limit: 1 });
    for await (const entry of iter) return entry.value;
    return undefined;
  }
}
