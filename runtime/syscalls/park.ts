/**
 * Parking: how a syscall whose condition does not hold yet blocks its
 * process (see `runtime/waits.ts`). Shared by the namespaces that wait
 * (`time.sleep`, `event.wait`, `msg.recv`, `proc.wait`, `tool.call`); not a
 * namespace itself.
 *
 * @module
 */

import type { CallContext, PARKED } from "../../broker/broker.ts";
import type { WaitSpec } from "../../broker/journal.ts";
import type { Waits } from "../waits.ts";

/** What parking needs from the kernel. */
export interface ParkKernel {
  /** The parked calls. */
  readonly waits: Pick<Waits, "park">;
  /** The clock. */
  readonly now: () => number;
}

/** Parks the process making call `ctx` (syscall `name`) on `wait`. */
export function park(
  kernel: ParkKernel,
  ctx: CallContext,
  name: string,
  wait: WaitSpec,
): Promise<typeof PARKED> {
  return kernel.waits.park({ pid: ctx.pid, seq: ctx.seq, name, argsDigest: ctx.argsDigest }, wait);
}

/** The deadline of a wait of `timeoutMs` from now, or none without a timeout. */
export function deadlineAfter(kernel: ParkKernel, timeoutMs?: number): number | undefined {
  return timeoutMs === undefined ? undefined : kernel.now() + timeoutMs;
}
