/**
 * Transcripts: the messages each process exchanged with the model, kept
 * under `["transcript", pid, i]` (chunked) with their count under
 * `["transcript_len", pid]`, and charged to the process's `storageBytes`
 * quota in the commit that adds them.
 *
 * @module
 */

import { readChunked, writeChunked } from "./chunks.ts";
import { nextConversationDigest } from "./guest/cell_protocol.ts";
import type { Message } from "./model.ts";
import type { StorageQuotas } from "./storage_quota.ts";

/** One transcript entry: a message exchanged with the model. */
export type TranscriptEntry = Message;

/**
 * The transcripts of a store.
 *
 * @example
 * ```ts ignore
 * const transcripts = new Transcripts(kv, quotas);
 * await transcripts.record(pid, [{ role: "user", content: "hi" }], reply);
 * console.log(await transcripts.read(pid));
 * ```
 */
export class Transcripts {
  #kv: Deno.Kv;
  #quotas: Pick<StorageQuotas, "prepare">;

  /** Transcripts in `kv`, charged to `quotas`. */
  constructor(kv: Deno.Kv, quotas: Pick<StorageQuotas, "prepare">) {
    this.#kv = kv;
    this.#quotas = quotas;
  }

  /**
   * Appends to a process's transcript the messages it sent that are new,
   * then the reply, charged to its `storageBytes` quota in the same commit
   * (`EBUDGET`, and nothing recorded, over the quota).
   */
  async record(pid: number, messages: readonly Message[], reply: Message): Promise<void> {
    const countKey = ["transcript_len", pid];
    for (;;) {
      const entry = await this.#kv.get<number>(countKey);
      const stored = entry.value ?? 0;
      const fresh = [...messages.slice(stored), reply];
      const charge = await this.#quotas.prepare(
        [{ pid, bytes: JSON.stringify(fresh).length }],
        `Cannot record the transcript of process ${pid}`,
      );
      const op = this.#kv.atomic().check(entry).set(countKey, stored + fresh.length);
      fresh.forEach((message, i) => writeChunked(op, ["transcript", pid, stored + i], message));
      charge(op);
      if ((await op.commit()).ok) return;
    }
  }

  /**
   * The transcript of a process: the messages exchanged with the model, in
   * order; only its first `count` when given.
   */
  async read(pid: number, count?: number): Promise<TranscriptEntry[]> {
    const stored = (await this.#kv.get<number>(["transcript_len", pid])).value ?? 0;
    const end = Math.min(stored, count ?? stored);
    const out: TranscriptEntry[] = [];
    for (let i = 0; i < end; i++) {
      const message = await readChunked(this.#kv, ["transcript", pid, i]);
      if (message) out.push(message as TranscriptEntry);
    }
    return out;
  }

  /**
   * The checkpoint state the built-in agent loop resumes from. The loop
   * saves `{ step, transcript: { length, digest }, tail, jit }`: `length`
   * counts the messages of the conversation the host recorded, `digest` is
   * their conversation digest, `tail` the messages after them. This gives
   * back `{ step, messages, jit }`, the recorded messages followed by the
   * tail. A state that holds `messages` (as the loop once saved) is given
   * back as it is. Undefined when the stored transcript does not match the
   * reference (too few messages, or other ones, as after a call the
   * transcript recorded but the journal did not): resuming from it would go
   * on from another conversation than the loop's own.
   */
  async resumeAgent(pid: number, state: unknown): Promise<unknown> {
    if (typeof state !== "object" || state === null || !("transcript" in state)) return state;
    const { transcript, tail, ...rest } = state as { transcript: unknown; tail?: unknown };
    const { length, digest } = (transcript ?? {}) as { length?: unknown; digest?: unknown };
    if (
      !Number.isSafeInteger(length) || (length as number) < 0 || typeof digest !== "string" ||
      !Array.isArray(tail)
    ) return undefined;
    const prefix = await this.read(pid, length as number);
    let stored = "";
    for (const message of prefix) stored = await nextConversationDigest(stored, message);
    if (prefix.length !== length || stored !== digest) return undefined;
    return { ...rest, messages: [...prefix, ...tail] };
  }
}
