/**
 * The `msg.*` syscalls: a process's mailbox. `msg.send` is a change of the
 * store, committed with the call's records; `msg.recv` takes the next
 * message, or parks the process until one arrives or the timeout passes.
 *
 * @module
 */

import type { HandlerTable } from "../../broker/broker.ts";
import type { Mailbox } from "../mailbox.ts";
import type { ProcessTable } from "../process_table.ts";
import { deadlineAfter, park, type ParkKernel } from "./park.ts";

/** What the `msg` handlers need from the kernel. */
export interface MsgKernel extends ParkKernel {
  /** The mailboxes. */
  readonly mailbox: Pick<Mailbox, "prepareSend" | "take">;
  /** The process table, to check that the addressee exists. */
  readonly processes: Pick<ProcessTable, "require">;
}

/** Handlers of the `msg` namespace. */
export function msgHandlers(kernel: MsgKernel): HandlerTable {
  return {
    "msg.send": (ctx, args) => ({
      ops: [{ resource: "proc", right: "send", target: String(args.pid) }],
      effect: "effect",
      prepare: async () => {
        await kernel.processes.require(args.pid);
        return await kernel.mailbox.prepareSend(args.pid, args.data, ctx.pid);
      },
    }),
    "msg.recv": (ctx, args) => ({
      ops: [],
      effect: "none",
      run: async () =>
        await kernel.mailbox.take(ctx.pid) ??
          park(kernel, ctx, "msg.recv", {
            kind: "message",
            deadline: deadlineAfter(kernel, args.timeoutMs),
          }),
    }),
  };
}
