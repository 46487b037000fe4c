import assert from "node:assert/strict";
import { SyscallError } from "../broker/errors.ts";
import {
  addressRange,
  describeUrl,
  fetchTarget,
  isLocalhostName,
  LocalNet,
  parseFetchUrl,
  scopeNamesHost,
} from "./net_provider.ts";

function einval(fn: () => unknown): void {
  assert.throws(fn, (error: unknown) => error instanceof SyscallError && error.code === "EINVAL");
}

Deno.test("fetchTarget normalizes a URL to scheme://host[:port]/path", () => {
  const target = (text: string) => fetchTarget(parseFetchUrl(text));
  assert.equal(
    target("https://API.Example.com:443/v1/../v2/./items?page=2#x"),
    "https://api.example.com/v2/items",
  );
  assert.equal(target("http://example.com:80"), "http://example.com/");
  assert.equal(target("http://127.0.0.1:8080/a%2Fb"), "http://127.0.0.1:8080/a%2Fb");
  assert.equal(target("http://2130706433/"), "http://127.0.0.1/");
  assert.equal(target("http://0x7f.1/"), "http://127.0.0.1/");
  assert.equal(target("https://bücher.example/x"), "https://xn--bcher-kva.example/x");
  assert.equal(target("http://[::1]:9/"), "http://[::1]:9/");
  assert.equal(target("http://ex.com/%2e%2e/admin"), "http://ex.com/admin");
});

Deno.test("parseFetchUrl refuses other schemes, credentials and hidden dot segments", () => {
  einval(() => parseFetchUrl("file:///etc/passwd"));
  einval(() => parseFetchUrl("data:text/plain,hi"));
  einval(() => parseFetchUrl("ftp://example.com/x"));
  einval(() => parseFetchUrl("not a url"));
  einval(() => parseFetchUrl("https://user:pw@example.com/"));
  einval(() => parseFetchUrl("https://example.com/public/..%2Fadmin"));
  einval(() => parseFetchUrl("https://example.com/public/%2E%2E%5Cadmin"));
  assert.equal(
    parseFetchUrl("https://gitlab.example/api/projects/group%2Fproject").pathname,
    "/api/projects/group%2Fproject",
  );
});

Deno.test("describeUrl keeps credentials and query strings out of messages", () => {
  assert.equal(describeUrl("https://u:p@x.test/a?token=1#f"), "https://x.test/a");
  assert.equal(describeUrl("x".repeat(300)).length, 200);
  let message = "";
  try {
    parseFetchUrl("ftp://user:secret@x.test/a?token=abc");
  } catch (error) {
    message = (error as Error).message;
  }
  assert.ok(message.startsWith("Cannot fetch"));
  assert.ok(!message.includes("secret") && !message.includes("abc"), message);
});

Deno.test("addressRange classifies non-public IPv4 and IPv6 addresses", () => {
  const cases: [string, string | undefined][] = [
    ["127.0.0.1", "loopback"],
    ["127.255.0.9", "loopback"],
    ["0.0.0.0", "unspecified"],
    ["10.20.30.40", "private"],
    ["172.16.0.1", "private"],
    ["172.31.255.255", "private"],
    ["172.32.0.1", undefined],
    ["192.168.1.1", "private"],
    ["169.254.169.254", "link-local"],
    ["100.64.0.1", "shared (carrier-grade NAT)"],
    ["224.0.0.1", "multicast"],
    ["255.255.255.255", "reserved"],
    ["8.8.8.8", undefined],
    ["93.184.216.34", undefined],
    ["::1", "loopback"],
    ["[::1]", "loopback"],
    ["::", "unspecified"],
    ["fc00::1", "unique-local"],
    ["fd12:3456::1", "unique-local"],
    ["fe80::1%eth0", "link-local"],
    ["ff02::1", "multicast"],
    ["::ffff:127.0.0.1", "loopback"],
    ["[::ffff:7f00:1]", "loopback"],
    ["::ffff:10.0.0.1", "private"],
    ["::127.0.0.1", "loopback"],
    ["64:ff9b::a9fe:a9fe", "link-local"],
    ["2002:c0a8:0101::1", "private"],
    ["2001:db8::1", "documentation"],
    ["2606:4700:4700::1111", undefined],
    ["::ffff:8.8.8.8", undefined],
    ["example.com", "invalid"],
    ["1.2.3", "invalid"],
    ["1:2:3:4:5:6:7:8:9", "invalid"],
  ];
  for (const [address, range] of cases) assert.equal(addressRange(address), range, address);
});

Deno.test("scopeNamesHost accepts only a literal host in the scope's authority", () => {
  assert.ok(scopeNamesHost("http://127.0.0.1:8080/**", "127.0.0.1"));
  assert.ok(scopeNamesHost("http://127.0.0.1:*/**", "127.0.0.1"));
  assert.ok(scopeNamesHost("*://LOCALHOST/**", "localhost"));
  assert.ok(scopeNamesHost("http://[::1]:9/x", "[::1]"));
  assert.ok(scopeNamesHost("https://internal.corp", "internal.corp"));
  assert.ok(!scopeNamesHost("**", "127.0.0.1"));
  assert.ok(!scopeNamesHost("http://**", "127.0.0.1"));
  assert.ok(!scopeNamesHost("http://127.0.0.*/**", "127.0.0.1"));
  assert.ok(!scopeNamesHost("http://*/**", "127.0.0.1"));
  assert.ok(!scopeNamesHost("http://127.0.0.10/**", "127.0.0.1"));
  assert.ok(!scopeNamesHost("127.0.0.1", "127.0.0.1"));
});

Deno.test("isLocalhostName covers localhost and names under it", () => {
  assert.ok(isLocalhostName("localhost"));
  assert.ok(isLocalhostName("LOCALHOST."));
  assert.ok(isLocalhostName("api.localhost"));
  assert.ok(!isLocalhostName("localhost.example.com"));
  assert.ok(!isLocalhostName("notlocalhost"));
});

Deno.test("LocalNet returns a redirect as it is instead of following it", async () => {
  const hits: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const path = new URL(request.url).pathname;
    hits.push(path);
    if (path === "/from") {
      return new Response("moved", { status: 302, headers: { location: "/to" } });
    }
    return new Response("arrived");
  });
  try {
    const net = new LocalNet();
    const base = `http://127.0.0.1:${server.addr.port}`;
    const response = await net.fetch(`${base}/from`, { method: "GET", headers: new Headers() });
    assert.equal(response.status, 302);
    assert.equal(response.headers.get("location"), "/to");
    assert.equal(await response.text(), "moved");
    assert.deepEqual(hits, ["/from"]);
    // An address given for an IP literal changes nothing.
    const direct = await net.fetch(`${base}/to`, {
      method: "GET",
      headers: new Headers(),
      address: "10.9.9.9",
    });
    assert.equal(await direct.text(), "arrived");
  } finally {
    await server.shutdown();
  }
});
