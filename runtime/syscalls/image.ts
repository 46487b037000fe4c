/**
 * The `image.*` syscalls: registering an agent image whose ceiling stays
 * within the registrar's own authority, and listing the registered images.
 *
 * @module
 */

import type { HandlerTable } from "../../broker/broker.ts";
import { attenuationError } from "../../broker/capability.ts";
import type { CapabilityStore } from "../../broker/capability_store.ts";
import { SyscallError } from "../../broker/errors.ts";
import { describeIssue, issueMessage } from "../../broker/schema_errors.ts";
import { parseGrant } from "../grants.ts";
import { AgentImageSchema, type ImageRegistry } from "../image.ts";
import type { ProcessTable } from "../process_table.ts";

/** What the `image` handlers need from the kernel. */
export interface ImageKernel {
  /** The image registry. */
  readonly images: Pick<ImageRegistry, "register" | "list">;
  /** The capability store, for the registrar's authority. */
  readonly caps: Pick<CapabilityStore, "list">;
  /** The process table. */
  readonly processes: Pick<ProcessTable, "require">;
  /** The clock. */
  readonly now: () => number;
}

/** Handlers of the `image` namespace. */
export function imageHandlers(kernel: ImageKernel): HandlerTable {
  return {
    "image.register": (ctx, args) => {
      const parsed = AgentImageSchema.safeParse(args.image, { error: issueMessage });
      if (!parsed.success) {
        throw new SyscallError(
          "EINVAL",
          `Cannot register image: ${describeIssue(parsed.error.issues[0])}`,
        );
      }
      const image = parsed.data;
      const tag = `${image.name}@${image.version}`;
      return {
        ops: [{ resource: "image", right: "register", target: tag }],
        effect: "idempotent",
        run: async () => {
          if (image.entry !== "libos:agent") {
            throw new SyscallError(
              "EINVAL",
              `Cannot register image "${tag}": a process may only register libos:agent images`,
            );
          }
          // An image's ceiling never exceeds its registrar's authority.
          const proc = await kernel.processes.require(ctx.pid);
          const held = await kernel.caps.list(ctx.pid, kernel.now());
          for (const text of image.capabilities) {
            const spec = parseGrant(text, proc.workspace);
            if (!held.some((cap) => !attenuationError(spec, cap, kernel.now()))) {
              throw new SyscallError(
                "EPERM",
                `Cannot register image "${tag}": its ceiling "${text}" exceeds the registrar's authority`,
              );
            }
          }
          const registered = await kernel.images.register(image);
          return { tag: registered.tag, digest: registered.digest };
        },
      };
    },
    "image.list": () => ({
      ops: [],
      effect: "none",
      run: async () => (await kernel.images.list()).map(({ tag, digest }) => ({ tag, digest })),
    }),
  };
}
