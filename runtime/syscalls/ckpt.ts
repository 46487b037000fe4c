/**
 * The `ckpt.*` syscalls: program checkpoints, the states replay starts
 * from. Each is kept under `["ckpt", pid, seq]` (its state in chunks under
 * `["ckpt_state", pid, seq]`) and charged to the process's storage quota in
 * the commit that journals its `ckpt.save` call. A save touches only its own
 * keys and the quota counters: it reads no earlier checkpoint, so it costs
 * the same at the thousandth as at the first, and the counters it checks
 * are those this host last committed (no read when nothing else moved them).
 *
 * @module
 */

import type { HandlerTable } from "../../broker/broker.ts";
import { SyscallError } from "../../broker/errors.ts";
import { readChunked, writeChunked } from "../chunks.ts";
import type { StorageQuotas } from "../storage_quota.ts";
import type { Store } from "../store.ts";

/** What the `ckpt` handlers need from the kernel. */
export interface CkptKernel {
  /** The store the checkpoints are kept in. */
  readonly store: Pick<Store, "kv">;
  /** The storage quotas the checkpoints are charged to. */
  readonly quotas: Pick<StorageQuotas, "prepareCharges">;
  /** The clock. */
  readonly now: () => number;
}

/**
 * Most bytes a checkpoint's state may take in the store: with the call's
 * journal and audit records, it must fit one KV commit (800 KiB).
 */
const MAX_STATE_BYTES = 720 * 1024;

/**
 * The bytes the store takes for `text` kept as strings: one per character
 * when every character is Latin-1, else two.
 */
function _storedBytes(text: string): number {
  // deno-lint-ignore no-control-regex
  return /[^\u0000-\u00ff]/.test(text) ? 2 * text.length : text.length;
}

/** Handlers of the `ckpt` namespace. */
export function ckptHandlers(kernel: CkptKernel): HandlerTable {
  return {
    "ckpt.save": (ctx, args) => ({
      ops: [],
      effect: "idempotent",
      // A change of the store alone: the checkpoint, its charge and the
      // call's journal record are one commit, so a checkpoint is never
      // stored without the record that makes it count.
      prepare: async () => {
        const text = JSON.stringify(args.state ?? null);
        const bytes = _storedBytes(text);
        if (bytes > MAX_STATE_BYTES) {
          throw new SyscallError(
            "EINVAL",
            `Cannot save checkpoint: the state is too large (${bytes} bytes, over ${MAX_STATE_BYTES})`,
          );
        }
        // Checkpoints are kept: each one is charged to the storageBytes quota
        // in its commit, checked at the counters this host last committed.
        const charge = await kernel.quotas.prepareCharges(
          [{ pid: ctx.pid, bytes: text.length }],
          "Cannot save checkpoint",
        );
        return {
          result: { seq: ctx.seq },
          apply: (op) => {
            op.set(["ckpt", ctx.pid, ctx.seq], { seq: ctx.seq, at: kernel.now() });
            writeChunked(op, ["ckpt_state", ctx.pid, ctx.seq], args.state);
            charge.apply(op);
          },
          committed: (versionstamp) => charge.committed?.(versionstamp),
        };
      },
    }),
    "ckpt.list": (ctx) => ({
      ops: [],
      effect: "none",
      run: async () => {
        const out = [];
        for await (const e of kernel.store.kv.list({ prefix: ["ckpt", ctx.pid] })) {
          out.push(e.value);
        }
        return out;
      },
    }),
  };
}

/**
 * Copies the checkpoint `seq` of `from` to `to`, state included (a fork
 * keeps the checkpoint its replay starts from).
 */
export async function copyCheckpoint(
  kv: Deno.Kv,
  from: number,
  to: number,
  seq: number,
): Promise<void> {
  const op = kv.atomic().set(["ckpt", to, seq], (await kv.get(["ckpt", from, seq])).value);
  writeChunked(op, ["ckpt_state", to, seq], await readChunked(kv, ["ckpt_state", from, seq]));
  await op.commit();
}

/**
 * Deletes the checkpoints of `pid` from `fromSeq` on (a snapshot restore
 * drops those taken after the snapshot), a bounded number per commit.
 */
export async function deleteCheckpointsFrom(
  kv: Deno.Kv,
  pid: number,
  fromSeq: number,
): Promise<void> {
  const keys: Deno.KvKey[] = [];
  const range = { start: ["ckpt", pid, fromSeq], end: ["ckpt", pid, Number.MAX_SAFE_INTEGER] };
  for await (const entry of kv.list(range)) keys.push(entry.key);
  for (let i = 0; i < keys.length; i += 500) {
    const op = kv.atomic();
    for (const key of keys.slice(i, i + 500)) op.delete(key);
    await op.commit();
  }
}
