/**
 * The network of a sandboxed command: a host-side HTTP proxy. The sandbox
 * has no network of its own; a relay inside it listens on the sandbox's
 * loopback (`HTTP_PROXY` points there) and forwards each connection to a
 * Unix socket bound into the sandbox, where a bridge process on the host
 * forwards it to the proxy's loopback port, first sending a secret token of
 * the run that the proxy requires. (Both relays are {@link RELAY_SOURCE}
 * run by Deno; the bridge exists because the host's own Deno permissions
 * may allow loopback TCP but no Unix sockets.) The proxy lets a command
 * reach exactly what the process's `net:fetch` capabilities allow, checked
 * the way `net.fetch` checks them (`net_provider.ts`):
 *
 * - A plain request (`GET http://host/path HTTP/1.1`) is authorized for
 *   its URL, reduced to the capability target `scheme://host[:port]/path`;
 *   only `http:` URLs come this way. The request goes upstream as one
 *   request with `Connection: close`, its body as long as its
 *   `Content-Length` says (chunked request bodies are refused), so every
 *   request on a connection is checked on its own.
 * - A tunnel (`CONNECT host:port`, what clients use for `https:`) carries
 *   bytes the proxy cannot read, so it needs a capability that allows every
 *   path of `https://host[:port]` (`net:fetch:https://host/**`), and no
 *   `deny` or `ask` policy rule may name any URL of that origin.
 * - A policy `deny` or `ask` on the URL refuses it (a command's connection
 *   cannot wait for a human).
 * - Loopback, private and other non-public destinations are refused unless
 *   an allowing capability names the host literally; host names are
 *   resolved on the host, every address is checked, and the connection is
 *   made to the checked address.
 * - Only lasting capabilities count (not one-shot or call-bound grants).
 *
 * Every connection is audited (`exec.connect`: the method and target, the
 * decision, the capability, the reason for a refusal).
 *
 * @module
 */

import { posix } from "node:path";
import type { AuditEntry } from "../broker/audit.ts";
import { allows, type Capability, type Operation } from "../broker/capability.ts";
import { canonicalJson, sha256Hex } from "../broker/digest.ts";
import { SyscallError } from "../broker/errors.ts";
import { globCovers } from "../broker/glob.ts";
import { decide, type PolicyRule } from "../broker/policy.ts";
import {
  addressRange,
  describeUrl,
  fetchTarget,
  isLocalhostName,
  parseFetchUrl,
  scopeNamesHost,
} from "./net_provider.ts";

/** Longest request head (request line and headers) the proxy reads, in bytes. */
export const MAX_PROXY_HEAD_BYTES = 64 * 1024;

/** What a command asked the proxy for. */
export type ProxyRequest =
  | { kind: "http"; method: string; url: string }
  | { kind: "connect"; authority: string };

/** Where an authorized request goes. */
export interface ProxyDestination {
  /** The checked address to connect to. */
  hostname: string;
  /** The port. */
  port: number;
  /** The capability target (`scheme://host[:port]/path`). */
  target: string;
  /** The parsed URL (for a tunnel: the origin). */
  url: URL;
  /** The id of the capability that allowed it. */
  capability: string;
}

/** What {@link proxyAuthority} checks requests against. */
export interface ProxyAuthorityInput {
  /** The capabilities the process holds now (read per request, so a revocation counts at once). */
  capabilities(): Promise<readonly Capability[]>;
  /** The process's policy. */
  policy: readonly PolicyRule[];
  /** The process's workspace (relative policy scopes). */
  workspace: string;
  /** The clock. */
  now: () => number;
  /** Resolves a host name to its addresses. */
  resolve(hostname: string): Promise<string[]>;
}

/** Decides one request; throws `SyscallError` (`EPERM`, `EINVAL`, `ENOENT`) with the reason. */
export type ProxyAuthorize = (request: ProxyRequest) => Promise<ProxyDestination>;

/** True when `capabilities` hold a lasting `net:fetch` grant, so a command needs the proxy. */
export function needsProxy(capabilities: readonly Capability[], now: number): boolean {
  return _lastingNet(capabilities, now).some((cap) =>
    cap.rights.includes("fetch") || cap.rights.includes("*")
  );
}

/**
 * The authorization of a command's proxy requests (see the module
 * documentation).
 *
 * @example
 * ```ts ignore
 * const authorize = proxyAuthority({ capabilities, policy, workspace, now: Date.now, resolve });
 * const dest = await authorize({ kind: "http", method: "GET", url: "http://127.0.0.1:8080/x" });
 * ```
 */
export function proxyAuthority(input: ProxyAuthorityInput): ProxyAuthorize {
  return async (request) => {
    const tunnel = request.kind === "connect";
    let url: URL;
    if (tunnel) {
      if (!/^[^\s/?#@]+:\d{1,5}$/.test(request.authority)) {
        throw new SyscallError(
          "EINVAL",
          `Cannot connect to "${request.authority.slice(0, 200)}": expected host:port`,
        );
      }
      url = parseFetchUrl(`https://${request.authority}/`);
    } else {
      url = parseFetchUrl(request.url);
      if (url.protocol !== "http:") {
        throw new SyscallError(
          "EINVAL",
          `Cannot fetch "${describeUrl(request.url)}": an https URL goes through CONNECT`,
        );
      }
    }
    const target = fetchTarget(url);
    const shown = tunnel ? `${url.protocol}//${url.host}` : target;
    const op: Operation = { resource: "net", right: "fetch", target };
    const now = input.now();
    const origin = `${url.protocol}//${url.host}`;
    const candidates = _lastingNet(await input.capabilities(), now).filter((cap) =>
      allows(cap, op, now) && (!tunnel || globCovers(cap.scope, `${origin}/**`))
    );
    if (candidates.length === 0) {
      throw new SyscallError(
        "EPERM",
        tunnel
          ? `Cannot connect to "${shown}": no capability grants net:fetch on every path of it`
          : `Cannot fetch "${target}": no capability grants net:fetch on it`,
      );
    }
    const rule = decide(input.policy, op, { workspace: input.workspace });
    if (rule && rule.decision !== "allow") {
      throw new SyscallError(
        "EPERM",
        `Cannot fetch "${shown}": policy "${rule.pattern}" ${
          rule.decision === "deny" ? "denies it" : "asks a human, which a command cannot wait for"
        }`,
      );
    }
    if (tunnel) {
      const restricting = input.policy.find((r) =>
        r.decision !== "allow" && (r.resource === "net" || r.resource === "*") &&
        (r.rights.includes("fetch") || r.rights.includes("*")) && _mayMatchUnder(r.scope, origin)
      );
      if (restricting) {
        throw new SyscallError(
          "EPERM",
          `Cannot connect to "${shown}": policy "${restricting.pattern}" restricts URLs of it, ` +
            "which a tunnel cannot check",
        );
      }
    }
    const host = url.hostname;
    const bare = host.startsWith("[") ? host.slice(1, -1) : host;
    let addresses: string[];
    if (isLocalhostName(host)) addresses = ["127.0.0.1", "::1"];
    else if (addressRange(host) !== "invalid") addresses = [bare];
    else {
      try {
        addresses = await input.resolve(host);
      } catch (error) {
        throw new SyscallError(
          "ENOENT",
          `Cannot fetch "${shown}": cannot resolve host "${host}": ${(error as Error).message}`,
        );
      }
      if (addresses.length === 0) {
        throw new SyscallError("ENOENT", `Cannot fetch "${shown}": host "${host}" has no address`);
      }
    }
    const named = candidates.filter((cap) => scopeNamesHost(cap.scope, host));
    const privateAddress = addresses.find((address) => addressRange(address) !== undefined);
    if (privateAddress !== undefined && named.length === 0) {
      throw new SyscallError(
        "EPERM",
        `Cannot fetch "${shown}": ${host} is a ${addressRange(privateAddress)} address` +
          `${privateAddress === bare ? "" : ` (it resolves to ${privateAddress})`}, ` +
          `and no capability names host "${host}" literally`,
      );
    }
    const port = Number(url.port || (url.protocol === "https:" ? 443 : 80));
    return {
      hostname: addresses[0],
      port,
      target,
      url,
      capability: (named[0] ?? candidates[0]).id,
    };
  };
}

/** What the proxy tells the audit about one connection. */
export interface ProxyAuditRecord {
  /** The request method (`CONNECT` for a tunnel). */
  method: string;
  /** The target as checked, or the request target as received. */
  target: string;
  /** Whether it went through. */
  decision: "allow" | "deny";
  /** The capability that allowed it. */
  capability?: string;
  /** Why it was refused or failed. */
  reason?: string;
  /** The ABI error code of a refusal or failure. */
  code?: string;
}

/** Options of {@link startCommandProxy}. */
export interface CommandProxyOptions {
  /** Decides each request. */
  authorize: ProxyAuthorize;
  /** Records each connection. */
  audit(record: ProxyAuditRecord): Promise<void>;
  /** The Deno binary that runs the bridge (default: this one). */
  deno?: string;
}

/** A running proxy. */
export interface CommandProxy {
  /** The Unix socket to bind into the sandbox. */
  readonly socket: string;
  /** Stops the bridge, closes every connection and removes the socket. */
  close(): Promise<void>;
}

/**
 * A relay: listens on `Deno.args[0]` and forwards each connection to
 * `Deno.args[1]` (`unix:PATH` or `HOST:PORT`), sending `LIBOS-TOKEN
 * <Deno.args[3]>` first when a token is given. It announces it is ready by
 * writing `ready` to the file `Deno.args[2]`, or to stdout for `-`, in which
 * case it also exits when its stdin closes (its host went away).
 */
export const RELAY_SOURCE = `const [from, to, ready, token] = Deno.args;
const address = (spec) => spec.startsWith("unix:")
  ? { transport: "unix", path: spec.slice(5) }
  : { hostname: spec.slice(0, spec.lastIndexOf(":")), port: Number(spec.slice(spec.lastIndexOf(":") + 1)) };
const listener = Deno.listen(address(from));
const prefix = token ? new TextEncoder().encode("LIBOS-TOKEN " + token + "\\r\\n") : undefined;
if (ready === "-") {
  console.log("ready");
  (async () => {
    for await (const _ of Deno.stdin.readable) { /* the host is alive */ }
    Deno.exit(0);
  })();
} else {
  await Deno.writeTextFile(ready, "ready\\n");
}
const close = (conn) => { try { conn.close(); } catch { /* closed */ } };
for await (const conn of listener) {
  (async () => {
    let upstream;
    try {
      upstream = await Deno.connect(address(to));
      if (prefix) {
        let sent = 0;
        while (sent < prefix.length) sent += await upstream.write(prefix.subarray(sent));
      }
    } catch {
      close(conn);
      return;
    }
    await Promise.allSettled([
      conn.readable.pipeTo(upstream.writable),
      upstream.readable.pipeTo(conn.writable),
    ]);
    close(conn);
    close(upstream);
  })();
}
`;

/**
 * Starts a proxy: its loopback listener, and the bridge that serves a fresh
 * Unix socket in a private temporary directory.
 *
 * @example
 * ```ts ignore
 * const proxy = await startCommandProxy({ authorize, audit: async () => {} });
 * // bind proxy.socket into the sandbox …
 * await proxy.close();
 * ```
 */
export async function startCommandProxy(options: CommandProxyOptions): Promise<CommandProxy> {
  const dir = await Deno.makeTempDir({ prefix: "libos-proxy-" });
  await Deno.chmod(dir, 0o700);
  const socket = posix.join(dir, "proxy.sock");
  const relay = posix.join(dir, "relay.js");
  await Deno.writeTextFile(relay, RELAY_SOURCE);
  const token = crypto.randomUUID().replaceAll("-", "");
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  } catch (error) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new SyscallError(
      "ENOSYS",
      `Cannot start the command proxy: the host cannot listen on 127.0.0.1 ` +
        `(${
          (error as Error).message.split("\n")[0]
        }); run the host with --allow-net=127.0.0.1 or wider`,
    );
  }
  const port = listener.addr.port;
  const open = new Set<Deno.Conn>();
  const handlers = new Set<Promise<void>>();
  const serving = (async () => {
    for await (const conn of listener) {
      open.add(conn);
      const handler = _handle(conn, options, open, token).finally(() => {
        open.delete(conn);
        handlers.delete(handler);
      });
      handlers.add(handler);
    }
  })().catch(() => {});
  let bridge: Deno.ChildProcess | undefined;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    try {
      bridge?.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await bridge?.status.catch(() => {});
    try {
      listener.close();
    } catch {
      // Already closed.
    }
    for (const conn of open) _close(conn);
    await serving;
    await Promise.allSettled([...handlers]);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    bridge = new Deno.Command(options.deno ?? Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        "--no-prompt",
        "--no-config",
        "--no-lock",
        `--allow-net=127.0.0.1:${port},unix:${socket}`,
        `--allow-read=${dir}`,
        `--allow-write=${dir}`,
        relay,
        `unix:${socket}`,
        `127.0.0.1:${port}`,
        "-",
        token,
      ],
      clearEnv: true,
      env: _denoEnv(),
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = bridge.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const first = await reader.read();
    reader.releaseLock();
    if (first.done || !first.value.startsWith("ready")) {
      throw new Error("the proxy bridge did not start");
    }
    bridge.stdout.cancel().catch(() => {});
  } catch (error) {
    await close();
    throw new SyscallError("ENOSYS", `Cannot start the command proxy: ${(error as Error).message}`);
  }
  return { socket, close };
}

/** The environment the bridge's Deno needs: where its cache is. */
function _denoEnv(): Record<string, string> {
  const env: Record<string, string> = { PATH: "/usr/bin:/bin" };
  for (const name of ["HOME", "DENO_DIR", "XDG_CACHE_HOME"]) {
    try {
      const value = Deno.env.get(name);
      if (value !== undefined) env[name] = value;
    } catch {
      // Not readable: Deno falls back to its defaults.
    }
  }
  return env;
}

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "trailer",
  "upgrade",
  "host",
]);
const ENCODER = new TextEncoder();

interface Head {
  method: string;
  target: string;
  headers: [string, string][];
  /** Bytes read after the head. */
  rest: Uint8Array;
}

async function _handle(
  conn: Deno.Conn,
  options: CommandProxyOptions,
  open: Set<Deno.Conn>,
  token: string,
) {
  let upstream: Deno.Conn | undefined;
  try {
    const head = await _readHead(conn, token);
    if (!head) return;
    const request: ProxyRequest = head.method === "CONNECT"
      ? { kind: "connect", authority: head.target }
      : { kind: "http", method: head.method, url: head.target };
    const chunked = head.headers.some(([name]) => name === "transfer-encoding");
    const length = head.headers.find(([name]) => name === "content-length")?.[1];
    let dest: ProxyDestination;
    try {
      if (chunked) {
        throw new SyscallError(
          "EINVAL",
          "Cannot forward a chunked request body: send a Content-Length",
        );
      }
      if (length !== undefined && !/^\d{1,12}$/.test(length)) {
        throw new SyscallError(
          "EINVAL",
          `Cannot forward a request with Content-Length "${length.slice(0, 20)}"`,
        );
      }
      dest = await options.authorize(request);
    } catch (error) {
      const code = error instanceof SyscallError ? error.code : "EINVAL";
      const reason = (error as Error).message;
      await options.audit({
        method: head.method,
        target: _shownTarget(head.target),
        decision: "deny",
        code,
        reason,
      });
      await _respond(conn, code === "EPERM" ? 403 : code === "ENOENT" ? 502 : 400, reason);
      return;
    }
    try {
      upstream = await Deno.connect({ hostname: dest.hostname, port: dest.port });
      open.add(upstream);
    } catch (error) {
      const reason = `Cannot connect to ${dest.url.host}: ${(error as Error).message}`;
      await options.audit({
        method: head.method,
        target: dest.target,
        decision: "allow",
        capability: dest.capability,
        code: "ENOENT",
        reason,
      });
      await _respond(conn, 502, reason);
      return;
    }
    await options.audit({
      method: head.method,
      target: dest.target,
      decision: "allow",
      capability: dest.capability,
    });
    if (request.kind === "connect") {
      await _writeAll(conn, ENCODER.encode("HTTP/1.1 200 Connection Established\r\n\r\n"));
      if (head.rest.length) await _writeAll(upstream, head.rest);
      await Promise.allSettled([
        conn.readable.pipeTo(upstream.writable),
        upstream.readable.pipeTo(conn.writable),
      ]);
      return;
    }
    const lines = [
      `${head.method} ${dest.url.pathname}${dest.url.search} HTTP/1.1`,
      `Host: ${dest.url.host}`,
    ];
    for (const [name, value] of head.headers) {
      if (!HOP_BY_HOP.has(name)) lines.push(`${name}: ${value}`);
    }
    lines.push("Connection: close", "", "");
    await _writeAll(upstream, ENCODER.encode(lines.join("\r\n")));
    // Exactly the body the head announced: what follows it is not sent.
    let left = Number(length ?? 0);
    const first = head.rest.subarray(0, left);
    if (first.length) await _writeAll(upstream, first);
    left -= first.length;
    const buffer = new Uint8Array(64 * 1024);
    while (left > 0) {
      const n = await conn.read(buffer.subarray(0, Math.min(buffer.length, left)));
      if (n === null) break;
      await _writeAll(upstream, buffer.subarray(0, n));
      left -= n;
    }
    await upstream.readable.pipeTo(conn.writable).catch(() => {});
  } catch {
    // The command or the server went away.
  } finally {
    if (upstream) {
      open.delete(upstream);
      _close(upstream);
    }
    _close(conn);
  }
}

/**
 * Reads the bridge's token line and the request head; undefined (after
 * answering a bad request) when either is not valid.
 */
async function _readHead(conn: Deno.Conn, token: string): Promise<Head | undefined> {
  let data = new Uint8Array(0);
  const buffer = new Uint8Array(16 * 1024);
  let end = -1;
  while (end < 0) {
    if (data.length > MAX_PROXY_HEAD_BYTES) {
      await _respond(conn, 431, "The request head is too large");
      return undefined;
    }
    const n = await conn.read(buffer);
    if (n === null) return undefined;
    const next = new Uint8Array(data.length + n);
    next.set(data);
    next.set(buffer.subarray(0, n), data.length);
    data = next;
    end = _find(data, [13, 10, 13, 10]);
  }
  const text = new TextDecoder("latin1").decode(data.subarray(0, end));
  const [tokenLine, requestLine = "", ...headerLines] = text.split("\r\n");
  // Only the bridge of this run knows the token: anything else on the port is dropped.
  if (tokenLine !== `LIBOS-TOKEN ${token}`) return undefined;
  const parts = requestLine.split(" ");
  if (
    parts.length !== 3 || !/^[A-Z]{1,16}$/.test(parts[0]) || !/^HTTP\/1\.[01]$/.test(parts[2])
  ) {
    await _respond(conn, 400, "Not an HTTP/1.1 proxy request");
    return undefined;
  }
  const headers: [string, string][] = [];
  for (const line of headerLines) {
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).toLowerCase();
    if (colon <= 0 || !/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name) || /[\0\r\n]/.test(line)) {
      await _respond(conn, 400, "A request header is malformed");
      return undefined;
    }
    headers.push([name, line.slice(colon + 1).trim()]);
  }
  return { method: parts[0], target: parts[1], headers, rest: data.subarray(end + 4) };
}

async function _respond(conn: Deno.Conn, status: number, reason: string): Promise<void> {
  const text =
    ["400 Bad Request", "403 Forbidden", "431 Request Header Fields Too Large", "502 Bad Gateway"]
      .find((s) => s.startsWith(String(status))) ?? `${status} Error`;
  const body = ENCODER.encode(`${reason.replace(/[\r\n]/g, " ")}\n`);
  const head = `HTTP/1.1 ${text}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
  await _writeAll(conn, ENCODER.encode(head)).catch(() => {});
  await _writeAll(conn, body).catch(() => {});
}

async function _writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

function _find(data: Uint8Array, needle: number[]): number {
  outer: for (let i = 0; i + needle.length <= data.length; i++) {
    for (let j = 0; j < needle.length; j++) if (data[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function _close(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

function _shownTarget(target: string): string {
  return describeUrl(target).slice(0, 200);
}

function _lastingNet(capabilities: readonly Capability[], now: number): Capability[] {
  return capabilities.filter((cap) =>
    cap.resource === "net" && cap.uses === undefined && cap.boundTo === undefined &&
    (cap.expiresAt === undefined || cap.expiresAt > now)
  );
}

/** True when the URL glob `scope` may match some URL of `origin` (`scheme://host[:port]`). */
function _mayMatchUnder(scope: string, origin: string): boolean {
  const star = scope.indexOf("*");
  const prefix = star < 0 ? scope : scope.slice(0, star);
  const base = `${origin}/`;
  return base.startsWith(prefix) || prefix.startsWith(base) || prefix === origin;
}

/**
 * The audit entry of one proxied connection of process `pid`.
 *
 * @example
 * ```ts ignore
 * await journal.write({ audit: await proxyAuditEntry(record, { pid, image, at: Date.now() }) }, { durable: false });
 * ```
 */
export async function proxyAuditEntry(
  record: ProxyAuditRecord,
  who: { pid: number; image: string; tool?: string; at: number },
): Promise<AuditEntry> {
  const args = { method: record.method, target: record.target };
  return {
    at: who.at,
    pid: who.pid,
    image: who.image,
    tool: who.tool,
    syscall: "exec.connect",
    args: JSON.stringify(args),
    argsDigest: await sha256Hex(canonicalJson(args)),
    decision: record.decision,
    capability: record.capability,
    outcome: record.code ? "error" : "ok",
    code: record.code,
    reason: record.reason,
    note: "a connection of a sandboxed command, through the host proxy",
  };
}
