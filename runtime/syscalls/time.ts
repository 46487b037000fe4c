/**
 * The `time.*` syscalls: the host clock, and a sleep that parks the process
 * until its deadline (a sleep of 0 answers at once).
 *
 * @module
 */

import type { HandlerTable } from "../../broker/broker.ts";
import { park, type ParkKernel } from "./park.ts";

/** What the `time` handlers need from the kernel. */
export type TimeKernel = ParkKernel;

/** Handlers of the `time` namespace. */
export function timeHandlers(kernel: TimeKernel): HandlerTable {
  return {
    "time.now": () => ({ ops: [], effect: "none", run: () => Promise.resolve(kernel.now()) }),
    "time.sleep": (ctx, args) => ({
      ops: [{ resource: "time", right: "sleep", target: "*" }],
      effect: "none",
      run: () =>
        args.ms === 0
          ? Promise.resolve(null)
          : park(kernel, ctx, "time.sleep", { kind: "sleep", until: kernel.now() + args.ms }),
    }),
  };
}
