/**
 * The agent loop's checkpoints reference the transcript the host stores
 * instead of holding the conversation: each stays the same size however
 * long the run, and an agent resumed from one (after a host restart, or
 * forked from a snapshot) goes on with its whole conversation, repeating
 * nothing.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
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
