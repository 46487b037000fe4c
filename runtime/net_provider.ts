/**
 * The network provider: every `net.fetch` ends here, and the pure rules the
 * `net.fetch` handler checks before it gets here.
 *
 * ## Capability targets
 *
 * A request is authorized against its **target**: the URL reduced to
 * `scheme://host[:port]/path`, as the WHATWG URL parser normalizes it
 * (lowercase host, punycode, `.`/`..` segments resolved, percent-encoding
 * normalized) with the default port left out and without credentials, query
 * or fragment. So `net:fetch:https://api.example.com/**` matches
 * `https://API.example.com:443/v1/x?page=2`, a capability on another port
 * names the port (`net:fetch:http://127.0.0.1:8080/**`), and a capability
 * cannot restrict the query string. A capability that writes a default
 * port (`https://x:443/**`) matches nothing: leave it out.
 *
 * Only `http:` and `https:` URLs are fetched. URLs with credentials
 * (`https://user:pw@host/`) are refused (send an `authorization` header),
 * and so are paths whose segments hide `.` or `..` behind percent-encoded
 * slashes (`/a/..%2Fadmin`), which a server might resolve after the check.
 *
 * ## Private destinations
 *
 * Loopback, private, link-local, unique-local, multicast, reserved and
 * unspecified addresses ({@link addressRange}), and the names `localhost`
 * and `*.localhost`, are refused unless a capability that allows the request
 * names that host literally in its scope (`net:fetch:http://127.0.0.1:8080/**`
 * names `127.0.0.1`; `net:fetch:**` names nothing). A host name is resolved
 * first and every address it resolves to is checked; the connection is then
 * pinned to the checked address, so a second DNS answer cannot redirect it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { addressRange, fetchTarget, parseFetchUrl, scopeNamesHost } from "./net_provider.ts";
 *
 * const url = parseFetchUrl("https://API.example.com:443/v1/../v2/items?page=2");
 * assert(fetchTarget(url) === "https://api.example.com/v2/items");
 * assert(addressRange("10.1.2.3") === "private");
 * assert(addressRange("[::ffff:127.0.0.1]") === "loopback");
 * assert(addressRange("93.184.216.34") === undefined);
 * assert(scopeNamesHost("http://127.0.0.1:*\/**", "127.0.0.1"));
 * ```
 *
 * @module
 */

import { SyscallError } from "../broker/errors.ts";

/** What the handler asks a provider to send. Redirects are never followed by the provider. */
export interface NetFetchInit {
  /** The HTTP method, upper case. */
  method: string;
  /** Request headers. */
  headers: Headers;
  /** The request body. */
  body?: string;
  /** Aborts the request (timeout). */
  signal?: AbortSignal;
  /**
   * The address the URL's host name resolved to and was checked as: the
   * provider must connect there (absent for IP literals and hosts a
   * capability names).
   */
  address?: string;
}

/** Sends HTTP requests for `net.fetch`. */
export interface NetProvider {
  /** Sends one request without following redirects: a 3xx response is returned as it is. */
  fetch(url: string, init: NetFetchInit): Promise<Response>;
  /** The addresses of a host name (default: `Deno.resolveDns`, A then AAAA). */
  resolve?(hostname: string): Promise<string[]>;
}

/**
 * Sends requests with the host's `fetch`, `redirect: "manual"`, and
 * connects to `init.address` when given (through a one-request
 * `Deno.HttpClient` whose TCP transport targets that address; TLS still
 * verifies the URL's host name).
 *
 * @example
 * ```ts ignore
 * import { LocalNet } from "./net_provider.ts";
 * const net = new LocalNet();
 * const init = { method: "GET", headers: new Headers() };
 * const response = await net.fetch("http://127.0.0.1:8080/", init);
 * ```
 */
export class LocalNet implements NetProvider {
  /** Sends one request; see {@link NetProvider.fetch}. */
  async fetch(url: string, init: NetFetchInit): Promise<Response> {
    const target = new URL(url);
    const pin = init.address !== undefined && _ipLiteral(target.hostname) === undefined;
    const client = pin
      ? Deno.createHttpClient({
        proxy: {
          transport: "tcp",
          hostname: init.address!,
          port: Number(target.port || (target.protocol === "https:" ? 443 : 80)),
        },
      })
      : undefined;
    let response: Response;
    try {
      response = await fetch(url, {
        method: init.method,
        headers: init.headers,
        body: init.body,
        signal: init.signal,
        redirect: "manual",
        client,
      });
    } catch (error) {
      client?.close();
      throw error;
    }
    if (!client) return response;
    // Close the client once the body has been read or dropped.
    const body = response.body;
    if (!body) {
      client.close();
      return response;
    }
    const reader = body.getReader();
    const stream = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        const { done, value } = await reader.read();
        if (!done) return controller.enqueue(value);
        controller.close();
        client.close();
      },
      cancel: async (reason) => {
        await reader.cancel(reason).catch(() => {});
        client.close();
      },
    });
    return new Response(stream, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  }

  /** Resolves A and AAAA records; fails only when both fail. */
  async resolve(hostname: string): Promise<string[]> {
    const results = await Promise.allSettled([
      Deno.resolveDns(hostname, "A"),
      Deno.resolveDns(hostname, "AAAA"),
    ]);
    const addresses = results.flatMap((r) => (r.status === "fulfilled" ? r.value : []));
    if (addresses.length === 0) {
      const failure = results.find((r) => r.status === "rejected") as
        | PromiseRejectedResult
        | undefined;
      if (failure) throw failure.reason;
    }
    return addresses;
  }
}

/**
 * Parses a URL that may be fetched; throws `EINVAL` for anything else
 * (see the module documentation).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseFetchUrl } from "./net_provider.ts";
 * assert(parseFetchUrl("http://127.0.0.1:8080").pathname === "/");
 * ```
 */
export function parseFetchUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new SyscallError("EINVAL", `Cannot fetch "${describeUrl(text)}": not a valid URL`);
  }
  const shown = describeUrl(text);
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new SyscallError(
      "EINVAL",
      `Cannot fetch "${shown}": only http and https URLs can be fetched`,
    );
  }
  if (url.username !== "" || url.password !== "") {
    throw new SyscallError(
      "EINVAL",
      `Cannot fetch "${shown}": credentials in a URL are not accepted ` +
        "(send an authorization header)",
    );
  }
  for (const segment of url.pathname.split("/")) {
    let decoded = segment;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      // Kept as written.
    }
    if (decoded !== segment && decoded.split(/[/\\]/).some((p) => p === "." || p === "..")) {
      throw new SyscallError(
        "EINVAL",
        `Cannot fetch "${shown}": the path hides a "." or ".." segment in percent-encoding`,
      );
    }
  }
  return url;
}

/**
 * The capability target of a URL: `scheme://host[:port]/path`, default
 * port omitted, no credentials, query or fragment.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fetchTarget } from "./net_provider.ts";
 * const url = new URL("HTTP://Example.COM:80/a/./b?q#f");
 * assert(fetchTarget(url) === "http://example.com/a/b");
 * ```
 */
export function fetchTarget(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

/**
 * A URL for messages: without credentials, query or fragment, at most 200
 * characters, so that secrets in URLs do not reach errors or the audit.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { describeUrl } from "./net_provider.ts";
 * assert(describeUrl("https://u:p@x.test/a?token=1") === "https://x.test/a");
 * ```
 */
export function describeUrl(text: string): string {
  const shown = text.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, "$1").split(/[?#]/, 1)[0];
  return shown.length > 200 ? `${shown.slice(0, 199)}…` : shown;
}

/**
 * True when a URL-pattern scope names `hostname` literally: its authority
 * (`scheme://HOST[:port]/…`) has a host without wildcards equal to it.
 * `hostname` is a URL's `hostname` (IPv6 in brackets).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { scopeNamesHost } from "./net_provider.ts";
 * assert(scopeNamesHost("http://127.0.0.1:8080/**", "127.0.0.1"));
 * assert(scopeNamesHost("*://[::1]/**", "[::1]"));
 * assert(!scopeNamesHost("**", "127.0.0.1"));
 * assert(!scopeNamesHost("http://127.0.0.*\/**", "127.0.0.1"));
 * ```
 */
export function scopeNamesHost(scope: string, hostname: string): boolean {
  const match = /^[a-z*][a-z0-9+.*-]*:\/\/([^/?#]*)/i.exec(scope);
  if (!match) return false;
  const authority = match[1].slice(match[1].lastIndexOf("@") + 1);
  const host = authority.startsWith("[")
    ? authority.slice(0, authority.indexOf("]") + 1)
    : authority.split(":", 1)[0];
  return host !== "" && !host.includes("*") && host.toLowerCase() === hostname.toLowerCase();
}

/** True for `localhost` and names under it, which resolve to loopback. */
export function isLocalhostName(hostname: string): boolean {
  const name = hostname.toLowerCase().replace(/\.$/, "");
  return name === "localhost" || name.endsWith(".localhost");
}

type Range = readonly [prefix: readonly number[], bits: number, name: string];

const V4_RANGES: readonly Range[] = [
  [[0], 8, "unspecified"],
  [[10], 8, "private"],
  [[100, 64], 10, "shared (carrier-grade NAT)"],
  [[127], 8, "loopback"],
  [[169, 254], 16, "link-local"],
  [[172, 16], 12, "private"],
  [[192, 0, 0], 24, "reserved"],
  [[192, 0, 2], 24, "documentation"],
  [[192, 168], 16, "private"],
  [[198, 18], 15, "benchmarking"],
  [[198, 51, 100], 24, "documentation"],
  [[203, 0, 113], 24, "documentation"],
  [[224], 4, "multicast"],
  [[240], 4, "reserved"],
];

const V6_RANGES: readonly Range[] = [
  [[0x01, 0x00, 0, 0, 0, 0, 0, 0], 64, "discard"],
  [[0x00, 0x64, 0xff, 0x9b, 0x00, 0x01], 48, "private"],
  [[0x20, 0x01, 0x0d, 0xb8], 32, "documentation"],
  [[0xfc], 7, "unique-local"],
  [[0xfe, 0x80], 10, "link-local"],
  [[0xfe, 0xc0], 10, "site-local"],
  [[0xff], 8, "multicast"],
];

/**
 * The kind of non-public address `address` is (`loopback`, `private`,
 * `link-local`, …), or undefined for a public one. Accepts IPv4, IPv6 (with
 * or without brackets); IPv4 inside IPv6 (mapped, compatible, NAT64, 6to4)
 * is judged as the IPv4 address. Anything that is not an IP address counts
 * as `invalid`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { addressRange } from "./net_provider.ts";
 * assert(addressRange("127.0.0.1") === "loopback");
 * assert(addressRange("::1") === "loopback");
 * assert(addressRange("fd00::1") === "unique-local");
 * assert(addressRange("1.1.1.1") === undefined);
 * ```
 */
export function addressRange(address: string): string | undefined {
  const literal = _ipLiteral(address);
  if (literal === undefined) return "invalid";
  const v4 = _parseV4(literal);
  if (v4) return _match(v4, V4_RANGES);
  const v6 = _parseV6(literal)!;
  if (v6.every((b) => b === 0)) return "unspecified";
  if (v6.slice(0, 15).every((b) => b === 0) && v6[15] === 1) return "loopback";
  const embedded = _embeddedV4(v6);
  if (embedded) return _match(embedded, V4_RANGES);
  return _match(v6, V6_RANGES);
}

/** The IPv4 inside an IPv6 address that carries one (mapped, compatible, NAT64, 6to4). */
function _embeddedV4(v6: readonly number[]): number[] | undefined {
  const zeros = (from: number, to: number) => v6.slice(from, to).every((b) => b === 0);
  if (zeros(0, 10) && v6[10] === 0xff && v6[11] === 0xff) return v6.slice(12); // ::ffff:a.b.c.d
  if (zeros(0, 12)) return v6.slice(12); // ::a.b.c.d (deprecated compatible form)
  if (v6[0] === 0x00 && v6[1] === 0x64 && v6[2] === 0xff && v6[3] === 0x9b && zeros(4, 12)) {
    return v6.slice(12); // 64:ff9b::/96 NAT64
  }
  if (v6[0] === 0x20 && v6[1] === 0x02) return v6.slice(2, 6); // 2002::/16 6to4
  return undefined;
}

function _match(bytes: readonly number[], ranges: readonly Range[]): string | undefined {
  for (const [prefix, bits, name] of ranges) {
    let ok = true;
    for (let bit = 0; bit < bits && ok; bit += 8) {
      const mask = bits - bit >= 8 ? 0xff : (0xff << (8 - (bits - bit))) & 0xff;
      ok = ((bytes[bit / 8] ?? 0) & mask) === ((prefix[bit / 8] ?? 0) & mask);
    }
    if (ok) return name;
  }
  return undefined;
}

/** The address without brackets or zone, if `text` is an IP literal. */
function _ipLiteral(text: string): string | undefined {
  let value = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  value = value.split("%", 1)[0];
  return _parseV4(value) || _parseV6(value) ? value : undefined;
}

function _parseV4(text: string): number[] | undefined {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!match) return undefined;
  const bytes = match.slice(1).map(Number);
  return bytes.every((b) => b <= 255) ? bytes : undefined;
}

function _parseV6(text: string): number[] | undefined {
  if (!text.includes(":") || !/^[0-9a-fA-F:.]+$/.test(text)) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (part: string): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const pieces = part.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i];
      if (i === pieces.length - 1 && piece.includes(".")) {
        const v4 = _parseV4(piece);
        if (!v4) return undefined;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(piece)) {
        out.push(parseInt(piece, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const words = [...head, ...new Array(halves.length === 2 ? missing : 0).fill(0), ...tail];
  return words.flatMap((w) => [w >> 8, w & 0xff]);
}
