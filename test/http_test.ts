/**
 * SPEC section 13, end to end: the control API served by `Deno.serve` on
 * 127.0.0.1, driven with `fetch`, over a kernel running real processes (an
 * agent on a scripted model and a program that asks a human).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type SseFrame, SseReader } from "../api/_testing.ts";
import type { ControlKernel } from "../api/app.ts";
import type { TokenConfig } from "../api/auth.ts";
import { type ApiServer, serveApi } from "../api/server.ts";
import { Kernel } from "../runtime/kernel.ts";
import { ScriptedModel } from "../runtime/model.ts";

const SECRET = "HTTP-CANARY-" + crypto.randomUUID();
const TOKENS = {
  operator: "http-operator-token-000000001",
  approver: "http-approver-token-000000002",
  viewer: "http-viewer-token-00000000003",
};
const CONFIG: TokenConfig = {
  tokens: [
    { name: "ops", token: TOKENS.operator, role: "operator" },
    { name: "alice", token: TOKENS.approver, role: "approver" },
    { name: "dash", token: TOKENS.viewer, role: "viewer" },
  ],
};

const AGENT_IMAGE = {
  name: "summarizer",
  version: "1.0.0",
  entry: "libos:agent",
  system: "You summarize repositories.",
  tools: ["read_file", "write_file", "exit"],
  capabilities: ["fs:read:README.md", "fs:write:out/**"],
};

const AGENT_SCRIPT = {
  turns: [
    { tool_calls: [{ name: "read_file", arguments: { path: "README.md" } }] },
    { tool_calls: [{ name: "read_file", arguments: { path: "secrets/token.txt" } }] },
    {
      tool_calls: [{
        name: "write_file",
        arguments: { path: "out/summary.md", content: "A demo repository.\n" },
      }],
    },
    { tool_calls: [{ name: "exit", arguments: { result: "summarized" } }] },
  ],
};

const ASKER_SOURCE = `export default async function main(sys) {
  const ok = await sys.human.ask("Publish the summary?", { kind: "boolean" });
  return ok ? "published" : "kept";
}`;

/** A parsed JSON response body. */
// deno-lint-ignore no-explicit-any
type Body = any;

interface Http {
  kernel: Kernel;
  server: ApiServer;
  workspace: string;
  errors: unknown[];
  fetch(
    path: string,
    init?: { token?: string; method?: string; body?: unknown },
  ): Promise<Response>;
  json(path: string, init?: { token?: string; method?: string; body?: unknown }): Promise<Body>;
}

async function withServer(body: (h: Http) => Promise<void>): Promise<void> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-http-" }));
  const workspace = join(root, "ws");
  await Deno.mkdir(join(workspace, "secrets"), { recursive: true });
  await Deno.writeTextFile(join(workspace, "README.md"), "# demo\nA demo repository.\n");
  await Deno.writeTextFile(join(workspace, "secrets/token.txt"), SECRET);
  const kernel = await Kernel.open({ store: ":memory:", model: new ScriptedModel(AGENT_SCRIPT) });
  const errors: unknown[] = [];
  const server = serveApi(kernel, {
    port: 0,
    tokens: CONFIG,
    stream: { pollMs: 25, heartbeatMs: 1000 },
    onError: (error) => errors.push(error),
  });
  const call = (path: string, init: { token?: string; method?: string; body?: unknown } = {}) =>
    fetch(`${server.url}${path}`, {
      method: init.method ?? (init.body === undefined ? "GET" : "POST"),
      headers: {
        ...(init.token ? { authorization: `Bearer ${init.token}` } : {}),
        ...(init.body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
  try {
    await body({
      kernel,
      server,
      workspace,
      errors,
      fetch: call,
      json: async (path, init) => await (await call(path, init)).json(),
    });
    assert.deepEqual(errors, [], "no request failed unexpectedly");
  } finally {
    await server.shutdown();
    await kernel.close();
    await Deno.remove(root, { recursive: true });
  }
}

function stream(h: Http, lastEventId?: string): Promise<Response> {
  return fetch(`${h.server.url}/v1/events/stream`, {
    headers: {
      authorization: `Bearer ${TOKENS.viewer}`,
      ...(lastEventId ? { "last-event-id": lastEventId } : {}),
    },
  });
}

/** A GET over a raw socket, to send a Host header that fetch would replace. */
async function rawGet(port: number, path: string, host: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const request = `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n` +
      `Authorization: Bearer ${TOKENS.viewer}\r\nConnection: close\r\n\r\n`;
    await conn.write(new TextEncoder().encode(request));
    let text = "";
    const decoder = new TextDecoder();
    for await (const chunk of conn.readable) text += decoder.decode(chunk, { stream: true });
    return text;
  } catch (error) {
    conn.close();
    throw error;
  }
}

function keyOf(frame: SseFrame): string {
  const data = JSON.parse(frame.data!);
  return frame.event === "human" ? `human:${data.id}` : `${frame.event}:${data.seq}`;
}

Deno.test("the API serves on 127.0.0.1 with tokens and refuses a rebinding Host", async () => {
  await withServer(async (h) => {
    assert.match(h.server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const { cells, runQueue, ...health } = await h.json("/v1/health");
    assert.deepEqual(health, { ok: true, version: "0.1.0", execSandbox: "bwrap" });
    assert.equal(cells.sharing, "tree");
    assert.equal(runQueue.queued, 0);
    const anonymous = await h.fetch("/v1/processes");
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.headers.get("www-authenticate"), 'Bearer realm="libos"');
    assert.equal((await anonymous.json()).error.code, "unauthenticated");
    const viaLocalhost = await rawGet(h.server.port, "/v1/health", `localhost:${h.server.port}`);
    assert.match(viaLocalhost, /^HTTP\/1\.1 200 /);
    const rebinding = await rawGet(
      h.server.port,
      "/v1/processes",
      `attacker.test:${h.server.port}`,
    );
    assert.match(rebinding, /^HTTP\/1\.1 403 /);
    assert.match(rebinding, /attacker\.test/);
    assert.ok(!rebinding.includes('"processes"'));
  });
});

Deno.test("an SSE client that disconnects and resumes with Last-Event-ID loses and repeats nothing", async () => {
  await withServer(async (h) => {
    const registered = await h.fetch("/v1/images", { token: TOKENS.operator, body: AGENT_IMAGE });
    assert.equal(registered.status, 201);
    await registered.body?.cancel();
    const asker = await h.json("/v1/images", {
      token: TOKENS.operator,
      body: {
        image: {
          name: "asker",
          version: "1.0.0",
          entry: "main.ts",
          capabilities: ["human:ask:*"],
        },
        entrySource: ASKER_SOURCE,
      },
    });
    assert.equal(asker.tag, "asker@1.0.0");

    // First connection: watch an agent run to its end and a program ask a human.
    const first = await stream(h);
    assert.equal(first.status, 200);
    const a = new SseReader(first.body!);
    const { pid: agent } = await h.json("/v1/processes", {
      token: TOKENS.operator,
      body: { image: "summarizer@1.0.0", workspace: h.workspace, input: "Summarize" },
    });
    const { pid: human } = await h.json("/v1/processes", {
      token: TOKENS.operator,
      body: { image: "asker@1.0.0", workspace: h.workspace },
    });
    const seenA: SseFrame[] = [];
    let request: { id: string } | undefined;
    let agentEnded = false;
    while (!request || !agentEnded) {
      const [frame] = await a.events(1);
      seenA.push(frame);
      const data = JSON.parse(frame.data!);
      if (frame.event === "human" && data.pid === human) request = data;
      if (frame.event === "transition" && data.pid === agent && data.to === "exited") {
        agentEnded = true;
      }
    }
    await a.cancel();
    const lastId = seenA.at(-1)!.id!;

    // While disconnected: the human answers and the program finishes.
    const answered = await h.fetch(`/v1/human/${request.id}`, {
      token: TOKENS.approver,
      body: { answer: true },
    });
    assert.equal(answered.status, 200);
    assert.equal((await answered.json()).answer.by, "api:alice");
    assert.equal((await h.kernel.waitFor(human, { timeoutMs: 10_000 })).result, "published");
    // The exit call's own audit record is written after the state changes: let it land.
    await h.kernel.executionOf(human)?.settled();
    await h.kernel.journal.flush();

    // What the store holds now is what the two connections must add up to.
    const expected = new Set<string>([`human:${request.id}`]);
    for await (const event of h.kernel.processes.events()) expected.add(`transition:${event.seq}`);
    for await (const record of h.kernel.audit.list()) expected.add(`audit:${record.seq}`);

    const second = await stream(h, lastId);
    assert.equal(second.status, 200);
    const b = new SseReader(second.body!);
    const seenB: SseFrame[] = [];
    const seen = new Set(seenA.map(keyOf));
    while ([...expected].some((key) => !seen.has(key))) {
      const [frame] = await b.events(1);
      seenB.push(frame);
      seen.add(keyOf(frame));
    }
    await b.cancel();

    const keysA = seenA.map(keyOf);
    const keysB = seenB.map(keyOf);
    assert.equal(new Set(keysA).size, keysA.length, "no duplicate on the first connection");
    assert.equal(new Set(keysB).size, keysB.length, "no duplicate on the second connection");
    assert.deepEqual(keysB.filter((k) => keysA.includes(k)), [], "nothing is sent twice");
    assert.deepEqual([...new Set([...keysA, ...keysB])].sort(), [...expected].sort());
    assert.ok(keysB.length > 0, "the second connection carried the rest");
    assert.ok(!keysB.some((k) => k.startsWith("human:")), "an answered request is not resent");

    const transitions = [...seenA, ...seenB].filter((f) => f.event === "transition")
      .map((f) => JSON.parse(f.data!)).filter((e) => e.pid === human).map((e) => e.to);
    assert.deepEqual(transitions.slice(-2), ["running", "exited"]);
    const denied = [...seenA, ...seenB].filter((f) => f.event === "audit")
      .map((f) => JSON.parse(f.data!)).find((r) => r.pid === agent && r.code === "EPERM");
    assert.equal(denied?.syscall, "fs.read", "the refused secret read is in the audit stream");
    const everything = [...seenA, ...seenB].map((f) => f.data).join("\n");
    assert.ok(!everything.includes(SECRET), "the secret's bytes never reach the stream");
    assert.equal(
      await Deno.readTextFile(join(h.workspace, "out/summary.md")),
      "A demo repository.\n",
    );
  });
});

Deno.test("shutdown ends open event streams instead of waiting for them", async () => {
  await withServer(async (h) => {
    const res = await stream(h);
    const reader = new SseReader(res.body!);
    assert.match((await reader.next())?.comment ?? "", /libos event stream/);
    const ended = (async () => {
      for (;;) if ((await reader.next(10_000)) === undefined) return true;
    })();
    await h.server.shutdown();
    assert.equal(await ended, true);
  });
});

Deno.test("a client that goes away stops its stream on the server", async () => {
  const kernel = await Kernel.open({ store: ":memory:" });
  let subscribed = 0;
  const watched: ControlKernel = {
    processes: {
      list: () => kernel.processes.list(),
      get: (pid) => kernel.processes.get(pid),
      children: (pid) => kernel.processes.children(pid),
      events: (options) => kernel.processes.events(options),
      subscribe: (listener) => {
        subscribed++;
        const off = kernel.processes.subscribe(listener);
        return () => {
          subscribed--;
          off();
        };
      },
    },
    images: kernel.images,
    caps: kernel.caps,
    audit: kernel.audit,
    objects: kernel.objects,
    now: kernel.now,
    spawn: (options) => kernel.spawn(options),
    start: (pid) => kernel.start(pid),
    signal: (pid, signal, options) => kernel.signal(pid, signal, options),
  };
  const server = serveApi(watched, { port: 0, tokens: CONFIG });
  try {
    const res = await fetch(`${server.url}/v1/events/stream`, {
      headers: { authorization: `Bearer ${TOKENS.viewer}` },
    });
    const reader = new SseReader(res.body!);
    await reader.next();
    assert.equal(subscribed, 1);
    const gone = new Promise<void>((resolve) => {
      const check = () => subscribed === 0 ? resolve() : setTimeout(check, 10);
      check();
    });
    await reader.cancel();
    await gone;
    assert.equal(subscribed, 0);
  } finally {
    await server.shutdown();
    await kernel.close();
  }
});
