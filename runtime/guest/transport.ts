/**
 * The libc's side of the syscall channel: each call is posted to the cell
 * with a fresh id and its promise settles when the reply with that id comes
 * back, in whatever order replies arrive. A refused call rejects with a
 * {@link SysError} carrying the ABI error code.
 *
 * @example
 * ```ts
 * import { createChannel } from "./transport.ts";
 * const channel = createChannel((message) => {
 *   channel.receive({ id: message.id, ok: true, value: message.name });
 * });
 * console.assert(await channel.call("time.now", {}) === "time.now");
 * ```
 *
 * @module
 */

import type { SyscallReply } from "../../broker/abi.ts";
import type { WorkerToCell } from "./cell_protocol.ts";
import { SysError, type Transport } from "./libc.ts";

/** The two ends of the channel the libc calls through. */
export interface SyscallChannel {
  /** Posts one call and settles with its reply; what `createSys` is given. */
  call: Transport;
  /** Settles the call a reply answers; a reply to no pending call is ignored. */
  receive(reply: SyscallReply): void;
}

/** A channel posting each call with `post`. */
export function createChannel(
  post: (message: Extract<WorkerToCell, { t: "syscall" }>) => void,
): SyscallChannel {
  const pending = new Map<
    number,
    { resolve: (value: unknown) => void; reject: (error: unknown) => void }
  >();
  let nextId = 1;
  return {
    call: (name, args) =>
      new Promise((resolve, reject) => {
        const id = nextId++;
        pending.set(id, { resolve, reject });
        post({ t: "syscall", id, name, args });
      }),
    receive(reply: SyscallReply): void {
      const waiter = pending.get(reply.id);
      if (!waiter) return;
      pending.delete(reply.id);
      if (reply.ok) waiter.resolve(reply.value);
      else waiter.reject(new SysError(reply.error.code, reply.error.message));
    },
  };
}
