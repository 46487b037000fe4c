/**
 * A small client for the HTTP control API, used by the CLI when a verb is
 * given `--server URL --token T` (or `LIBOS_SERVER` / `LIBOS_TOKEN`): JSON
 * requests with a bearer token, errors turned into one-line messages, and a
 * reader of the `GET /v1/events/stream` server-sent events that resumes
 * with `Last-Event-ID` when a connection drops.
 *
 * @example
 * ```ts ignore
 * import { RemoteClient } from "./remote.ts";
 * const client = new RemoteClient("http://127.0.0.1:7311", { token: "my-token-0123456789" });
 * const processes = await client.processes();
 * console.log(processes.map((p) => `${p.pid} ${p.state}`));
 * ```
 *
 * @module
 */

import type { AuditDecision, AuditRecord, AuditVerifyResult } from "../broker/audit.ts";
import type { HumanRequest } from "../runtime/human_queue.ts";
import type { AgentImage, RegisteredImage } from "../runtime/image.ts";
import type { CellPolicy, RunQueue, TranscriptEntry } from "../runtime/kernel.ts";
import type { ObjectRecord } from "../runtime/object_memory.ts";
import type { ProcessEvent, ProcessRecord } from "../runtime/process_table.ts";

/** The environment variable naming the server when `--server` is absent. */
export const SERVER_ENV = "LIBOS_SERVER";

/** The environment variable holding the bearer token when `--token` is absent. */
export const TOKEN_ENV = "LIBOS_TOKEN";

/** A failed API call: the server's one-line message, its HTTP status and error code. */
export class RemoteError extends Error {
  /** The HTTP status (0 when the server could not be reached). */
  readonly status: number;
  /** The API's error code (`unauthenticated`, `forbidden`, …), or `unreachable`. */
  readonly code: string;

  /** Creates an error with a status, a code and a one-line message. */
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = "RemoteError";
    this.status = status;
    this.code = code;
  }
}

/** Options of {@link RemoteClient}. */
export interface RemoteClientOptions {
  /** The bearer token. */
  token: string;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
}

/** One event of the server's event stream. */
export type StreamEvent =
  | { id: string; kind: "transition"; data: ProcessEvent }
  | { id: string; kind: "audit"; data: AuditRecord }
  | { id: string; kind: "human"; data: HumanRequest };

/** Options of {@link RemoteClient.stream}. */
export interface StreamOptions {
  /** Only events of this pid. */
  pid?: number;
  /** Only these kinds (default: all). */
  kinds?: readonly StreamEvent["kind"][];
  /** Resume after this event id. */
  after?: string;
  /** Stops the stream. */
  signal?: AbortSignal;
  /** Reconnections in a row that bring no event before the stream gives up (default 5). */
  reconnects?: number;
}

/** The body of `POST /v1/processes`. */
export interface RemoteSpawn {
  /** `name@version` of a registered image. */
  image: string;
  /** The workspace root on the server's host. */
  workspace: string;
  /** The process's input. */
  input?: unknown;
  /** Capabilities in text form. */
  capabilities?: string[];
  /** Operator policy rules: pattern to decision. */
  policy?: Record<string, string>;
  /** Model spec. */
  model?: string;
}

type _Query = Record<string, string | number | undefined>;

/** The page size the client asks list routes for. */
const PAGE = 1000;

/**
 * A client of one control API server.
 *
 * @example
 * ```ts ignore
 * import { RemoteClient } from "./remote.ts";
 * const client = new RemoteClient("http://127.0.0.1:7311/v1", { token: "my-token-0123456789" });
 * for await (const event of client.stream({ pid: 1, kinds: ["transition"] })) {
 *   console.log(event.data);
 * }
 * ```
 */
export class RemoteClient {
  /** The server's base URL, without `/v1` (e.g. `http://127.0.0.1:7311`). */
  readonly url: string;
  #token: string;
  #fetch: typeof fetch;

  /** Checks `server` is an `http:` or `https:` URL; `/v1` at its end is optional. */
  constructor(server: string, options: RemoteClientOptions) {
    let url: URL;
    try {
      url = new URL(server);
    } catch {
      throw new RemoteError(0, "invalid_server", `Cannot use server "${server}": not a URL`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new RemoteError(
        0,
        "invalid_server",
        `Cannot use server "${server}": expected an http:// or https:// URL`,
      );
    }
    if (url.search || url.hash || url.username || url.password) {
      throw new RemoteError(
        0,
        "invalid_server",
        `Cannot use server "${server}": expected no query, fragment or credentials`,
      );
    }
    this.url = `${url.origin}${url.pathname.replace(/\/+$/, "").replace(/\/v1$/, "")}`;
    this.#token = options.token;
    this.#fetch = options.fetch ?? fetch;
  }

  /**
   * Sends one request and returns its JSON body; throws a {@link RemoteError}
   * with the server's message for an error answer or a failed connection.
   */
  async request<T>(
    method: string,
    path: string,
    options: { body?: unknown; query?: _Query } = {},
  ): Promise<T> {
    const res = await this.#send(method, path, options);
    return await this.#json<T>(method, path, res);
  }

  /** `GET /v1/health`. */
  health(): Promise<
    { ok: boolean; version: string; execSandbox?: string; cells?: CellPolicy; runQueue?: RunQueue }
  > {
    return this.request("GET", "/v1/health");
  }

  /** `POST /v1/images`: registers an image (with its entry module's source when it has one). */
  registerImage(
    image: AgentImage,
    options: { entrySource?: string } = {},
  ): Promise<{ digest: string; tag: string }> {
    const body = options.entrySource === undefined
      ? image
      : { image, entrySource: options.entrySource };
    return this.request("POST", "/v1/images", { body });
  }

  /** `GET /v1/images`. */
  async images(): Promise<RegisteredImage[]> {
    return (await this.request<{ images: RegisteredImage[] }>("GET", "/v1/images")).images;
  }

  /** `POST /v1/processes`: spawns and starts a process; its pid. */
  async spawn(request: RemoteSpawn): Promise<number> {
    return (await this.request<{ pid: number }>("POST", "/v1/processes", { body: request })).pid;
  }

  /** `GET /v1/processes`, every page: all processes, in pid order. */
  async processes(): Promise<ProcessRecord[]> {
    const out: ProcessRecord[] = [];
    let after: number | undefined;
    do {
      const page = await this.request<{ processes: ProcessRecord[]; next?: number }>(
        "GET",
        "/v1/processes",
        { query: { after, limit: PAGE } },
      );
      out.push(...page.processes);
      after = page.next;
    } while (after !== undefined);
    return out;
  }

  /** `GET /v1/processes/:pid`: the record with its children and pending human requests. */
  process(pid: number): Promise<ProcessRecord & { children: number[]; pending: HumanRequest[] }> {
    return this.request("GET", `/v1/processes/${pid}`);
  }

  /** `POST /v1/processes/:pid/signal`. */
  signal(pid: number, signal: string): Promise<{ pid: number; state: string }> {
    return this.request("POST", `/v1/processes/${pid}/signal`, { body: { signal } });
  }

  /** `GET /v1/human`: pending requests, oldest first. */
  async pendingHumans(): Promise<HumanRequest[]> {
    return (await this.request<{ requests: HumanRequest[] }>("GET", "/v1/human")).requests;
  }

  /** `POST /v1/human/:id`: answers a request; the answered request. */
  answer(
    id: string,
    answer: { decision?: string; answer?: unknown; ttl?: string },
  ): Promise<HumanRequest> {
    return this.request("POST", `/v1/human/${encodeURIComponent(id)}`, { body: answer });
  }

  /**
   * `GET /v1/audit`, every page: the audit records in order, of one pid,
   * with one decision, after a seq.
   */
  async *audit(
    options: { pid?: number; decision?: AuditDecision; after?: number } = {},
  ): AsyncGenerator<AuditRecord> {
    let after = options.after ?? 0;
    for (;;) {
      const { records } = await this.request<{ records: AuditRecord[] }>("GET", "/v1/audit", {
        query: {
          pid: options.pid,
          decision: options.decision,
          after: after || undefined,
          limit: PAGE,
        },
      });
      yield* records;
      if (records.length < PAGE) return;
      after = records[records.length - 1].seq;
    }
  }

  /** `GET /v1/audit/verify`. */
  verifyAudit(): Promise<AuditVerifyResult> {
    return this.request("GET", "/v1/audit/verify");
  }

  /** `GET /v1/objects?namespace=`: the objects of a namespace, without values. */
  async objects(namespace: string): Promise<Omit<ObjectRecord, "value">[]> {
    const { objects } = await this.request<{ objects: Omit<ObjectRecord, "value">[] }>(
      "GET",
      "/v1/objects",
      { query: { namespace, limit: PAGE } },
    );
    return objects;
  }

  /** `GET /v1/objects/NAMESPACE/NAME`. */
  object(namespace: string, name: string): Promise<ObjectRecord> {
    const path = [...namespace.split("/"), name].map(encodeURIComponent).join("/");
    return this.request("GET", `/v1/objects/${path}`);
  }

  /**
   * `GET /v1/processes/:pid/transcript`: the messages a process exchanged
   * with the model, or undefined when the server has no such route.
   */
  async transcript(pid: number): Promise<TranscriptEntry[] | undefined> {
    const body = await this.#optional<{ transcript: TranscriptEntry[] }>(
      `/v1/processes/${pid}/transcript`,
    );
    return body?.transcript;
  }

  /**
   * `GET /v1/processes/:pid/events`: a process's transitions, or undefined
   * when the server has no such route.
   */
  async events(pid: number): Promise<ProcessEvent[] | undefined> {
    const body = await this.#optional<{ events: ProcessEvent[] }>(`/v1/processes/${pid}/events`);
    return body?.events;
  }

  /**
   * `GET /v1/events/stream`: the server's events as they happen, until
   * `options.signal` aborts or the consumer stops. A dropped connection is
   * resumed after the last event seen.
   */
  async *stream(options: StreamOptions = {}): AsyncGenerator<StreamEvent> {
    let after = options.after;
    let idle = 0;
    const limit = options.reconnects ?? 5;
    while (!options.signal?.aborted) {
      const headers: Record<string, string> = { accept: "text/event-stream" };
      if (after !== undefined) headers["last-event-id"] = after;
      const res = await this.#send("GET", "/v1/events/stream", {
        query: { pid: options.pid, kind: options.kinds?.join(",") },
        headers,
        signal: options.signal,
      });
      if (!res.ok || !res.body) await this.#json("GET", "/v1/events/stream", res);
      let got = false;
      try {
        for await (const frame of _frames(res.body!)) {
          if (frame.event === undefined || frame.data === undefined) continue;
          if (frame.id !== undefined) after = frame.id;
          got = true;
          yield {
            id: frame.id ?? "",
            kind: frame.event,
            data: JSON.parse(frame.data),
          } as StreamEvent;
        }
      } catch (error) {
        if (options.signal?.aborted) return;
        if (!(error instanceof TypeError)) throw error;
        // The connection dropped mid-stream: resume after the last event.
      }
      idle = got ? 0 : idle + 1;
      if (idle >= limit) {
        throw new RemoteError(
          0,
          "unreachable",
          `Cannot follow the event stream of ${this.url}: it ended ${idle} times in a row`,
        );
      }
    }
  }

  async #optional<T>(path: string): Promise<T | undefined> {
    try {
      return await this.request<T>("GET", path);
    } catch (error) {
      if (
        error instanceof RemoteError && error.status === 404 &&
        error.message.startsWith("Cannot find route")
      ) return undefined;
      throw error;
    }
  }

  async #send(
    method: string,
    path: string,
    options: {
      body?: unknown;
      query?: _Query;
      headers?: Record<string, string>;
      signal?: AbortSignal;
    },
  ): Promise<Response> {
    const url = new URL(`${this.url}${path}`);
    for (const [name, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined) url.searchParams.set(name, String(value));
    }
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.#token}`,
      ...options.headers,
    };
    if (options.body !== undefined) headers["content-type"] = "application/json";
    try {
      return await this.#fetch(url, {
        method,
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        signal: options.signal,
      });
    } catch (error) {
      if (options.signal?.aborted) throw error;
      throw new RemoteError(
        0,
        "unreachable",
        `Cannot reach the server at ${this.url}: ${_why(error)}`,
      );
    }
  }

  async #json<T>(method: string, path: string, res: Response): Promise<T> {
    const text = await res.text().catch(() => "");
    let body: unknown;
    try {
      body = text === "" ? undefined : JSON.parse(text);
    } catch {
      body = undefined;
    }
    if (res.ok && body !== undefined) return body as T;
    const error = (body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    if (!res.ok && typeof error?.message === "string") {
      throw new RemoteError(
        res.status,
        typeof error.code === "string" ? error.code : "error",
        error.message.split("\n", 1)[0],
      );
    }
    throw new RemoteError(
      res.status,
      "bad_response",
      `Cannot use the server at ${this.url}: ${method} ${path} answered ${res.status} ${
        res.ok ? "without a JSON body" : "without an API error"
      }`,
    );
  }
}

/**
 * Where the CLI should send its requests: `--server` (or `LIBOS_SERVER`
 * when `--kv` is not given) with `--token` (or `LIBOS_TOKEN`); undefined
 * for in-process work on a store. Throws for a server without a token, a
 * token without a server, or both `--server` and `--kv`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { remoteTarget } from "./remote.ts";
 * const target = remoteTarget({ server: "http://127.0.0.1:7311", token: "t-0123456789abcdef" }, {
 *   env: {},
 * });
 * assert(target?.server === "http://127.0.0.1:7311");
 * assert(remoteTarget({}, { env: {} }) === undefined);
 * ```
 */
export function remoteTarget(
  flags: { server?: string; token?: string; kv?: string },
  options: { env?: Readonly<Record<string, string | undefined>> } = {},
): { server: string; token: string } | undefined {
  const env = options.env ?? { [SERVER_ENV]: _env(SERVER_ENV), [TOKEN_ENV]: _env(TOKEN_ENV) };
  if (flags.server !== undefined && flags.kv !== undefined) {
    throw new RemoteError(0, "usage", "Cannot use --server with --kv: choose one");
  }
  const server = flags.server ??
    (flags.kv === undefined && env[SERVER_ENV] ? env[SERVER_ENV] : undefined);
  if (server === undefined) {
    if (flags.token !== undefined) {
      throw new RemoteError(0, "usage", "Cannot use --token without --server or LIBOS_SERVER");
    }
    return undefined;
  }
  const token = flags.token ?? env[TOKEN_ENV];
  if (!token) {
    throw new RemoteError(
      0,
      "usage",
      `Cannot use server "${server}": no token; pass --token or set ${TOKEN_ENV}`,
    );
  }
  return { server, token };
}

function _env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

function _why(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  if (/connection refused/i.test(text)) return "connection refused";
  if (/timed? ?out/i.test(text)) return "the connection timed out";
  if (/dns|lookup|name or service/i.test(text)) return "the host name does not resolve";
  if (/requires net access|NotCapable|PermissionDenied/i.test(text)) {
    return "network access to it is not allowed (--allow-net)";
  }
  const line = text.split("\n", 1)[0];
  return line.length > 120 ? `${line.slice(0, 119)}…` : line;
}

interface _Frame {
  id?: string;
  event?: StreamEvent["kind"];
  data?: string;
}

async function* _frames(body: ReadableStream<Uint8Array>): AsyncGenerator<_Frame> {
  let buffer = "";
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const frame: _Frame = {};
        for (const line of block.split("\n")) {
          if (line === "" || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "id") frame.id = value;
          else if (field === "event") frame.event = value as _Frame["event"];
          else if (field === "data") {
            frame.data = frame.data === undefined ? value : `${frame.data}\n${value}`;
          }
        }
        yield frame;
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}
