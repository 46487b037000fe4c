/**
 * Transcripts: the messages each process exchanged with the model, kept
 * under `["transcript", pid, i]` (chunked) with their count under
 * `["transcript_len", pid]`, and charged to the process's `storageBytes`
 * quota in the commit that adds them.
 *
 * @module
 */

import { readChunked, writeChunked } from "./chunks.ts";
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

  /** The transcript of a process: the messages exchanged with the model, in order. */
  async read(pid: number): Promise<TranscriptEntry[]> {
    const count = (await this.#kv.get<number>(["transcript_len", pid])).value ?? 0;
    const out: TranscriptEntry[] = [];
    for (let i = 0; i < count; i++) {
      const message = await readChunked(this.#kv, ["transcript", pid, i]);
      if (message) out.push(message as TranscriptEntry);
    }
    return out;
  }
}
