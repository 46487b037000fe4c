/**
 * How a process ends is always recorded, whatever it tried to leave: a
 * result too large for its row is refused with a clear error, and an error
 * message of any length is cut to fit. Before, either kept the process
 * `running` forever (the store refused the record and nothing noticed).
 *
 * @module
 */

import assert from "node:assert/strict";
import { MAX_RESULT_CHARS } from "../runtime/syscalls/proc.ts";
import { withHarness } from "./_harness.ts";

/** Long enough for a loaded machine; a process that never ends fails the test. */
const ENDS_WITHIN_MS = 60_000;

Deno.test("a result over the limit fails the process with a clear error instead of hanging it", async () => {
  await withHarness(async (h) => {
    const tag = await h.program("big", `export default async () => "x".repeat(300000);`);
    const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    h.kernel.start(proc.pid);
    const end = await h.kernel.waitFor(proc.pid, { timeoutMs: ENDS_WITHIN_MS });
    assert.equal(end.state, "failed");
    assert.equal(end.error?.code, "EINVAL");
    assert.match(end.error!.message, new RegExp(`over the ${MAX_RESULT_CHARS}-byte limit`));
  });
});

Deno.test("a result within the limit is kept whole", async () => {
  await withHarness(async (h) => {
    const size = MAX_RESULT_CHARS - 2; // the JSON string's quotes
    const end = await h.run(`export default async () => "y".repeat(${size});`);
    assert.equal(end.state, "exited");
    assert.equal((end.result as string).length, size);
  });
});

Deno.test("an error message of any length is cut to fit, and the process ends failed", async () => {
  await withHarness(async (h) => {
    const tag = await h.program(
      "loud",
      `export default async () => { throw new Error("z".repeat(300000)); };`,
    );
    const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    h.kernel.start(proc.pid);
    const end = await h.kernel.waitFor(proc.pid, { timeoutMs: ENDS_WITHIN_MS });
    assert.equal(end.state, "failed");
    assert.ok(end.error!.message.length <= 4096, `${end.error!.message.length} characters`);
    assert.match(end.error!.message, /^zzz.*…$/);
  });
});

Deno.test("a program that throws an error whose message is not text ends failed, and the host's journal goes on", async () => {
  await withHarness(async (h) => {
    // Its time.now record is buffered when it throws: ending it claims that record.
    const tag = await h.program(
      "odd",
      `export default async (sys) => {
        await sys.time.now();
        const error = new Error("x");
        Object.defineProperty(error, "message", { value: { length: 1e9 } });
        throw error;
      };`,
    );
    const sleeper = await h.program(
      "sleeper",
      `export default async (sys) => { await sys.time.sleep(20); return "woke"; };`,
      { capabilities: ["time:sleep:*"] },
    );
    const odd = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    h.kernel.start(odd.pid);
    const end = await h.kernel.waitFor(odd.pid, { timeoutMs: ENDS_WITHIN_MS });
    assert.equal(end.state, "failed");
    assert.equal(typeof end.error!.message, "string");
    // Another process parks and wakes: the journal still flushes.
    const other = await h.kernel.run({ image: sleeper, workspace: h.workspace });
    assert.deepEqual([other.state, other.result], ["exited", "woke"], other.error?.message);
  });
});
