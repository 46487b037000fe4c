/**
 * Serving the control API with `Deno.serve`, on 127.0.0.1 by default, with
 * a shutdown that ends open event streams first.
 *
 * @module
 */

import { type ApiApp, type ControlKernel, createApp, type CreateAppOptions } from "./app.ts";

/** Options of {@link serveApi}. */
export interface ServeApiOptions extends Omit<CreateAppOptions, "port" | "signal"> {
  /** The address to bind (default `127.0.0.1`). */
  hostname?: string;
  /** The port (default 7311; 0 picks a free one). */
  port?: number;
  /** Called once the server listens. */
  onListen?: (address: { hostname: string; port: number }) => void;
}

/** A running API server. */
export interface ApiServer {
  /** The app it serves. */
  readonly app: ApiApp;
  /** The port it listens on. */
  readonly port: number;
  /** Its base URL, e.g. `http://127.0.0.1:7311`. */
  readonly url: string;
  /** Resolves when the server has stopped. */
  readonly finished: Promise<void>;
  /** Ends every event stream, then stops accepting and finishes in-flight requests (idempotent). */
  shutdown(): Promise<void>;
}

/** The default port of the control API. */
export const DEFAULT_PORT = 7311;

/**
 * Starts the control API over `kernel`.
 *
 * @example
 * ```ts ignore
 * import { serveApi } from "./server.ts";
 * const server = serveApi(kernel, { tokens: await loadTokens("tokens.json") });
 * console.log(`listening on ${server.url}`);
 * await server.finished;
 * ```
 */
export function serveApi(kernel: ControlKernel, options: ServeApiOptions): ApiServer {
  const { hostname = "127.0.0.1", port = DEFAULT_PORT, onListen, ...appOptions } = options;
  const streams = new AbortController();
  const listening: { port?: number } = {};
  const app = createApp(kernel, {
    ...appOptions,
    port: () => listening.port,
    signal: streams.signal,
  });
  const server = Deno.serve({
    hostname,
    port,
    onListen: () => {},
  }, app.fetch);
  const bound = server.addr.port;
  listening.port = bound;
  onListen?.({ hostname, port: bound });
  let stopping: Promise<void> | undefined;
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  return {
    app,
    port: bound,
    url: `http://${host}:${bound}`,
    finished: server.finished,
    shutdown() {
      if (!stopping) {
        streams.abort();
        stopping = server.shutdown();
      }
      return stopping;
    },
  };
}
