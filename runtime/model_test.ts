import assert from "node:assert/strict";
import { join } from "node:path";
import { SyscallError } from "../broker/errors.ts";
import {
  estimateTokens,
  maxInputTokens,
  type Message,
  type ModelRequest,
  type Script,
  ScriptedModel,
  ScriptSchema,
} from "./model.ts";

const SCRIPT: Script = {
  turns: [
    { tool_calls: [{ name: "read_file", arguments: { path: "README.md" } }] },
    { content: "The repository is a demo.", exit: true },
  ],
  images: {
    "helper@1.0.0": { turns: [{ content: "done", exit: true }] },
  },
};

function request(
  messages: Message[],
  image = "main@1.0.0",
): ModelRequest {
  return { model: "scripted/default", image, pid: 1, messages, tools: [] };
}

const USER: Message = { role: "user", content: "Summarize the repo" };

Deno.test("the first turn's tool calls get default ids and arguments", async () => {
  const model = new ScriptedModel({
    turns: [{
      tool_calls: [
        { name: "read_file", arguments: { path: "a" } },
        { name: "list_dir" },
        { id: "mine", name: "exit" },
      ],
    }],
  });
  const reply = await model.complete(request([USER]));
  assert.deepEqual(reply.message, {
    role: "assistant",
    tool_calls: [
      { id: "call_0_0", name: "read_file", arguments: { path: "a" } },
      { id: "call_0_1", name: "list_dir", arguments: {} },
      { id: "mine", name: "exit", arguments: {} },
    ],
  });
  assert.equal(reply.exit, undefined);
});

Deno.test("the turn index is the number of assistant messages in the request", async () => {
  const model = new ScriptedModel(SCRIPT);
  const first = await model.complete(request([USER]));
  const again = await model.complete(request([USER]));
  assert.deepEqual(again, first);
  const messages: Message[] = [
    USER,
    first.message,
    { role: "tool", tool_call_id: "call_0_0", name: "read_file", content: "{}" },
  ];
  const second = await model.complete(request(messages));
  assert.deepEqual(second.message, {
    role: "assistant",
    content: "The repository is a demo.",
  });
  assert.equal(second.exit, true);
  // Asking for the first turn again after the second still gives the first.
  assert.deepEqual(await model.complete(request([USER])), first);
});

Deno.test("an image with its own turns uses them; others use the default turns", async () => {
  const model = new ScriptedModel(SCRIPT);
  const helper = await model.complete(request([USER], "helper@1.0.0"));
  assert.deepEqual(helper.message, { role: "assistant", content: "done" });
  assert.equal(helper.exit, true);
  const other = await model.complete(request([USER], "helper@2.0.0"));
  assert.equal(other.message.tool_calls?.[0].name, "read_file");
  const inherited = await model.complete(request([USER], "constructor"));
  assert.equal(inherited.message.tool_calls?.[0].name, "read_file");
});

Deno.test("past the last turn the reply is '(script ended)' with exit", async () => {
  const model = new ScriptedModel({ turns: [{ content: "only" }] });
  const messages: Message[] = [USER, { role: "assistant", content: "only" }];
  const reply = await model.complete(request(messages));
  assert.deepEqual(reply.message, { role: "assistant", content: "(script ended)" });
  assert.equal(reply.exit, true);
  const empty = new ScriptedModel({ turns: [] });
  assert.equal((await empty.complete(request([USER]))).message.content, "(script ended)");
});

Deno.test("usage estimates tokens from the characters of the request and reply", async () => {
  const model = new ScriptedModel({ turns: [{ content: "abcde" }] });
  const reply = await model.complete(request([
    { role: "system", content: "12345678" },
    { role: "user", content: "123" },
  ]));
  assert.deepEqual(reply.usage, { inputTokens: 3, outputTokens: 2 });
  assert.equal(estimateTokens(""), 0);
  assert.equal(estimateTokens("abcd"), 1);
  assert.equal(estimateTokens("abcde"), 2);
});

Deno.test("a reply over the request's maxTokens is cut to that many tokens, without tool calls", async () => {
  const model = new ScriptedModel({
    turns: [{ content: "x".repeat(400), tool_calls: [{ name: "read_file" }], exit: true }],
  });
  const reply = await model.complete({ ...request([USER]), maxTokens: 10 });
  assert.deepEqual(reply.message, { role: "assistant", content: "x".repeat(40) });
  assert.equal(reply.usage.outputTokens, 10);
  const whole = await model.complete({ ...request([USER]), maxTokens: 1000 });
  assert.equal(whole.message.tool_calls?.length, 1);
});

Deno.test("maxInputTokens bounds the input tokens of every message and tool from above", async () => {
  const messages: Message[] = [
    { role: "system", content: "héllo wörld" },
    { role: "user", content: "x".repeat(1000) },
    { role: "assistant", tool_calls: [{ id: "c1", name: "read_file", arguments: { path: "a" } }] },
    { role: "tool", tool_call_id: "c1", name: "read_file", content: "contents" },
  ];
  const tools = [{ name: "read_file", description: "reads", input: { type: "object" } }];
  const bound = maxInputTokens(messages, tools);
  const bytes = new TextEncoder().encode(
    messages.map((m) => m.content ?? "").join("") + JSON.stringify(tools),
  ).length;
  assert.ok(bound >= bytes, `${bound} < ${bytes}`);
  assert.ok(bound > maxInputTokens(messages, []));
  const counted = await new ScriptedModel({ turns: [] }).complete({ ...request(messages), tools });
  assert.ok(bound >= counted.usage.inputTokens);
  assert.ok(maxInputTokens([{ role: "user", content: "" }], []) > 0);
});

Deno.test("changing a reply does not change the script", async () => {
  const model = new ScriptedModel(SCRIPT);
  const reply = await model.complete(request([USER]));
  reply.message.tool_calls![0].arguments.path = "/etc/passwd";
  const again = await model.complete(request([USER]));
  assert.deepEqual(again.message.tool_calls?.[0].arguments, { path: "README.md" });
});

Deno.test("ScriptSchema refuses unknown keys", () => {
  assert.ok(ScriptSchema.safeParse(SCRIPT).success);
  assert.ok(!ScriptSchema.safeParse({ turns: [{ tool_call: [] }] }).success);
  assert.ok(!ScriptSchema.safeParse({ turns: [], extra: 1 }).success);
  assert.ok(
    !ScriptSchema.safeParse({ turns: [{ tool_calls: [{ name: "x", args: {} }] }] }).success,
  );
  assert.throws(
    () => new ScriptedModel({ turns: [{ exit: "yes" }] } as unknown as Script),
    SyscallError,
  );
});

Deno.test("fromFile loads a valid script", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "script.json");
    await Deno.writeTextFile(path, JSON.stringify(SCRIPT));
    const model = await ScriptedModel.fromFile(path);
    const reply = await model.complete(request([USER], "helper@1.0.0"));
    assert.equal(reply.message.content, "done");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("fromFile fails with one clear line for bad files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cases: [string, string, string, RegExp][] = [
      [
        "bad_call.json",
        JSON.stringify({ turns: [{ tool_calls: "read_file" }] }),
        "EINVAL",
        /: turns\.0\.tool_calls: /,
      ],
      [
        "missing_name.json",
        JSON.stringify({ turns: [{ tool_calls: [{ arguments: {} }] }] }),
        "EINVAL",
        /: turns\.0\.tool_calls\.0\.name: /,
      ],
      ["typo.json", JSON.stringify({ turn: [] }), "EINVAL", /: turns: /],
      ["broken.json", "{ not json", "EINVAL", /: invalid JSON: /],
    ];
    for (const [file, text, code, pattern] of cases) {
      const path = join(dir, file);
      await Deno.writeTextFile(path, text);
      await assert.rejects(ScriptedModel.fromFile(path), (error: unknown) => {
        assert.ok(error instanceof SyscallError);
        assert.equal(error.code, code);
        assert.ok(
          error.message.startsWith(`Cannot load model script ${JSON.stringify(path)}: `),
          error.message,
        );
        assert.match(error.message, pattern);
        assert.ok(!error.message.includes("\n"), error.message);
        return true;
      });
    }
    const missing = join(dir, "absent.json");
    await assert.rejects(
      ScriptedModel.fromFile(missing),
      (error: unknown) =>
        error instanceof SyscallError && error.code === "ENOENT" &&
        error.message === `Cannot load model script ${JSON.stringify(missing)}: file not found`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
