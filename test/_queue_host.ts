/**
 * The host program of the run-queue crash test (`run_queue_test.ts`), which
 * runs it as a subprocess and kills it with SIGKILL while processes still
 * wait in its run queue:
 *
 * ```sh
 * deno run --no-prompt --allow-read --allow-write --allow-run --allow-env \
 *   test/_queue_host.ts KV_PATH WORKSPACE
 * ```
 *
 * It opens a kernel over the KV file that runs at most
 * {@link QUEUE_MAX_RUNNING} programs at once, recovers what the store holds
 * (the runnable processes the test made) and exits 0 once no live process
 * remains.
 *
 * @module
 */

import { Kernel } from "../runtime/kernel.ts";

/** Most programs the host runs at once. */
export const QUEUE_MAX_RUNNING = 2;

/** A program that makes a syscall, emits its input on topic `done` once, and returns it. */
export const QUEUED_PROGRAM = `export default async function main(sys, n) {
  await sys.time.now();
  await sys.event.emit("done", n);
  return n;
}`;

/** What the queued program's image holds. */
export const QUEUED_IMAGE = { capabilities: ["event:emit:done"] };

if (import.meta.main) {
  const [kvPath] = Deno.args;
  const kernel = await Kernel.open({
    store: kvPath,
    maxRunning: QUEUE_MAX_RUNNING,
    waitGraceMs: 0,
  });
  await kernel.recover();
  await kernel.idle();
  await kernel.close();
}
