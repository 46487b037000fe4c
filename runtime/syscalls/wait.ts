/**
 * The syscalls that may block: `time.sleep`, `event.wait`, `msg.recv`,
 * `proc.wait`, and their partners `event.emit` and `msg.send`. A call
 * whose condition already holds answers at once; otherwise it parks its
 * process (see `runtime/waits.ts`).
 *
 * @module
 */

import type { CallContext, HandlerTable } from "../../broker/broker.ts";
import type { WaitSpec } from "../../broker/journal.ts";
import type { Kernel } from "../kernel.ts";
import { END_STATES } from "../process_table.ts";

/** Handlers of the blocking syscalls. */
export function waitHandlers(kernel: Kernel): HandlerTable {
  const park = (ctx: CallContext, name: string, wait: WaitSpec) =>
    kernel.waits.park({ pid: ctx.pid, seq: ctx.seq, name, argsDigest: ctx.argsDigest }, wait);
  const deadline = (timeoutMs?: number) =>
    timeoutMs === undefined ? undefined : kernel.now() + timeoutMs;
  return {
    "time.sleep": (ctx, args) => ({
      ops: [{ resource: "time", right: "sleep", target: "*" }],
      effect: "none",
      run: () =>
        args.ms === 0
          ? Promise.resolve(null)
          : park(ctx, "time.sleep", { kind: "sleep", until: kernel.now() + args.ms }),
    }),
    "event.emit": (ctx, args) => ({
      ops: [{ resource: "event", right: "emit", target: args.topic }],
      effect: "effect",
      run: () => kernel.events.post(args.topic, args.data, ctx.pid),
    }),
    "event.wait": (ctx, args) => ({
      ops: [{ resource: "event", right: "wait", target: args.topic }],
      effect: "none",
      run: async () =>
        park(ctx, "event.wait", {
          kind: "event",
          topic: args.topic,
          afterSeq: await kernel.events.latestSeq(args.topic),
          deadline: deadline(args.timeoutMs),
        }),
    }),
    "msg.send": (ctx, args) => ({
      ops: [{ resource: "proc", right: "send", target: String(args.pid) }],
      effect: "effect",
      run: async () => {
        await kernel.processes.require(args.pid);
        return await kernel.mailbox.send(args.pid, args.data, ctx.pid);
      },
    }),
    "msg.recv": (ctx, args) => ({
      ops: [],
      effect: "none",
      run: async () =>
        await kernel.mailbox.take(ctx.pid) ??
          park(ctx, "msg.recv", { kind: "message", deadline: deadline(args.timeoutMs) }),
    }),
    "proc.wait": async (ctx, args) => {
      await kernel.requireChild(ctx.pid, args.pid, "wait for");
      return {
        ops: [],
        effect: "none",
        run: async () => {
          const child = await kernel.processes.require(args.pid);
          if (END_STATES.has(child.state)) {
            return { pid: child.pid, state: child.state, result: child.result, error: child.error };
          }
          return await park(ctx, "proc.wait", {
            kind: "child",
            pid: args.pid,
            deadline: deadline(args.timeoutMs),
          });
        },
      };
    },
  };
}
