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
/** Most posts from outside committed together on one topic. */
const POST_BATCH = 64;

/** A post waiting for its turn. */
interface _Post {
  data: unknown;
  from: number | null;
  resolve(result: { seq: number }): void;
  reject(error: unknown): void;
}

/** `EINVAL` for event data over {@link MAX_DATA_CHARS}. */
function _requireDataSize(topic: string, data: unknown): void {
  if (JSON.stringify(data ?? null).length > MAX_DATA_CHARS) {
    throw new SyscallError(
      "EINVAL",
      `Cannot emit on "${topic}": data is over ${MAX_DATA_CHARS} bytes`,
    );
  }
}

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
  /** Per topic, the posts waiting for their turn to commit (see {@link post}). */
  #posting = new Map<string, _Post[]>();

  /** Events of `kernel`. */
  constructor(kernel: TopicEventsKernel) {
    this.#kernel = kernel;
  }

  /**
   * Appends an event and wakes the processes waiting on its topic. Posts
   * to one topic wait for their turn and commit together: each takes the
   * topic's next seq, checked against its counter, so side by side all but
   * one would fail and prepare again, round after round. Posts from
   * outside (`from` null) share a commit, up to {@link POST_BATCH}; one
   * from a process commits alone (it is charged to the process's quota).
   */
  post(topic: string, data: unknown, from: number | null): Promise<{ seq: number }> {
    return new Promise((resolve, reject) => {
      // Refused before it waits: it must not fail the posts it would commit with.
      _requireDataSize(topic, data);
      const queue = this.#posting.get(topic);
      const post = { data, from, resolve, reject };
      if (queue) queue.push(post);
      else {
        this.#posting.set(topic, [post]);
        this.#drain(topic);
      }
    });
  }

  /** Commits the posts waiting on `topic`, in turns, until none waits. */
  async #drain(topic: string): Promise<void> {
    const queue = this.#posting.get(topic)!;
    while (queue.length > 0) {
      const fromProcess = queue.findIndex((post) => post.from !== null);
      const size = fromProcess === 0
        ? 1
        : Math.min(POST_BATCH, fromProcess < 0 ? queue.length : fromProcess);
      const turn = queue.splice(0, size);
      try {
        const seqs = await commitStoreChange(
          this.#kernel.store.kv,
          () => this.#preparePosts(topic, turn),
        );
        turn.forEach((post, i) => post.resolve({ seq: seqs[i] }));
      } catch (error) {
        for (const post of turn) post.reject(error);
      }
    }
    this.#posting.delete(topic);
  }

  /** {@link preparePost} for several posts: one read of the counter, one commit. */
  async #preparePosts(
    topic: string,
    posts: readonly _Post[],
  ): Promise<StoreChange<number[]>> {
    if (posts.length === 1) {
      const change = await this.preparePost(topic, posts[0].data, posts[0].from);
      return { ...change, result: [change.result.seq] };
    }
    const kv = this.#kernel.store.kv;
    const counter = await kv.get<number>(["topic_seq", topic]);
    const first = (counter.value ?? 0) + 1;
    const at = this.#kernel.now();
    const events: TopicEvent[] = posts.map((post, i) => ({
      topic,
      seq: first + i,
      data: post.data ?? null,
      from: post.from,
      at,
    }));
    return {
      result: events.map((event) => event.seq),
      apply: (op) => {
        op.check(counter).set(["topic_seq", topic], first + events.length - 1);
        for (const event of events) op.set(["topic_event", topic, event.seq], event);
      },
      // A process waiting on the topic wakes with the first event after its wait: the batch's first.
      wake: () => this.#wake(events[0]),
    };
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
    _requireDataSize(topic, data);
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
