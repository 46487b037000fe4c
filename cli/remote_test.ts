import assert from "node:assert/strict";
import { main } from "../cli.ts";
import type { Io } from "./context.ts";
import { RemoteClient, RemoteError, remoteTarget } from "./remote.ts";

const TOKEN = "fake-server-token-0000001";

/** A fake API server on 127.0.0.1 answering from `routes` ("METHOD /path" → handler). */
async function withFake(
  routes: Record<string, (req: Request) => Response | Promise<Response>>,
  body: (url: string, seen: Headers[]) => Promise<void>,
): Promise<void> {
  const seen: Headers[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    seen.push(new Headers(req.headers));
    const route = routes[`${req.method} ${new URL(req.url).pathname}`];
    if (route) return route(req);
    const message = `Cannot find route ${req.method} ${new URL(req.url).pathname}`;
    return Response.json({ error: { code: "not_found", message } }, { status: 404 });
  });
  try {
    await body(`http://127.0.0.1:${server.addr.port}`, seen);
  } finally {
    await server.shutdown();
  }
}

async function cli(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: Io = {
    out: (t) => out.push(...t.split("\n")),
    err: (t) => err.push(t),
    interactive: false,
  };
  return { code: await main(args, io), out, err };
}

const RECORD = {
  pid: 4,
  ppid: null,
  image: "reader@1.0.0",
  state: "exited",
  result: "done",
  usage: { toolCalls: 0, tokens: 0, children: 0 },
  children: [],
  pending: [],
};
const EVENTS = [
  { seq: 1, at: 1, pid: 4, kind: "transition", from: null, to: "created" },
  { seq: 2, at: 2, pid: 4, kind: "transition", from: "created", to: "exited" },
];
const TRANSCRIPT = [{ role: "user", content: "Begin." }, { role: "assistant", content: "done" }];

Deno.test("RemoteClient: base URL with or without /v1; refuses non-http URLs", () => {
  for (
    const server of ["http://127.0.0.1:7311", "http://127.0.0.1:7311/", "http://127.0.0.1:7311/v1/"]
  ) {
    assert.equal(new RemoteClient(server, { token: TOKEN }).url, "http://127.0.0.1:7311");
  }
  for (const bad of ["127.0.0.1:7311", "ftp://x", "not a url", "http://u:p@127.0.0.1/"]) {
    assert.throws(
      () => new RemoteClient(bad, { token: TOKEN }),
      (e: unknown) =>
        e instanceof RemoteError && e.message.startsWith(`Cannot use server "${bad}"`),
    );
  }
});

Deno.test("RemoteClient: sends the bearer token and JSON; an API error keeps its message and status", async () => {
  await withFake({
    "POST /v1/processes/3/signal": async (req) =>
      Response.json({ pid: 3, state: (await req.json()).signal === "kill" ? "killed" : "x" }),
    "GET /v1/processes": () =>
      Response.json({ error: { code: "forbidden", message: "Cannot list processes: no" } }, {
        status: 403,
      }),
    "GET /v1/images": () => new Response("<html>", { status: 502 }),
  }, async (url, seen) => {
    const client = new RemoteClient(url, { token: TOKEN });
    assert.deepEqual(await client.signal(3, "kill"), { pid: 3, state: "killed" });
    assert.equal(seen[0].get("authorization"), `Bearer ${TOKEN}`);
    assert.equal(seen[0].get("content-type"), "application/json");
    await assert.rejects(
      client.processes(),
      (e: unknown) =>
        e instanceof RemoteError && e.status === 403 && e.code === "forbidden" &&
        e.message === "Cannot list processes: no",
    );
    await assert.rejects(
      client.images(),
      (e: unknown) =>
        e instanceof RemoteError && e.status === 502 &&
        e.message ===
          `Cannot use the server at ${url}: GET /v1/images answered 502 without an API error`,
    );
  });
});

Deno.test("RemoteClient: transcript and events are undefined when the server lacks the route", async () => {
  await withFake({}, async (url) => {
    const client = new RemoteClient(url, { token: TOKEN });
    assert.equal(await client.transcript(4), undefined);
    assert.equal(await client.events(4), undefined);
  });
  await withFake({
    "GET /v1/processes/4/transcript": () =>
      Response.json({ error: { code: "not_found", message: "Cannot find process 4" } }, {
        status: 404,
      }),
  }, async (url) => {
    const client = new RemoteClient(url, { token: TOKEN });
    await assert.rejects(client.transcript(4), /^RemoteError: Cannot find process 4$/);
  });
});

Deno.test("RemoteClient: audit pages until a short page", async () => {
  const afters: (string | null)[] = [];
  await withFake({
    "GET /v1/audit": (req) => {
      const after = new URL(req.url).searchParams.get("after");
      afters.push(after);
      const start = Number(after ?? 0);
      const count = start === 0 ? 1000 : 3;
      return Response.json({
        records: Array.from({ length: count }, (_, i) => ({ seq: start + i + 1 })),
      });
    },
  }, async (url) => {
    const seqs = [];
    for await (const r of new RemoteClient(url, { token: TOKEN }).audit()) seqs.push(r.seq);
    assert.equal(seqs.length, 1003);
    assert.equal(seqs.at(-1), 1003);
    assert.deepEqual(afters, [null, "1000"]);
  });
});

Deno.test("RemoteClient: processes follows the pages while the server says more follow", async () => {
  const queries: string[] = [];
  await withFake({
    "GET /v1/processes": (req) => {
      const query = new URL(req.url).searchParams;
      queries.push(query.toString());
      const start = Number(query.get("after") ?? 0);
      const count = start === 0 ? Number(query.get("limit")) : 2;
      const processes = Array.from({ length: count }, (_, i) => ({ pid: start + i + 1 }));
      return Response.json(start === 0 ? { processes, next: count } : { processes });
    },
  }, async (url) => {
    const processes = await new RemoteClient(url, { token: TOKEN }).processes();
    assert.equal(processes.length, 1002);
    assert.equal(processes.at(-1)?.pid, 1002);
    assert.deepEqual(queries, ["limit=1000", "after=1000&limit=1000"]);
  });
});

Deno.test("RemoteClient.stream: parses frames and resumes with Last-Event-ID after a drop", async () => {
  const lastIds: (string | null)[] = [];
  await withFake({
    "GET /v1/events/stream": (req) => {
      lastIds.push(req.headers.get("last-event-id"));
      const frames = lastIds.length === 1
        ? `: hello\r\nretry: 1000\r\n\r\nid: 1.0.0\nevent: transition\ndata: ${
          JSON.stringify(EVENTS[0])
        }\n\n`
        : `id: 2.0.0\nevent: transition\ndata: ${JSON.stringify(EVENTS[1])}\n\n`;
      return new Response(frames, { headers: { "content-type": "text/event-stream" } });
    },
  }, async (url) => {
    const client = new RemoteClient(url, { token: TOKEN });
    const got = [];
    for await (const event of client.stream({ pid: 4 })) {
      got.push(event);
      if (got.length === 2) break;
    }
    assert.deepEqual(got.map((e) => [e.id, e.kind, e.data]), [
      ["1.0.0", "transition", EVENTS[0]],
      ["2.0.0", "transition", EVENTS[1]],
    ]);
    assert.deepEqual(lastIds, [null, "1.0.0"]);
  });
});

Deno.test("RemoteClient.stream: gives up after connections that end with no event", async () => {
  let calls = 0;
  await withFake({
    "GET /v1/events/stream": () => {
      calls++;
      return new Response(": nothing\n\n", { headers: { "content-type": "text/event-stream" } });
    },
  }, async (url) => {
    const client = new RemoteClient(url, { token: TOKEN });
    await assert.rejects(async () => {
      for await (const _ of client.stream({ reconnects: 3 })) { /* none */ }
    }, /it ended 3 times in a row/);
    assert.equal(calls, 3);
  });
});

Deno.test("remote logs prints the transcript when the server has the route", async () => {
  await withFake({
    "GET /v1/processes/4": () => Response.json(RECORD),
    "GET /v1/processes/4/events": () => Response.json({ events: EVENTS }),
    "GET /v1/processes/4/transcript": () => Response.json({ transcript: TRANSCRIPT }),
  }, async (url) => {
    const logs = await cli(["logs", "4", "--server", url, "--token", TOKEN]);
    assert.equal(logs.code, 0, JSON.stringify(logs.err));
    assert.deepEqual(logs.out, [
      "event 1: new → created",
      "event 2: created → exited",
      "user      Begin.",
      "assistant done",
    ]);
  });
});

Deno.test("remote logs of a live process without an events route is one line; --follow works", async () => {
  await withFake({
    "GET /v1/processes/4": () => Response.json({ ...RECORD, state: "running" }),
    "GET /v1/events/stream": () =>
      new Response(
        EVENTS.map((e, i) => `id: ${i + 1}.0.0\nevent: transition\ndata: ${JSON.stringify(e)}\n\n`)
          .join(""),
        { headers: { "content-type": "text/event-stream" } },
      ),
    "GET /v1/audit": () => Response.json({ records: [] }),
  }, async (url) => {
    const logs = await cli(["logs", "4", "--server", url, "--token", TOKEN]);
    assert.equal(logs.code, 1);
    assert.deepEqual(logs.err, [
      "libos logs: Cannot list the transitions of live process 4: the server has no events route; use --follow",
    ]);
    const follow = await cli(["logs", "4", "--follow", "--server", url, "--token", TOKEN]);
    assert.equal(follow.code, 0, JSON.stringify(follow.err));
    assert.deepEqual(follow.out, ["event 1: new → created", "event 2: created → exited"]);
  });
});

Deno.test("remoteTarget: flags, environment, and the errors of a half-given target", () => {
  const env = { LIBOS_SERVER: "http://127.0.0.1:1", LIBOS_TOKEN: "env-token-000000000" };
  assert.equal(remoteTarget({}, { env: {} }), undefined);
  assert.deepEqual(remoteTarget({}, { env }), { server: env.LIBOS_SERVER, token: env.LIBOS_TOKEN });
  assert.equal(remoteTarget({ kv: "/tmp/x.db" }, { env }), undefined, "--kv wins over the env");
  assert.deepEqual(remoteTarget({ server: "http://h:2", token: "t" }, { env }), {
    server: "http://h:2",
    token: "t",
  });
  assert.throws(() => remoteTarget({ server: "http://h:2" }, { env: {} }), /no token/);
  assert.throws(() => remoteTarget({ token: "t" }, { env: {} }), /--token without --server/);
  assert.throws(() => remoteTarget({ server: "http://h", kv: "x" }, { env }), /choose one/);
});
