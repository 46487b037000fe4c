/**
 * The permissions a test gives a `deno run` of the CLI or a host script it
 * starts as a subprocess: those the runtime's host needs, never a prompt.
 * Add `--allow-net=127.0.0.1` or `--allow-ffi` where the test needs them.
 *
 * @module
 */

import { dirname } from "node:path";

/** `--no-prompt` and the read, write, run and environment permissions of a host. */
export const HOST_PERMISSIONS: readonly string[] = [
  "--no-prompt",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-env",
];

/**
 * A `deno run` of the host script `script` (a file under `test/`) with
 * `args` and the host's permissions, run from the repository root.
 */
export function hostScript(
  script: string,
  args: readonly string[],
  options: Omit<Deno.CommandOptions, "args" | "cwd"> = {},
): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...HOST_PERMISSIONS, script, ...args],
    cwd: dirname(dirname(script)),
    ...options,
  });
}
