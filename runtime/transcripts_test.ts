import assert from "node:assert/strict";
import { writeChunked } from "./chunks.ts";
import type { Message, ModelReply } from "./model.ts";
import { ProcessTable } from "./process_table.ts";
import { StorageQuotas } from "./storage_quota.ts";
import { Transcripts } from "./transcripts.ts";
import { nextConversationDigest } from "./guest/cell_protocol.ts";
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

/** Quotas that charge nothing, for a second host over the same store. */
const noQuotas = {
  prepareCharges: () => Promise.resolve({ result: undefined, apply: () => {} }),
};

/** A model reply saying `message`. */
function said(message: Message): ModelReply {
  return { message: message as ModelReply["message"], usage: { inputTokens: 1, outputTokens: 1 } };
}

const system: Message = { role: "system", content: "be brief" };
const user: Message = { role: "user", content: "hello" };

Deno.test("a transcript keeps each message once, in order, with the replies", async () => {
  await withTranscripts({}, async (transcripts, pid) => {
    assert.deepEqual(await transcripts.read(pid), []);
    const first: Message = { role: "assistant", content: "hi" };
    await transcripts.record(pid, { messages: [system, user] }, said(first));
    // The next call sends the whole conversation again: only what is new is added.
    const more: Message = { role: "user", content: "and?" };
    const second: Message = { role: "assistant", content: "done" };
    await transcripts.record(pid, { messages: [system, user, first, more] }, said(second));
    assert.deepEqual(await transcripts.read(pid), [system, user, first, more, second]);
  });
});

Deno.test("a transcript over the storage quota is refused and records nothing", async () => {
  await withTranscripts({ storageBytes: 200 }, async (transcripts, pid, kv) => {
    const reply: Message = { role: "assistant", content: "ok" };
    await transcripts.record(pid, { messages: [user] }, said(reply));
    const big: Message = { role: "user", content: "x".repeat(500) };
    await assert.rejects(
      transcripts.record(pid, { messages: [user, reply, big] }, said(reply)),
      (error: Error) => {
        assert.equal((error as { code?: string }).code, "EBUDGET");
        assert.match(error.message, /^Cannot record the transcript of process \d+: /);
        return true;
      },
    );
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
    await Promise.all(
      replies.map((reply) => transcripts.record(pid, { messages: [] }, said(reply))),
    );
    const stored = await transcripts.read(pid);
    assert.equal(stored.length, 6);
    assert.deepEqual(stored.map((m) => m.content).sort(), replies.map((m) => m.content).sort());
  });
});

Deno.test("a call checks the transcript length this host last recorded without reading it; one another host moved is refused from the store", async () => {
  await withTranscripts({}, async (transcripts, pid, kv) => {
    const first: Message = { role: "assistant", content: "one" };
    const ref = (await transcripts.record(pid, { messages: [user] }, said(first)))!;
    // This host's next call checks its reference, and records after it, without reading the length back.
    let lengthReads = 0;
    const get = kv.get.bind(kv);
    kv.get = ((key: Deno.KvKey) => {
      if (key[0] === "transcript_len") lengthReads++;
      return get(key);
    }) as Deno.Kv["get"];
    const more: Message = { role: "user", content: "and?" };
    const second: Message = { role: "assistant", content: "two" };
    await transcripts.resolve(pid, { transcript: ref, messages: [more] });
    const next =
      (await transcripts.record(pid, { transcript: ref, messages: [more] }, said(second)))!;
    assert.equal(lengthReads, 0);
    // Another host appends: this host's copy still ends at the reference,
    // the very conversation it names, but recording after it is refused,
    // confirmed from the store, and nothing of it is recorded.
    const otherHost = new Transcripts(kv, noQuotas);
    const third: Message = { role: "assistant", content: "three" };
    await otherHost.record(pid, { messages: [] }, said(third));
    const stale = { transcript: next, messages: [more] };
    assert.deepEqual((await transcripts.resolve(pid, stale)).messages, [
      user,
      first,
      more,
      second,
      more,
    ]);
    assert.equal(await codeOf(transcripts.record(pid, stale, said(first))), "EINVAL");
    assert.deepEqual(await transcripts.read(pid), [user, first, more, second, third]);
    // Without a reference, this host's record lands after the other host's: nothing is lost.
    const fourth: Message = { role: "assistant", content: "four" };
    await transcripts.record(pid, { messages: [] }, said(fourth));
    assert.deepEqual(await transcripts.read(pid), [user, first, more, second, third, fourth]);
  });
});

/** The conversation digest of `messages`. */
async function digestOf(messages: readonly Message[]): Promise<string> {
  let digest = "";
  for (const message of messages) digest = await nextConversationDigest(digest, message);
  return digest;
}

Deno.test("an agent checkpoint's transcript reference resumes only the conversation it names", async () => {
  await withTranscripts({}, async (transcripts, pid, kv) => {
    const reply: Message = {
      role: "assistant",
      tool_calls: [{ id: "c1", name: "noop", arguments: { a: 1, b: [2] } }],
    };
    const result: Message = { role: "tool", tool_call_id: "c1", name: "noop", content: "{}" };
    await transcripts.record(pid, { messages: [system, user] }, said(reply));
    // Key order does not change the digest: the host's parsing may reorder keys.
    const reordered = [system, { content: user.content, role: "user" }, reply] as Message[];
    const state = {
      step: 1,
      transcript: { length: 3, digest: await digestOf(reordered) },
      tail: [result],
      jit: [],
    };
    assert.deepEqual(await transcripts.resumeAgent(pid, state), {
      step: 1,
      jit: [],
      messages: [system, user, reply, result],
      transcript: state.transcript,
    });
    // A checkpoint that holds its messages is given back as it is.
    const old = { step: 1, messages: [system, user, reply, result] };
    assert.equal(await transcripts.resumeAgent(pid, old), old);
    // More messages than are stored, or other ones, or a malformed reference: not resumed.
    const longer = { ...state, transcript: { length: 4, digest: state.transcript.digest } };
    assert.equal(await transcripts.resumeAgent(pid, longer), undefined);
    const other = { ...state, transcript: { length: 3, digest: await digestOf([system, user]) } };
    assert.equal(await transcripts.resumeAgent(pid, other), undefined);
    assert.equal(await transcripts.resumeAgent(pid, { ...state, transcript: 3 }), undefined);
    // A transcript changed under the reference no longer matches it (read by another host).
    const op = kv.atomic();
    writeChunked(op, ["transcript", pid, 1], { role: "user", content: "something else" });
    await op.commit();
    const otherHost = new Transcripts(kv, noQuotas);
    assert.equal(await otherHost.resumeAgent(pid, state), undefined);
  });
});

/** The error code a rejected promise carries. */
async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    return (error as { code?: string }).code;
  }
  return undefined;
}

Deno.test("a request that references the transcript sends only the messages after it", async () => {
  await withTranscripts({}, async (transcripts, pid, kv) => {
    const first: Message = { role: "assistant", content: "hi" };
    const ref = await transcripts.record(pid, { messages: [system, user] }, said(first));
    // A fresh transcript holds exactly the conversation: the reply names it.
    assert.deepEqual(ref, { length: 3, digest: await digestOf([system, user, first]) });
    const more: Message = { role: "user", content: "and?" };
    const request = { transcript: ref!, messages: [more] };
    const conversation = await transcripts.resolve(pid, request);
    assert.deepEqual(conversation.messages, [system, user, first, more]);
    assert.equal(conversation.recorded, undefined);
    const second: Message = { role: "assistant", content: "done" };
    const next = await transcripts.record(pid, request, said(second));
    const whole = [system, user, first, more, second];
    assert.deepEqual(next, { length: 5, digest: await digestOf(whole) });
    assert.deepEqual(await transcripts.read(pid), whole);
    // Another host, reading the store back, resolves the same reference the same way.
    const otherHost = new Transcripts(kv, noQuotas);
    assert.deepEqual((await otherHost.resolve(pid, request)).messages, [system, user, first, more]);
  });
});

Deno.test("a reply's reference is the conversation digest of cell_protocol.ts, whatever the text", async () => {
  await withTranscripts({}, async (transcripts, pid) => {
    const asked: Message = { role: "user", content: 'naïve café, 数据, 🙂, \u0000 and "quotes"' };
    const reply: Message = {
      role: "assistant",
      content: "é",
      tool_calls: [{ id: "c1", name: "t", arguments: { z: [1, { b: "🙂", a: null }], a: "\n" } }],
    };
    const ref = await transcripts.record(pid, { messages: [system, asked] }, said(reply));
    assert.deepEqual(ref, { length: 3, digest: await digestOf([system, asked, reply]) });
  });
});

Deno.test("a transcript reference that does not match the stored transcript is refused", async () => {
  await withTranscripts({}, async (transcripts, pid) => {
    const first: Message = { role: "assistant", content: "hi" };
    const ref = (await transcripts.record(pid, { messages: [system, user] }, said(first)))!;
    const more: Message = { role: "user", content: "and?" };
    const wrong = [
      { length: 3, digest: await digestOf([system, { role: "user", content: "other" }, first]) },
      { length: 4, digest: ref.digest },
      { length: 2, digest: ref.digest },
      { length: 0, digest: ref.digest },
    ];
    for (const transcript of wrong) {
      assert.equal(
        await codeOf(transcripts.resolve(pid, { transcript, messages: [more] })),
        "EINVAL",
      );
    }
    // Nothing was added.
    assert.deepEqual(await transcripts.read(pid), [system, user, first]);
  });
});

Deno.test("a call the transcript recorded but the journal lost answers again as it did", async () => {
  await withTranscripts({}, async (transcripts, pid) => {
    const first: Message = { role: "assistant", content: "hi" };
    const ref = (await transcripts.record(pid, { messages: [system, user] }, said(first)))!;
    const more: Message = { role: "user", content: "and?" };
    const second: Message = { role: "assistant", content: "done" };
    const reply = { ...said(second), exit: true };
    await transcripts.record(pid, { transcript: ref, messages: [more] }, reply);
    // The same call again (its journal record was lost): the recorded reply, the model not asked.
    const again = await transcripts.resolve(pid, { transcript: ref, messages: [more] });
    assert.deepEqual(again.recorded, {
      ...reply,
      transcript: { length: 5, digest: await digestOf([system, user, first, more, second]) },
    });
    // Other messages after the reference: the transcript holds another conversation.
    const other: Message = { role: "user", content: "or?" };
    assert.equal(
      await codeOf(transcripts.resolve(pid, { transcript: ref, messages: [other] })),
      "EINVAL",
    );
    assert.equal(await transcripts.read(pid).then((m) => m.length), 5);
  });
});
