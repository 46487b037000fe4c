/**
 * Request guards that run before authentication: the `Host` header must
 * name the server by a loopback name (`127.0.0.1`, `localhost`, `[::1]`)
 * or an explicitly allowed host, which defeats DNS rebinding (a page on
 * `evil.test` that resolves to 127.0.0.1 still sends `Host: evil.test`);
 * and a request that carries an `Origin` header is refused unless that
 * origin is explicitly allowed, which keeps web pages from driving the API
 * from a browser.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import { ApiError } from "./errors.ts";

/** Options of {@link requestGuard}. */
export interface GuardOptions {
  /**
   * The port the server listens on, or a function that returns it once
   * known. When set, a loopback `Host` must carry this port.
   */
  port?: number | (() => number | undefined);
  /** Further `Host` values accepted as they are, e.g. `libos.internal:7311`. */
  allowedHosts?: readonly string[];
  /** `Origin` values accepted, e.g. `http://127.0.0.1:5173`. None by default. */
  allowedOrigins?: readonly string[];
}

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);

/**
 * True when `host` (a `Host` header value) names this server: a loopback
 * name with the right port (any port when `port` is undefined), or one of
 * `allowed`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isAllowedHost } from "./guard.ts";
 * assert(isAllowedHost("127.0.0.1:7311", { port: 7311 }));
 * assert(!isAllowedHost("evil.test:7311", { port: 7311 }));
 * ```
 */
export function isAllowedHost(
  host: string,
  options: { port?: number; allowedHosts?: readonly string[] } = {},
): boolean {
  const value = host.trim().toLowerCase();
  if (options.allowedHosts?.some((h) => h.toLowerCase() === value)) return true;
  const match = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(value);
  if (!match || !LOOPBACK.has(match[1])) return false;
  if (options.port === undefined) return true;
  const port = match[2] === undefined ? 80 : Number(match[2]);
  return port === options.port;
}

/**
 * Middleware that refuses (403) a request whose `Host` does not name this
 * server or whose `Origin` is not allowed.
 *
 * @example
 * ```ts ignore
 * app.use("*", requestGuard({ port: 7311 }));
 * ```
 */
export function requestGuard(options: GuardOptions = {}): MiddlewareHandler {
  const origins = new Set(options.allowedOrigins ?? []);
  return async (c, next) => {
    const host = c.req.header("host") ?? new URL(c.req.url).host;
    const port = typeof options.port === "function" ? options.port() : options.port;
    if (!isAllowedHost(host, { port, allowedHosts: options.allowedHosts })) {
      throw new ApiError(
        403,
        `Cannot serve a request for host "${
          host.slice(0, 200)
        }": not a loopback address of this server or an allowed host`,
      );
    }
    const origin = c.req.header("origin");
    if (origin !== undefined && !origins.has(origin)) {
      throw new ApiError(
        403,
        `Cannot serve a request from origin "${
          origin.slice(0, 200)
        }": cross-site requests are not allowed`,
      );
    }
    await next();
  };
}
