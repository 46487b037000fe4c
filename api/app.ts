/**
 * The HTTP control API (SPEC section 13): a Hono app over a kernel. JSON
 * under `/v1`, bearer tokens with roles, every body validated by a strict
 * zod schema, errors as `{ "error": { "code", "message" } }`.
 *
 * Routes (the right each needs is in parentheses; see `auth.ts`):
 *
 * - `GET /v1/health` (none): `{ ok: true, version, execSandbox, cells }`, the last
 *   saying how commands are confined (`bwrap`, `none` or `unavailable`).
 * - `GET /v1/openapi.json` (none): the OpenAPI 3.1 document.
 * - `POST /v1/images` (write): an image document, or `{ image, entrySource }`
 *   for an image whose entry is a module; 201 `{ digest, tag }`.
 * - `GET /v1/images` (read): `{ images }`.
 * - `POST /v1/processes` (write): `{ image, workspace, input?, capabilities?,
 *   policy?, model?, cwd? }`; spawns and starts; 201 `{ pid }`. Without
 *   `model` the process uses the model its image names.
 * - `GET /v1/processes?state=&image=&ppid=&after=&limit=` (read): `{ processes }`,
 *   in pid order, a page of at most `limit` (default 100) after pid `after`.
 * - `GET /v1/processes/:pid` (read): the record (its `ownModel` is the
 *   model it calls) with `children`, `capabilities` (text form) and
 *   `pending` human requests.
 * - `POST /v1/processes/:pid/signal` (write): `{ signal }`; `{ pid, state }`.
 * - `GET /v1/human` (read): `{ requests }`, pending, oldest first.
 * - `POST /v1/human/:id` (answer): `{ decision?, answer?, ttl? }`; the request.
 * - `POST /v1/events` (write): `{ topic, data? }`; 201 `{ seq }`.
 * - `GET /v1/events/stream?pid=&kind=&after=` (read): server-sent events
 *   (see `sse.ts`); resumes with `Last-Event-ID`.
 * - `GET /v1/audit?pid=&decision=&after=&limit=` (read): `{ records }`.
 * - `GET /v1/audit/verify` (read): `{ ok, count, … }`.
 * - `GET /v1/objects?namespace=&prefix=&limit=` (read): `{ objects }`
 *   without values.
 * - `GET /v1/objects/<namespace>/<name>` (read): one object; the namespace
 *   is every segment but the last (`/v1/objects/shared/notes/n1` is object
 *   `n1` of `shared/notes`).
 * - `GET /v1/tokens` (admin): `{ tokens: [{ name, role }] }`.
 *
 * @module
 */

import { Hono } from "hono";
import type { Context } from "hono";
import denoConfig from "../deno.json" with { type: "json" };
import { formatCapability } from "../broker/capability.ts";
import type { CapabilityStore } from "../broker/capability_store.ts";
import type { AuditLog } from "../broker/audit.ts";
import { parsePolicy, type PolicyRule } from "../broker/policy.ts";
import type { HumanQueue } from "../runtime/human_queue.ts";
import { AgentImageSchema, type ImageRegistry } from "../runtime/image.ts";
import type { CellPolicy, RunQueue, SpawnOptions } from "../runtime/kernel.ts";
import { normalizeModelSpec } from "../runtime/model_spec.ts";
import type { ObjectMemory } from "../runtime/object_memory.ts";
import { END_STATES, type ProcessRecord, type ProcessTable } from "../runtime/process_table.ts";
import {
  type ApiEnv,
  authenticate,
  authorize,
  type Right,
  type TokenConfig,
  TokenVerifier,
} from "./auth.ts";
import { readJsonBody } from "./body.ts";
import { ApiError, toErrorResponse } from "./errors.ts";
import { requestGuard } from "./guard.ts";
import { API_ROUTES, openApiDocument } from "./openapi.ts";
import {
  AuditQuerySchema,
  EventPostSchema,
  HumanAnswerSchema,
  ImageBundleSchema,
  ObjectListQuerySchema,
  ProcessListQuerySchema,
  SignalRequestSchema,
  SpawnRequestSchema,
  STREAM_KINDS,
  StreamQuerySchema,
  validate,
} from "./schemas.ts";
import { eventStream, parseEventId, StreamFeed, type StreamKind } from "./sse.ts";

/** The human queue as the API uses it. */
export type HumanQueueApi = Pick<HumanQueue, "pending" | "get" | "answer">;

/**
 * What the API needs of a kernel. A `Kernel` is one; `humans` and
 * `postEvent` are optional so the API serves a kernel without them (their
 * routes answer 501 then).
 */
export interface ControlKernel {
  /** The process table. */
  readonly processes: Pick<ProcessTable, "list" | "get" | "children" | "events" | "subscribe">;
  /** The image registry. */
  readonly images: Pick<ImageRegistry, "register" | "list">;
  /** The capability store. */
  readonly caps: Pick<CapabilityStore, "list">;
  /** The audit trail. */
  readonly audit: Pick<AuditLog, "list" | "verify">;
  /** Object Memory. */
  readonly objects: Pick<ObjectMemory, "get" | "list">;
  /** The human queue. */
  readonly humans?: HumanQueueApi;
  /** The clock. */
  readonly now: () => number;
  /**
   * Creates a runnable process. With `how.start` it may start it too: a
   * record returned `running` was (see `Kernel.spawn`).
   */
  spawn(options: SpawnOptions, how?: { start?: boolean }): Promise<ProcessRecord>;
  /** Starts a runnable process. */
  start(pid: number): void;
  /** Delivers a signal. */
  signal(
    pid: number,
    signal: "pause" | "resume" | "interrupt" | "terminate" | "kill",
    options?: { by?: string },
  ): Promise<void>;
  /** Posts an event on a topic. */
  postEvent?(topic: string, data?: unknown): Promise<{ seq: number }>;
  /** The messages a process exchanged with its model. */
  transcript?(pid: number): Promise<unknown[]>;
  /** How commands are confined: `bwrap`, `none` (the operator's choice) or `unavailable`. */
  execSandboxStatus?(): Promise<{ mode: "bwrap" | "none" | "unavailable" }>;
  /** How programs are placed in cells (who may share one). */
  readonly cellPolicy?: CellPolicy;
  /** How far the run queue has got: processes waiting their turn, starting and running. */
  readonly runQueue?: RunQueue;
}

/** Options of {@link createApp}. */
export interface CreateAppOptions {
  /** The tokens that may use the API. */
  tokens: TokenVerifier | TokenConfig;
  /**
   * The port the server listens on (or a function returning it once
   * known): a loopback `Host` must carry it. Any port when unset.
   */
  port?: number | (() => number | undefined);
  /** Further `Host` header values accepted (e.g. behind a reverse proxy). */
  allowedHosts?: readonly string[];
  /** `Origin` header values accepted; a request with any other `Origin` is refused. */
  allowedOrigins?: readonly string[];
  /** The largest request body, in bytes (default 1 MiB). */
  maxBodyBytes?: number;
  /** The version `GET /v1/health` reports (default: the package's). */
  version?: string;
  /** Where relative `scripted:FILE` model specs resolve (default: the current directory). */
  cwd?: string;
  /** Event stream settings. */
  stream?: {
    /** Store poll interval, in milliseconds (default 200). */
    pollMs?: number;
    /** Idle time before a heartbeat, in milliseconds (default 15000). */
    heartbeatMs?: number;
  };
  /** Ends every event stream when aborted, so the server can shut down. */
  signal?: AbortSignal;
  /**
   * Called with every unexpected error (answered 500 with a generic
   * message). Default: one line on stderr, without the stack.
   */
  onError?: (error: unknown) => void;
}

/**
 * The control API as a request handler (a Hono app underneath). Both
 * members may be passed on detached from the app.
 */
export interface ApiApp {
  /** Answers one HTTP request: the handler to give `Deno.serve`. */
  readonly fetch: (request: Request, info?: Deno.ServeHandlerInfo) => Response | Promise<Response>;
  /**
   * Answers a request without a server: `input` is a path of the API (or a
   * full URL, or a `Request`).
   */
  readonly request: (
    input: Request | string | URL,
    init?: RequestInit,
  ) => Response | Promise<Response>;
}

const LIST_LIMIT = 100;
const MAX_LIST_LIMIT = 1000;

/**
 * Builds the control API over `kernel`. Serve it with `Deno.serve` on a
 * loopback address, or use `serveApi` from `server.ts`.
 *
 * @example
 * ```ts ignore
 * import { Kernel } from "../runtime/kernel.ts";
 * import { createApp } from "./app.ts";
 *
 * const kernel = await Kernel.open({ store: ":memory:" });
 * const app = createApp(kernel, {
 *   tokens: { tokens: [{ name: "me", token: "a-long-random-token-value", role: "admin" }] },
 * });
 * const res = await app.request("/v1/health");
 * console.log(await res.json()); // { ok: true, version: "0.1.0" }
 * ```
 */
export function createApp(kernel: ControlKernel, options: CreateAppOptions): ApiApp {
  const verifier = options.tokens instanceof TokenVerifier
    ? options.tokens
    : new TokenVerifier(options.tokens);
  const maxBytes = options.maxBodyBytes;
  const version = options.version ?? denoConfig.version;
  const report = options.onError ?? ((error: unknown) => {
    const message = error instanceof Error ? error.message : String(error);
    console.error(`libos api: unexpected error: ${message.split("\n", 1)[0]}`);
  });
  let openapi: Record<string, unknown> | undefined;
  // Every event stream of the app takes what it sends from one reader of the store.
  const feed = new StreamFeed(kernel, { pollMs: options.stream?.pollMs });

  const app = new Hono<ApiEnv>();
  app.onError((error, c) => {
    const mapped = toErrorResponse(error);
    if (mapped.unexpected) report(error);
    for (const [name, value] of Object.entries(mapped.headers)) c.header(name, value);
    return c.json(mapped.body, mapped.status);
  });
  app.notFound((c) => {
    throw new ApiError(404, `Cannot find route ${c.req.method} ${_clip(c.req.path)}`);
  });
  app.use("*", async (c, next) => {
    await next();
    c.header("Cache-Control", "no-store");
    c.header("X-Content-Type-Options", "nosniff");
  });
  app.use(
    "*",
    requestGuard({
      port: options.port,
      allowedHosts: options.allowedHosts,
      allowedOrigins: options.allowedOrigins,
    }),
  );

  const auth = (right: Right, action: string) =>
    [
      authenticate(verifier),
      authorize(right, action),
    ] as const;
  const by = (c: Context<ApiEnv>) => `api:${c.get("principal").name}`;
  const body = (c: Context<ApiEnv>, action: string) =>
    readJsonBody(c.req.raw, action, { maxBytes });

  app.get("/v1/health", async (c) => {
    const sandbox = await kernel.execSandboxStatus?.();
    return c.json({
      ok: true,
      version,
      ...(sandbox ? { execSandbox: sandbox.mode } : {}),
      ...(kernel.cellPolicy ? { cells: kernel.cellPolicy } : {}),
      ...(kernel.runQueue ? { runQueue: kernel.runQueue } : {}),
    });
  });

  app.get("/v1/openapi.json", (c) => c.json(openapi ??= openApiDocument({ version })));

  app.post("/v1/images", ...auth("write", "register an image"), async (c) => {
    const action = "register an image";
    const raw = await body(c, action);
    const bundle = raw !== null && typeof raw === "object" && !Array.isArray(raw) &&
      "image" in raw;
    const { image, entrySource } = bundle
      ? validate(ImageBundleSchema, raw, action)
      : { image: validate(AgentImageSchema, raw, action), entrySource: undefined };
    const registered = await kernel.images.register(image, { entrySource });
    return c.json({ digest: registered.digest, tag: registered.tag }, 201);
  });

  app.get("/v1/images", ...auth("read", "list images"), async (c) => {
    return c.json({ images: await kernel.images.list() });
  });

  app.post("/v1/processes", ...auth("write", "spawn a process"), async (c) => {
    const action = "spawn a process";
    const request = validate(SpawnRequestSchema, await body(c, action), action);
    let policy: PolicyRule[];
    try {
      policy = parsePolicy(request.policy, "operator");
    } catch (error) {
      throw new ApiError(400, `Cannot ${action}: ${_lowerFirst((error as Error).message)}`);
    }
    const model = request.model === undefined
      ? undefined
      : normalizeModelSpec(request.model, { cwd: options.cwd });
    const record = await kernel.spawn({
      image: request.image,
      workspace: request.workspace,
      input: request.input,
      capabilities: request.capabilities,
      policy,
      model,
      cwd: request.cwd,
      // Its process tree is this token's (a cell may be shared per principal).
      principal: `api:${c.get("principal").name}`,
    }, { start: true });
    // Started unless made `running` (starting twice is harmless).
    if (record.state !== "running") kernel.start(record.pid);
    return c.json({ pid: record.pid }, 201);
  });

  app.get("/v1/processes", ...auth("read", "list processes"), async (c) => {
    const action = "list processes";
    const query = validate(ProcessListQuerySchema, c.req.query(), action);
    // A page, so a listing costs the same however many processes have ended;
    // `next` says more follow (one more is read to know).
    const limit = _limit(query.limit, action);
    const processes = await kernel.processes.list({
      after: query.after,
      limit: limit + 1,
      where: (p) =>
        (query.state === undefined || p.state === query.state) &&
        (query.image === undefined || p.image === query.image) &&
        (query.ppid === undefined || p.ppid === query.ppid),
    });
    if (processes.length <= limit) return c.json({ processes });
    const page = processes.slice(0, limit);
    return c.json({ processes: page, next: page.at(-1)!.pid });
  });

  app.get("/v1/processes/:pid", ...auth("read", "read a process"), async (c) => {
    const pid = _pid(c.req.param("pid"), "read process");
    const record = await kernel.processes.get(pid);
    if (!record) throw new ApiError(404, `Cannot find process ${pid}`);
    const [children, caps, pending] = await Promise.all([
      kernel.processes.children(pid),
      kernel.caps.list(pid, kernel.now()),
      kernel.humans ? kernel.humans.pending() : Promise.resolve([]),
    ]);
    return c.json({
      ...record,
      children,
      capabilities: caps.map((cap) => formatCapability(cap)),
      pending: pending.filter((request) => request.pid === pid),
    });
  });

  app.get("/v1/processes/:pid/transcript", ...auth("read", "read a transcript"), async (c) => {
    const pid = _pid(c.req.param("pid"), "read transcript");
    if (!(await kernel.processes.get(pid))) throw new ApiError(404, `Cannot find process ${pid}`);
    if (!kernel.transcript) throw new ApiError(501, "Cannot read transcripts: not available");
    return c.json({ pid, transcript: await kernel.transcript(pid) });
  });

  app.get("/v1/processes/:pid/events", ...auth("read", "read process events"), async (c) => {
    const pid = _pid(c.req.param("pid"), "read process events");
    if (!(await kernel.processes.get(pid))) throw new ApiError(404, `Cannot find process ${pid}`);
    return c.json({ pid, events: await Array.fromAsync(kernel.processes.events({ pid })) });
  });

  app.post("/v1/processes/:pid/signal", ...auth("write", "signal a process"), async (c) => {
    const pid = _pid(c.req.param("pid"), "signal process");
    const action = `signal process ${pid}`;
    const { signal } = validate(SignalRequestSchema, await body(c, action), action);
    const record = await kernel.processes.get(pid);
    if (!record) throw new ApiError(404, `Cannot ${action}: no such process`);
    if (END_STATES.has(record.state)) {
      throw new ApiError(409, `Cannot ${action}: it already ended (${record.state})`);
    }
    await kernel.signal(pid, signal, { by: by(c) });
    const after = await kernel.processes.get(pid);
    return c.json({ pid, state: after?.state ?? record.state });
  });

  app.get("/v1/human", ...auth("read", "list human requests"), async (c) => {
    return c.json({ requests: kernel.humans ? await kernel.humans.pending() : [] });
  });

  app.post("/v1/human/:id", ...auth("answer", "answer a human request"), async (c) => {
    const id = c.req.param("id");
    const action = `answer human request "${_clip(id)}"`;
    const answer = validate(HumanAnswerSchema, await body(c, action), action);
    const humans = kernel.humans;
    if (!humans) throw new ApiError(501, `Cannot ${action}: this kernel has no human queue`);
    const request = /^[A-Za-z0-9_-]{1,100}$/.test(id) ? await humans.get(id) : undefined;
    if (!request) throw new ApiError(404, `Cannot ${action}: no such request`);
    if (request.state !== "pending") {
      throw new ApiError(409, `Cannot ${action}: it was already answered`);
    }
    return c.json(await humans.answer(id, answer, { by: by(c) }));
  });

  app.post("/v1/events", ...auth("write", "post an event"), async (c) => {
    const action = "post an event";
    const event = validate(EventPostSchema, await body(c, action), action);
    if (!kernel.postEvent) {
      throw new ApiError(501, `Cannot ${action}: this kernel has no event support`);
    }
    const { seq } = await kernel.postEvent(event.topic, event.data);
    return c.json({ seq }, 201);
  });

  app.get("/v1/events/stream", ...auth("read", "stream events"), (c) => {
    const action = "stream events";
    const query = validate(StreamQuerySchema, c.req.query(), action);
    const kinds = query.kind === undefined ? undefined : _kinds(query.kind, action);
    const resume = c.req.header("last-event-id") ?? query.after;
    const stream = eventStream(kernel, {
      after: resume === undefined || resume === "" ? undefined : parseEventId(resume),
      pid: query.pid,
      kinds,
      feed,
      pollMs: options.stream?.pollMs,
      heartbeatMs: options.stream?.heartbeatMs,
      signal: options.signal,
    });
    return c.body(stream, 200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "X-Accel-Buffering": "no",
    });
  });

  app.get("/v1/audit", ...auth("read", "list audit records"), async (c) => {
    const action = "list audit records";
    const query = validate(AuditQuerySchema, c.req.query(), action);
    const limit = _limit(query.limit, action);
    const records = [];
    for await (
      const record of kernel.audit.list({
        pid: query.pid,
        decision: query.decision,
        afterSeq: query.after,
        limit,
      })
    ) records.push(record);
    return c.json({ records });
  });

  app.get("/v1/audit/verify", ...auth("read", "verify the audit trail"), async (c) => {
    return c.json(await kernel.audit.verify());
  });

  app.get("/v1/objects", ...auth("read", "list objects"), async (c) => {
    const action = "list objects";
    const query = validate(ObjectListQuerySchema, c.req.query(), action);
    const objects = await kernel.objects.list(query.namespace, {
      prefix: query.prefix,
      limit: _limit(query.limit, action),
    });
    return c.json({ objects });
  });

  app.get("/v1/objects/*", ...auth("read", "read an object"), async (c) => {
    const rest = new URL(c.req.url).pathname.slice("/v1/objects/".length);
    const slash = rest.lastIndexOf("/");
    if (slash <= 0 || slash === rest.length - 1) {
      throw new ApiError(
        404,
        `Cannot find route GET ${_clip(c.req.path)}: expected /v1/objects/NAMESPACE/NAME`,
      );
    }
    return c.json(await kernel.objects.get(rest.slice(0, slash), rest.slice(slash + 1)));
  });

  app.get("/v1/tokens", ...auth("admin", "list tokens"), (c) => {
    return c.json({ tokens: verifier.principals() });
  });

  _methodNotAllowed(app);
  return app;
}

/** Answers 405 with `Allow` for a known path asked with another method. */
function _methodNotAllowed(app: Hono<ApiEnv>): void {
  const methods = new Map<string, Set<string>>();
  for (const route of API_ROUTES) {
    const path = route.path.startsWith("/v1/objects/")
      ? "/v1/objects/*"
      : route.path.replace(/\{(\w+)\}/g, ":$1");
    const set = methods.get(path) ?? new Set<string>();
    set.add(route.method);
    if (route.method === "GET") set.add("HEAD");
    methods.set(path, set);
  }
  for (const [path, allowed] of methods) {
    app.all(path, (c) => {
      const allow = [...allowed].join(", ");
      throw new ApiError(405, `Cannot ${c.req.method} ${_clip(c.req.path)}: allowed ${allow}`, {
        headers: { Allow: allow },
      });
    });
  }
}

function _pid(text: string, action: string): number {
  if (!/^[1-9][0-9]{0,14}$/.test(text)) {
    throw new ApiError(400, `Cannot ${action} "${_clip(text)}": expected a positive integer pid`);
  }
  return Number(text);
}

function _kinds(text: string, action: string): StreamKind[] {
  const kinds = text.split(",").map((k) => k.trim()).filter((k) => k !== "");
  for (const kind of kinds) {
    if (!(STREAM_KINDS as readonly string[]).includes(kind)) {
      throw new ApiError(
        400,
        `Cannot ${action}: kind "${_clip(kind)}" is not one of ${STREAM_KINDS.join(", ")}`,
      );
    }
  }
  if (kinds.length === 0) throw new ApiError(400, `Cannot ${action}: kind is empty`);
  return kinds as StreamKind[];
}

function _limit(limit: number | undefined, action: string): number {
  if (limit === undefined) return LIST_LIMIT;
  if (limit > MAX_LIST_LIMIT) {
    throw new ApiError(400, `Cannot ${action}: limit: must be at most ${MAX_LIST_LIMIT}`);
  }
  return limit;
}

function _clip(text: string): string {
  return text.length > 100 ? `${text.slice(0, 99)}…` : text;
}

function _lowerFirst(text: string): string {
  return text.charAt(0).toLowerCase() + text.slice(1);
}
