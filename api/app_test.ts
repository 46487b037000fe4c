import assert from "node:assert/strict";
import { join } from "node:path";
import { callDigest } from "../broker/broker.ts";
import { Kernel } from "../runtime/kernel.ts";
import { ScriptedModel } from "../runtime/model.ts";
import type { ProcessState } from "../runtime/process_table.ts";
import { SseReader } from "./_testing.ts";
import { type ApiApp, type ControlKernel, createApp, type CreateAppOptions } from "./app.ts";
import { type Role, ROLE_RIGHTS, ROLES, type TokenConfig } from "./auth.ts";
import { INTERNAL_MESSAGE } from "./errors.ts";
import { API_ROUTES } from "./openapi.ts";

const TOKENS: Record<Role, string> = {
  admin: "admin-token-0000000000000001",
  operator: "operator-token-00000000000002",
  approver: "approver-token-00000000000003",
  viewer: "viewer-token-0000000000000004",
};
const CONFIG: TokenConfig = {
  tokens: ROLES.map((role) => ({ name: `${role}-1`, token: TOKENS[role], role })),
};

/** Blocks on a human question, then returns what it was told. */
const ASKER = `export default async function main(sys) {
  const ok = await sys.human.ask("Deploy now?", { kind: "boolean" });
  return ok ? "deployed" : "held";
}`;
/** Waits for an event on "go" and returns its data. */
const WAITER = `export default async function main(sys) {
  const event = await sys.event.wait("go");
  return event.data;
}`;
/** Writes its input to its private namespace. */
const WRITER = `export default async function main(sys, input) {
  await sys.obj.put("self", "note", { input });
  return "written";
}`;

/** A parsed JSON response body. */
// deno-lint-ignore no-explicit-any
type Body = any;

interface Call {
  role?: Role;
  body?: unknown;
  headers?: Record<string, string>;
}

interface ApiTest {
  kernel: Kernel;
  app: ApiApp;
  workspace: string;
  errors: unknown[];
  call(method: string, path: string, options?: Call): Promise<Response>;
  json(method: string, path: string, options?: Call): Promise<{ status: number; body: Body }>;
  register(name: string, source: string, capabilities: string[]): Promise<string>;
  spawn(image: string, extra?: Record<string, unknown>): Promise<number>;
}

async function request(
  app: ApiApp,
  method: string,
  path: string,
  options: Call = {},
): Promise<Response> {
  const headers: Record<string, string> = {};
  if (options.role) headers.authorization = `Bearer ${TOKENS[options.role]}`;
  if (options.body !== undefined) headers["content-type"] = "application/json";
  return await app.request(path, {
    method,
    headers: { ...headers, ...options.headers },
    body: options.body === undefined
      ? undefined
      : typeof options.body === "string"
      ? options.body
      : JSON.stringify(options.body),
  });
}

async function withApi(
  body: (t: ApiTest) => Promise<void>,
  options: Partial<CreateAppOptions> = {},
): Promise<void> {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-api-" }));
  const workspace = join(root, "ws");
  await Deno.mkdir(workspace);
  const kernel = await Kernel.open({
    store: ":memory:",
    model: new ScriptedModel({ turns: [{ content: "done", exit: true }] }),
  });
  const errors: unknown[] = [];
  const app = createApp(kernel, {
    tokens: CONFIG,
    onError: (error) => errors.push(error),
    stream: { pollMs: 20 },
    ...options,
  });
  const t: ApiTest = {
    kernel,
    app,
    workspace,
    errors,
    call: (method, path, call) => request(app, method, path, call),
    json: async (method, path, call) => {
      const res = await request(app, method, path, call);
      return { status: res.status, body: await res.json() };
    },
    register: async (name, source, capabilities) => {
      const res = await t.json("POST", "/v1/images", {
        role: "operator",
        body: {
          image: { name, version: "1.0.0", entry: "main.ts", capabilities },
          entrySource: source,
        },
      });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body.tag;
    },
    spawn: async (image, extra = {}) => {
      const res = await t.json("POST", "/v1/processes", {
        role: "operator",
        body: { image, workspace, ...extra },
      });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body.pid;
    },
  };
  try {
    await body(t);
    assert.deepEqual(errors, [], "no request failed unexpectedly");
  } finally {
    await kernel.close();
    await Deno.remove(root, { recursive: true });
  }
}

function untilState(kernel: Kernel, pid: number, state: ProcessState): Promise<void> {
  return new Promise((resolve, reject) => {
    const off = kernel.processes.subscribe((record) => {
      if (record.pid === pid && record.state === state) done();
    });
    const timer = setTimeout(() => {
      off();
      reject(new Error(`Process ${pid} did not become ${state} within 10 s`));
    }, 10_000);
    const done = () => {
      off();
      clearTimeout(timer);
      resolve();
    };
    kernel.processes.get(pid).then((record) => {
      if (record?.state === state) done();
    });
  });
}

function expectError(res: { status: number; body: Body }, status: number, message?: RegExp) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.deepEqual(Object.keys(res.body), ["error"]);
  assert.deepEqual(Object.keys(res.body.error).sort(), ["code", "message"]);
  if (message) assert.match(res.body.error.message, message);
}

/** A concrete path for a route's OpenAPI path. */
function concrete(path: string): string {
  return path.replace("{pid}", "999").replace("{id}", "no-such-request")
    .replace("{namespace}/{name}", "shared/notes/n1");
}

const CELLS = { sharing: "tree", isolation: "shared", workersPerCell: 16, waitGraceMs: 1000 };
const RUN_QUEUE = {
  queued: 0,
  starting: 0,
  running: 0,
  lingering: 0,
  maxStarting: 16,
  maxRunning: 256,
  cells: 0,
  maxCells: 16,
  waitingForCell: 0,
};

Deno.test("GET /v1/health needs no token and reports the version, the exec sandbox, cell sharing and the run queue", async () => {
  await withApi(async (t) => {
    const res = await t.json("GET", "/v1/health");
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, {
      ok: true,
      version: "0.1.0",
      execSandbox: "bwrap",
      cells: CELLS,
      runQueue: RUN_QUEUE,
    });
  }, {});
  await withApi(async (t) => {
    assert.deepEqual((await t.json("GET", "/v1/health")).body, {
      ok: true,
      version: "9.0.0",
      execSandbox: "bwrap",
      cells: CELLS,
      runQueue: RUN_QUEUE,
    });
  }, { version: "9.0.0" });
});

Deno.test("GET /v1/openapi.json describes exactly the routes the app serves", async () => {
  await withApi(async (t) => {
    const doc = (await t.json("GET", "/v1/openapi.json")).body;
    assert.equal(doc.openapi, "3.1.0");
    assert.equal(doc.info.version, "0.1.0");
    for (const route of API_ROUTES) {
      assert.ok(doc.paths[route.path][route.method.toLowerCase()], route.path);
      const res = await t.call(route.method, concrete(route.path), { role: "admin" });
      const body = route.produces ? undefined : await res.json();
      if (route.produces) await res.body?.cancel();
      assert.notEqual(res.status, 405, route.path);
      assert.ok(!/Cannot find route/.test(body?.error?.message ?? ""), `${route.path} is served`);
    }
  });
});

Deno.test("every authenticated route refuses a missing or unknown token with 401", async () => {
  await withApi(async (t) => {
    for (const route of API_ROUTES.filter((r) => r.right)) {
      const variants: Record<string, string>[] = [
        {},
        { authorization: "Bearer not-a-configured-token-value" },
      ];
      for (const headers of variants) {
        const res = await t.json(route.method, concrete(route.path), { headers });
        expectError(res, 401, /Cannot authenticate the request/);
        assert.equal(res.body.error.code, "unauthenticated");
      }
    }
  });
});

Deno.test("every route lets each role with its right through and refuses the others with 403", async () => {
  await withApi(async (t) => {
    for (const route of API_ROUTES.filter((r) => r.right)) {
      for (const role of ROLES) {
        const res = await t.call(route.method, concrete(route.path), { role });
        const allowed = ROLE_RIGHTS[role].includes(route.right!);
        if (route.produces && res.status === 200) {
          await res.body?.cancel();
          assert.ok(allowed, `${role} streamed ${route.path}`);
          continue;
        }
        const body = await res.json();
        if (allowed) {
          assert.ok(![401, 403].includes(res.status), `${role} ${route.method} ${route.path}`);
        } else {
          expectError({ status: res.status, body }, 403, new RegExp(`role "${role}" lacks`));
        }
      }
    }
  });
});

Deno.test("POST /v1/images registers documents and bundles; GET lists them", async () => {
  await withApi(async (t) => {
    const image = { name: "hello", version: "1.0.0", tools: ["exit"] };
    const first = await t.json("POST", "/v1/images", { role: "operator", body: image });
    assert.equal(first.status, 201);
    assert.equal(first.body.tag, "hello@1.0.0");
    assert.match(first.body.digest, /^[0-9a-f]{64}$/);
    const again = await t.json("POST", "/v1/images", { role: "admin", body: image });
    assert.deepEqual(again.body, first.body, "the same content registers idempotently");
    expectError(
      await t.json("POST", "/v1/images", {
        role: "operator",
        body: { ...image, tools: ["read_file"] },
      }),
      409,
      /tag is already taken/,
    );
    expectError(
      await t.json("POST", "/v1/images", { role: "operator", body: { ...image, name: "Bad" } }),
      400,
      /^Cannot register an image: name: expected a lowercase name/,
    );
    expectError(
      await t.json("POST", "/v1/images", { role: "operator", body: { ...image, extra: 1 } }),
      400,
      /unknown field "extra"/,
    );
    expectError(
      await t.json("POST", "/v1/images", {
        role: "operator",
        body: { image: { name: "m", version: "1", entry: "main.ts" } },
      }),
      400,
      /needs its module source/,
    );
    const tag = await t.register("mod", WRITER, []);
    const list = await t.json("GET", "/v1/images", { role: "viewer" });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.images.map((i: { tag: string }) => i.tag), ["hello@1.0.0", tag]);
    assert.ok(!JSON.stringify(list.body).includes("sys.obj.put"), "sources are not listed");
  });
});

Deno.test("POST /v1/processes spawns and starts; GET shows the record, children and capabilities", async () => {
  await withApi(async (t) => {
    const tag = await t.register("writer", WRITER, ["obj:read:shared/**"]);
    const pid = await t.spawn(tag, {
      input: { n: 1 },
      policy: { "obj:read:shared/secret": "deny" },
    });
    const end = await t.kernel.waitFor(pid, { timeoutMs: 10_000 });
    assert.equal(end.state, "exited");
    assert.equal(end.result, "written");
    const res = await t.json("GET", `/v1/processes/${pid}`, { role: "viewer" });
    assert.equal(res.status, 200);
    assert.equal(res.body.pid, pid);
    assert.equal(res.body.state, "exited");
    assert.deepEqual(res.body.input, { n: 1 });
    assert.deepEqual(res.body.children, []);
    assert.deepEqual(res.body.pending, []);
    assert.deepEqual(res.body.usage, end.usage);
    assert.ok(res.body.capabilities.includes("obj:read:shared/**"), res.body.capabilities);
    assert.ok(res.body.capabilities.includes(`obj:read,write,delete:proc/${pid}`));
    assert.ok(
      res.body.policy.some((r: { pattern: string; source: string }) =>
        r.pattern === "obj:read:shared/secret" && r.source === "operator"
      ),
    );
  });
});

Deno.test("GET /v1/processes filters by state, image and ppid", async () => {
  await withApi(async (t) => {
    const writer = await t.register("writer", WRITER, []);
    const waiter = await t.register("waiter", WAITER, ["event:wait:go"]);
    const done = await t.spawn(writer);
    await t.kernel.waitFor(done, { timeoutMs: 10_000 });
    const blocked = await t.spawn(waiter);
    await untilState(t.kernel, blocked, "blocked");
    const pids = async (query: string) =>
      (await t.json("GET", `/v1/processes${query}`, { role: "viewer" })).body.processes
        .map((p: { pid: number }) => p.pid);
    assert.deepEqual(await pids(""), [done, blocked]);
    assert.deepEqual(await pids("?state=exited"), [done]);
    assert.deepEqual(await pids("?state=blocked&image=waiter@1.0.0"), [blocked]);
    assert.deepEqual(await pids("?image=nope@1"), []);
    assert.deepEqual(await pids(`?ppid=${done}`), []);
    expectError(
      await t.json("GET", "/v1/processes?state=asleep", { role: "viewer" }),
      400,
      /state/,
    );
    expectError(await t.json("GET", "/v1/processes?ppid=x", { role: "viewer" }), 400, /ppid/);
    expectError(
      await t.json("GET", "/v1/processes?sate=x", { role: "viewer" }),
      400,
      /unknown field "sate"/,
    );
  });
});

Deno.test("GET /v1/processes answers a page in pid order: 100 by default, after a pid, at most limit", async () => {
  await withApi(async (t) => {
    for (let i = 0; i < 105; i++) {
      await t.kernel.processes.create({
        ppid: null,
        image: i % 2 ? "even@1.0.0" : "odd@1.0.0",
        digest: "x",
        cwd: t.workspace,
        workspace: t.workspace,
        policy: [],
        onParentExit: "kill",
        budget: {},
      });
    }
    const pids = async (query: string) =>
      (await t.json("GET", `/v1/processes${query}`, { role: "viewer" })).body.processes
        .map((p: { pid: number }) => p.pid);
    const range = (from: number, to: number) =>
      Array.from({ length: to - from + 1 }, (_, i) => from + i);
    assert.deepEqual(await pids(""), range(1, 100));
    assert.deepEqual(await pids("?after=100"), range(101, 105));
    assert.deepEqual(await pids("?after=2&limit=3"), [3, 4, 5]);
    assert.deepEqual(await pids("?limit=1000"), range(1, 105));
    // A filter fills the page from the processes past `after` it keeps.
    assert.deepEqual(await pids("?image=even@1.0.0&after=10&limit=3"), [12, 14, 16]);
    // A page says whether more follow, and from where; the last one says nothing.
    const next = async (query: string) =>
      (await t.json("GET", `/v1/processes${query}`, { role: "viewer" })).body.next;
    assert.equal(await next(""), 100);
    assert.equal(await next("?after=2&limit=3"), 5);
    assert.equal(await next("?after=100"), undefined);
    assert.equal(await next("?after=102&limit=3"), undefined, "a full last page says none follow");
    expectError(
      await t.json("GET", "/v1/processes?limit=1001", { role: "viewer" }),
      400,
      /limit: must be at most 1000/,
    );
    expectError(await t.json("GET", "/v1/processes?after=-1", { role: "viewer" }), 400, /after/);
  });
});

Deno.test("POST /v1/processes maps kernel refusals to 400, 403 and 404", async () => {
  await withApi(async (t) => {
    const tag = await t.register("writer", WRITER, ["obj:read:shared/**"]);
    const spawn = (body: Record<string, unknown>) =>
      t.json("POST", "/v1/processes", {
        role: "operator",
        body: { image: tag, workspace: t.workspace, ...body },
      });
    expectError(await spawn({ image: "missing@1.0.0" }), 404, /no such image/);
    expectError(await spawn({ workspace: join(t.workspace, "nope") }), 404, /does not exist/);
    expectError(await spawn({ capabilities: ["fs:read:**"] }), 403, /beyond the ceiling/);
    expectError(await spawn({ capabilities: ["fs:read"] }), 400);
    expectError(
      await spawn({ policy: { "disk:read:*": "deny" } }),
      400,
      /^Cannot spawn a process: cannot parse policy rule/,
    );
    expectError(await spawn({ model: "llama:x" }), 400, /unknown provider/);
    expectError(await spawn({ cwd: 7 }), 400, /cwd: expected string, got number/);
    expectError(await spawn({ budget: {} }), 400, /unknown field "budget"/);
    assert.deepEqual(await t.kernel.processes.list(), [], "no refused spawn left a process");
    expectError(
      await t.json("GET", "/v1/processes/abc", { role: "viewer" }),
      400,
      /positive integer/,
    );
    expectError(
      await t.json("GET", "/v1/processes/42", { role: "viewer" }),
      404,
      /Cannot find process 42/,
    );
  });
});

Deno.test("POST /v1/processes/:pid/signal kills a process once and then answers 409", async () => {
  await withApi(async (t) => {
    const waiter = await t.register("waiter", WAITER, ["event:wait:go"]);
    const pid = await t.spawn(waiter);
    await untilState(t.kernel, pid, "blocked");
    const signal = (body: unknown, role: Role = "operator") =>
      t.json("POST", `/v1/processes/${pid}/signal`, { role, body });
    expectError(await signal({ signal: "hup" }), 400, /signal: expected one of/);
    expectError(await signal({ signal: "kill", now: true }), 400, /unknown field "now"/);
    expectError(await signal({ signal: "kill" }, "approver"), 403);
    assert.equal(
      (await t.kernel.processes.get(pid))?.state,
      "blocked",
      "refused signals did nothing",
    );
    const killed = await signal({ signal: "kill" });
    assert.equal(killed.status, 200);
    assert.deepEqual(killed.body, { pid, state: "killed" });
    const events = [];
    for await (const event of t.kernel.processes.events({ pid })) events.push(event);
    assert.equal(events.at(-1)?.reason, "kill signal from api:operator-1");
    expectError(await signal({ signal: "kill" }), 409, /already ended \(killed\)/);
    expectError(
      await t.json("POST", "/v1/processes/999/signal", {
        role: "operator",
        body: { signal: "kill" },
      }),
      404,
      /no such process/,
    );
  });
});

Deno.test("pause and resume through the API", async () => {
  await withApi(async (t) => {
    const waiter = await t.register("waiter", WAITER, ["event:wait:go"]);
    const pid = await t.spawn(waiter);
    await untilState(t.kernel, pid, "blocked");
    const paused = await t.json("POST", `/v1/processes/${pid}/signal`, {
      role: "admin",
      body: { signal: "pause" },
    });
    assert.deepEqual(paused.body, { pid, state: "paused" });
    const resumed = await t.json("POST", `/v1/processes/${pid}/signal`, {
      role: "admin",
      body: { signal: "resume" },
    });
    assert.deepEqual(resumed.body, { pid, state: "blocked" });
    expectError(
      await t.json("POST", `/v1/processes/${pid}/signal`, {
        role: "admin",
        body: { signal: "resume" },
      }),
      400,
      /not paused/,
    );
  });
});

Deno.test("human requests are listed, shown on their process, and answered once", async () => {
  await withApi(async (t) => {
    const asker = await t.register("asker", ASKER, ["human:ask:*"]);
    const pid = await t.spawn(asker);
    await untilState(t.kernel, pid, "blocked");
    const list = await t.json("GET", "/v1/human", { role: "viewer" });
    assert.equal(list.status, 200);
    assert.equal(list.body.requests.length, 1);
    const request = list.body.requests[0];
    assert.equal(request.pid, pid);
    assert.equal(request.question.text, "Deploy now?");
    const shown = await t.json("GET", `/v1/processes/${pid}`, { role: "viewer" });
    assert.deepEqual(shown.body.pending.map((r: { id: string }) => r.id), [request.id]);

    const answer = (body: unknown, role: Role = "approver") =>
      t.json("POST", `/v1/human/${request.id}`, { role, body });
    expectError(await answer({}), 400, /expected a decision or an answer/);
    expectError(await answer({ answer: true, why: "x" }), 400, /unknown field "why"/);
    expectError(await answer({ answer: "perhaps" }), 400, /expected yes or no/);
    expectError(await answer({ decision: "allow_once" }), 400, /a question, not a permission/);
    expectError(await answer({ answer: true }, "viewer"), 403);
    assert.equal((await t.kernel.humans.get(request.id))?.state, "pending");

    const ok = await answer({ answer: true });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.state, "answered");
    assert.equal(ok.body.answer.by, "api:approver-1");
    const end = await t.kernel.waitFor(pid, { timeoutMs: 10_000 });
    assert.equal(end.result, "deployed");
    expectError(await answer({ answer: false }), 409, /already answered/);
    expectError(await answer({ answer: false }, "operator"), 409);
    expectError(
      await t.json("POST", "/v1/human/00000000-0000-0000-0000-000000000000", {
        role: "approver",
        body: { answer: true },
      }),
      404,
      /no such request/,
    );
    expectError(
      await t.json("POST", "/v1/human/..%2F..", { role: "approver", body: { answer: true } }),
      404,
    );
    assert.deepEqual((await t.json("GET", "/v1/human", { role: "viewer" })).body, { requests: [] });
  });
});

Deno.test("GET /v1/human shows a permission request's arguments in full with their digest", async () => {
  await withApi(async (t) => {
    const tail = `TAIL-${crypto.randomUUID()}`;
    const reason = "because ".repeat(300) + tail;
    const requester = await t.register(
      "requester",
      `export default async function main(sys, input) {
        return await sys.cap.request("time:sleep:*", input);
      }`,
      ["time:sleep:*"],
    );
    const pid = await t.spawn(requester, { input: reason });
    await untilState(t.kernel, pid, "blocked");
    const [request] = (await t.json("GET", "/v1/human", { role: "viewer" })).body.requests;
    const args = JSON.parse(request.operation.args);
    assert.deepEqual(args, { capability: "time:sleep:*", reason });
    assert.ok(request.operation.args.includes(tail));
    assert.equal(request.operation.argsDigest, await callDigest("cap.request", args));
    assert.equal(request.reason, reason);
  });
});

Deno.test("GET /v1/audit?decision=deny lists every refusal and nothing else", async () => {
  await withApi(async (t) => {
    const child = await t.register("kid", WRITER, ["time:sleep:*"]);
    const spawner = await t.register(
      "spawner",
      `export default async function main(sys, input) {
        try { await sys.proc.spawn({ image: input, capabilities: ["time:sleep:*"] }); }
        catch (e) { return e.code; }
      }`,
      ["proc:spawn:*"],
    );
    const pid = await t.spawn(spawner, { input: child });
    assert.equal((await t.kernel.waitFor(pid, { timeoutMs: 10_000 })).result, "EPERM");
    await t.kernel.journal.flush();
    const all = (await t.json("GET", `/v1/audit?pid=${pid}`, { role: "viewer" })).body.records;
    const denied =
      (await t.json("GET", `/v1/audit?pid=${pid}&decision=deny`, { role: "viewer" })).body.records;
    assert.deepEqual(
      denied.map((r: { syscall: string; code: string }) => [r.syscall, r.code]),
      [["proc.spawn", "EPERM"]],
    );
    assert.match(denied[0].reason, /parent holds no capability that covers it/);
    assert.deepEqual(
      denied,
      all.filter((r: { decision: string }) => r.decision === "deny"),
    );
    expectError(
      await t.json("GET", "/v1/audit?decision=maybe", { role: "viewer" }),
      400,
      /decision/,
    );
  });
});

Deno.test("POST /v1/events posts an event that wakes a waiting process", async () => {
  await withApi(async (t) => {
    const waiter = await t.register("waiter", WAITER, ["event:wait:go"]);
    const pid = await t.spawn(waiter);
    await untilState(t.kernel, pid, "blocked");
    expectError(
      await t.json("POST", "/v1/events", { role: "operator", body: { topic: "g o" } }),
      400,
      /topic:/,
    );
    expectError(
      await t.json("POST", "/v1/events", { role: "approver", body: { topic: "go" } }),
      403,
    );
    assert.equal((await t.kernel.processes.get(pid))?.state, "blocked");
    const posted = await t.json("POST", "/v1/events", {
      role: "operator",
      body: { topic: "go", data: { n: 7 } },
    });
    assert.equal(posted.status, 201);
    assert.deepEqual(posted.body, { seq: 1 });
    const end = await t.kernel.waitFor(pid, { timeoutMs: 10_000 });
    assert.deepEqual(end.result, { n: 7 });
  });
});

Deno.test("a kernel without a human queue or events answers 501 for them", async () => {
  await withApi(async (t) => {
    const k = t.kernel;
    const bare: ControlKernel = {
      processes: k.processes,
      images: k.images,
      caps: k.caps,
      audit: k.audit,
      objects: k.objects,
      now: k.now,
      spawn: (options) => k.spawn(options),
      start: (pid) => k.start(pid),
      signal: (pid, signal, options) => k.signal(pid, signal, options),
    };
    const app = createApp(bare, { tokens: CONFIG });
    const human = await request(app, "POST", "/v1/human/abc", {
      role: "admin",
      body: { answer: 1 },
    });
    expectError({ status: human.status, body: await human.json() }, 501, /no human queue/);
    const event = await request(app, "POST", "/v1/events", {
      role: "admin",
      body: { topic: "go" },
    });
    expectError({ status: event.status, body: await event.json() }, 501, /no event support/);
    const list = await request(app, "GET", "/v1/human", { role: "admin" });
    assert.deepEqual(await list.json(), { requests: [] });
  });
});

Deno.test("GET /v1/audit pages records by pid, after and limit; verify checks the chain", async () => {
  await withApi(async (t) => {
    const writer = await t.register("writer", WRITER, []);
    const one = await t.spawn(writer, { input: "a" });
    await t.kernel.waitFor(one, { timeoutMs: 10_000 });
    const two = await t.spawn(writer, { input: "b" });
    await t.kernel.waitFor(two, { timeoutMs: 10_000 });
    await t.kernel.journal.flush();
    const all = (await t.json("GET", "/v1/audit", { role: "viewer" })).body.records;
    assert.ok(all.length >= 2);
    assert.deepEqual(
      all.map((r: { seq: number }) => r.seq),
      all.map((_: unknown, i: number) => i + 1),
    );
    const mine = (await t.json("GET", `/v1/audit?pid=${two}`, { role: "viewer" })).body.records;
    assert.ok(mine.length > 0 && mine.every((r: { pid: number }) => r.pid === two));
    const page =
      (await t.json("GET", "/v1/audit?after=1&limit=1", { role: "viewer" })).body.records;
    assert.deepEqual(page.map((r: { seq: number }) => r.seq), [2]);
    assert.ok(!JSON.stringify(all).includes('"a"'), "inputs are not in the audit");
    expectError(
      await t.json("GET", "/v1/audit?limit=1001", { role: "viewer" }),
      400,
      /at most 1000/,
    );
    expectError(await t.json("GET", "/v1/audit?after=-1", { role: "viewer" }), 400, /after/);
    const verify = await t.json("GET", "/v1/audit/verify", { role: "viewer" });
    assert.equal(verify.body.ok, true);
    assert.ok(verify.body.count >= all.length, "verify walked every record listed");
    await t.kernel.store.kv.set(["audit", "rec", 1], { ...all[0], syscall: "time.now" });
    const broken = await t.json("GET", "/v1/audit/verify", { role: "viewer" });
    assert.equal(broken.status, 200);
    assert.equal(broken.body.ok, false);
    assert.match(broken.body.reason, /record 1 does not match its hash/);
  });
});

Deno.test("GET /v1/objects lists a namespace and /v1/objects/NS/NAME reads one object", async () => {
  await withApi(async (t) => {
    const writer = await t.register("writer", WRITER, []);
    const pid = await t.spawn(writer, { input: "hello" });
    await t.kernel.waitFor(pid, { timeoutMs: 10_000 });
    const one = await t.json("GET", `/v1/objects/proc/${pid}/note`, { role: "viewer" });
    assert.equal(one.status, 200);
    assert.equal(one.body.namespace, `proc/${pid}`);
    assert.deepEqual(one.body.value, { input: "hello" });
    assert.equal(one.body.writer, pid);
    const list = await t.json("GET", `/v1/objects?namespace=proc/${pid}`, { role: "viewer" });
    assert.deepEqual(list.body.objects.map((o: { name: string }) => o.name), ["note"]);
    assert.equal(list.body.objects[0].value, undefined, "listings carry no values");
    expectError(await t.json("GET", `/v1/objects/proc/${pid}/other`, { role: "viewer" }), 404);
    expectError(
      await t.json("GET", "/v1/objects/onlyname", { role: "viewer" }),
      404,
      /NAMESPACE\/NAME/,
    );
    expectError(await t.json("GET", "/v1/objects?namespace=a//b", { role: "viewer" }), 400);
    expectError(
      await t.json("GET", "/v1/objects", { role: "viewer" }),
      400,
      /namespace: is required/,
    );
  });
});

Deno.test("GET /v1/tokens lists names and roles for admins only", async () => {
  await withApi(async (t) => {
    const res = await t.json("GET", "/v1/tokens", { role: "admin" });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.tokens, ROLES.map((role) => ({ name: `${role}-1`, role })));
    for (const token of Object.values(TOKENS)) assert.ok(!JSON.stringify(res.body).includes(token));
    expectError(await t.json("GET", "/v1/tokens", { role: "operator" }), 403);
  });
});

Deno.test("unknown routes are 404 and wrong methods 405 with Allow, as JSON", async () => {
  await withApi(async (t) => {
    expectError(
      await t.json("GET", "/v1/nope", { role: "admin" }),
      404,
      /Cannot find route GET \/v1\/nope/,
    );
    expectError(await t.json("GET", "/", {}), 404);
    const res = await t.call("DELETE", "/v1/processes/3", { role: "admin" });
    assert.equal(res.status, 405);
    assert.equal(res.headers.get("allow"), "GET, HEAD");
    expectError({ status: 405, body: await res.json() }, 405, /Cannot DELETE \/v1\/processes\/3/);
    const put = await t.call("PUT", "/v1/images", { role: "admin" });
    assert.equal(put.headers.get("allow"), "POST, GET, HEAD");
    await put.body?.cancel();
  });
});

Deno.test("bodies are refused when too large (413), not JSON (415) or malformed (400)", async () => {
  await withApi(async (t) => {
    const big = { name: "big", version: "1", description: "x".repeat(300) };
    expectError(
      await t.json("POST", "/v1/images", { role: "admin", body: big }),
      413,
      /over the limit of 256 bytes/,
    );
    expectError(
      await t.json("POST", "/v1/images", {
        role: "admin",
        body: "{}",
        headers: { "content-type": "text/plain" },
      }),
      415,
    );
    expectError(
      await t.json("POST", "/v1/images", { role: "admin", body: "{ nope" }),
      400,
      /not valid JSON/,
    );
    expectError(
      await t.json("POST", "/v1/events", { role: "admin", body: "[]" }),
      400,
      /expected object, got array/,
    );
    assert.deepEqual(await t.kernel.images.list(), []);
  }, { maxBodyBytes: 256 });
});

Deno.test("an unexpected failure is a generic 500 and is reported, without detail", async () => {
  await withApi(async (t) => {
    const k = t.kernel;
    const broken: ControlKernel = {
      processes: k.processes,
      images: k.images,
      caps: k.caps,
      audit: {
        list: (options) => k.audit.list(options),
        verify: () => Promise.reject(new Error("disk on fire at /var/lib/secret")),
      },
      objects: k.objects,
      now: k.now,
      spawn: (options) => k.spawn(options),
      start: (pid) => k.start(pid),
      signal: (pid, signal, options) => k.signal(pid, signal, options),
    };
    const seen: unknown[] = [];
    const app = createApp(broken, { tokens: CONFIG, onError: (e) => seen.push(e) });
    const res = await request(app, "GET", "/v1/audit/verify", { role: "viewer" });
    assert.equal(res.status, 500);
    const text = await res.text();
    assert.deepEqual(JSON.parse(text), { error: { code: "internal", message: INTERNAL_MESSAGE } });
    assert.ok(!text.includes("fire") && !text.includes("at "), text);
    assert.equal(seen.length, 1);
  });
});

Deno.test("a foreign Host or any Origin is refused before authentication", async () => {
  await withApi(async (t) => {
    const host = await t.json("GET", "/v1/processes", {
      role: "admin",
      headers: { host: "attacker.test:7311" },
    });
    expectError(host, 403, /host "attacker\.test:7311"/);
    const origin = await t.json("POST", "/v1/images", {
      role: "admin",
      body: { name: "x", version: "1" },
      headers: { origin: "http://attacker.test" },
    });
    expectError(origin, 403, /cross-site/);
    assert.deepEqual(await t.kernel.images.list(), [], "the cross-site request registered nothing");
    const health = await t.json("GET", "/v1/health", { headers: { host: "attacker.test" } });
    assert.equal(health.status, 403);
  });
});

Deno.test("responses are not cached or sniffed", async () => {
  await withApi(async (t) => {
    for (const path of ["/v1/health", "/v1/nope"]) {
      const res = await t.call("GET", path);
      assert.equal(res.headers.get("cache-control"), "no-store");
      assert.equal(res.headers.get("x-content-type-options"), "nosniff");
      await res.body?.cancel();
    }
  });
});

Deno.test("GET /v1/events/stream streams transitions and audit records; bad filters are 400", async () => {
  await withApi(async (t) => {
    const writer = await t.register("writer", WRITER, []);
    const pid = await t.spawn(writer);
    await t.kernel.waitFor(pid, { timeoutMs: 10_000 });
    const res = await t.call("GET", `/v1/events/stream?pid=${pid}&kind=transition`, {
      role: "viewer",
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
    const reader = new SseReader(res.body!);
    const events = await reader.events(4);
    assert.deepEqual(
      events.map((e) => JSON.parse(e.data!).to),
      ["created", "runnable", "running", "exited"],
    );
    await reader.cancel();
    expectError(
      await t.json("GET", "/v1/events/stream?kind=logs", { role: "viewer" }),
      400,
      /kind "logs"/,
    );
    expectError(
      await t.json("GET", "/v1/events/stream", {
        role: "viewer",
        headers: { "last-event-id": "x" },
      }),
      400,
      /not an event id/,
    );
  });
});

Deno.test("many event streams of one app read the store as one, and each gets every event", async () => {
  await withApi(async (t) => {
    const k = t.kernel;
    const reads = { transitions: 0, audit: 0, humans: 0 };
    const counted: ControlKernel = {
      processes: {
        list: () => k.processes.list(),
        get: (pid) => k.processes.get(pid),
        children: (pid) => k.processes.children(pid),
        subscribe: (listener) => k.processes.subscribe(listener),
        events: (options) => (reads.transitions++, k.processes.events(options)),
      },
      images: k.images,
      caps: k.caps,
      audit: {
        list: (options) => (reads.audit++, k.audit.list(options)),
        verify: () => k.audit.verify(),
      },
      objects: k.objects,
      humans: {
        pending: () => (reads.humans++, k.humans.pending()),
        get: (id) => k.humans.get(id),
        answer: (id, answer, options) => k.humans.answer(id, answer, options),
      },
      now: k.now,
      spawn: (options) => k.spawn(options),
      start: (pid) => k.start(pid),
      signal: (pid, signal, options) => k.signal(pid, signal, options),
    };
    // No polling: every read of the logs below follows a transition.
    const app = createApp(counted, { tokens: CONFIG, stream: { pollMs: 600_000 } });
    const STREAMS = 40;
    const readers = await Promise.all(Array.from({ length: STREAMS }, async () => {
      const res = await request(app, "GET", "/v1/events/stream", { role: "viewer" });
      assert.equal(res.status, 200);
      const reader = new SseReader(res.body!);
      assert.match((await reader.next())?.comment ?? "", /libos event stream/);
      return reader;
    }));
    const pids: number[] = [];
    for (let i = 0; i < 5; i++) {
      pids.push(
        (await k.processes.create({
          ppid: null,
          image: "demo@1.0.0",
          digest: "d",
          cwd: t.workspace,
          workspace: t.workspace,
          policy: [],
          onParentExit: "kill",
          budget: {},
        })).pid,
      );
      for (const reader of readers) {
        const [event] = await reader.events(1);
        assert.deepEqual([event.event, JSON.parse(event.data!).pid], ["transition", pids[i]]);
        assert.equal(event.id, `${i + 1}.0.0`);
      }
    }
    await Promise.all(readers.map((reader) => reader.cancel()));
    // Each stream read every log after each transition: 240 reads of each, and more.
    for (const [log, count] of Object.entries(reads)) {
      assert.ok(count < STREAMS, `${count} reads of the ${log} for ${STREAMS} streams`);
    }
  });
});

Deno.test("a process's transcript and events are readable, and unknown pids are 404", async () => {
  await withApi(async (t) => {
    const res = await t.json("POST", "/v1/images", {
      role: "operator",
      body: { name: "talker", version: "1.0.0", entry: "libos:agent", tools: ["exit"] },
    });
    assert.equal(res.status, 201);
    const pid = await t.spawn("talker@1.0.0");
    await t.kernel.waitFor(pid);
    const transcript = await t.json("GET", `/v1/processes/${pid}/transcript`, { role: "viewer" });
    assert.equal(transcript.status, 200);
    assert.equal(transcript.body.transcript.at(-1).content, "done");
    const events = await t.json("GET", `/v1/processes/${pid}/events`, { role: "viewer" });
    assert.deepEqual(events.body.events.map((e: { to: string }) => e.to).slice(-1), ["exited"]);
    assert.equal(
      (await t.json("GET", "/v1/processes/999/transcript", { role: "viewer" })).status,
      404,
    );
    assert.equal((await t.json("GET", "/v1/processes/999/events", { role: "viewer" })).status, 404);
    assert.equal((await t.call("GET", `/v1/processes/${pid}/events`)).status, 401);
  });
});
