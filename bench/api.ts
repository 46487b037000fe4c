/**
 * Control API responsiveness under load: `libos serve` on 127.0.0.1 (a
 * subprocess, with its defaults: 2 warm cells, 16 cells at most) while 32
 * clients each loop one request at a time for 20 s (quick: 5 s), taking
 * turns over four requests: list the processes, read one process, post an
 * event, and spawn a process that exits at once. Meanwhile 100 subscribers
 * follow the event stream (`GET /v1/events/stream`).
 *
 * Latency is per request, from `fetch` to the whole body read. An error is
 * any answer other than 2xx, or a request that fails. A subscriber is
 * dropped when its stream ends or fails before the run is over.
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  against,
  type BenchOptions,
  HOST_FLAGS,
  percentile,
  round,
  type Row,
  type Section,
} from "./_common.ts";

/** Most the p99 latency may be, as a multiple of the p50. */
const TAIL = 10;
const CLIENTS = 32;
const SUBSCRIBERS = 100;
const TOKEN = "bench-operator-token-0001";
const CLI = fileURLToPath(new URL("../cli.ts", import.meta.url));

const REQUESTS = ["list", "read", "emit", "spawn"] as const;
type RequestKind = typeof REQUESTS[number];

/** A `libos serve` subprocess over a store in `dir`. */
interface Server {
  base: string;
  stop(): Promise<void>;
}

/** Starts `libos serve --port 0` over `dir`; resolves once it listens. */
async function serve(dir: string): Promise<Server> {
  const tokens = join(dir, "tokens.json");
  await Deno.writeTextFile(
    tokens,
    JSON.stringify({ tokens: [{ name: "bench", token: TOKEN, role: "operator" }] }),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...HOST_FLAGS,
      "--allow-net=127.0.0.1",
      CLI,
      "serve",
      "--kv",
      join(dir, "libos.db"),
      "--tokens",
      tokens,
      "--port",
      "0",
    ],
    cwd: dir,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  let base: string | undefined;
  while (!base) {
    const { value, done } = await lines.read();
    if (done) {
      await child.status;
      throw new Error(`Cannot start libos serve: it ended:\n${seen}`);
    }
    seen += value;
    base = seen.match(/control API on (http:\/\/127\.0\.0\.1:\d+)\/v1/)?.[1];
  }
  // Keep reading stderr, so the server never blocks on a full pipe.
  const drained = (async () => {
    while (!(await lines.read()).done) { /* drop */ }
  })();
  return {
    base,
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
      await drained;
    },
  };
}

/** One request to the API as the bench's operator; the answer's body, read whole. */
async function call(
  base: string,
  method: "GET" | "POST",
  path: string,
  body?: unknown,
): Promise<{ status: number; json: unknown }> {
  const response = await fetch(`${base}/v1${path}`, {
    method,
    headers: {
      authorization: `Bearer ${TOKEN}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, json: text ? JSON.parse(text) : null };
}

/** A subscriber of the event stream: counts events until `stop`; `dropped` if the stream ended first. */
async function subscribe(
  base: string,
  stop: AbortSignal,
): Promise<{ events: number; dropped: boolean }> {
  let events = 0;
  try {
    const response = await fetch(`${base}/v1/events/stream`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    if (!response.ok || !response.body) return { events, dropped: true };
    const reader = response.body.getReader();
    // Cancelling the reader ends the stream here; aborting the fetch would not end the read.
    const cancel = () => reader.cancel().catch(() => {});
    stop.addEventListener("abort", cancel, { once: true });
    if (stop.aborted) await cancel();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const lines = (buffer + decoder.decode(value, { stream: true })).split("\n");
      buffer = lines.pop()!;
      events += lines.filter((line) => line.startsWith("event:")).length;
    }
  } catch {
    // A failed stream: dropped, unless the run was over.
  }
  return { events, dropped: !stop.aborted };
}

/**
 * Measures the control API's latency with 32 busy clients and 100 event
 * stream subscribers.
 *
 * @example
 * ```ts ignore
 * const section = await benchApi({ quick: true, log: console.log });
 * ```
 */
export async function benchApi(options: BenchOptions): Promise<Section> {
  const ms = options.quick ? 5_000 : 20_000;
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-bench-api-" }));
  const workspace = join(dir, "ws");
  await Deno.mkdir(workspace);
  const server = await serve(dir);
  const stopStreams = new AbortController();
  try {
    const base = server.base;
    const image = await call(base, "POST", "/images", {
      image: {
        name: "quick",
        version: "1.0.0",
        entry: "./main.ts",
        tools: [],
        capabilities: [],
        policy: {},
      },
      entrySource: "export default function main() { return 1; }",
    });
    if (image.status !== 201) throw new Error(`Cannot register the image: ${image.status}`);
    const spawnBody = { image: "quick@1.0.0", workspace };
    const first = await call(base, "POST", "/processes", spawnBody);
    if (first.status !== 201) throw new Error(`Cannot spawn a process: ${first.status}`);
    const pid = (first.json as { pid: number }).pid;
    const subscribers = Array.from(
      { length: SUBSCRIBERS },
      () => subscribe(base, stopStreams.signal),
    );
    const latency: Record<RequestKind, number[]> = { list: [], read: [], emit: [], spawn: [] };
    const errors: Record<string, number> = {};
    const request: Record<RequestKind, () => Promise<{ status: number }>> = {
      list: () => call(base, "GET", "/processes"),
      read: () => call(base, "GET", `/processes/${pid}`),
      emit: () => call(base, "POST", "/events", { topic: "bench.api", data: { n: 1 } }),
      spawn: () => call(base, "POST", "/processes", spawnBody),
    };
    const started = performance.now();
    const end = started + ms;
    await Promise.all(Array.from({ length: CLIENTS }, async (_, client) => {
      for (let i = client; performance.now() < end; i++) {
        const kind = REQUESTS[i % REQUESTS.length];
        const t0 = performance.now();
        try {
          const { status } = await request[kind]();
          if (status >= 300) errors[`${kind} ${status}`] = (errors[`${kind} ${status}`] ?? 0) + 1;
          else latency[kind].push(performance.now() - t0);
        } catch (error) {
          const key = `${kind} ${(error as Error).name}`;
          errors[key] = (errors[key] ?? 0) + 1;
        }
      }
    }));
    const elapsedMs = performance.now() - started;
    stopStreams.abort();
    const streams = await Promise.all(subscribers);
    const all = Object.values(latency).flat();
    const errorCount = Object.values(errors).reduce((a, b) => a + b, 0);
    const dropped = streams.filter((s) => s.dropped).length;
    const received = streams.map((s) => s.events).sort((a, b) => a - b);
    const p50 = percentile(all, 50);
    const p99 = percentile(all, 99);
    options.log(
      `  ${all.length} requests in ${(elapsedMs / 1000).toFixed(1)} s: p50 ${p50.toFixed(1)} ms, ` +
        `p99 ${p99.toFixed(1)} ms, ${errorCount} errors; ${dropped} of ${SUBSCRIBERS} ` +
        `subscribers dropped, each got ${received[0]}–${received.at(-1)} events`,
    );
    const rows: Row[] = [
      against({
        name: "api.latency.p50",
        value: p50,
        unit: "ms",
        note:
          `${CLIENTS} clients (list, read, emit, spawn in turn), ${SUBSCRIBERS} SSE subscribers`,
      }),
      against({
        name: "api.latency.p99",
        value: p99,
        unit: "ms",
        floor: p50,
        floorName: "api.latency.p50",
        target: `<= ${TAIL}x p50`,
        met: p99 <= TAIL * p50,
      }),
      against({
        name: "api.requests_per_second",
        value: all.length / elapsedMs * 1000,
        unit: "req/s",
      }),
      against({
        name: "api.errors",
        value: errorCount,
        unit: "requests",
        target: "none",
        met: errorCount === 0,
      }),
      against({
        name: "api.subscribers_dropped",
        value: dropped,
        unit: "subscribers",
        target: "none",
        met: dropped === 0,
      }),
      ...REQUESTS.flatMap((kind) => [
        against({ name: `api.${kind}.p50`, value: percentile(latency[kind], 50), unit: "ms" }),
        against({ name: `api.${kind}.p99`, value: percentile(latency[kind], 99), unit: "ms" }),
      ]),
    ];
    return {
      section: "api",
      rows,
      details: {
        seconds: round(elapsedMs / 1000, 1),
        clients: CLIENTS,
        subscribers: SUBSCRIBERS,
        requests: Object.fromEntries(REQUESTS.map((k) => [k, latency[k].length])),
        errors,
        eventsPerSubscriber: { min: received[0], median: percentile(received, 50) },
      },
    };
  } finally {
    stopStreams.abort();
    await server.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
