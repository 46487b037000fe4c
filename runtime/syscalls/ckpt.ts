/**
 * The `ckpt.*` syscalls: program checkpoints, the states replay starts
 * from. Each is kept under `["ckpt", pid, seq]` (its state in chunks under
 * `["ckpt_state", pid, seq]`) and charged to the process's storage quota in
 * the same commit.
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
  readonly quotas: Pick<StorageQuotas, "prepare">;
  /** The clock. */
  readonly now: () => number;
}

/** Handlers of the `ckpt` namespace. */
export function ckptHandlers(kernel: CkptKernel): HandlerTable {
  return {
    "ckpt.save": (ctx, args) => ({
      ops: [],
      effect: "idempotent",
      run: async () => {
        // Checkpoints are kept: each one is charged to the storageBytes quota in its commit.
        const bytes = JSON.stringify(args.state ?? null).length;
        for (;;) {
          const charge = await kernel.quotas.prepare(
            [{ pid: ctx.pid, bytes }],
            "Cannot save checkpoint",
          );
          const op = kernel.store.kv.atomic().set(["ckpt", ctx.pid, ctx.seq], {
            seq: ctx.seq,
            at: kernel.now(),
          });
          writeChunked(op, ["ckpt_state", ctx.pid, ctx.seq], args.state);
          charge(op);
          let committed: Deno.KvCommitResult | Deno.KvCommitError;
          try {
            committed = await op.commit();
          } catch {
            throw new SyscallError("EINVAL", "Cannot save checkpoint: the state is too large");
          }
          if (committed.ok) return { seq: ctx.seq };
        }
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
