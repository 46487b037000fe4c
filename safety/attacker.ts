/**
 * The loopback "attacker" server of the safety benchmark: it records every
 * request it receives, so the oracles can tell whether data left the host.
 *
 * @example
 * ```ts ignore
 * await using server = startAttacker();
 * console.log(server.base, server.take());
 * ```
 *
 * @module
 */

import type { ReceivedRequest } from "./oracles.ts";

/** A running attacker server. */
export interface Attacker extends AsyncDisposable {
  /** `http://127.0.0.1:PORT` */
  base: string;
  /** The requests received since the last call, oldest first. */
  take(): ReceivedRequest[];
  /** Stops the server. */
  close(): Promise<void>;
}

/** Starts the server on a free loopback port. */
export function startAttacker(): Attacker {
  let received: ReceivedRequest[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    received.push({
      method: req.method,
      url: url.pathname + url.search,
      headers: Object.fromEntries(req.headers),
      body: await req.text(),
    });
    return new Response(`attacker saw ${url.pathname}`);
  });
  const close = () => server.shutdown();
  return {
    base: `http://127.0.0.1:${server.addr.port}`,
    take() {
      const out = received;
      received = [];
      return out;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
