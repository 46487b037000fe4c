import assert from "node:assert/strict";
import type { Capability } from "../broker/capability.ts";
import { parsePolicy, type PolicyRule } from "../broker/policy.ts";
import { proxyAuthority, type ProxyRequest } from "./exec_proxy.ts";

function cap(scope: string, extra: Partial<Capability> = {}): Capability {
  return {
    id: `cap:${scope}`,
    holder: 1,
    resource: "net",
    rights: ["fetch"],
    scope,
    delegable: false,
    grantedBy: "operator",
    createdAt: 0,
    ...extra,
  };
}

/** The decision for `request`: the capability id and address, or the refusal's code and message. */
async function decide(
  caps: Capability[],
  request: ProxyRequest,
  options: { policy?: PolicyRule[]; dns?: Record<string, string[]> } = {},
): Promise<string> {
  const authorize = proxyAuthority({
    capabilities: () => Promise.resolve(caps),
    policy: options.policy ?? [],
    workspace: "/ws",
    now: () => 1000,
    resolve: (host) => Promise.resolve(options.dns?.[host] ?? []),
  });
  try {
    const dest = await authorize(request);
    return `allow ${dest.capability} ${dest.hostname}:${dest.port} ${dest.target}`;
  } catch (error) {
    return `${(error as { code: string }).code} ${(error as Error).message}`;
  }
}

const get = (url: string): ProxyRequest => ({ kind: "http", method: "GET", url });
const connect = (authority: string): ProxyRequest => ({ kind: "connect", authority });

Deno.test("a plain request is allowed by a capability on its URL, and only then", async () => {
  const caps = [cap("http://127.0.0.1:8080/api/**")];
  assert.equal(
    await decide(caps, get("http://127.0.0.1:8080/api/v1?q=1")),
    "allow cap:http://127.0.0.1:8080/api/** 127.0.0.1:8080 http://127.0.0.1:8080/api/v1",
  );
  assert.match(await decide(caps, get("http://127.0.0.1:8080/admin")), /^EPERM .*no capability/);
  assert.match(await decide(caps, get("http://127.0.0.1:9090/api/v1")), /^EPERM/);
  // Dot segments are resolved before the check, as net.fetch does.
  assert.match(await decide(caps, get("http://127.0.0.1:8080/api/../admin")), /^EPERM/);
  assert.match(await decide(caps, get("http://127.0.0.1:8080/api/..%2Fadmin")), /^EINVAL/);
});

Deno.test("loopback and private hosts need a capability that names them literally", async () => {
  assert.match(
    await decide([cap("**")], get("http://127.0.0.1:8080/x")),
    /^EPERM .*loopback address, and no capability names host "127.0.0.1"/,
  );
  const dns = { "intranet.test": ["10.0.0.5"], "public.test": ["93.184.216.34"] };
  assert.match(
    await decide([cap("http://*.test/**")], get("http://intranet.test/x"), { dns }),
    /^EPERM .*private address \(it resolves to 10\.0\.0\.5\)/,
  );
  // A public name goes to the address it was checked as.
  assert.equal(
    await decide([cap("http://*.test/**")], get("http://public.test/x"), { dns }),
    "allow cap:http://*.test/** 93.184.216.34:80 http://public.test/x",
  );
});

Deno.test("a tunnel needs a capability on every path of its origin, and no policy rule inside it", async () => {
  assert.equal(
    await decide([cap("https://127.0.0.1:8443/**")], connect("127.0.0.1:8443")),
    "allow cap:https://127.0.0.1:8443/** 127.0.0.1:8443 https://127.0.0.1:8443/",
  );
  assert.match(
    await decide([cap("https://127.0.0.1:8443/v1/**")], connect("127.0.0.1:8443")),
    /^EPERM .*every path/,
  );
  assert.match(
    await decide([cap("http://127.0.0.1:8443/**")], connect("127.0.0.1:8443")),
    /^EPERM/,
  );
  const policy = parsePolicy({ "net:fetch:https://127.0.0.1:8443/admin/**": "deny" }, "operator");
  assert.match(
    await decide([cap("https://127.0.0.1:8443/**")], connect("127.0.0.1:8443"), { policy }),
    /^EPERM .*restricts URLs of it, which a tunnel cannot check/,
  );
  assert.match(await decide([cap("**")], connect("127.0.0.1")), /^EINVAL .*host:port/);
});

Deno.test("policy deny or ask refuses a request a capability allows", async () => {
  const caps = [cap("http://127.0.0.1:8080/**")];
  const deny = parsePolicy({ "net:fetch:http://127.0.0.1:8080/secret/**": "deny" }, "operator");
  assert.match(
    await decide(caps, get("http://127.0.0.1:8080/secret/a"), { policy: deny }),
    /^EPERM .*denies it/,
  );
  assert.match(await decide(caps, get("http://127.0.0.1:8080/open"), { policy: deny }), /^allow/);
  const ask = parsePolicy({ "net:fetch:**": "ask" }, "operator");
  assert.match(
    await decide(caps, get("http://127.0.0.1:8080/open"), { policy: ask }),
    /^EPERM .*asks a human/,
  );
});

Deno.test("one-shot, call-bound and expired net capabilities open nothing", async () => {
  const scope = "http://127.0.0.1:8080/**";
  for (const extra of [{ uses: 1 }, { boundTo: "0".repeat(64) }, { expiresAt: 999 }]) {
    assert.match(await decide([cap(scope, extra)], get("http://127.0.0.1:8080/x")), /^EPERM/);
  }
});

Deno.test("only http URLs come as plain requests; credentials are refused", async () => {
  const caps = [cap("**")];
  assert.match(await decide(caps, get("https://127.0.0.1:8443/x")), /^EINVAL .*CONNECT/);
  assert.match(await decide(caps, get("ftp://127.0.0.1/x")), /^EINVAL/);
  assert.match(await decide(caps, get("http://u:p@127.0.0.1:8080/x")), /^EINVAL .*credentials/);
});
