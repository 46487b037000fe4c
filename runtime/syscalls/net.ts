/**
 * The `net.fetch` syscall. The capability target is the normalized URL
 * (`scheme://host[:port]/path`, see `net_provider.ts`), matched by URL
 * patterns such as `net:fetch:https://api.example.com/**`.
 *
 * - Loopback, private and other non-public destinations are refused unless
 *   a capability that allows the request names the host literally; host
 *   names are resolved first and every address is checked, and the
 *   connection is pinned to the checked address. When the caller holds a
 *   capability for the URL but none names the host, the refusal happens
 *   while planning, so the audit records it as a denial.
 * - Redirects are not followed blindly: each hop (at most
 *   {@link DEFAULT_MAX_REDIRECTS}) is authorized again by the broker (the
 *   `authorize` it hands to the call's run: the caller's capabilities and
 *   policy), and checked against the private-destination rule. A hop is
 *   authorized by lasting capabilities only: a one-shot grant is consumed
 *   by the request that used it and never covers a redirect.
 *   A cross-origin hop drops `authorization`, `cookie` and
 *   `proxy-authorization`; 301/302 turn a POST into a GET and 303 any
 *   method but HEAD, without a body.
 * - The request body is capped ({@link DEFAULT_MAX_REQUEST_BYTES}), the
 *   response body is cut at {@link DEFAULT_MAX_RESPONSE_BYTES} and marked
 *   `truncated`; the whole exchange times out after
 *   {@link DEFAULT_FETCH_TIMEOUT_MS} (`ETIMEDOUT`), and is cancelled
 *   (`EINTR`) when the calling process stops for good or the host closes.
 * - Error messages name the target, never the query string, so a token in
 *   a URL does not reach the audit. Header values are summarized by the
 *   audit's own redaction.
 *
 * `GET`, `HEAD` and `OPTIONS` are journaled as idempotent effects (redone
 * after a crash); every other method as an effect whose unknown outcome is
 * `EUNCERTAIN`.
 *
 * @module
 */

import type { Authorize, CallContext, HandlerTable } from "../../broker/broker.ts";
import { allows, type Capability, type Operation } from "../../broker/capability.ts";
import { SyscallError, toSyscallError } from "../../broker/errors.ts";
import { decide } from "../../broker/policy.ts";
import {
  addressRange,
  describeUrl,
  fetchTarget,
  isLocalhostName,
  LocalNet,
  type NetProvider,
  parseFetchUrl,
  scopeNamesHost,
} from "../net_provider.ts";

/** Most redirects one `net.fetch` follows. */
export const DEFAULT_MAX_REDIRECTS = 5;
/** Largest request body, in UTF-8 bytes. */
export const DEFAULT_MAX_REQUEST_BYTES: number = 1 << 20;
/** Response bytes kept; the rest is cut and the result marked `truncated`. */
export const DEFAULT_MAX_RESPONSE_BYTES: number = 1 << 20;
/** Time for the whole exchange, redirects and body included. */
export const DEFAULT_FETCH_TIMEOUT_MS = 30_000;

/** What the `net` handlers need from the kernel. */
export interface NetKernel {
  /** The network provider. */
  readonly net: NetProvider;
  /** The capability store, for the private-destination rule (which capabilities name a host). */
  readonly caps: { list(holder: number, now?: number): Promise<Capability[]> };
  /** The clock. */
  readonly now: () => number;
}

/** Limits of {@link netHandlers}. */
export interface NetHandlerOptions {
  /** Most redirects followed (default {@link DEFAULT_MAX_REDIRECTS}). */
  maxRedirects?: number;
  /** Largest request body (default {@link DEFAULT_MAX_REQUEST_BYTES}). */
  maxRequestBytes?: number;
  /** Response bytes kept (default {@link DEFAULT_MAX_RESPONSE_BYTES}). */
  maxResponseBytes?: number;
  /** Time for the whole exchange (default {@link DEFAULT_FETCH_TIMEOUT_MS}). */
  timeoutMs?: number;
}

/** What `net.fetch` returns to the program. */
export interface FetchResult {
  status: number;
  statusText: string;
  /** Response headers, lower-case names; repeated ones joined with `, `. */
  headers: Record<string, string>;
  /** The response body decoded as UTF-8, cut at the response cap. */
  body: string;
  /** The body was longer than the response cap. */
  truncated: boolean;
  /** The URL the response came from. */
  url: string;
  /** The targets of the redirects followed, in order. */
  redirects: string[];
}

const FORBIDDEN_HEADERS = new Set([
  "host",
  "content-length",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "upgrade",
  "te",
  "trailer",
  "expect",
  "proxy-connection",
]);
const FORBIDDEN_METHODS = new Set(["CONNECT", "TRACE", "TRACK"]);
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const CREDENTIAL_HEADERS = ["authorization", "cookie", "proxy-authorization"];
const ENCODER = new TextEncoder();

/** Where a request goes: the addresses checked and the one to connect to. */
interface Destination {
  /** The URL's host name. */
  host: string;
  /** Non-public addresses among those it resolves to, with their kind. */
  privateAddresses: { address: string; range: string }[];
  /** The checked address to pin the connection to, for host names. */
  pin?: string;
}

/**
 * Handlers of the `net` group.
 *
 * @example
 * ```ts ignore
 * const handlers = netHandlers(kernel, { maxRedirects: 3 });
 * ```
 */
export function netHandlers(kernel: NetKernel, options: NetHandlerOptions = {}): HandlerTable {
  const maxRedirects = options.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
  const maxRequestBytes = options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
  const maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  const timeoutMs = options.timeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
  const resolver = kernel.net.resolve ? kernel.net : new LocalNet();

  const destination = async (url: URL, target: string): Promise<Destination> => {
    const host = url.hostname;
    let addresses: string[];
    if (isLocalhostName(host)) addresses = ["127.0.0.1", "::1"];
    else if (addressRange(host) !== "invalid") addresses = [host];
    else {
      try {
        addresses = await resolver.resolve!(host);
      } catch (error) {
        throw new SyscallError(
          toSyscallError(error).code === "EPERM" ? "EPERM" : "ENOENT",
          `Cannot fetch "${target}": cannot resolve host "${host}": ${(error as Error).message}`,
        );
      }
      if (addresses.length === 0) {
        throw new SyscallError("ENOENT", `Cannot fetch "${target}": host "${host}" has no address`);
      }
    }
    const privateAddresses = addresses.flatMap((address) => {
      const range = addressRange(address);
      return range ? [{ address, range }] : [];
    });
    const literal = isLocalhostName(host) || addressRange(host) !== "invalid";
    return { host, privateAddresses, pin: literal ? undefined : addresses[0] };
  };

  /** `EPERM` when `dest` is private and none of `caps` that allow `op` names its host. */
  const requireNamed = (
    dest: Destination,
    op: Operation,
    caps: readonly Capability[],
    now: number,
  ): void => {
    if (dest.privateAddresses.length === 0) return;
    if (caps.some((cap) => allows(cap, op, now) && scopeNamesHost(cap.scope, dest.host))) return;
    const [{ address, range }] = dest.privateAddresses;
    const shown = address === dest.host ? "" : ` (it resolves to ${address})`;
    throw new SyscallError(
      "EPERM",
      `Cannot fetch "${op.target}": ${dest.host} is a ${range} address${shown}, ` +
        `and no capability names host "${dest.host}" literally`,
    );
  };

  /** Capabilities held now that may authorize `op` for this very call. */
  const heldFor = async (ctx: CallContext, now: number): Promise<Capability[]> =>
    (await kernel.caps.list(ctx.pid, now)).filter((cap) =>
      cap.boundTo === undefined || cap.boundTo === ctx.argsDigest
    );

  return {
    "net.fetch": async (ctx, args) => {
      const url = parseFetchUrl(args.url);
      const target = fetchTarget(url);
      const method = (args.method ?? "GET").toUpperCase();
      if (!/^[A-Z]{1,16}$/.test(method) || FORBIDDEN_METHODS.has(method)) {
        throw new SyscallError(
          "EINVAL",
          `Cannot fetch "${target}": method "${method.slice(0, 16)}" is not allowed`,
        );
      }
      const headers = new Headers();
      for (const [name, value] of Object.entries(args.headers ?? {})) {
        const lower = name.toLowerCase();
        if (FORBIDDEN_HEADERS.has(lower) || lower.startsWith("proxy-connection")) {
          throw new SyscallError(
            "EINVAL",
            `Cannot fetch "${target}": header "${lower}" is set by the runtime`,
          );
        }
        try {
          headers.append(name, value);
        } catch {
          throw new SyscallError(
            "EINVAL",
            `Cannot fetch "${target}": header "${name.slice(0, 64)}" is not a valid header`,
          );
        }
      }
      if (args.body !== undefined && (method === "GET" || method === "HEAD")) {
        throw new SyscallError("EINVAL", `Cannot fetch "${target}": a ${method} has no body`);
      }
      const bodyBytes = args.body === undefined ? 0 : ENCODER.encode(args.body).length;
      if (bodyBytes > maxRequestBytes) {
        throw new SyscallError(
          "EINVAL",
          `Cannot fetch "${target}": the body of ${bodyBytes} bytes is over ` +
            `the ${maxRequestBytes}-byte limit`,
        );
      }
      const op: Operation = { resource: "net", right: "fetch", target };
      const first = await destination(url, target);
      const asks = decide(ctx.policy, op, { workspace: ctx.workspace })?.decision === "ask";
      if (first.privateAddresses.length && !asks && !ctx.redo) {
        // Refused before authorization (audited as a denial) when a capability
        // allows the URL but none names the host. With no capability at all,
        // or a policy that asks, the broker decides: a human's grant names
        // the exact URL, and so its host.
        const now = kernel.now();
        const held = await heldFor(ctx, now);
        if (held.some((cap) => allows(cap, op, now))) requireNamed(first, op, held, now);
      }
      const exchange = async (request: {
        url: URL;
        target: string;
        method: string;
        headers: Headers;
        body?: string;
        dest: Destination;
        signal: AbortSignal;
        authorize: Authorize;
      }): Promise<FetchResult> => {
        let { url, target, method, body, dest } = request;
        const headers = new Headers(request.headers);
        const redirects: string[] = [];
        for (;;) {
          const response = await kernel.net.fetch(url.href, {
            method,
            headers,
            body,
            signal: request.signal,
            address: dest.pin,
          });
          const location = response.headers.get("location");
          if (!REDIRECTS.has(response.status) || location === null) {
            return await _read(response, url, redirects, {
              method,
              maxBytes: maxResponseBytes,
            });
          }
          await response.body?.cancel().catch(() => {});
          if (redirects.length >= maxRedirects) {
            throw new SyscallError(
              "EINVAL",
              `Cannot fetch "${request.target}": more than ${maxRedirects} redirects`,
            );
          }
          let next: URL;
          try {
            next = parseFetchUrl(new URL(location, url).href);
          } catch {
            throw new SyscallError(
              "EINVAL",
              `Cannot fetch "${target}": it redirects to "${
                describeUrl(location)
              }", which cannot be fetched (only http and https, no credentials)`,
            );
          }
          const nextTarget = fetchTarget(next);
          const hop: Operation = { resource: "net", right: "fetch", target: nextTarget };
          await request.authorize([hop], {
            context: `redirected from "${target}"`,
            step: "a redirect",
          });
          const nextDest = await destination(next, nextTarget);
          const now = kernel.now();
          requireNamed(nextDest, hop, await heldFor(ctx, now), now);
          if (next.origin !== url.origin) {
            for (const name of CREDENTIAL_HEADERS) headers.delete(name);
          }
          const toGet = (response.status === 303 && method !== "HEAD") ||
            ((response.status === 301 || response.status === 302) && method === "POST");
          if (toGet) {
            method = "GET";
            body = undefined;
            for (const name of ["content-type", "content-encoding", "content-language"]) {
              headers.delete(name);
            }
          }
          redirects.push(nextTarget);
          [url, target, dest] = [next, nextTarget, nextDest];
        }
      };
      return {
        ops: [op],
        effect: SAFE_METHODS.has(method) ? "idempotent" : "effect",
        run: async (grant, authorize) => {
          const now = kernel.now();
          // A redo was authorized before the crash, with grants that may be spent now.
          if (!ctx.redo) {
            requireNamed(first, op, [...grant.capabilities, ...await heldFor(ctx, now)], now);
          }
          const timeout = AbortSignal.timeout(timeoutMs);
          const signal = ctx.signal ? AbortSignal.any([timeout, ctx.signal]) : timeout;
          try {
            return await exchange({
              url,
              target,
              method,
              headers,
              body: args.body,
              dest: first,
              signal,
              authorize,
            });
          } catch (error) {
            if (ctx.signal?.aborted) {
              throw new SyscallError(
                "EINTR",
                `Cannot fetch "${target}": the calling process stopped while it ran`,
              );
            }
            if (timeout.aborted) {
              throw new SyscallError(
                "ETIMEDOUT",
                `Cannot fetch "${target}": no complete response within ${timeoutMs} ms`,
              );
            }
            if (error instanceof SyscallError) throw error;
            const err = toSyscallError(error);
            throw new SyscallError(err.code, `Cannot fetch "${target}": ${_scrub(err.message)}`);
          }
        },
      };
    },
  };
}

/** Reads a response into a {@link FetchResult}, cutting the body at `maxBytes`. */
async function _read(
  response: Response,
  url: URL,
  redirects: string[],
  options: { method: string; maxBytes: number },
): Promise<FetchResult> {
  const headers: Record<string, string> = {};
  for (const [name, value] of response.headers) {
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  const chunks: Uint8Array[] = [];
  let kept = 0;
  let truncated = false;
  if (response.body && options.method !== "HEAD") {
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (kept + value.length > options.maxBytes) {
        chunks.push(value.subarray(0, options.maxBytes - kept));
        kept = options.maxBytes;
        truncated = true;
        await reader.cancel().catch(() => {});
        break;
      }
      chunks.push(value);
      kept += value.length;
    }
  } else {
    await response.body?.cancel().catch(() => {});
  }
  const bytes = new Uint8Array(kept);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return {
    status: response.status,
    statusText: response.statusText,
    headers,
    body: new TextDecoder().decode(bytes),
    truncated,
    url: url.href,
    redirects,
  };
}

/** Drops query strings and fragments from URLs inside a provider's error message. */
function _scrub(message: string): string {
  return message.replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^\s?#)]*)[?#][^\s)]*/gi, "$1");
}
