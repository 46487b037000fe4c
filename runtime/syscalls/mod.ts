/**
 * The syscall handler table: one module per ABI namespace (SPEC section 6),
 * merged by {@link registerHandlers}, which refuses a syscall defined twice,
 * a handler for a name the ABI does not have, and an ABI syscall with no
 * handler unless it is listed in {@link UNIMPLEMENTED} (those answer
 * `ENOSYS`, by choice).
 *
 * Adding a syscall: declare its arguments and result in `broker/abi.ts`,
 * plan and run it in its namespace's module here, test it.
 *
 * @module
 */

import { isSyscallName, SYSCALL_NAMES, type SyscallName } from "../../broker/abi.ts";
import type { HandlerTable } from "../../broker/broker.ts";
import { capHandlers, type CapKernel } from "./cap.ts";
import { ckptHandlers, type CkptKernel } from "./ckpt.ts";
import { eventHandlers, type EventKernel } from "./event.ts";
import { execHandlers, type ExecKernel } from "./exec.ts";
import { fsHandlers, type FsKernel } from "./fs.ts";
import { humanHandlers, type HumanKernel } from "./human.ts";
import { imageHandlers, type ImageKernel } from "./image.ts";
import { modelHandlers, type ModelKernel } from "./model.ts";
import { msgHandlers, type MsgKernel } from "./msg.ts";
import { netHandlers, type NetKernel } from "./net.ts";
import { objHandlers, type ObjKernel } from "./obj.ts";
import { procHandlers, type ProcKernel } from "./proc.ts";
import { timeHandlers, type TimeKernel } from "./time.ts";
import { toolHandlers, type ToolKernel } from "./tool.ts";

/** What the handlers of every namespace need from the kernel together. */
export type SyscallKernel =
  & ProcKernel
  & FsKernel
  & ObjKernel
  & TimeKernel
  & EventKernel
  & MsgKernel
  & HumanKernel
  & ModelKernel
  & ExecKernel
  & NetKernel
  & ToolKernel
  & ImageKernel
  & CapKernel
  & CkptKernel;

/** Syscalls of the ABI that deliberately have no handler: they answer `ENOSYS`. */
export const UNIMPLEMENTED: readonly SyscallName[] = [];

/** The handlers one module defines, named by that module. */
export interface HandlerSource {
  /** The module's file name, for error messages (`time.ts`). */
  module: string;
  /** Its handlers. */
  handlers: HandlerTable;
}

/**
 * Merges the handlers of several modules into one table. Throws when two
 * modules define the same syscall, when a handler's name is not in the ABI,
 * when a syscall listed in `unimplemented` has a handler, and when an ABI
 * syscall has no handler and is not listed in `unimplemented`.
 *
 * @example
 * ```ts
 * import { registerHandlers } from "./mod.ts";
 * const plan = () => ({ ops: [], effect: "none" as const, run: () => Promise.resolve(1) });
 * try {
 *   registerHandlers([
 *     { module: "time.ts", handlers: { "time.now": plan } },
 *     { module: "clock.ts", handlers: { "time.now": plan } },
 *   ]);
 * } catch (error) {
 *   console.assert((error as Error).message.startsWith('Cannot register syscall "time.now"'));
 * }
 * ```
 */
export function registerHandlers(
  sources: readonly HandlerSource[],
  options: { unimplemented?: readonly SyscallName[] } = {},
): HandlerTable {
  const unimplemented = new Set<string>(options.unimplemented ?? []);
  const table: Record<string, unknown> = {};
  const definedBy = new Map<string, string>();
  for (const { module, handlers } of sources) {
    for (const [name, handler] of Object.entries(handlers)) {
      const first = definedBy.get(name);
      if (first !== undefined) {
        throw new Error(
          `Cannot register syscall "${name}": defined by both ${first} and ${module}`,
        );
      }
      if (!isSyscallName(name)) {
        throw new Error(`Cannot register syscall "${name}" of ${module}: it is not in the ABI`);
      }
      if (unimplemented.has(name)) {
        throw new Error(
          `Cannot register syscall "${name}" of ${module}: it is listed as unimplemented`,
        );
      }
      definedBy.set(name, module);
      table[name] = handler;
    }
  }
  const missing = SYSCALL_NAMES.filter((name) => !definedBy.has(name) && !unimplemented.has(name));
  if (missing.length) {
    throw new Error(
      `Cannot register the syscall handlers: ${
        missing.map((name) => `"${name}"`).join(", ")
      } of the ABI ${missing.length === 1 ? "has" : "have"} no handler and ${
        missing.length === 1 ? "is" : "are"
      } not listed as unimplemented`,
    );
  }
  return table as HandlerTable;
}

/** The kernel's handler table: every namespace module, registered once. */
export function handlerTable(kernel: SyscallKernel): HandlerTable {
  return registerHandlers([
    { module: "proc.ts", handlers: procHandlers(kernel) },
    { module: "fs.ts", handlers: fsHandlers(kernel) },
    { module: "obj.ts", handlers: objHandlers(kernel) },
    { module: "time.ts", handlers: timeHandlers(kernel) },
    { module: "event.ts", handlers: eventHandlers(kernel) },
    { module: "msg.ts", handlers: msgHandlers(kernel) },
    { module: "human.ts", handlers: humanHandlers(kernel) },
    { module: "model.ts", handlers: modelHandlers(kernel) },
    { module: "exec.ts", handlers: execHandlers(kernel) },
    { module: "net.ts", handlers: netHandlers(kernel) },
    { module: "tool.ts", handlers: toolHandlers(kernel) },
    { module: "image.ts", handlers: imageHandlers(kernel) },
    { module: "cap.ts", handlers: capHandlers(kernel) },
    { module: "ckpt.ts", handlers: ckptHandlers(kernel) },
  ], { unimplemented: UNIMPLEMENTED });
}
