/**
 * The result of a call that waited reaches its program only at replay:
 * whoever ended the wait (a timer, a human, a child's end, an event, a
 * message, a tool's end) wrote it to the journal. With `checkResults` (on
 * in the test harness), that result is checked against its declared type in
 * `SYSCALL_RESULTS` when it is answered, as a live result is.
 */

import assert from "node:assert/strict";
import { type Harness, reach, withHarness } from "./_harness.ts";

/** Waits for a message and returns what `msg.recv` answered, or how it failed. */
const RECEIVER = `export default async function main(sys) {
  try {
    return { value: await sys.msg.recv() };
  } catch (error) {
    return { code: error.code, message: error.message };
  }
}`;

/** Starts the program `source` and resolves with its pid once it waits. */
async function startWaiting(
  h: Harness,
  source: string,
  capabilities: string[] = [],
): Promise<number> {
  const tag = await h.program(`p${crypto.randomUUID().slice(0, 8)}`, source, { capabilities });
  const { pid } = await h.kernel.spawn({ image: tag, workspace: h.workspace });
  h.kernel.start(pid);
  await reach(h, pid, "blocked");
  return pid;
}

/** Ends the message wait of a new receiver with `value`, and returns what the receiver got. */
async function receiverGiven(value: unknown, checkResults: boolean): Promise<unknown> {
  let result: unknown;
  await withHarness(async (h) => {
    const pid = await startWaiting(h, RECEIVER);
    const blocked = await h.kernel.processes.require(pid);
    assert.equal(blocked.waitingOn, "message");
    assert.ok(await h.kernel.waits.complete(pid, blocked.waitSeq!, { ok: true, value }));
    const end = await h.kernel.waitFor(pid);
    assert.equal(end.state, "exited", JSON.stringify(end.error));
    result = end.result;
  }, { checkResults });
  return result;
}

Deno.test("a waited-for result that does not fit its declared type fails the call at replay", async () => {
  // `msg.recv` answers a message; this wait ended with a bare number.
  const got = await receiverGiven(42, true) as { code: string; message: string };
  assert.equal(got.code, "EINVAL");
  assert.match(got.message, /^Cannot answer msg\.recv: its result does not fit the declared type/);
});

Deno.test("without checkResults, the same result reaches the program as written", async () => {
  assert.deepEqual(await receiverGiven(42, false), { value: 42 });
});

Deno.test("a waited-for result that fits its declared type reaches the program with checkResults", async () => {
  const message = { seq: 1, from: 0, data: { hello: "world" }, at: 1_700_000_000_000 };
  assert.deepEqual(await receiverGiven(message, true), { value: message });
});

Deno.test("a permission a human grants answers human.request_permission with a result that fits", async () => {
  await withHarness(async (h) => {
    const pid = await startWaiting(
      h,
      `export default async (sys) =>
        await sys.human.requestPermission("fs:read:notes.txt", "to read notes")`,
      ["fs:read:**"],
    );
    const request = (await h.kernel.humans.pending()).find((r) => r.pid === pid);
    assert.ok(request, "a pending request");
    await h.kernel.humans.answer(request.id, { decision: "allow_once" }, { by: "operator" });
    const end = await h.kernel.waitFor(pid);
    // With checkResults, a result that did not fit would have failed the program.
    assert.equal(end.state, "exited", JSON.stringify(end.error));
    assert.equal(typeof end.result, "string");
  });
});
