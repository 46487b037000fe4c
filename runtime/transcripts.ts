/**
 * Transcripts: the messages each process exchanged with the model, kept
 * append-only under `["transcript", pid, i]` (chunked) with their count
 * under `["transcript_len", pid]`, each reply's usage and exit flag under
 * `["transcript_reply", pid, i]`, and charged to the process's
 * `storageBytes` quota in the commit that adds them.
 *
 * A `model.complete` call may name the start of its conversation by
 * reference instead of sending it: `{ length, digest }`, the first
 * `length` messages of the caller's transcript and their conversation
 * digest (`nextConversationDigest` in `guest/cell_protocol.ts`). The host
 * checks the reference against what it stored, expands it for the model
 * and appends only the messages after it, so a step costs its new messages,
 * not the history. The host keeps the transcripts it recently used in
 * memory, with the digest of every prefix, so checking a reference and
 * expanding it read no history from the store.
 *
 * @module
 */

import { SyscallError } from "../broker/errors.ts";
import { writeChunked } from "./chunks.ts";
import { nextConversationDigest } from "./guest/cell_protocol.ts";
import { type Message, messageTokenBound, type ModelReply } from "./model.ts";
import type { StorageQuotas } from "./storage_quota.ts";

/** One transcript entry: a message exchanged with the model. */
export type TranscriptEntry = Message;

/** The first `length` messages of a transcript, named by their conversation digest. */
export interface TranscriptRef {
  /** How many messages of the transcript. */
  length: number;
  /** Their conversation digest (`""` for none). */
  digest: string;
}

/** A `model.complete` request's conversation, as the caller sent it. */
export interface ConversationRequest {
  /** The conversation, or with `transcript` the messages after the ones it references. */
  messages: readonly Message[];
  /** The start of the conversation, by reference to the caller's transcript. */
  transcript?: TranscriptRef;
}

/** A conversation resolved against the caller's transcript. */
export interface Conversation {
  /** The whole conversation, for the model. */
  messages: readonly Message[];
  /** The input token bound of the messages (the sum of `messageTokenBound`). */
  inputBound: number;
  /**
   * The reply the transcript already holds for exactly this conversation:
   * the call was answered and recorded, but its journal record was lost
   * (the host stopped first). The call answers with it and asks the model
   * nothing.
   */
  recorded?: ModelReply & { transcript: TranscriptRef };
}

/** What the transcript keeps of a reply besides its message. */
interface _ReplyMeta {
  usage: ModelReply["usage"];
  exit?: boolean;
}

/** A transcript held in memory, mirroring the store. */
interface _Held {
  messages: Message[];
  /** `digests[i]`: the conversation digest of the first `i` messages. */
  digests: string[];
  /** `bounds[i]`: the input token bound of the first `i` messages. */
  bounds: number[];
  /** JSON characters of the messages, for the memory bound. */
  chars: number;
}

/** An empty transcript in memory. */
function _empty(): _Held {
  return { messages: [], digests: [""], bounds: [0], chars: 0 };
}

/** Most JSON characters of transcripts held in memory at once. */
const HELD_CHARS = 16 * 2 ** 20;

/**
 * The transcripts of a store.
 *
 * @example
 * ```ts ignore
 * const transcripts = new Transcripts(kv, quotas);
 * await transcripts.record(pid, { messages: [{ role: "user", content: "hi" }] }, reply);
 * console.log(await transcripts.read(pid));
 * ```
 */
export class Transcripts {
  #kv: Deno.Kv;
  #quotas: Pick<StorageQuotas, "prepare">;
  /** Transcripts in memory, least recently used first. */
  #held = new Map<number, _Held>();

  /** Transcripts in `kv`, charged to `quotas`. */
  constructor(kv: Deno.Kv, quotas: Pick<StorageQuotas, "prepare">) {
    this.#kv = kv;
    this.#quotas = quotas;
  }

  /**
   * The whole conversation of a `model.complete` request of process `pid`.
   * Without a reference, the messages as sent. With one, it must name the
   * start of the stored transcript exactly (`EINVAL` otherwise: nothing is
   * sent to the model); the conversation is those stored messages followed
   * by the ones sent. When the transcript already goes on past the
   * reference, only with the very messages sent and a reply recorded after
   * them, that reply is the answer (`recorded`); other messages there are
   * refused with `EINVAL`: the transcript holds another conversation.
   */
  async resolve(pid: number, request: ConversationRequest): Promise<Conversation> {
    const sent = request.messages;
    const sentBound = sent.reduce((sum, m) => sum + messageTokenBound(m), 0);
    const ref = request.transcript;
    if (!ref) return { messages: sent, inputBound: sentBound };
    const held = await this.#hold(pid);
    const stored = held.messages.length;
    if (ref.length > stored || held.digests[ref.length] !== ref.digest) {
      throw new SyscallError(
        "EINVAL",
        `Cannot call model with transcript reference ${
          JSON.stringify(ref)
        }: process ${pid}'s transcript does not start with that conversation (it holds ${stored} messages)`,
      );
    }
    const messages = held.messages.slice(0, ref.length).concat(sent);
    const inputBound = held.bounds[ref.length] + sentBound;
    if (ref.length === stored) return { messages, inputBound };
    // The transcript goes on past the reference: the exchange of a call the
    // journal lost, which answers again as it did.
    let digest = ref.digest;
    for (const message of sent) digest = await nextConversationDigest(digest, message);
    const at = ref.length + sent.length;
    if (at < stored && held.digests[at] === digest && held.messages[at].role === "assistant") {
      const meta = (await this.#kv.get<_ReplyMeta>(["transcript_reply", pid, at])).value;
      if (meta) {
        const message = structuredClone(held.messages[at]) as ModelReply["message"];
        const transcript = { length: at + 1, digest: held.digests[at + 1] };
        return { messages, inputBound, recorded: { message, ...meta, transcript } };
      }
    }
    throw new SyscallError(
      "EINVAL",
      `Cannot call model with transcript reference ${
        JSON.stringify(ref)
      }: process ${pid}'s transcript goes on past it with other messages (it holds ${stored})`,
    );
  }

  /**
   * Appends an exchange of process `pid` to its transcript: with a
   * reference, the messages sent and the reply (`EINVAL` when the
   * transcript changed since {@link resolve} checked the reference);
   * without one, the messages sent past the ones stored, then the reply.
   * Charged to its `storageBytes` quota in the same commit (`EBUDGET`, and
   * nothing recorded, over the quota). Returns the reference to the
   * conversation through the reply when the transcript holds exactly it.
   */
  async record(
    pid: number,
    request: ConversationRequest,
    reply: ModelReply,
  ): Promise<TranscriptRef | undefined> {
    const countKey = ["transcript_len", pid];
    const ref = request.transcript;
    const meta: _ReplyMeta = reply.exit === undefined
      ? { usage: reply.usage }
      : { usage: reply.usage, exit: reply.exit };
    for (;;) {
      const entry = await this.#kv.get<number>(countKey);
      const stored = entry.value ?? 0;
      if (ref && stored !== ref.length) {
        throw new SyscallError(
          "EINVAL",
          `Cannot record the transcript of process ${pid}: it changed while the model answered`,
        );
      }
      // What a reload from the store would give back.
      const fresh = JSON.parse(
        JSON.stringify([
          ...(ref ? request.messages : request.messages.slice(stored)),
          reply.message,
        ]),
      ) as Message[];
      const text = JSON.stringify(fresh);
      const charge = await this.#quotas.prepare(
        [{ pid, bytes: text.length + JSON.stringify(meta).length }],
        `Cannot record the transcript of process ${pid}`,
      );
      const length = stored + fresh.length;
      const op = this.#kv.atomic().check(entry).set(countKey, length);
      fresh.forEach((message, i) => writeChunked(op, ["transcript", pid, stored + i], message));
      op.set(["transcript_reply", pid, length - 1], meta);
      charge(op);
      if (!(await op.commit()).ok) continue;
      // Only a transcript that is exactly this conversation can be referenced.
      const exact = ref !== undefined || stored === 0;
      let held = this.#held.get(pid);
      if (!held && stored === 0) held = this.#keep(pid, _empty());
      if (held?.messages.length === stored) {
        await this.#append(held, fresh, text.length);
        return exact ? { length, digest: held.digests[length] } : undefined;
      }
      this.#drop(pid);
      return exact ? { length, digest: (await this.#hold(pid)).digests[length] } : undefined;
    }
  }

  /**
   * The transcript of a process: the messages exchanged with the model, in
   * order; only its first `count` when given.
   */
  async read(pid: number, count?: number): Promise<TranscriptEntry[]> {
    const held = await this.#hold(pid);
    return structuredClone(held.messages.slice(0, count ?? held.messages.length));
  }

  /**
   * The checkpoint state the built-in agent loop resumes from. The loop
   * saves `{ step, transcript: { length, digest }, tail, jit }`: `length`
   * counts the messages of the conversation the host recorded, `digest` is
   * their conversation digest, `tail` the messages after them. This gives
   * back `{ step, messages, transcript, jit }`, the recorded messages
   * followed by the tail, and the reference to the recorded ones (its next
   * `model.complete` may send it). A state that holds `messages` (as the
   * loop once saved) is given back as it is. Undefined when the stored
   * transcript does not start with the conversation referenced (too few
   * messages, or other ones): resuming from it would go on from another
   * conversation than the loop's own.
   */
  async resumeAgent(pid: number, state: unknown): Promise<unknown> {
    if (typeof state !== "object" || state === null || !("transcript" in state)) return state;
    const { transcript, tail, ...rest } = state as { transcript: unknown; tail?: unknown };
    const { length, digest } = (transcript ?? {}) as { length?: unknown; digest?: unknown };
    if (
      !Number.isSafeInteger(length) || (length as number) < 0 || typeof digest !== "string" ||
      !Array.isArray(tail)
    ) return undefined;
    const held = await this.#hold(pid);
    if ((length as number) > held.messages.length || held.digests[length as number] !== digest) {
      return undefined;
    }
    const prefix = structuredClone(held.messages.slice(0, length as number));
    return { ...rest, messages: [...prefix, ...tail], transcript: { length, digest } };
  }

  /** Lets go of the transcript of `pid` held in memory (its process has ended). */
  forget(pid: number): void {
    this.#drop(pid);
  }

  /** The transcript of `pid` in memory, read from the store when it is not (or no longer matches). */
  async #hold(pid: number): Promise<_Held> {
    const stored = (await this.#kv.get<number>(["transcript_len", pid])).value ?? 0;
    const held = this.#held.get(pid);
    if (held?.messages.length === stored) return this.#keep(pid, held);
    this.#drop(pid);
    // One scan of the transcript's keys: a message's chunks, then its chunk count.
    const parts = new Map<number, string[]>();
    const counts = new Map<number, number>();
    const iter = this.#kv.list<string | number>({
      start: ["transcript", pid, 0],
      end: ["transcript", pid, stored],
    }, { batchSize: 1000 });
    for await (const { key, value } of iter) {
      const [, , i, part] = key as [string, number, number, number | string];
      if (part === "n") counts.set(i, value as number);
      else parts.set(i, [...(parts.get(i) ?? []), value as string]);
    }
    const loaded = _empty();
    const messages: Message[] = [];
    let chars = 0;
    for (let i = 0; i < stored; i++) {
      const chunks = parts.get(i);
      if (!chunks || chunks.length !== counts.get(i)) continue;
      const text = chunks.join("");
      chars += text.length;
      messages.push(JSON.parse(text));
    }
    await this.#append(loaded, messages, chars);
    return this.#keep(pid, loaded);
  }

  /** Adds `messages` (`chars` JSON characters) to `held`, with their digests and bounds. */
  async #append(held: _Held, messages: readonly Message[], chars: number): Promise<void> {
    for (const message of messages) {
      const i = held.messages.length;
      held.digests.push(await nextConversationDigest(held.digests[i], message));
      held.bounds.push(held.bounds[i] + messageTokenBound(message));
      held.messages.push(message);
    }
    held.chars += chars;
    this.#evict();
  }

  /** Marks `held` as the most recently used transcript of `pid`. */
  #keep(pid: number, held: _Held): _Held {
    this.#held.delete(pid);
    this.#held.set(pid, held);
    this.#evict();
    return held;
  }

  #drop(pid: number): void {
    this.#held.delete(pid);
  }

  /** Lets go of the least recently used transcripts past the memory bound (never the newest). */
  #evict(): void {
    let chars = 0;
    for (const held of this.#held.values()) chars += held.chars;
    for (const [pid, held] of this.#held) {
      if (chars <= HELD_CHARS || this.#held.size <= 1) return;
      this.#held.delete(pid);
      chars -= held.chars;
    }
  }
}
