/**
 * Image ceilings of running processes: a capability a process asks a
 * human for (`cap.request`, `human.request_permission`), one another
 * process gives it (`cap.delegate`, `obj.share`), and the grant a human
 * could make for a call its policy asks about, each stays within what the
 * process's image allows, in every attribute (`isWithinCeiling` of
 * `grants.ts`), or is refused with `EPERM`.
 *
 * @module
 */

import type { AskRequest } from "../broker/broker.ts";
import { type CapabilitySpec, formatCapability } from "../broker/capability.ts";
import { SyscallError } from "../broker/errors.ts";
import { escapeGlob } from "../broker/glob.ts";
import { imageCeiling, isWithinCeiling, parseGrant } from "./grants.ts";
import type { RegisteredImage } from "./image.ts";
import type { ProcessRecord, ProcessTable } from "./process_table.ts";

/** What the ceiling checks need from the kernel. */
export interface CeilingKernel {
  /** The process table. */
  readonly processes: Pick<ProcessTable, "require">;
  /** The clock a ceiling's `ttl` counts from. */
  readonly now: () => number;
  /** The registered image of a process. */
  imageOf(proc: ProcessRecord): Promise<RegisteredImage>;
}

/**
 * The capability `pid` asks for in text form, parsed and resolved against
 * its workspace; `EPERM` beyond its image's ceiling.
 */
export async function requestedGrant(
  kernel: CeilingKernel,
  pid: number,
  text: string,
): Promise<CapabilitySpec> {
  const { proc, image } = await _processImage(kernel, pid);
  const spec = parseGrant(text, proc.workspace);
  if (
    !isWithinCeiling(spec, imageCeiling(image.image.capabilities, proc.workspace), kernel.now())
  ) {
    throw new SyscallError(
      "EPERM",
      `Cannot grant "${formatCapability(spec)}": beyond the ceiling of image "${image.tag}"`,
    );
  }
  return spec;
}

/** `EPERM` unless `spec`, given to the running process `pid`, lies within its image's ceiling. */
export async function requireWithinImageCeiling(
  kernel: CeilingKernel,
  pid: number,
  spec: CapabilitySpec & { expiresAt?: number },
): Promise<void> {
  const { proc, image } = await _processImage(kernel, pid);
  if (
    !isWithinCeiling(spec, imageCeiling(image.image.capabilities, proc.workspace), kernel.now())
  ) {
    throw new SyscallError(
      "EPERM",
      `Cannot give "${
        formatCapability(spec)
      }" to process ${pid}: beyond the ceiling of image "${image.tag}"`,
    );
  }
}

/**
 * The grant a human may make to `pid` for a call its policy asks about:
 * the one right on the one target, literally (glob characters in its name,
 * a file named `**`, match only themselves). `EPERM` when its image's
 * ceiling would not allow it: no human may grant that.
 */
export async function askedGrant(
  kernel: CeilingKernel,
  pid: number,
  request: Pick<AskRequest, "op" | "rule" | "name">,
): Promise<CapabilitySpec> {
  const { op, rule, name } = request;
  const spec: CapabilitySpec = {
    resource: op.resource,
    rights: [op.right],
    scope: escapeGlob(op.target),
  };
  const { proc, image } = await _processImage(kernel, pid);
  if (
    !isWithinCeiling(spec, imageCeiling(image.image.capabilities, proc.workspace), kernel.now())
  ) {
    throw new SyscallError(
      "EPERM",
      `Cannot ${name} "${op.target}": policy "${rule.pattern}" asks, but no human may grant what image "${image.tag}" never allows`,
    );
  }
  return spec;
}

async function _processImage(
  kernel: CeilingKernel,
  pid: number,
): Promise<{ proc: ProcessRecord; image: RegisteredImage }> {
  const proc = await kernel.processes.require(pid);
  return { proc, image: await kernel.imageOf(proc) };
}
