/**
 * The permissions a test gives a `deno run` of the CLI or a host script it
 * starts as a subprocess: those the runtime's host needs, never a prompt.
 * Add `--allow-net=127.0.0.1` or `--allow-ffi` where the test needs them.
 *
 * @module
 */

/** `--no-prompt` and the read, write, run and environment permissions of a host. */
export const HOST_PERMISSIONS: readonly string[] = [
  "--no-prompt",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-env",
];
