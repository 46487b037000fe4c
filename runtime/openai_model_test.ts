import assert from "node:assert/strict";
import { join } from "node:path";
import { SyscallError } from "../broker/errors.ts";
import { estimateTokens, type Message, type ModelRequest, type ToolSpec } from "./model.ts";
import { resolveModelSpec } from "./model_spec.ts";
import { MAX_RAW_ARGUMENT_CHARS, OpenAIModel, type OpenAIModelOptions } from "./openai_model.ts";
import {
  chatCompletion,
  openAIError,
  type OpenAIServer,
  startOpenAIServer,
} from "../test/_openai_server.ts";
import { withHarness } from "../test/_harness.ts";

const KEY = "libos-test-key-" + crypto.randomUUID().replaceAll("-", "");
const FAST = { initialMs: 1, maxMs: 4 };

const READ_FILE: ToolSpec = {
  name: "read_file",
  description: "Read a UTF-8 text file.",
  input: {
    type: "object",
    properties: { path: { type: "string" } },
    required: ["path"],
    additionalProperties: false,
  },
};

function request(messages: Message[], tools: ToolSpec[] = []): ModelRequest {
  return { model: "openai/gpt-test", image: "main@1.0.0", pid: 1, messages, tools };
}

const USER: Message[] = [{ role: "user", content: "Say hello" }];

function modelFor(server: OpenAIServer, options: Partial<OpenAIModelOptions> = {}): OpenAIModel {
  return new OpenAIModel({
    model: "fallback-model",
    apiKey: KEY,
    baseURL: server.baseURL,
    backoff: FAST,
    ...options,
  });
}

async function failure(promise: Promise<unknown>): Promise<SyscallError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof SyscallError, `expected a SyscallError, got ${error}`);
    assert.ok(!error.message.includes("\n"), `not one line: ${error.message}`);
    return error;
  }
  assert.fail("expected the call to fail");
}

/** Runs `body` with environment variables set (`undefined` deletes), then restores them. */
async function withEnv(
  vars: Record<string, string | undefined>,
  body: () => Promise<void>,
): Promise<void> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
  const apply = (values: Record<string, string | undefined>): void => {
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) Deno.env.delete(k);
      else Deno.env.set(k, v);
    }
  };
  apply(vars);
  try {
    await body();
  } finally {
    apply(saved);
  }
}

Deno.test("a plain reply maps content and usage, and the request carries the bearer key", async () => {
  await using server = await startOpenAIServer([
    {
      body: chatCompletion({
        content: "Hello!",
        usage: { prompt_tokens: 42, completion_tokens: 5 },
      }),
    },
  ]);
  const reply = await modelFor(server).complete(
    request([{ role: "system", content: "Be brief." }, ...USER]),
  );
  assert.deepEqual(reply, {
    message: { role: "assistant", content: "Hello!" },
    usage: { inputTokens: 42, outputTokens: 5 },
  });
  assert.equal(server.requests.length, 1);
  const sent = server.requests[0];
  assert.equal(sent.headers.get("authorization"), `Bearer ${KEY}`);
  assert.equal(sent.body?.model, "gpt-test");
  assert.deepEqual(sent.body?.messages, [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Say hello" },
  ]);
  assert.equal("tools" in (sent.body ?? {}), false, "an empty tool list is left out");
});

Deno.test("a request's maxTokens is sent as max_completion_tokens", async () => {
  await using server = await startOpenAIServer([
    { body: chatCompletion({ content: "Hi" }) },
    { body: chatCompletion({ content: "Hi" }) },
  ]);
  await modelFor(server).complete({ ...request(USER), maxTokens: 25 });
  await modelFor(server).complete(request(USER));
  assert.equal(server.requests[0].body?.max_completion_tokens, 25);
  assert.equal("max_completion_tokens" in (server.requests[1].body ?? {}), false);
});

Deno.test("tools, tool calls and tool results map to function tools and back", async () => {
  await using server = await startOpenAIServer([{
    body: chatCompletion({
      tool_calls: [
        { id: "call_a", name: "read_file", arguments: { path: "README.md" } },
        { id: "call_b", name: "list_dir", arguments: "" },
      ],
    }),
  }]);
  const history: Message[] = [
    ...USER,
    {
      role: "assistant",
      tool_calls: [{ id: "call_0", name: "read_file", arguments: { path: "a.txt" } }],
    },
    { role: "tool", tool_call_id: "call_0", name: "read_file", content: '{"content":"A"}' },
    { role: "assistant", content: "Read it." },
  ];
  const reply = await modelFor(server).complete(request(history, [READ_FILE]));
  assert.deepEqual(reply.message, {
    role: "assistant",
    tool_calls: [
      { id: "call_a", name: "read_file", arguments: { path: "README.md" } },
      { id: "call_b", name: "list_dir", arguments: {} },
    ],
  });
  const body = server.requests[0].body!;
  assert.deepEqual(body.tools, [{
    type: "function",
    function: {
      name: "read_file",
      description: READ_FILE.description,
      parameters: READ_FILE.input,
    },
  }]);
  assert.deepEqual(body.messages, [
    { role: "user", content: "Say hello" },
    {
      role: "assistant",
      content: null,
      tool_calls: [{
        id: "call_0",
        type: "function",
        function: { name: "read_file", arguments: '{"path":"a.txt"}' },
      }],
    },
    { role: "tool", tool_call_id: "call_0", content: '{"content":"A"}' },
    { role: "assistant", content: "Read it." },
  ]);
});

Deno.test("tool call arguments that are not a JSON object are kept only as _raw text", async () => {
  const huge = "{".repeat(MAX_RAW_ARGUMENT_CHARS + 100);
  await using server = await startOpenAIServer([{
    body: chatCompletion({
      tool_calls: [
        { id: "c1", name: "write_file", arguments: '{"path": "out/x", "content": ' },
        { id: "c2", name: "read_file", arguments: '["README.md"]' },
        { id: "c3", name: "exit", arguments: "null" },
        { id: "c4", name: "read_file", arguments: huge },
      ],
    }),
  }]);
  const reply = await modelFor(server).complete(request(USER, [READ_FILE]));
  assert.deepEqual(reply.message.tool_calls, [
    { id: "c1", name: "write_file", arguments: { _raw: '{"path": "out/x", "content": ' } },
    { id: "c2", name: "read_file", arguments: { _raw: '["README.md"]' } },
    { id: "c3", name: "exit", arguments: { _raw: "null" } },
    { id: "c4", name: "read_file", arguments: { _raw: huge.slice(0, MAX_RAW_ARGUMENT_CHARS) } },
  ]);
});

Deno.test("usage is estimated when the response has none", async () => {
  await using server = await startOpenAIServer([
    { body: chatCompletion({ content: "Hello there, friend!", usage: null }) },
  ]);
  const reply = await modelFor(server).complete(request(USER));
  assert.equal(reply.usage.outputTokens, estimateTokens("Hello there, friend!"));
  assert.equal(reply.usage.inputTokens, estimateTokens("Say hello[]"));
});

Deno.test("a 429 is retried after the retry-after-ms the server asks for", async () => {
  await using server = await startOpenAIServer([
    { status: 429, body: openAIError("Rate limit reached"), headers: { "retry-after-ms": "300" } },
    { body: chatCompletion({ content: "ok" }) },
  ]);
  const reply = await modelFor(server).complete(request(USER));
  assert.equal(reply.message.content, "ok");
  assert.equal(server.requests.length, 2);
  const gap = server.requests[1].at - server.requests[0].at;
  assert.ok(gap >= 290, `retried after ${gap} ms, before the 300 ms asked for`);
});

Deno.test("a 429 honours retry-after in seconds", async () => {
  await using server = await startOpenAIServer([
    { status: 429, headers: { "retry-after": "1" } },
    { body: chatCompletion({ content: "ok" }) },
  ]);
  const reply = await modelFor(server).complete(request(USER));
  assert.equal(reply.message.content, "ok");
  const gap = server.requests[1].at - server.requests[0].at;
  assert.ok(gap >= 990, `retried after ${gap} ms, before the 1 s asked for`);
});

Deno.test("a 500 then a success is retried once", async () => {
  await using server = await startOpenAIServer([
    { status: 500, body: openAIError("The server had an error") },
    { body: chatCompletion({ content: "recovered" }) },
  ]);
  const reply = await modelFor(server).complete(request(USER));
  assert.equal(reply.message.content, "recovered");
  assert.equal(server.requests.length, 2);
});

Deno.test("a persistent 500 fails after maxRetries retries with growing backoff", async () => {
  await using server = await startOpenAIServer(
    Array.from({ length: 5 }, () => ({ status: 502, body: openAIError("Bad gateway") })),
  );
  const model = modelFor(server, { maxRetries: 3, backoff: { initialMs: 40, maxMs: 1000 } });
  const error = await failure(model.complete(request(USER)));
  assert.equal(error.code, "EINVAL");
  assert.equal(
    error.message,
    'Cannot call model "openai/gpt-test": HTTP 502: Bad gateway (after 3 retries)',
  );
  assert.equal(server.requests.length, 4);
  const at = server.requests.map((r) => r.at);
  for (let i = 0; i < 3; i++) {
    const floor = (40 * 2 ** i) / 2;
    assert.ok(at[i + 1] - at[i] >= floor - 2, `retry ${i + 1} waited ${at[i + 1] - at[i]} ms`);
  }
});

Deno.test("the default is three retries", async () => {
  await using server = await startOpenAIServer(
    Array.from({ length: 6 }, () => ({ status: 503 })),
  );
  await failure(modelFor(server).complete(request(USER)));
  assert.equal(server.requests.length, 4);
});

Deno.test("a 400 is not retried", async () => {
  await using server = await startOpenAIServer([
    { status: 400, body: openAIError("Invalid schema for function 'read_file'") },
    { body: chatCompletion({ content: "never" }) },
  ]);
  const error = await failure(modelFor(server).complete(request(USER)));
  assert.equal(error.code, "EINVAL");
  assert.equal(
    error.message,
    `Cannot call model "openai/gpt-test": HTTP 400: Invalid schema for function 'read_file'`,
  );
  assert.equal(server.requests.length, 1);
});

Deno.test("a long multi-line error body becomes one short line", async () => {
  const said = "line one\n\tline two " + "x".repeat(5000);
  await using server = await startOpenAIServer([{ status: 400, body: openAIError(said) }]);
  const error = await failure(modelFor(server).complete(request(USER)));
  assert.ok(error.message.length <= 400, `${error.message.length} characters`);
  assert.match(
    error.message,
    /^Cannot call model "openai\/gpt-test": HTTP 400: line one line two x+…$/,
  );
});

Deno.test("other 4xx answers (401, 404, 408, 409) are not retried either", async () => {
  for (const status of [401, 404, 408, 409]) {
    await using server = await startOpenAIServer([{ status }, { body: chatCompletion({}) }]);
    const error = await failure(modelFor(server).complete(request(USER)));
    assert.match(error.message, new RegExp(`HTTP ${status}`));
    assert.equal(server.requests.length, 1, `status ${status} was retried`);
  }
});

Deno.test("the API key never appears in an error message, even when the server echoes it", async () => {
  const echo = (r: { headers: Headers }) => ({
    status: 401,
    body: openAIError(`Incorrect API key provided: ${r.headers.get("authorization")} (${KEY})`),
  });
  await using server = await startOpenAIServer([
    echo,
    { status: 500, text: `upstream said: key=${KEY}\nAuthorization: Bearer ${KEY}` },
    { status: 500, text: `upstream said: key=${KEY}` },
  ]);
  const messages: string[] = [];
  const model = modelFor(server, { maxRetries: 1 });
  messages.push((await failure(model.complete(request(USER)))).message);
  messages.push((await failure(model.complete(request(USER)))).message);
  const thrower: typeof fetch = () => Promise.reject(new TypeError(`dns error for ${KEY}`));
  const offline = modelFor(server, { fetch: thrower, maxRetries: 0 });
  messages.push((await failure(offline.complete(request(USER)))).message);
  assert.equal(server.requests.length, 3);
  for (const request of server.requests) {
    assert.equal(request.headers.get("authorization"), `Bearer ${KEY}`);
  }
  assert.match(messages[0], /^Cannot call model "openai\/gpt-test": HTTP 401: Incorrect API key/);
  assert.match(messages[1], /HTTP 500/);
  assert.match(messages[2], /connection failed/);
  for (const message of messages) {
    assert.ok(!message.includes(KEY), `the key leaked: ${message}`);
    assert.ok(!message.includes(KEY.slice(0, 12)), `a key prefix leaked: ${message}`);
    assert.match(message, /\[redacted\]/);
  }
});

Deno.test("a connection error is retried", async () => {
  await using server = await startOpenAIServer([{ body: chatCompletion({ content: "back" }) }]);
  let calls = 0;
  const flaky: typeof fetch = (input, init) => {
    calls++;
    if (calls === 1) return Promise.reject(new TypeError("connection reset"));
    return fetch(input, init);
  };
  const reply = await modelFor(server, { fetch: flaky }).complete(request(USER));
  assert.equal(reply.message.content, "back");
  assert.equal(calls, 2);
  assert.equal(server.requests.length, 1);
});

Deno.test("a timeout is retried and then fails with ETIMEDOUT", async () => {
  await using server = await startOpenAIServer([{ hang: true }, { hang: true }]);
  const model = modelFor(server, { timeoutMs: 150, maxRetries: 1 });
  const error = await failure(model.complete(request(USER)));
  assert.equal(error.code, "ETIMEDOUT");
  assert.equal(
    error.message,
    'Cannot call model "openai/gpt-test": no answer within 150 ms (after 1 retry)',
  );
  assert.equal(server.requests.length, 2);
});

Deno.test("an aborted call fails with EINTR and is not retried", async () => {
  const arrived = Promise.withResolvers<void>();
  await using server = await startOpenAIServer([() => {
    arrived.resolve();
    return { hang: true };
  }]);
  const controller = new AbortController();
  const pending = modelFor(server).complete(request(USER), { signal: controller.signal });
  await arrived.promise;
  controller.abort();
  const error = await failure(pending);
  assert.equal(error.code, "EINTR");
  assert.equal(server.requests.length, 1);
});

Deno.test("an abort during the backoff ends the wait at once", async () => {
  await using server = await startOpenAIServer([
    { status: 429, headers: { "retry-after": "30" } },
    { body: chatCompletion({ content: "too late" }) },
  ]);
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const abortSoonAfterTheAnswer: typeof fetch = async (input, init) => {
    const response = await fetch(input, init);
    timer = setTimeout(() => controller.abort(), 50);
    return response;
  };
  const model = modelFor(server, { fetch: abortSoonAfterTheAnswer });
  const started = performance.now();
  const error = await failure(model.complete(request(USER), { signal: controller.signal }));
  clearTimeout(timer);
  assert.equal(error.code, "EINTR");
  assert.ok(performance.now() - started < 10_000, "waited out the 30 s retry-after");
  assert.equal(server.requests.length, 1);
});

Deno.test("a response without choices is an EINVAL error and is not retried", async () => {
  await using server = await startOpenAIServer([{ body: { id: "x", choices: [] } }]);
  const error = await failure(modelFor(server).complete(request(USER)));
  assert.equal(error.code, "EINVAL");
  assert.equal(error.message, 'Cannot call model "openai/gpt-test": the response has no choices');
  assert.equal(server.requests.length, 1);
});

Deno.test("a missing key fails the first call, not the construction, and sends nothing", async () => {
  await using server = await startOpenAIServer([{ body: chatCompletion({}) }]);
  await withEnv({ OPENAI_API_KEY: undefined }, async () => {
    const model = new OpenAIModel({ model: "x", baseURL: server.baseURL });
    const error = await failure(model.complete({ ...request(USER), model: "openai/x" }));
    assert.equal(error.code, "EINVAL");
    assert.equal(error.message, 'Cannot call model "openai/x": OPENAI_API_KEY is not set');
  });
  assert.equal(server.requests.length, 0);
});

Deno.test("the key and base URL default to OPENAI_API_KEY and OPENAI_BASE_URL", async () => {
  await using server = await startOpenAIServer([{ body: chatCompletion({ content: "env" }) }]);
  await withEnv({ OPENAI_API_KEY: KEY, OPENAI_BASE_URL: server.baseURL }, async () => {
    const reply = await new OpenAIModel({ model: "x" }).complete(request(USER));
    assert.equal(reply.message.content, "env");
  });
  assert.equal(server.requests[0].headers.get("authorization"), `Bearer ${KEY}`);
});

Deno.test("resolveModelSpec builds an OpenAIModel whose model serves requests naming none", async () => {
  await using server = await startOpenAIServer([{ body: chatCompletion({ content: "hi" }) }]);
  await withEnv({ OPENAI_API_KEY: KEY, OPENAI_BASE_URL: server.baseURL }, async () => {
    const provider = await resolveModelSpec("openai:my-model");
    assert.ok(provider instanceof OpenAIModel);
    assert.equal(provider.name, "openai");
    await provider.complete({ ...request(USER), model: "scripted/default" });
  });
  assert.equal(server.requests[0].body?.model, "my-model");
  await assert.rejects(resolveModelSpec("openai:"), (e: SyscallError) => e.code === "EINVAL");
});

Deno.test("bad constructor options are refused", () => {
  assert.throws(() => new OpenAIModel({ model: "" }), /the model name is empty/);
  assert.throws(() => new OpenAIModel({ model: "m", maxRetries: -1 }), /maxRetries/);
  assert.throws(() => new OpenAIModel({ model: "m", timeoutMs: 0 }), /timeoutMs/);
});

Deno.test("a libos:agent process runs on an OpenAIModel: a read_file call, then an answer", async () => {
  await using server = await startOpenAIServer([
    {
      body: chatCompletion({
        tool_calls: [{ id: "call_r", name: "read_file", arguments: { path: "notes.txt" } }],
      }),
    },
    { body: chatCompletion({ content: "The notes say: remember the milk." }) },
  ]);
  const model = new OpenAIModel({ model: "unused", apiKey: KEY, baseURL: server.baseURL });
  await withHarness(async (h) => {
    await Deno.writeTextFile(join(h.workspace, "notes.txt"), "remember the milk");
    const image = await h.kernel.images.register({
      name: "reader",
      version: "1.0.0",
      entry: "libos:agent",
      model: { provider: "openai", name: "loop-model" },
      system: "You read notes.",
      tools: ["read_file", "exit"],
      capabilities: ["fs:read:**"],
      policy: {},
    });
    const end = await h.kernel.run({
      image: image.tag,
      workspace: h.workspace,
      input: "What do the notes say?",
    });
    assert.equal(end.state, "exited", JSON.stringify(end.error));
    assert.equal(end.result, "The notes say: remember the milk.");
    const transcript = await h.kernel.transcript(end.pid);
    const toolResult = transcript.find((m) => m.role === "tool");
    assert.ok(toolResult && toolResult.role === "tool");
    assert.equal(toolResult.tool_call_id, "call_r");
    assert.deepEqual(JSON.parse(toolResult.content), { content: "remember the milk" });
    assert.equal(transcript.at(-1)?.content, "The notes say: remember the milk.");
  }, { model });
  assert.equal(server.requests.length, 2);
  assert.equal(server.requests[1].body?.model, "loop-model");
  const second = server.requests[1].body?.messages as Record<string, unknown>[];
  assert.deepEqual(second.at(-1), {
    role: "tool",
    tool_call_id: "call_r",
    content: JSON.stringify({ content: "remember the milk" }),
  });
});
