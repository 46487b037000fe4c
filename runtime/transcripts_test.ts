import assert from "node:assert/strict";
import type { Message } from "./model.ts";
import { ProcessTable } from "./process_table.ts";
import { StorageQuotas } from "./storage_quota.ts";
import { Transcripts } from "./transcripts.ts";
import { newProcess } from "./_fixtures.ts";

async function withTranscripts(
  budget: { storageBytes?: number },
  fn: (transcripts: Transcripts, pid: number, kv: Deno.Kv) => Promise<void>,
): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  try {
    const processes = new ProcessTable(kv);
    const { pid } = await processes.create(newProcess({ image: "demo@1.0.0", budget }));
    await fn(new Transcripts(kv, new StorageQuotas(kv, processes)), pid, kv);
  } finally {
    kv.close();
  }
}

const system: Message = { role: "system", content: "be brief" };
const user: Message = { role: "user", content: "hello" };

Deno.test("a transcript keeps each message once, in order, with the replies", async () => {
  await withTranscripts({}, async (transcripts, pid) => {
    assert.deepEqual(await transcripts.read(pid), []);
    const first: Message = { role: "assistant", content: "hi" };
    await transcripts.record(pid, [system, user], first);
    // The next call sends the whole conversation again: only what is new is added.
    const more: Message = { role: "user", content: "and?" };
    const second: Message = { role: "assistant", content: "done" };
    await transcripts.record(pid, [system, user, first, more], second);
    assert.deepEqual(await transcripts.read(pid), [system, user, first, more, second]);
  });
});

Deno.test("a transcript over the storage quota is refused and records nothing", async () => {
  await withTranscripts({ storageBytes: 200 }, async (transcripts, pid, kv) => {
    const reply: Message = { role: "assistant", content: "ok" };
    await transcripts.record(pid, [user], reply);
    const big: Message = { role: "user", content: "x".repeat(500) };
    await assert.rejects(transcripts.record(pid, [user, reply, big], reply), (error: Error) => {
      assert.equal((error as { code?: string }).code, "EBUDGET");
      assert.match(error.message, /^Cannot record the transcript of process \d+: /);
      return true;
    });
    assert.deepEqual(await transcripts.read(pid), [user, reply]);
    assert.equal((await kv.get(["transcript_len", pid])).value, 2);
  });
});

Deno.test("concurrent records of one transcript lose nothing", async () => {
  await withTranscripts({}, async (transcripts, pid) => {
    const replies = Array.from({ length: 6 }, (_, i): Message => ({
      role: "assistant",
      content: `reply ${i}`,
    }));
    await Promise.all(replies.map((reply) => transcripts.record(pid, [], reply)));
    const stored = await transcripts.read(pid);
    assert.equal(stored.length, 6);
    assert.deepEqual(stored.map((m) => m.content).sort(), replies.map((m) => m.content).sort());
  });
});
