/**
 * The agent loop's checkpoints and model requests reference the transcript
 * the host stores instead of holding the conversation: each stays the same
 * size however long the run, and an agent resumed from one (after a host
 * restart, or forked from a snapshot) goes on with its whole conversation,
 * repeating nothing.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { callDigest } from "../broker/broker.ts";
import type { JournalRecord } from "../broker/journal.ts";
import { writeChunked } from "../runtime/chunks.ts";
import type { AgentImage } from "../runtime/image.ts";
import { Kernel } from "../runtime/kernel.ts";
import {
  type Message,
  type ModelProvider,
  type ModelReply,
  type ModelRequest,
  ScriptedModel,
  type ScriptTurn,
} from "../runtime/model.ts";
import { withHarness } from "./_harness.ts";
import { failed, program, succeeded } from "./_programs.ts";

/** A scripted model that keeps the messages of every request it answers. */
class RecordingModel implements ModelProvider {
  readonly name = "scripted";
  readonly requests: Message[][] = [];
  #script: ScriptedModel;

  constructor(turns: ScriptTurn[]) {
    this.#script = new ScriptedModel({ turns });
  }

  complete(request: ModelRequest): Promise<ModelReply> {
    this.requests.push(structuredClone(request.messages));
    return this.#script.complete(request);
  }
}

/** `steps` turns calling a tool the image lacks (an error result, no syscall), then `last`. */
function script(steps: number, last: ScriptTurn[]): ScriptTurn[] {
  const turns: ScriptTurn[] = [];
  for (let i = 0; i < steps; i++) turns.push({ tool_calls: [{ name: "noop", arguments: { i } }] });
  return [...turns, ...last, { content: "done", exit: true }];
}

const ASK: ScriptTurn = {
  tool_calls: [{ name: "ask_human", arguments: { question: "Colour?" } }],
};

const ASKER: AgentImage = {
  name: "asker",
  version: "1.0.0",
  entry: "libos:agent",
  tools: ["ask_human"],
  capabilities: ["human:ask:*"],
  policy: {},
};

/** The checkpoint states of `pid`, oldest first, with the length of their stored text. */
async function checkpoints(kv: Deno.Kv, pid: number): Promise<{ size: number; state: unknown }[]> {
  const texts = new Map<number, string[]>();
  for await (const entry of kv.list<unknown>({ prefix: ["ckpt_state", pid] })) {
    const [, , seq, part] = entry.key as [string, number, number, string | number];
    if (part === "n") continue;
    texts.set(seq, [...(texts.get(seq) ?? []), entry.value as string]);
  }
  return [...texts.entries()].sort(([a], [b]) => a - b).map(([, parts]) => ({
    size: parts.join("").length,
    state: JSON.parse(parts.join("")),
  }));
}

/** Resolves once `pid` is blocked. */
function blocked(kernel: Kernel, pid: number): Promise<void> {
  return new Promise((resolve) => {
    const off = kernel.processes.subscribe((r) => {
      if (r.pid === pid && r.state === "blocked") {
        off();
        resolve();
      }
    });
  });
}

/** Answers the one pending question of `pid`. */
async function answer(kernel: Kernel, pid: number, text: string): Promise<void> {
  const [request] = (await kernel.humans.pending()).filter((r) => r.pid === pid);
  assert.ok(request, `process ${pid} asks nothing`);
  await kernel.humans.answer(request.id, { answer: text }, { by: "operator" });
}

Deno.test("an agent's checkpoint stays the same size however long the run", async () => {
  const steps = 200;
  const model = new RecordingModel(script(steps, []));
  await withHarness(async (h) => {
    await h.kernel.images.register({ ...ASKER, name: "long" });
    const end = await h.kernel.run({ image: "long@1.0.0", workspace: h.workspace });
    assert.equal(end.state, "exited");
    assert.equal(end.result, "done");
    const saved = await checkpoints(h.kernel.store.kv, end.pid);
    assert.equal(saved.length, steps);
    // Each holds a reference to the transcript and the one tool result after it, not the conversation.
    for (const { state } of saved) {
      assert.equal((state as { messages?: unknown }).messages, undefined);
      assert.equal((state as { tail: unknown[] }).tail.length, 1);
    }
    assert.ok(
      saved.at(-1)!.size < 2 * saved[0].size,
      `checkpoint grew from ${saved[0].size} to ${saved.at(-1)!.size} characters`,
    );
    // The transcript the checkpoints reference holds the whole conversation, once.
    const transcript = await h.kernel.transcript(end.pid);
    assert.deepEqual(transcript, [...model.requests.at(-1)!, {
      role: "assistant",
      content: "done",
    }]);
    assert.equal(transcript.length, 1 + 2 * steps + 1);
  }, { model });
});

/**
 * The JSON characters of `value` with every digest and every number
 * counted as one character: what sets two steps apart besides the length
 * of their counts, ids and times.
 */
function sizeOf(value: unknown): number {
  return JSON.stringify(value).replace(/[0-9a-f]{64}/g, "#").replace(/\d+/g, "0").length;
}

/** The {@link sizeOf} of each value stored under `prefix`, by key. */
async function storedSizes(kv: Deno.Kv, prefix: Deno.KvKey): Promise<Map<string, number>> {
  const sizes = new Map<string, number>();
  for await (const entry of kv.list({ prefix })) {
    sizes.set(JSON.stringify(entry.key), sizeOf(entry.value));
  }
  return sizes;
}

Deno.test("what an agent step sends and stores for its model call stays the same as its transcript grows", async () => {
  const steps = 200;
  const model = new RecordingModel(script(steps, []));
  await withHarness(async (h) => {
    await h.kernel.images.register({ ...ASKER, name: "long" });
    // The size of each model.complete request as the broker receives it.
    const requests: { seq: number; size: number }[] = [];
    const broker = h.kernel.broker;
    const dispatch = broker.dispatch.bind(broker);
    broker.dispatch = (ctx, request) => {
      if (request.name === "model.complete") {
        requests.push({ seq: ctx.seq, size: sizeOf(request.args) });
      }
      return dispatch(ctx, request);
    };
    const end = await h.kernel.run({ image: "long@1.0.0", workspace: h.workspace });
    assert.equal(end.state, "exited");
    assert.equal(requests.length, steps + 1);
    // The 10th and the 200th call send the same request but for their
    // numbers (the transcript length, the tool call id).
    assert.equal(requests[steps - 1].size, requests[9].size);
    // What the store keeps of each call: its journal record and the
    // transcript messages it added (the tool result it sent and the reply),
    // the same for the 10th call as for the 200th.
    const kv = h.kernel.store.kv;
    await h.kernel.journal.flush();
    const journal = await storedSizes(kv, ["journal", end.pid]);
    const transcript = await storedSizes(kv, ["transcript", end.pid]);
    const written = (step: number) => {
      const seq = requests[step].seq;
      let bytes = journal.get(JSON.stringify(["journal", end.pid, seq]))!;
      // Transcript messages 2 * step (the tool result sent) and 2 * step + 1 (the reply).
      for (const [key, size] of transcript) {
        const i = (JSON.parse(key) as number[])[2];
        if (i === 2 * step || i === 2 * step + 1) bytes += size;
      }
      return bytes;
    };
    assert.equal(written(steps - 1), written(9));
    // The reply names the conversation through it: the next request sends that reference.
    const reply = (await kv.get<JournalRecord>(["journal", end.pid, requests[steps].seq])).value!;
    assert.equal(
      (reply.value as { transcript: { length: number } }).transcript.length,
      2 * steps + 2,
    );
  }, { model });
});

Deno.test("a model call whose transcript reference does not match is refused and the model is not asked", async () => {
  const model = new RecordingModel([{ content: "first" }, { content: "second" }]);
  await withHarness(async (h) => {
    const end = await h.run(program(`
      const user = { role: "user", content: "hello" };
      const first = await sys.model.complete({ messages: [user] });
      const more = { role: "user", content: "and?" };
      const ref = first.transcript;
      const wrong = [
        { length: ref.length, digest: "0".repeat(64) },
        { length: ref.length + 1, digest: ref.digest },
        { length: 0, digest: "" },
      ];
      const refused = [];
      for (const transcript of wrong) {
        refused.push(await attempt(() => sys.model.complete({ transcript, messages: [more] })));
      }
      const second = await attempt(() => sys.model.complete({ transcript: ref, messages: [more] }));
      return { ref, refused, second };
    `));
    assert.equal(end.state, "exited", JSON.stringify(end.error));
    const { ref, refused, second } = end.result as {
      ref: { length: number };
      refused: unknown[];
      second: unknown;
    };
    assert.equal(ref.length, 2);
    for (const attempt of refused) failed(attempt, "EINVAL", /transcript reference/);
    // The model saw the first call and the one whose reference matched, expanded: nothing else.
    assert.deepEqual(model.requests, [
      [{ role: "user", content: "hello" }],
      [
        { role: "user", content: "hello" },
        { role: "assistant", content: "first" },
        { role: "user", content: "and?" },
      ],
    ]);
    const answer = succeeded<{ message: unknown; transcript: { length: number } }>(second);
    assert.deepEqual(answer.message, { role: "assistant", content: "second" });
    assert.equal(answer.transcript.length, 4);
    assert.equal((await h.kernel.transcript(end.pid)).length, 4);
  }, { model });
});

/**
 * Runs an agent to its question, stops the host, lets `meddle` change the
 * store, then answers on a new host; checks the agent went on with its
 * whole conversation and asked the model nothing twice.
 */
async function stopAndResume(
  meddle: (kv: Deno.Kv, pid: number) => Promise<void>,
): Promise<{ request: Message[]; transcript: Message[] }> {
  const root = await Deno.realPath(await Deno.makeTempDir());
  const store = join(root, "kv.db");
  try {
    const before = new RecordingModel(script(5, [ASK]));
    let pid: number;
    {
      const kernel = await Kernel.open({ store, model: before });
      await kernel.images.register(ASKER);
      pid = (await kernel.spawn({ image: "asker@1.0.0", workspace: root })).pid;
      const asking = blocked(kernel, pid);
      kernel.start(pid);
      await asking;
      await kernel.close();
    }
    assert.equal(before.requests.length, 6);
    const after = new RecordingModel(script(5, [ASK]));
    const kernel = await Kernel.open({ store, model: after });
    try {
      // The latest checkpoint is a reference to the transcript.
      const saved = await checkpoints(kernel.store.kv, pid);
      const latest = saved.at(-1)!.state as { step: number; transcript: { length: number } };
      assert.equal(latest.step, 5);
      assert.equal(latest.transcript.length, 1 + 2 * 4 + 1);
      assert.equal((latest as { messages?: unknown }).messages, undefined);
      await meddle(kernel.store.kv, pid);

      await kernel.recover();
      await answer(kernel, pid, "blue");
      const end = await kernel.waitFor(pid);
      assert.equal(end.state, "exited");
      assert.equal(end.result, "done");
      // The turns before the stop were not asked again: the one new request
      // holds every earlier message, then the answer.
      assert.equal(after.requests.length, 1);
      const [request] = after.requests;
      assert.deepEqual(request.slice(0, -1), [
        ...before.requests.at(-1)!,
        { role: "assistant", tool_calls: ASK.tool_calls!.map((c) => ({ ...c, id: "call_5_0" })) },
      ]);
      assert.equal(request.at(-1)!.role, "tool");
      assert.match(request.at(-1)!.content ?? "", /blue/);
      return { request, transcript: await kernel.transcript(pid) };
    } finally {
      await kernel.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("an agent stopped mid-run resumes from its checkpoint with its whole conversation", async () => {
  const { request, transcript } = await stopAndResume(() => Promise.resolve());
  // The transcript holds each message once.
  assert.deepEqual(transcript, [...request, { role: "assistant", content: "done" }]);
});

Deno.test("an agent whose transcript no longer matches its checkpoint resumes from its journal", async () => {
  // The stored transcript now differs from the conversation the checkpoint
  // names (as when a call was recorded but never journaled): the agent does
  // not go on from it, it replays its journal and still asks nothing twice.
  await stopAndResume(async (kv, pid) => {
    const op = kv.atomic();
    writeChunked(op, ["transcript", pid, 2], { role: "assistant", content: "never said" });
    await op.commit();
  });
});

Deno.test("an agent whose model reply the transcript recorded but the journal lost goes on with that reply", async () => {
  // The host stopped after the transcript recorded the last model call and
  // before the journal's group commit took its record: the resumed agent
  // gets that very reply from the transcript (the model is not asked
  // again), and the transcript holds each message once.
  const { request, transcript } = await stopAndResume(async (kv, pid) => {
    let last: JournalRecord | undefined;
    for await (const entry of kv.list<JournalRecord>({ prefix: ["journal", pid] })) {
      if (entry.value.name === "model.complete") last = entry.value;
    }
    await kv.delete(["journal", pid, last!.seq]);
  });
  assert.deepEqual(transcript, [...request, { role: "assistant", content: "done" }]);
});

Deno.test("an agent forked from a snapshot after checkpoints goes on with its whole conversation", async () => {
  const model = new RecordingModel(script(5, [ASK]));
  await withHarness(async (h) => {
    await h.kernel.images.register(ASKER);
    const pid = (await h.kernel.spawn({ image: "asker@1.0.0", workspace: h.workspace })).pid;
    const asking = blocked(h.kernel, pid);
    h.kernel.start(pid);
    await asking;
    assert.equal((await checkpoints(h.kernel.store.kv, pid)).length, 5);
    const conversation = model.requests.at(-1)!;
    const snapshot = await h.kernel.snapshots.save(pid);
    const copy = await h.kernel.snapshots.fork(snapshot.id);
    await blocked(h.kernel, copy.pid);
    // The copy replayed to the question without asking the model again.
    assert.equal(model.requests.length, 6);
    await answer(h.kernel, copy.pid, "green");
    const end = await h.kernel.waitFor(copy.pid);
    assert.equal(end.result, "done");
    assert.equal(model.requests.length, 7);
    const request = model.requests[6];
    assert.deepEqual(request.slice(0, conversation.length), conversation);
    assert.equal(request.length, conversation.length + 2);
    assert.match(request.at(-1)!.content ?? "", /green/);
    assert.deepEqual(await h.kernel.transcript(copy.pid), [...request, {
      role: "assistant",
      content: "done",
    }]);
    await answer(h.kernel, pid, "red");
    assert.equal((await h.kernel.waitFor(pid)).result, "done");
  }, { model });
});

/**
 * Calls `check` after every commit `kv` makes, with no other commit in
 * between: each call sees the store as a host stopped right after that
 * commit would leave it. Returns how many commits were checked.
 */
function checkEveryCommit(kv: Deno.Kv, check: () => Promise<void>): () => number {
  const atomic = kv.atomic.bind(kv);
  let commits = 0;
  let turn = Promise.resolve();
  kv.atomic = () => {
    const op = atomic();
    const commit = op.commit.bind(op);
    op.commit = () => {
      const done = turn.then(async () => {
        const result = await commit();
        if (result.ok) {
          commits++;
          await check();
        }
        return result;
      });
      turn = done.then(() => {}, () => {});
      return done;
    };
    return op;
  };
  return () => commits;
}

/** The values stored under `prefix`. */
async function valuesUnder<T>(kv: Deno.Kv, prefix: Deno.KvKey): Promise<T[]> {
  const out: T[] = [];
  for await (const entry of kv.list<T>({ prefix })) out.push(entry.value);
  return out;
}

Deno.test("every commit of an agent run leaves each model reply and checkpoint recorded with its journal record, or neither", async () => {
  const turns: ScriptTurn[] = Array.from({ length: 6 }, () => ({
    tool_calls: [{ name: "read_file", arguments: { path: "note.txt" } }],
  }));
  const model = new RecordingModel([...turns, { content: "done", exit: true }]);
  await withHarness(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "note.txt"), "a note\n");
    await h.kernel.images.register({
      ...ASKER,
      name: "reader",
      tools: ["read_file"],
      capabilities: ["fs:read:**"],
    });
    const kv = h.kernel.store.kv;
    // The pid of the agent, once it is spawned.
    const agent: { pid?: number } = {};
    const problems: string[] = [];
    const checked = checkEveryCommit(kv, async () => {
      const pid = agent.pid;
      if (pid === undefined) return;
      const journal = await valuesUnder<JournalRecord>(kv, ["journal", pid]);
      const done = new Map(journal.filter((r) => r.phase === "done").map((r) => [r.seq, r]));
      const completes = [...done.values()].filter((r) => r.name === "model.complete");
      const replies = await valuesUnder<{ usage: ModelReply["usage"] }>(kv, [
        "transcript_reply",
        pid,
      ]);
      const usage = (await kv.get<{ usage: { tokens: number; toolCalls: number } }>(["proc", pid]))
        .value!.usage;
      const spent = replies.reduce((sum, r) => sum + r.usage.inputTokens + r.usage.outputTokens, 0);
      const toolCalls = completes.reduce(
        (sum, r) => sum + ((r.value as ModelReply).message.tool_calls?.length ?? 0),
        0,
      );
      if (replies.length !== completes.length) {
        problems.push(`${replies.length} replies in the transcript, ${completes.length} journaled`);
      }
      if (usage.tokens !== spent || usage.toolCalls !== toolCalls) {
        problems.push(
          `charged ${usage.tokens} tokens and ${usage.toolCalls} tool calls for ` +
            `${spent} tokens and ${toolCalls} tool calls recorded`,
        );
      }
      for (const { seq } of await valuesUnder<{ seq: number }>(kv, ["ckpt", pid])) {
        if (done.get(seq)?.name !== "ckpt.save") problems.push(`checkpoint ${seq} has no record`);
      }
    });
    const pid = agent.pid =
      (await h.kernel.spawn({ image: "reader@1.0.0", workspace: h.workspace })).pid;
    h.kernel.start(pid);
    const end = await h.kernel.waitFor(pid);
    await h.kernel.journal.flush();
    assert.equal(end.state, "exited", JSON.stringify(end.error));
    assert.equal(model.requests.length, 7);
    assert.deepEqual(problems, []);
    // Every step was checked, commit by commit, and all of it was recorded in the end.
    assert.ok(checked() >= 12, `only ${checked()} commits`);
    assert.equal((await valuesUnder(kv, ["transcript_reply", pid])).length, 7);
    assert.equal((await valuesUnder(kv, ["ckpt", pid])).length, 6);
  }, { model });
});

/**
 * Notes the KV keys `kv` reads and writes while `during()` is true, each
 * with its numbers written `#`, in order: what a call touches, whatever
 * the pid, seq or index. The returned function hands over the keys noted
 * since it was last called.
 */
function keysTouched(kv: Deno.Kv, during: () => boolean): () => string[] {
  let current: string[] = [];
  const shape = (key: Deno.KvKey) => JSON.stringify(key).replace(/\d+/g, "#");
  const { get, getMany, list, atomic } = {
    get: kv.get.bind(kv),
    getMany: kv.getMany.bind(kv),
    list: kv.list.bind(kv),
    atomic: kv.atomic.bind(kv),
  };
  const note = (what: string) => {
    if (during()) current.push(what);
  };
  kv.get = ((key: Deno.KvKey, options?: { consistency?: Deno.KvConsistencyLevel }) => {
    note(`get ${shape(key)}`);
    return get(key, options);
  }) as Deno.Kv["get"];
  kv.getMany = ((keys: Deno.KvKey[], options?: { consistency?: Deno.KvConsistencyLevel }) => {
    for (const key of keys) note(`get ${shape(key)}`);
    return getMany(keys, options);
  }) as Deno.Kv["getMany"];
  kv.list = ((selector: Deno.KvListSelector, options?: Deno.KvListOptions) => {
    const iterator = list(selector, options);
    const next = iterator.next.bind(iterator);
    iterator.next = async () => {
      const entry = await next();
      if (!entry.done) note(`list ${shape(entry.value.key)}`);
      return entry;
    };
    return iterator;
  }) as Deno.Kv["list"];
  kv.atomic = () => {
    const op = atomic();
    for (const name of ["check", "set", "delete", "sum"] as const) {
      const method = (op[name] as (...args: unknown[]) => Deno.AtomicOperation).bind(op);
      (op as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
        const first = args[0] as Deno.KvKey | Deno.AtomicCheck;
        note(`${name} ${shape(Array.isArray(first) ? first : (first as Deno.AtomicCheck).key)}`);
        method(...args);
        return op;
      };
    }
    return op;
  };
  return () => {
    const taken = current;
    current = [];
    return taken;
  };
}

Deno.test("a checkpoint costs the same KV reads and writes at the 500th save as at the 10th", async () => {
  const saves = 500;
  const model = new RecordingModel(script(saves, []));
  await withHarness(async (h) => {
    await h.kernel.images.register({ ...ASKER, name: "long" });
    // What each ckpt.save call touches, from its arrival to its reply.
    let saving = false;
    const touched: string[][] = [];
    const kv = h.kernel.store.kv;
    const take = keysTouched(kv, () => saving);
    const broker = h.kernel.broker;
    const dispatch = broker.dispatch.bind(broker);
    broker.dispatch = async (ctx, request) => {
      if (request.name !== "ckpt.save") return await dispatch(ctx, request);
      saving = true;
      try {
        return await dispatch(ctx, request);
      } finally {
        saving = false;
        touched.push(take());
      }
    };
    const end = await h.kernel.run({ image: "long@1.0.0", workspace: h.workspace });
    assert.equal(end.state, "exited", JSON.stringify(end.error));
    assert.equal(touched.length, saves);
    // Admission reads the journal counter once a second, whichever call comes then.
    // Which kinds of key, not how many of each: a buffered record of the
    // call before may flush in the same commit or in its own.
    const counted = touched.map((keys) =>
      [...new Set(keys.filter((k) => k !== 'get ["journal_used",#]'))].sort()
    );
    assert.deepEqual(counted[saves - 1], counted[9]);
    assert.ok(counted[9].length > 0);
    assert.ok(
      counted.every((keys) => !keys.some((k) => /^(get|list) \["ckpt/.test(k))),
      "a save read a checkpoint",
    );
  }, { model });
});

Deno.test("an agent step checks what the step before committed without reading it back", async () => {
  const steps = 12;
  const model = new RecordingModel(script(steps, []));
  await withHarness(async (h) => {
    await h.kernel.images.register({ ...ASKER, name: "long" });
    // What each model.complete and ckpt.save call reads, from its arrival to its reply.
    let calling = false;
    const read: { name: string; keys: string[] }[] = [];
    const take = keysTouched(h.kernel.store.kv, () => calling);
    const broker = h.kernel.broker;
    const dispatch = broker.dispatch.bind(broker);
    broker.dispatch = async (ctx, request) => {
      if (request.name !== "model.complete" && request.name !== "ckpt.save") {
        return await dispatch(ctx, request);
      }
      calling = true;
      try {
        return await dispatch(ctx, request);
      } finally {
        calling = false;
        read.push({ name: request.name, keys: take().filter((k) => k.startsWith("get ")) });
      }
    };
    const end = await h.kernel.run({ image: "long@1.0.0", workspace: h.workspace });
    assert.equal(end.state, "exited", JSON.stringify(end.error));
    const counted = (name: string, key: string) =>
      read.filter((r) => r.name === name).slice(2).map((r) =>
        r.keys.filter((k) => k === `get ${key}`).length
      );
    const calls = steps - 1;
    // What a model call plans from and checks in its commit (the records
    // up the lineage, the transcript's length, the storage counters) is
    // what the step before committed, not read back.
    for (const key of ['["proc",#]', '["transcript_len",#]', '["storage_used",#]']) {
      assert.deepEqual(counted("model.complete", key), Array(calls).fill(0), key);
    }
    // A checkpoint reads nothing back: its storage counter is what the model call before committed.
    assert.deepEqual(counted("ckpt.save", '["storage_used",#]'), Array(steps - 2).fill(0));
  }, { model });
});

Deno.test("a model reply over the toolCalls budget is charged its tokens and recorded nowhere", async () => {
  const read: ScriptTurn = {
    tool_calls: [{ name: "read_file", arguments: { path: "note.txt" } }],
  };
  // The second reply asks for two tool calls when one is left of the budget.
  const model = new RecordingModel([read, {
    tool_calls: [...read.tool_calls!, ...read.tool_calls!],
  }]);
  await withHarness(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "note.txt"), "a note\n");
    await h.kernel.images.register({
      ...ASKER,
      name: "tight",
      tools: ["read_file"],
      capabilities: ["fs:read:**"],
      budget: { toolCalls: 2 },
    });
    const end = await h.kernel.run({ image: "tight@1.0.0", workspace: h.workspace });
    assert.equal(end.state, "failed");
    assert.equal(end.error?.code, "EBUDGET");
    assert.equal(model.requests.length, 2);
    const kv = h.kernel.store.kv;
    await h.kernel.journal.flush();
    // The first reply is recorded; the second, refused, is not: not in the
    // transcript, and journaled as the refusal.
    const replies = await valuesUnder<{ usage: ModelReply["usage"] }>(kv, [
      "transcript_reply",
      end.pid,
    ]);
    assert.equal(replies.length, 1);
    const calls = (await valuesUnder<JournalRecord>(kv, ["journal", end.pid]))
      .filter((r) => r.name === "model.complete");
    assert.deepEqual(calls.map((r) => r.ok), [true, false]);
    assert.equal(calls[1].error?.code, "EBUDGET");
    // Both replies' tokens are charged: the refused one was spent all the same.
    const recorded = replies[0].usage.inputTokens + replies[0].usage.outputTokens;
    assert.ok(end.usage.tokens > recorded, `charged ${end.usage.tokens}, recorded ${recorded}`);
    assert.equal(end.usage.toolCalls, 1);
  }, { model });
});

Deno.test("an agent stopped mid-step by a version that sent whole conversations goes on from its journal", async () => {
  // The journal of the step the agent stopped in records its model call as
  // the whole conversation, and the reply names no transcript, as journals
  // written before model calls could reference the transcript do. The
  // resumed agent's call names the same conversation by reference: it is
  // answered from the journal, and the model is asked once, for the turn
  // after the question.
  const root = await Deno.realPath(await Deno.makeTempDir());
  const store = join(root, "kv.db");
  try {
    const sent: { seq: number; args: Record<string, unknown> }[] = [];
    let pid: number;
    {
      const kernel = await Kernel.open({ store, model: new RecordingModel(script(3, [ASK])) });
      const dispatch = kernel.broker.dispatch.bind(kernel.broker);
      kernel.broker.dispatch = (ctx, request) => {
        if (request.name === "model.complete") {
          sent.push({ seq: ctx.seq, args: request.args as Record<string, unknown> });
        }
        return dispatch(ctx, request);
      };
      await kernel.images.register(ASKER);
      pid = (await kernel.spawn({ image: "asker@1.0.0", workspace: root })).pid;
      const asking = blocked(kernel, pid);
      kernel.start(pid);
      await asking;
      // Rewrite the last model call's record as the previous version wrote it.
      const last = sent.at(-1)!;
      const { transcript: reference, ...rest } = last.args as {
        transcript?: { length: number };
        messages: Message[];
      };
      assert.ok(reference, "the agent's last call names its transcript");
      const earlier = (await kernel.transcript(pid)).slice(0, reference.length);
      const whole = { ...rest, messages: [...earlier, ...rest.messages] };
      const key = ["journal", pid, last.seq];
      const entry = await kernel.store.kv.get<JournalRecord>(key);
      const reply = entry.value!.value as Record<string, unknown>;
      const { transcript: _named, ...oldReply } = reply;
      await kernel.store.kv.set(key, {
        ...entry.value!,
        argsDigest: await callDigest("model.complete", whole),
        value: oldReply,
      });
      await kernel.close();
    }
    const after = new RecordingModel(script(3, [ASK]));
    const kernel = await Kernel.open({ store, model: after });
    try {
      await kernel.recover();
      await answer(kernel, pid, "blue");
      const end = await kernel.waitFor(pid);
      assert.equal(end.state, "exited", end.error?.message);
      assert.equal(end.result, "done");
      assert.equal(after.requests.length, 1);
      assert.match(after.requests[0].at(-1)!.content ?? "", /blue/);
    } finally {
      await kernel.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
