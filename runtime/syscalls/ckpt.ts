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
import { writeChunked } from "../chunks.ts";
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
