/**
 * Transcripts: the messages each process exchanged with the model, kept
 * append-only under `["transcript", pid, i]` (chunked) with their count
 * under `["transcript_len", pid]`, each reply's usage and exit flag under
 * `["transcript_reply", pid, i]`, and charged to the process's
 * `storageBytes` quota in the commit that adds them: the commit of the
 * `model.complete` call's journal record ({@link Transcripts.prepareRecord}).
 *
 * A `model.complete` call may name the start of its conversation by
 * reference instead of sending it: `{ length, digest }`, the first
 * `length` messages of the caller's transcript and their conversation
 * digest (`nextConversationDigest` in `guest/cell_protocol.ts`). The host
 * checks the reference against what it stored, expands it for the model
 * and appends only the messages after it, so a step costs its new messages,
 * not the history. The host keeps the transcripts it recently used in
 * memory, with the digest of every prefix, so checking a reference and
 * expanding it read no history from the store (and nothing at all for the
 * reference this host's last record of the transcript answered with, see
 * {@link Transcripts.resolve}). Recording an exchange
 * checks the transcript's length, and the quota counters it moves, at the
 * versionstamps this host last committed them with, without reading them
 * back (see `committed_entries.ts`); the digests of its messages are
 * computed once, for the reply's reference and the transcript in memory.
 *
 * @module
 */

import { SyscallError } from "../broker/errors.ts";
import { commitStoreChange, type StoreChange } from "../broker/store_change.ts";
import { writeChunked } from "./chunks.ts";
import { CommittedEntries } from "./committed_entries.ts";
import { conversationLink } from "./guest/cell_protocol.ts";
import { sha256Hex } from "../broker/digest.ts";
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
   * the call was answered and recorded, but its journal record was lost (a
   * store written before the two shared one commit). The call answers with
   * it and asks the model nothing.
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
  #quotas: Pick<StorageQuotas, "prepareCharges">;
  /** Transcripts in memory, least recently used first. */
  #held = new Map<number, _Held>();
  /** The `transcript_len` entries this host committed, checked by its next record. */
  #lengths = new CommittedEntries<number>();

  /** Transcripts in `kv`, charged to `quotas`. */
  constructor(kv: Deno.Kv, quotas: Pick<StorageQuotas, "prepareCharges">) {
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
   *
   * A reference to the whole of the transcript held in memory, when that
   * is what this host's last record of it committed, is taken from memory
   * without reading the store: the digest makes it the very conversation
   * referenced, and the record of the call checks in its commit that the
   * transcript has not moved since (another host's record: then the call
   * is refused with `EINVAL` and nothing is recorded). Anything else, and
   * every refusal, is decided from the store.
   */
  async resolve(pid: number, request: ConversationRequest): Promise<Conversation> {
    const sent = request.messages;
    const sentBound = sent.reduce((sum, m) => sum + messageTokenBound(m), 0);
    const ref = request.transcript;
    if (!ref) return { messages: sent, inputBound: sentBound };
    const held = this.#recorded(pid, ref) ?? await this.#hold(pid);
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
    for (const message of sent) digest = await _nextDigest(digest, message);
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
  record(
    pid: number,
    request: ConversationRequest,
    reply: ModelReply,
  ): Promise<TranscriptRef | undefined> {
    return commitStoreChange(this.#kv, () => this.prepareRecord(pid, request, reply));
  }

  /**
   * The change of the store that {@link record} commits, for a commit that
   * holds more: the `model.complete` call's journal record, so the store
   * holds both the exchange and the call's outcome, or neither. It checks
   * the transcript's length and the quota counters it moves; when a check
   * fails, prepare it again. Its result is the reference {@link record}
   * returns; its `wake`, once it is committed, adds the messages to the
   * transcript held in memory.
   */
  async prepareRecord(
    pid: number,
    request: ConversationRequest,
    reply: ModelReply,
  ): Promise<StoreChange<TranscriptRef | undefined>> {
    const countKey = ["transcript_len", pid];
    const ref = request.transcript;
    const meta: _ReplyMeta = reply.exit === undefined
      ? { usage: reply.usage }
      : { usage: reply.usage, exit: reply.exit };
    // The length this host last committed, checked in the commit; a
    // mismatch is confirmed from the store before it refuses.
    let entry = await this.#lengths.take(this.#kv, countKey);
    if (ref && (entry.value ?? 0) !== ref.length) {
      entry = await this.#lengths.take(this.#kv, countKey, { fresh: true });
    }
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
    const charge = await this.#quotas.prepareCharges(
      [{ pid, bytes: text.length + JSON.stringify(meta).length }],
      `Cannot record the transcript of process ${pid}`,
    );
    const length = stored + fresh.length;
    // Only a transcript that is exactly this conversation can be referenced.
    const exact = ref !== undefined || stored === 0;
    const held = this.#held.get(pid);
    // The digests through each new message, after the stored ones (in memory, or none).
    const base = stored === 0
      ? ""
      : held?.messages.length === stored
      ? held.digests[stored]
      : undefined;
    const digests = base === undefined ? undefined : await _digestsAfter(base, fresh);
    let result: TranscriptRef | undefined;
    if (exact && digests) result = { length, digest: digests[digests.length - 1] };
    else if (exact) result = { length, digest: await this.#digestAfter(pid, stored, fresh) };
    return {
      result,
      apply: (op) => {
        op.check(entry).set(countKey, length);
        fresh.forEach((message, i) => writeChunked(op, ["transcript", pid, stored + i], message));
        op.set(["transcript_reply", pid, length - 1], meta);
        charge.apply(op);
      },
      committed: (versionstamp) => {
        this.#lengths.record(countKey, length, versionstamp);
        charge.committed?.(versionstamp);
      },
      wake: async () => {
        const current = this.#held.get(pid) ??
          (stored === 0 ? this.#keep(pid, _empty()) : undefined);
        if (current?.messages.length === stored) {
          const known = current.digests[stored] === base ? digests : undefined;
          await this.#append(current, fresh, text.length, known);
        } else this.#drop(pid);
      },
    };
  }

  /**
   * The conversation digest of the first `stored` messages of the
   * transcript of `pid` followed by `messages` (read back from the store
   * when the transcript in memory does not hold them).
   */
  async #digestAfter(pid: number, stored: number, messages: readonly Message[]): Promise<string> {
    const held = await this.#hold(pid);
    if (held.messages.length !== stored) {
      throw new SyscallError(
        "EINVAL",
        `Cannot record the transcript of process ${pid}: it changed while the model answered`,
      );
    }
    const digests = await _digestsAfter(held.digests[stored], messages);
    return digests[digests.length - 1];
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
    this.#lengths.forget(["transcript_len", pid]);
  }

  /**
   * The transcript of `pid` in memory when `ref` names all of it and its
   * length is the one this host's last record of it committed: a guess that
   * the record of the call checks in its commit.
   */
  #recorded(pid: number, ref: TranscriptRef): _Held | undefined {
    const held = this.#held.get(pid);
    if (
      held === undefined || held.messages.length !== ref.length ||
      held.digests[ref.length] !== ref.digest ||
      this.#lengths.peek(["transcript_len", pid])?.value !== ref.length
    ) return undefined;
    return this.#keep(pid, held);
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

  /**
   * Adds `messages` (`chars` JSON characters) to `held`, with their digests
   * (`digests` when they are known already) and bounds.
   */
  async #append(
    held: _Held,
    messages: readonly Message[],
    chars: number,
    digests?: readonly string[],
  ): Promise<void> {
    for (const [k, message] of messages.entries()) {
      const i = held.messages.length;
      held.digests.push(digests?.[k] ?? await _nextDigest(held.digests[i], message));
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

/**
 * The conversation digest of the conversation whose digest is `previous`
 * followed by `message`: `nextConversationDigest` of
 * `guest/cell_protocol.ts`, hashed in place as the syscall path's digests
 * are (`broker/digest.ts`), without an async `crypto.subtle` round trip.
 */
function _nextDigest(previous: string, message: Message): Promise<string> {
  return sha256Hex(conversationLink(previous, message));
}

/** The conversation digests after `base` through each of `messages`, in order. */
async function _digestsAfter(base: string, messages: readonly Message[]): Promise<string[]> {
  const digests: string[] = [];
  for (const message of messages) {
    digests.push(await _nextDigest(digests[digests.length - 1] ?? base, message));
  }
  return digests;
}
