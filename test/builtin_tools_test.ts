/**
 * The built-in LLM-facing tools of SPEC section 10, driven by the scripted
 * model through the `libos:agent` loop: each is a thin wrapper over
 * syscalls, so each works when granted and is refused (as an error result
 * the loop carries on from) when not.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { ScriptedHuman } from "../runtime/human_queue.ts";
import { ScriptedModel } from "../runtime/model.ts";
import { withHarness } from "./_harness.ts";

type Turn = {
  tool_calls?: { name: string; arguments: Record<string, unknown> }[];
  content?: string;
  exit?: boolean;
};

/** Runs one agent over `turns` and returns the tool results it saw, by tool name, in order. */
async function agent(
  turns: Turn[],
  image: { tools: string[]; capabilities: string[] },
  setup: (workspace: string) => Promise<void> = () => Promise.resolve(),
  options: { human?: ScriptedHuman; read?: string } = {},
): Promise<{ results: { name: string; content: unknown }[]; state: string; file?: string }> {
  let out!: { results: { name: string; content: unknown }[]; state: string; file?: string };
  await withHarness(async (h) => {
    await setup(h.workspace);
    await h.kernel.images.register({
      name: "tooluser",
      version: "1.0.0",
      entry: "libos:agent",
      tools: image.tools,
      capabilities: image.capabilities,
      policy: {},
    });
    const end = await h.kernel.run({ image: "tooluser@1.0.0", workspace: h.workspace });
    const transcript = await h.kernel.transcript(end.pid);
    const results = [];
    for (const m of transcript) {
      if (m.role === "tool") results.push({ name: m.name, content: JSON.parse(m.content) });
    }
    const file = options.read
      ? await Deno.readTextFile(join(h.workspace, options.read)).catch(() => undefined)
      : undefined;
    out = { results, state: end.state, file };
  }, {
    model: new ScriptedModel({ turns: [...turns, { content: "done", exit: true }] }),
    human: options.human,
  });
  return out;
}

const call = (name: string, args: Record<string, unknown>): Turn => ({
  tool_calls: [{ name, arguments: args }],
});

Deno.test("run_command runs an allowed argv and refuses another command", async () => {
  const { results, state } = await agent(
    [call("run_command", { argv: ["echo", "hello"] }), call("run_command", { argv: ["ls"] })],
    { tools: ["run_command"], capabilities: ["fs:read:**", "exec:run:echo"] },
  );
  assert.equal(state, "exited");
  assert.equal((results[0].content as { stdout: string }).stdout, "hello\n");
  assert.equal((results[1].content as { error: { code: string } }).error.code, "EPERM");
});

Deno.test("fetch_url reaches a host its capability names, and no other", async () => {
  let hits = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    hits++;
    return new Response("pong");
  });
  try {
    const base = `http://127.0.0.1:${server.addr.port}`;
    const { results } = await agent(
      [call("fetch_url", { url: `${base}/ping` }), call("fetch_url", { url: `${base}/secret` })],
      { tools: ["fetch_url"], capabilities: [`net:fetch:${base}/ping`] },
    );
    assert.equal((results[0].content as { body: string }).body, "pong");
    assert.equal((results[1].content as { error: { code: string } }).error.code, "EPERM");
    assert.equal(hits, 1);
  } finally {
    await server.shutdown();
  }
});

Deno.test("ask_human returns the human's typed answer", async () => {
  const { results } = await agent(
    [call("ask_human", { question: "Proceed?", kind: "boolean" })],
    { tools: ["ask_human"], capabilities: ["human:ask:*"] },
    undefined,
    { human: new ScriptedHuman({ answers: [{ answer: "yes" }] }) },
  );
  assert.deepEqual(results[0].content, { answer: true });
});

Deno.test("register_tool adds a JIT tool the model can then call by name", async () => {
  const { results } = await agent(
    [
      call("register_tool", {
        name: "shout",
        description: "upper-cases text",
        input: { type: "object", properties: { text: { type: "string" } }, required: ["text"] },
        manifest: { capabilities: [] },
        source: "export function run(args: { text: string }) { return args.text.toUpperCase(); }",
      }),
      call("shout", { text: "quiet" }),
    ],
    { tools: ["register_tool"], capabilities: ["tool:register:*"] },
  );
  assert.equal((results[0].content as { name: string }).name, "shout");
  assert.deepEqual(results[1].content, { result: "QUIET" });
});

Deno.test("obj_from_file and obj_to_file need both authorities", async () => {
  const { results, file } = await agent(
    [
      call("obj_from_file", { path: "in.json", namespace: "self", name: "doc" }),
      call("obj_to_file", { namespace: "self", name: "doc", path: "out/doc.json" }),
      call("obj_to_file", { namespace: "self", name: "doc", path: "elsewhere.json" }),
    ],
    {
      tools: ["obj_from_file", "obj_to_file"],
      capabilities: ["fs:read:in.json", "fs:write:out/**"],
    },
    (ws) =>
      Deno.writeTextFile(join(ws, "in.json"), '{"a":1}').then(() => Deno.mkdir(join(ws, "out"))),
    { read: "out/doc.json" },
  );
  assert.equal((results[0].content as { version: number }).version, 1);
  assert.equal((results[2].content as { error: { code: string } }).error.code, "EPERM");
  assert.deepEqual(JSON.parse(file ?? "null"), { a: 1 });
});
