/**
 * `net.fetch` end to end: a program in a zero-permission cell asks the
 * host to fetch URLs. A loopback `Deno.serve` counts every request it gets,
 * so each refusal shows that the request never arrived, and each control
 * shows that the same request arrives when a capability names the host.
 */

import assert from "node:assert/strict";
import type { AuditRecord } from "../broker/audit.ts";
import type { NetFetchInit, NetProvider } from "../runtime/net_provider.ts";
import { type Harness, withHarness } from "./_harness.ts";

/**
 * Sends each request (with a body of \`bodyBytes\` "y"s when asked); returns
 * the results with the body cut to 200 characters and its full length.
 */
const FETCH = `export default async function main(sys, input) {
  const out = [];
  for (const { url, options, bodyBytes } of input.requests) {
    const init = bodyBytes ? { ...options, body: "y".repeat(bodyBytes) } : options ?? {};
    try {
      const value = await sys.net.fetch(url, init);
      const body = value.body.slice(0, 200);
      out.push({ ok: true, value: { ...value, body, bodyLength: value.body.length } });
    } catch (error) {
      out.push({ ok: false, code: error.code, message: error.message });
    }
  }
  return out;
}`;

interface Outcome {
  ok: boolean;
  code?: string;
  message?: string;
  value?: {
    status: number;
    headers: Record<string, string>;
    body: string;
    bodyLength: number;
    truncated: boolean;
    url: string;
    redirects: string[];
  };
}

interface Request {
  url: string;
  options?: { method?: string; headers?: Record<string, string>; body?: string };
  /** Send a body of this many bytes, made by the program. */
  bodyBytes?: number;
}

async function fetchIn(
  h: Harness,
  requests: Request[],
  image: {
    capabilities: string[];
    policy?: Record<string, "allow" | "deny" | "ask">;
    limits?: { maxMessageBytes: number };
  },
): Promise<{ outcomes: Outcome[]; pid: number }> {
  const end = await h.run(FETCH, { input: { requests }, image: { policy: {}, ...image } });
  assert.equal(end.state, "exited", JSON.stringify(end.error));
  return { outcomes: end.result as Outcome[], pid: end.pid };
}

async function auditOf(h: Harness, pid: number): Promise<AuditRecord[]> {
  await h.kernel.journal.flush();
  const out: AuditRecord[] = [];
  for await (const record of h.kernel.audit.list({ pid })) {
    if (record.syscall === "net.fetch") out.push(record);
  }
  return out;
}

interface Server {
  /** `http://127.0.0.1:PORT` */
  base: string;
  /** Requests received, by path. */
  hits: Map<string, number>;
  /** Headers of every request received, in order. */
  seen: Headers[];
}

/** A loopback server that counts requests by path; `route` may answer them. */
async function withServer(
  route: (path: string) => Response | undefined,
  body: (server: Server) => Promise<void>,
): Promise<void> {
  const hits = new Map<string, number>();
  const seen: Headers[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const path = new URL(request.url).pathname;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    seen.push(new Headers(request.headers));
    await request.body?.cancel();
    return route(path) ?? new Response(`hello from ${path}`, {
      headers: { "x-served-by": "test" },
    });
  });
  try {
    await body({ base: `http://127.0.0.1:${server.addr.port}`, hits, seen });
  } finally {
    await server.shutdown();
  }
}

const redirect = (location: string, status = 302) =>
  new Response(null, { status, headers: { location } });

Deno.test("net.fetch reaches loopback only through a capability that names 127.0.0.1", async () => {
  await withServer(() => undefined, async ({ base, hits }) => {
    await withHarness(async (h) => {
      const everything = await fetchIn(h, [{ url: `${base}/secret` }], {
        capabilities: ["net:fetch:**"],
      });
      assert.equal(everything.outcomes[0].code, "EPERM");
      assert.match(everything.outcomes[0].message!, /loopback address/);
      assert.equal(hits.get("/secret") ?? 0, 0);
      const [record] = await auditOf(h, everything.pid);
      assert.equal(record.decision, "deny");
      assert.equal(record.code, "EPERM");

      const named = await fetchIn(h, [{ url: `${base}/hello?x=1` }], {
        capabilities: [`net:fetch:${base}/**`],
      });
      const value = named.outcomes[0].value!;
      assert.equal(named.outcomes[0].ok, true, named.outcomes[0].message);
      assert.equal(value.status, 200);
      assert.equal(value.body, "hello from /hello");
      assert.equal(value.headers["x-served-by"], "test");
      assert.equal(value.truncated, false);
      assert.equal(hits.get("/hello"), 1);
    });
  });
});

Deno.test("net.fetch treats localhost as loopback even under a wildcard host", async () => {
  await withServer(() => undefined, async ({ hits, base }) => {
    const port = new URL(base).port;
    await withHarness(async (h) => {
      const { outcomes } = await fetchIn(h, [{ url: `http://localhost:${port}/x` }], {
        capabilities: [`net:fetch:http://*:${port}/**`],
      });
      assert.equal(outcomes[0].code, "EPERM");
      assert.match(outcomes[0].message!, /no capability names host "localhost"/);
      assert.equal(hits.size, 0);
    });
  });
});

Deno.test("net.fetch without any net capability is denied before anything is sent", async () => {
  await withServer(() => undefined, async ({ base, hits }) => {
    await withHarness(async (h) => {
      const { outcomes, pid } = await fetchIn(h, [{ url: `${base}/x` }], { capabilities: [] });
      assert.equal(outcomes[0].code, "EPERM");
      assert.equal(hits.size, 0);
      assert.equal((await auditOf(h, pid))[0].decision, "deny");
    });
  });
});

/** A provider whose DNS answers are scripted and whose requests are recorded, never sent. */
class FakeNet implements NetProvider {
  requests: { url: string; init: NetFetchInit }[] = [];
  constructor(readonly dns: Record<string, string[]>) {}
  resolve(hostname: string): Promise<string[]> {
    const answer = this.dns[hostname];
    return answer ? Promise.resolve(answer) : Promise.reject(new Deno.errors.NotFound("NXDOMAIN"));
  }
  fetch(url: string, init: NetFetchInit): Promise<Response> {
    this.requests.push({ url, init });
    return Promise.resolve(new Response("fake"));
  }
}

Deno.test("net.fetch resolves host names and refuses one with any private address", async () => {
  const net = new FakeNet({
    "internal.test": ["10.0.0.5"],
    "mixed.test": ["93.184.216.34", "192.168.1.10"],
    "metadata.test": ["169.254.169.254"],
    "api.test": ["93.184.216.34", "2606:2800:220:1::1"],
  });
  await withHarness(async (h) => {
    const { outcomes } = await fetchIn(h, [
      { url: "https://internal.test/x" },
      { url: "https://mixed.test/x" },
      { url: "https://metadata.test/latest" },
      { url: "https://nowhere.test/x" },
      { url: "https://api.test/v1?key=1" },
    ], { capabilities: ["net:fetch:https://*.test/**"] });
    assert.deepEqual(outcomes.map((o) => o.code ?? "ok"), [
      "EPERM",
      "EPERM",
      "EPERM",
      "ENOENT",
      "ok",
    ]);
    assert.match(
      outcomes[0].message!,
      /internal\.test is a private address \(it resolves to 10\.0\.0\.5\)/,
    );
    // Only the public host was asked for, pinned to the address that was checked.
    assert.equal(net.requests.length, 1);
    assert.equal(net.requests[0].url, "https://api.test/v1?key=1");
    assert.equal(net.requests[0].init.address, "93.184.216.34");

    // A capability that names the private host literally lets the request through.
    const named = await fetchIn(h, [{ url: "https://internal.test/x" }], {
      capabilities: ["net:fetch:https://internal.test/**"],
    });
    assert.equal(named.outcomes[0].ok, true, named.outcomes[0].message);
    assert.equal(net.requests.length, 2);
  }, { net });
});

Deno.test("net.fetch checks every redirect hop against the capabilities", async () => {
  await withServer((path) => {
    if (path === "/public/out") return redirect("/private/admin");
    if (path === "/public/a") return redirect("/public/b", 301);
    if (path === "/public/away") return redirect("http://127.0.0.2:9/x");
    return undefined;
  }, async ({ base, hits }) => {
    await withHarness(async (h) => {
      const caps = [`net:fetch:${base}/public/**`];
      const { outcomes } = await fetchIn(h, [
        { url: `${base}/public/out` },
        { url: `${base}/public/a` },
      ], { capabilities: caps });
      assert.equal(outcomes[0].code, "EPERM");
      assert.match(outcomes[0].message!, /redirected from/);
      assert.equal(hits.get("/public/out"), 1);
      assert.equal(hits.get("/private/admin") ?? 0, 0);
      // Control: a redirect inside the granted scope is followed.
      assert.equal(outcomes[1].ok, true, outcomes[1].message);
      assert.equal(outcomes[1].value!.body, "hello from /public/b");
      assert.deepEqual(outcomes[1].value!.redirects, [`${base}/public/b`]);

      // A hop to a loopback host the capability does not name is refused too.
      const away = await fetchIn(h, [{ url: `${base}/public/away` }], {
        capabilities: [...caps, "net:fetch:http://*:9/**"],
      });
      assert.equal(away.outcomes[0].code, "EPERM");
      assert.match(away.outcomes[0].message!, /127\.0\.0\.2 is a loopback address/);
    });
  });
});

Deno.test("net.fetch redirect hops obey policy and need lasting capabilities", async () => {
  await withServer((path) => {
    if (path === "/a") return redirect("/b");
    return undefined;
  }, async ({ base, hits }) => {
    await withHarness(async (h) => {
      const denied = await fetchIn(h, [{ url: `${base}/a` }], {
        capabilities: [`net:fetch:${base}/**`],
        policy: { [`net:fetch:${base}/b`]: "deny" },
      });
      assert.equal(denied.outcomes[0].code, "EPERM");
      assert.match(denied.outcomes[0].message!, /denied by policy/);
      const oneShot = await fetchIn(h, [{ url: `${base}/a` }], {
        capabilities: [`net:fetch:${base}/**;uses=1`],
      });
      assert.equal(oneShot.outcomes[0].code, "EPERM");
      assert.match(oneShot.outcomes[0].message!, /no lasting capability/);
      assert.equal(hits.get("/b") ?? 0, 0);
    });
  });
});

Deno.test("net.fetch stops after 5 redirects", async () => {
  await withServer(
    (path) => (path === "/loop" ? redirect("/loop") : undefined),
    async ({ base, hits }) => {
      await withHarness(async (h) => {
        const { outcomes } = await fetchIn(h, [{ url: `${base}/loop` }], {
          capabilities: [`net:fetch:${base}/**`],
        });
        assert.equal(outcomes[0].code, "EINVAL");
        assert.match(outcomes[0].message!, /more than 5 redirects/);
        assert.equal(hits.get("/loop"), 6);
      });
    },
  );
});

Deno.test("a cross-origin redirect drops authorization and cookie headers", async () => {
  await withServer(() => undefined, async (second) => {
    await withServer(
      (path) => (path === "/go" ? redirect(`${second.base}/landed`, 307) : undefined),
      async (first) => {
        await withHarness(async (h) => {
          const { outcomes } = await fetchIn(h, [{
            url: `${first.base}/go`,
            options: { headers: { authorization: "Bearer t0k", cookie: "s=1", "x-keep": "yes" } },
          }], { capabilities: [`net:fetch:${first.base}/**`, `net:fetch:${second.base}/**`] });
          assert.equal(outcomes[0].ok, true, outcomes[0].message);
          assert.equal(first.seen[0].get("authorization"), "Bearer t0k");
          const landed = second.seen[0];
          assert.equal(landed.get("authorization"), null);
          assert.equal(landed.get("cookie"), null);
          assert.equal(landed.get("x-keep"), "yes");
        });
      },
    );
  });
});

Deno.test("net.fetch cuts a large response and refuses a large request body", async () => {
  const big = "x".repeat(2 * 1024 * 1024);
  await withServer(
    (path) => (path === "/big" ? new Response(big) : undefined),
    async ({ base, hits }) => {
      await withHarness(async (h) => {
        const { outcomes } = await fetchIn(h, [
          { url: `${base}/big` },
          { url: `${base}/upload`, options: { method: "POST" }, bodyBytes: (1 << 20) + 1 },
          { url: `${base}/upload`, options: { method: "POST", body: "small" } },
        ], {
          capabilities: [`net:fetch:${base}/**`],
          // Room for the request body in the message the program sends.
          limits: { maxMessageBytes: 3 << 20 },
        });
        assert.equal(outcomes[0].value!.truncated, true);
        assert.equal(outcomes[0].value!.bodyLength, 1 << 20);
        assert.equal(outcomes[1].code, "EINVAL");
        assert.match(outcomes[1].message!, /over the 1048576-byte limit/);
        assert.equal(outcomes[2].ok, true, outcomes[2].message);
        assert.equal(hits.get("/upload"), 1);
      });
    },
  );
});

Deno.test("net.fetch refuses other schemes and URL credentials", async () => {
  await withHarness(async (h) => {
    const { outcomes } = await fetchIn(h, [
      { url: "file:///etc/passwd" },
      { url: "http://user:pw@127.0.0.1:9/" },
    ], { capabilities: ["net:fetch:**"] });
    assert.deepEqual(outcomes.map((o) => o.code), ["EINVAL", "EINVAL"]);
    assert.ok(!outcomes[1].message!.includes("pw"));
  });
});

Deno.test("net.fetch keeps authorization values out of the audit", async () => {
  await withServer(() => undefined, async ({ base, seen }) => {
    await withHarness(async (h) => {
      const secret = `s3cr3t-${crypto.randomUUID()}`;
      const { pid } = await fetchIn(h, [{
        url: `${base}/x?access_token=${secret}`,
        options: { headers: { authorization: `Bearer ${secret}`, "X-Api-Key": secret } },
      }], { capabilities: [`net:fetch:${base}/**`] });
      assert.equal(seen[0].get("authorization"), `Bearer ${secret}`);
      const records = await auditOf(h, pid);
      assert.equal(records.length, 1);
      assert.ok(!JSON.stringify(records).includes(secret), records[0].args);
    });
  });
});

Deno.test("net.fetch keeps cookie values out of the audit", async () => {
  await withServer(() => undefined, async ({ base, seen }) => {
    await withHarness(async (h) => {
      const secret = `session-${crypto.randomUUID()}`;
      const { pid } = await fetchIn(h, [{
        url: `${base}/x`,
        options: { headers: { cookie: `sid=${secret}` } },
      }], { capabilities: [`net:fetch:${base}/**`] });
      assert.equal(seen[0].get("cookie"), `sid=${secret}`);
      const records = await auditOf(h, pid);
      assert.ok(!JSON.stringify(records).includes(secret), records[0].args);
    });
  });
});

Deno.test("killing a process cancels its request in flight", async () => {
  const arrived = Promise.withResolvers<void>();
  const cancelled = Promise.withResolvers<void>();
  // The body never ends while the client reads it (it ends after 20 s, so
  // that a host which never cancels still closes).
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    arrived.resolve();
    let timer: ReturnType<typeof setTimeout> | undefined;
    return new Response(
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode("partial"));
          timer = setTimeout(() => controller.close(), 20_000);
        },
        cancel() {
          clearTimeout(timer);
          cancelled.resolve();
        },
      }),
    );
  });
  try {
    await withHarness(async (h) => {
      const base = `http://127.0.0.1:${server.addr.port}`;
      const tag = await h.program("slow-fetch", FETCH, {
        capabilities: [`net:fetch:${base}/**`],
      });
      const proc = await h.kernel.spawn({
        image: tag,
        workspace: h.workspace,
        input: { requests: [{ url: `${base}/slow` }] },
      });
      h.kernel.start(proc.pid);
      await arrived.promise;
      await h.kernel.signal(proc.pid, "kill");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const outcome = await Promise.race([
        cancelled.promise.then(() => "cancelled"),
        new Promise((resolve) => timer = setTimeout(() => resolve("still open"), 5_000)),
      ]);
      clearTimeout(timer);
      assert.equal(outcome, "cancelled");
    });
  } finally {
    await server.shutdown();
  }
});
