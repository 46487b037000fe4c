/**
 * The `proc.*` syscalls: identity, lineage, spawning children with
 * attenuated capabilities, waiting for a child (the process parks until it
 * ends), signals, exit and the working directory.
 *
 * @module
 */

import type { CallContext, HandlerTable, PARKED } from "../../broker/broker.ts";
import { SyscallError } from "../../broker/errors.ts";
import { parsePolicy } from "../../broker/policy.ts";
import type { FsProvider } from "../fs_provider.ts";
import type { ChildSpawnOptions } from "../lifecycle.ts";
import { END_STATES, type ProcessRecord, type ProcessTable } from "../process_table.ts";
import { deadlineAfter, park, type ParkKernel } from "./park.ts";

/** What the `proc` handlers need from the kernel. */

/**
 * The most JSON text a process's result may be: it is kept in the process's
 * row and its exit's journal record, each one KV value (at most 64 KiB).
 */
export const MAX_RESULT_CHARS = 16 * 1024;

export interface ProcKernel extends ParkKernel {
  /** The process table. */
  readonly processes: Pick<ProcessTable, "require" | "get" | "update" | "children">;
  /** The filesystem provider, for working directories. */
  readonly fs: Pick<FsProvider, "resolve" | "stat">;
  /** Creates and starts a child of `ppid`. */
  spawnChild(ppid: number, options: Omit<ChildSpawnOptions, "tool">): Promise<ProcessRecord>;
  /** Creates a copy of the caller. */
  fork(
    ctx: CallContext,
    options: { capabilities?: readonly string[]; input?: unknown },
  ): Promise<ProcessRecord>;
  /** Replaces the caller's image, keeping its pid. */
  exec(ctx: CallContext, options: { image: string; input?: unknown }): Promise<typeof PARKED>;
  /** Delivers a signal. */
  signal(
    pid: number,
    signal: "pause" | "resume" | "interrupt" | "terminate" | "kill",
    options?: { by?: string },
  ): Promise<void>;
  /** `EPERM` unless `child` is a child of `pid`. */
  requireChild(pid: number, child: number, action: string): Promise<void>;
  /** `EPERM` unless `target` is a descendant of `pid`. */
  requireDescendant(pid: number, target: number, action?: string): Promise<void>;
}

/** Handlers of the `proc` namespace. */
export function procHandlers(kernel: ProcKernel): HandlerTable {
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
        after: { cwd: path },
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
    "proc.wait": async (ctx, args) => {
      await kernel.requireChild(ctx.pid, args.pid, "wait for");
      return {
        ops: [],
        effect: "none",
        run: async () => {
          const child = await table.require(args.pid);
          if (END_STATES.has(child.state)) {
            return { pid: child.pid, state: child.state, result: child.result, error: child.error };
          }
          return await park(kernel, ctx, "proc.wait", {
            kind: "child",
            pid: args.pid,
            deadline: deadlineAfter(kernel, args.timeoutMs),
          });
        },
      };
    },
    // The exit is journaled and audited here; the run ends the process when
    // it applies the plan's after-effect, so the record of the call lands
    // before the `exited` state (ending a process flushes the journal). It
    // needs no intent of its own: an exit the host died before recording is
    // simply made again by the replay.
    "proc.exit": (_ctx, args) => {
      const result = args.result ?? null;
      const size = JSON.stringify(result).length;
      if (size > MAX_RESULT_CHARS) {
        throw new SyscallError(
          "EINVAL",
          `Cannot exit: the result is ${size} bytes of JSON, over the ${MAX_RESULT_CHARS}-byte limit (store it with obj.put and return its name)`,
        );
      }
      return {
        ops: [],
        effect: "none",
        after: { exit: { result } },
        run: () => Promise.resolve({ result }),
      };
    },
  };
}
