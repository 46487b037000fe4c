/**
 * The `proc.*` syscalls: identity, lineage, spawning children with
 * attenuated capabilities, waiting, signals, exit and the working directory.
 *
 * @module
 */

import type { HandlerTable } from "../../broker/broker.ts";
import { SyscallError } from "../../broker/errors.ts";
import { parsePolicy } from "../../broker/policy.ts";
import { writeChunked } from "../chunks.ts";
import type { Kernel } from "../kernel.ts";

/** Handlers of the `proc` group. */
export function procHandlers(kernel: Kernel): HandlerTable {
  const table = kernel.processes;
  return {
    "proc.self": (ctx) => ({
      ops: [],
      effect: "none",
      run: async () => {
        const p = await table.require(ctx.pid);
        return { pid: p.pid, ppid: p.ppid, image: p.image, cwd: p.cwd, state: p.state };
      },
    }),
    "proc.cwd": (ctx) => ({
      ops: [],
      effect: "none",
      run: async () => (await table.require(ctx.pid)).cwd,
    }),
    "proc.chdir": async (ctx, args) => {
      const proc = await table.require(ctx.pid);
      const path = await kernel.fs.resolve(proc.cwd, args.path);
      return {
        ops: [{ resource: "fs", right: "read", target: path }],
        effect: "none",
        run: async () => {
          const stat = await kernel.fs.stat(path);
          if (stat.kind !== "dir") {
            throw new SyscallError("EINVAL", `Cannot chdir to "${path}": not a directory`);
          }
          await table.update(ctx.pid, () => ({ cwd: path }));
          return path;
        },
      };
    },
    "proc.children": (ctx) => ({
      ops: [],
      effect: "none",
      run: async () => {
        const out = [];
        for (const pid of await table.children(ctx.pid)) {
          const child = await table.get(pid);
          if (child) out.push({ pid, image: child.image, state: child.state });
        }
        return out;
      },
    }),
    "proc.spawn": async (ctx, args) => {
      // A child's working directory needs the same read authority as proc.chdir.
      const cwd = args.cwd
        ? await kernel.fs.resolve((await table.require(ctx.pid)).cwd, args.cwd)
        : undefined;
      return {
        ops: [
          { resource: "proc", right: "spawn", target: args.image },
          ...(cwd ? [{ resource: "fs" as const, right: "read", target: cwd }] : []),
        ],
        effect: "effect",
        run: async () => {
          const policy = args.policy ? parsePolicy(args.policy, `pid:${ctx.pid}`) : [];
          const loosening = policy.find((rule) => rule.decision === "allow");
          if (loosening) {
            throw new SyscallError(
              "EPERM",
              `Cannot spawn with policy "${loosening.pattern}": a spawner may only add deny or ask rules`,
            );
          }
          const child = await kernel.spawnChild(ctx.pid, {
            image: args.image,
            input: args.input,
            capabilities: args.capabilities,
            policy,
            cwd,
            onParentExit: args.onParentExit,
          });
          return { pid: child.pid };
        },
      };
    },
    "proc.signal": async (ctx, args) => {
      await kernel.requireDescendant(ctx.pid, args.pid);
      return {
        ops: [{ resource: "proc", right: "signal", target: "children" }],
        effect: "effect",
        run: () => kernel.signal(args.pid, args.signal, { by: `pid:${ctx.pid}` }),
      };
    },
    "proc.fork": (ctx, args) => ({
      ops: [{ resource: "proc", right: "fork", target: "self" }],
      effect: "effect",
      run: async () => {
        const child = await kernel.fork(ctx, {
          capabilities: args.capabilities,
          input: args.input,
        });
        return { pid: child.pid };
      },
    }),
    "proc.exec": (ctx, args) => ({
      ops: [{ resource: "proc", right: "exec", target: args.image }],
      effect: "effect",
      run: () => kernel.exec(ctx, { image: args.image, input: args.input }),
    }),
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
    // The exit is journaled and audited here; the execution ends the process
    // right after, so the record of the call lands before the `exited` state.
    "proc.exit": (_ctx, args) => ({
      ops: [],
      effect: "idempotent",
      run: () => Promise.resolve({ result: args.result ?? null }),
    }),
  };
}
