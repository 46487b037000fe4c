/**
 * Budgets hold under concurrency: a program that fires many calls at once
 * gets no more than its budget (and its ancestors' budgets) allow. Each test
 * performs the burst and asserts the totals stayed within the budget.
 */

import assert from "node:assert/strict";
import { type ModelProvider, ScriptedModel } from "../runtime/model.ts";
import { ProcessTable } from "../runtime/process_table.ts";
import { type Attempt, program, withKernel } from "./_programs.ts";

/** A reply of 40 characters: 10 output tokens by the scripted model's count. */
const REPLY = "0123456789".repeat(4);

/** Fires `input.n` model calls at once and returns what each one gave. */
const BURST = program(`
  const calls = await Promise.all(Array.from({ length: input.n }, () =>
    attempt(() => sys.model.complete({ messages: [{ role: "user", content: "hi" }] }))));
  return calls;
`);

function tally(
  calls: Attempt[],
  refusal: RegExp = /tokens budget of 30/,
): { ok: number; tokens: number } {
  let ok = 0;
  let tokens = 0;
  for (const call of calls) {
    if (call.ok) {
      ok++;
      const usage = (call.value as { usage: { inputTokens: number; outputTokens: number } }).usage;
      tokens += usage.inputTokens + usage.outputTokens;
    } else {
      assert.equal(call.code, "EBUDGET", call.message);
      assert.match(call.message, refusal);
    }
  }
  return { ok, tokens };
}

Deno.test("twenty parallel model calls spend no more than a tokens budget of 30", async () => {
  const model = new ScriptedModel({ turns: [{ content: REPLY }] });
  await withKernel(async (h) => {
    const end = await h.run(BURST, { input: { n: 20 }, image: { budget: { tokens: 30 } } });
    assert.equal(end.state, "exited", end.error?.message);
    const { ok, tokens } = tally(end.result as Attempt[]);
    assert.ok(ok >= 1, "at least one call fits the budget");
    assert.ok(ok < 20);
    assert.ok(end.usage.tokens <= 30, `charged ${end.usage.tokens} tokens`);
    assert.equal(end.usage.tokens, tokens);
  }, { model });
});

Deno.test("a tokens budget holds for the bursts of several children together", async () => {
  const model = new ScriptedModel({ turns: [{ content: REPLY }] });
  await withKernel(async (h) => {
    const child = await h.program("burst", BURST);
    const end = await h.run(
      program(`
        const pids = [];
        for (let i = 0; i < 3; i++) {
          pids.push((await sys.proc.spawn({ image: input.child, input: { n: 10 } })).pid);
        }
        const results = [];
        for (const pid of pids) results.push((await sys.proc.wait(pid)).result);
        return results.flat();
      `),
      {
        input: { child },
        image: { capabilities: ["proc:spawn:*"], budget: { tokens: 30 } },
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    // A child made once its siblings have spent some gets what is left as its own budget, which
    // then refuses first, naming itself: any tokens budget on the way may be the one that refuses.
    const { tokens } = tally(end.result as Attempt[], /tokens budget of \d+/);
    assert.ok(end.usage.tokens <= 30, `charged ${end.usage.tokens} tokens`);
    assert.equal(end.usage.tokens, tokens);
    let children = 0;
    for (const pid of await h.kernel.processes.children(end.pid)) {
      children += (await h.kernel.processes.require(pid)).usage.tokens;
    }
    assert.equal(children, end.usage.tokens);
  }, { model });
});

Deno.test("a model call is held to the reply tokens left in the budget", async () => {
  const model = new ScriptedModel({ turns: [{ content: "x".repeat(4000) }] });
  await withKernel(async (h) => {
    const end = await h.run(
      program(`return await sys.model.complete({ messages: [{ role: "user", content: "hi" }] });`),
      { image: { budget: { tokens: 50 } } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const reply = end.result as { message: { content: string } };
    assert.ok(reply.message.content.length < 4000);
    assert.ok(end.usage.tokens <= 50, `charged ${end.usage.tokens} tokens`);
  }, { model });
});

Deno.test("a model call made without a reservation is refused when another host set a tokens budget meanwhile", async () => {
  let kv: Deno.Kv | undefined;
  let calls = 0;
  const scripted = new ScriptedModel({ turns: [{ content: "x".repeat(4000) }] });
  // Another host's process table on the same store gives the process a
  // tokens budget of 100 while this host's second call is with the model.
  const model: ModelProvider = {
    name: "scripted",
    async complete(request) {
      if (++calls === 2) {
        await new ProcessTable(kv!).update(request.pid!, () => ({ budget: { tokens: 100 } }));
      }
      return await scripted.complete(request);
    },
  };
  await withKernel(async (h) => {
    kv = h.kernel.store.kv;
    const end = await h.run(
      program(`
        const ask = () => attempt(() => sys.model.complete({ messages: [{ role: "user", content: "hi" }] }));
        return [await ask(), await ask()];
      `),
    );
    assert.equal(end.state, "exited", end.error?.message);
    const [first, second] = end.result as Attempt[];
    assert.ok(first.ok, "no budget then");
    assert.equal(second.ok, false, "the reply over the new budget never reached the program");
    assert.equal(second.code, "EBUDGET");
    assert.ok(end.usage.tokens > 100, "the tokens the model spent are charged all the same");
  }, { model });
});

const TOOL = {
  name: "mark",
  description: "returns its input",
  input: { type: "object", properties: { i: { type: "number" } }, required: ["i"] },
  manifest: { capabilities: [] },
  source: "export function run(args: { i: number }) { return args.i; }",
};

/** Registers the tool, then calls it `input.n` times at once. */
const TOOL_BURST = program(`
  await sys.tool.register(${JSON.stringify(TOOL)});
  return await Promise.all(Array.from({ length: input.n }, (_, i) =>
    attempt(() => sys.tool.call("mark", { i }))));
`);

function toolCalls(calls: Attempt[]): number {
  let ok = 0;
  for (const call of calls) {
    if (call.ok) ok++;
    else assert.equal(call.code, "EBUDGET", call.message);
  }
  return ok;
}

Deno.test("eight parallel tool calls under a children budget of 1 start one tool process", async () => {
  await withKernel(async (h) => {
    const end = await h.run(TOOL_BURST, {
      input: { n: 8 },
      image: { capabilities: ["tool:register:*"], budget: { children: 1 } },
    });
    assert.equal(end.state, "exited", end.error?.message);
    assert.equal(toolCalls(end.result as Attempt[]), 1);
    const tools = (await h.kernel.processes.list()).filter((p) => p.tool);
    assert.equal(tools.length, 1);
    assert.equal(end.usage.children, 1);
  });
});

Deno.test("tool calls of a child are charged to its parent's children budget", async () => {
  await withKernel(async (h) => {
    const child = await h.program("tool-burst", TOOL_BURST, { capabilities: ["tool:register:*"] });
    const end = await h.run(
      program(`
        const { pid } = await sys.proc.spawn({ image: input.child, input: { n: 8 } });
        return (await sys.proc.wait(pid)).result;
      `),
      {
        input: { child },
        image: { capabilities: ["proc:spawn:*", "tool:register:*"], budget: { children: 2 } },
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    assert.equal(toolCalls(end.result as Attempt[]), 1);
    const tools = (await h.kernel.processes.list()).filter((p) => p.tool);
    assert.equal(tools.length, 1);
    assert.equal(end.usage.children, 2);
  });
});
