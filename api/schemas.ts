/**
 * The zod schemas of the HTTP control API's request bodies and query
 * strings. The same schemas validate requests and generate
 * `GET /v1/openapi.json`. Every object is strict: an unknown field is a 400.
 *
 * @module
 */

import { z } from "zod";
import type { AuditDecision } from "../broker/audit.ts";
import { parseDuration } from "../broker/capability.ts";
import { type AgentImage, AgentImageSchema, MAX_SOURCE_BYTES } from "../runtime/image.ts";
import type { ProcessState } from "../runtime/process_table.ts";
import { ApiError, type ErrorBody } from "./errors.ts";
import { describeIssue, issueMessage } from "../broker/schema_errors.ts";
export { describeIssue };

/** Largest JSON, in bytes, of a value stored inside one record (process input, answers, event data). */
export const MAX_VALUE_JSON_BYTES = 32 * 1024;

const PROCESS_STATES: readonly [ProcessState, ...ProcessState[]] = [
  "created",
  "runnable",
  "running",
  "blocked",
  "paused",
  "exited",
  "failed",
  "killed",
] as const;

/** The signals `POST /v1/processes/:pid/signal` delivers. */
export const SIGNALS = ["pause", "resume", "interrupt", "terminate", "kill"] as const;

/** The human decisions on a permission request. */
export const DECISIONS = ["allow_once", "allow_always", "deny_once", "deny_always"] as const;

/** The kinds of records `GET /v1/events/stream` sends. */
export const STREAM_KINDS = ["transition", "human", "audit"] as const;

function _jsonValue(what: string) {
  return z.unknown().superRefine((value, ctx) => {
    let text: string | undefined;
    try {
      text = JSON.stringify(value);
    } catch {
      text = undefined;
    }
    const bytes = text === undefined ? 0 : new TextEncoder().encode(text).length;
    if (bytes > MAX_VALUE_JSON_BYTES) {
      ctx.addIssue({
        code: "custom",
        message: `${what} is ${bytes} bytes of JSON, over the limit of ${MAX_VALUE_JSON_BYTES}`,
      });
    }
  });
}

function _text(max: number) {
  return z.string().min(1, { error: "must not be empty" }).max(max, {
    error: `must be at most ${max} characters`,
  });
}

const PID = z.string().regex(/^[1-9][0-9]{0,14}$/, { error: "expected a positive integer" })
  .transform(Number);
const COUNT = z.string().regex(/^(0|[1-9][0-9]{0,14})$/, {
  error: "expected a non-negative integer",
}).transform(Number);

/** The body of `POST /v1/images` for an image with a module entry. */
export interface ImageBundle {
  /** The image document. */
  image: AgentImage;
  /** Source of its entry module. */
  entrySource?: string;
}

/** The body of `POST /v1/processes`. */
export interface SpawnRequest {
  /** `name@version` or digest of a registered image. */
  image: string;
  /** The workspace root on the server's host. */
  workspace: string;
  /** The process's input. */
  input?: unknown;
  /** Capabilities in text form (default: the image's ceiling). */
  capabilities?: string[];
  /** Operator policy rules: pattern to decision. */
  policy?: Record<string, "allow" | "deny" | "ask">;
  /** Model spec: `scripted:FILE` or `openai:NAME`. */
  model?: string;
  /** Working directory, relative to the workspace. */
  cwd?: string;
}

/** The body of `POST /v1/processes/:pid/signal`. */
export interface SignalRequest {
  /** The signal. */
  signal: typeof SIGNALS[number];
}

/** The body of `POST /v1/human/:id`. */
export interface HumanAnswerRequest {
  /** For a permission request. */
  decision?: typeof DECISIONS[number];
  /** For a question: a typed answer. */
  answer?: unknown;
  /** For `allow_always`: a duration such as `10m`. */
  ttl?: string;
  /** When given, must equal the asked operation's argument digest. */
  argsDigest?: string;
}

/** The body of `POST /v1/events`. */
export interface EventPost {
  /** The topic. */
  topic: string;
  /** The event's data. */
  data?: unknown;
}

/** The query of `GET /v1/processes`. */
export interface ProcessListQuery {
  /** Only processes in this state. */
  state?: ProcessState;
  /** Only processes of this image tag. */
  image?: string;
  /** Only children of this pid. */
  ppid?: number;
  /** Only processes with a greater pid (the last pid of the page before). */
  after?: number;
  /** At most this many processes (default 100, at most 1000). */
  limit?: number;
}

/** The query of `GET /v1/audit`. */
export interface AuditQuery {
  /** Only records of this pid. */
  pid?: number;
  /** Only records with this decision (`deny`: every refusal). */
  decision?: AuditDecision;
  /** Only records after this seq. */
  after?: number;
  /** At most this many records. */
  limit?: number;
}

/** The query of `GET /v1/events/stream`. */
export interface StreamQuery {
  /** Only records of this pid. */
  pid?: number;
  /** Comma-separated kinds. */
  kind?: string;
  /** Resume after this event id. */
  after?: string;
}

/** The query of `GET /v1/objects`. */
export interface ObjectListQuery {
  /** The namespace. */
  namespace: string;
  /** Only names starting with this text. */
  prefix?: string;
  /** At most this many objects. */
  limit?: number;
}

/** `POST /v1/images` with a module entry: the image and its entry module's source. */
export const ImageBundleSchema: z.ZodType<ImageBundle> = z.strictObject({
  image: AgentImageSchema,
  entrySource: z.string().max(MAX_SOURCE_BYTES, { error: "must be at most 1 MiB" }).optional()
    .describe("Source of the entry module, for an image whose entry is a module path"),
});

/**
 * `POST /v1/images`: an image document, or `{ image, entrySource }` for an
 * image whose entry is a module. The two are told apart by the `image`
 * member, which an image document never has.
 */
export const ImageUploadSchema: z.ZodType<ImageBundle | AgentImage> = z.union([
  ImageBundleSchema,
  AgentImageSchema,
]);

/** `POST /v1/processes`. */
export const SpawnRequestSchema: z.ZodType<SpawnRequest> = z.strictObject({
  image: _text(200).describe("`name@version` or digest of a registered image"),
  workspace: _text(4096).describe(
    "The workspace root on the server's host (relative paths resolve against the server's working directory)",
  ),
  input: _jsonValue("input").optional().describe("The process's input"),
  capabilities: z.array(_text(1000)).max(200).optional().describe(
    "Capabilities in text form, within the image's ceiling (default: the ceiling)",
  ),
  policy: z.record(_text(1000), z.enum(["allow", "deny", "ask"])).optional().describe(
    "Operator policy rules: pattern to decision",
  ),
  model: _text(4096).optional().describe("Model spec: scripted:FILE or openai:NAME"),
  cwd: _text(4096).optional().describe("Working directory, relative to the workspace"),
});

/** `POST /v1/processes/:pid/signal`. */
export const SignalRequestSchema: z.ZodType<SignalRequest> = z.strictObject({
  signal: z.enum(SIGNALS),
});

/** `POST /v1/human/:id`. */
export const HumanAnswerSchema: z.ZodType<HumanAnswerRequest> = z.strictObject({
  decision: z.enum(DECISIONS).optional().describe("For a permission request"),
  answer: _jsonValue("answer").optional().describe("For a question: a typed answer"),
  ttl: z.string().max(32).optional().describe("For allow_always: a duration such as 10m"),
  argsDigest: z.string().regex(/^[0-9a-f]{64}$/, { error: "expected 64 lowercase hex digits" })
    .optional().describe(
      "When given, must equal the argument digest of the operation asked for (approve exactly what was shown)",
    ),
}).superRefine((body, ctx) => {
  if (body.decision === undefined && body.answer === undefined) {
    ctx.addIssue({ code: "custom", message: "expected a decision or an answer" });
  }
  if (body.ttl !== undefined) {
    if (body.decision !== "allow_always") {
      ctx.addIssue({
        code: "custom",
        path: ["ttl"],
        message: 'only an "allow_always" decision takes a ttl',
      });
    } else {
      try {
        parseDuration(body.ttl);
      } catch {
        ctx.addIssue({
          code: "custom",
          path: ["ttl"],
          message: `"${body.ttl}" is not a duration such as 30s, 10m or 2h`,
        });
      }
    }
  }
});

/** `POST /v1/events`. */
export const EventPostSchema: z.ZodType<EventPost> = z.strictObject({
  topic: z.string().regex(/^[A-Za-z0-9._:/-]{1,200}$/, {
    error: 'expected 1 to 200 letters, digits, ".", "_", ":", "/" or "-"',
  }),
  data: _jsonValue("data").optional(),
});

/** Query of `GET /v1/processes`. */
export const ProcessListQuerySchema: z.ZodType<ProcessListQuery> = z.strictObject({
  state: z.enum(PROCESS_STATES).optional(),
  image: _text(200).optional().describe("Only processes of this image tag"),
  ppid: PID.optional().describe("Only children of this pid"),
  after: COUNT.optional().describe("Only processes with a greater pid (the last of a page)"),
  limit: PID.optional().describe("At most this many processes (default 100, at most 1000)"),
});

/** Query of `GET /v1/audit`. */
export const AuditQuerySchema: z.ZodType<AuditQuery> = z.strictObject({
  pid: PID.optional().describe("Only records of this pid"),
  decision: z.enum(["allow", "deny", "ask"]).optional().describe(
    "Only records with this decision (deny: every refusal)",
  ),
  after: COUNT.optional().describe("Only records after this seq"),
  limit: PID.optional().describe("At most this many records (default 100, at most 1000)"),
});

/** Query of `GET /v1/events/stream`. */
export const StreamQuerySchema: z.ZodType<StreamQuery> = z.strictObject({
  pid: PID.optional().describe("Only records of this pid"),
  kind: z.string().max(100).optional().describe(
    "Comma-separated kinds to send: transition, human, audit (default: all)",
  ),
  after: z.string().max(300).optional().describe(
    "Resume after this event id (as the Last-Event-ID header does)",
  ),
});

/** Query of `GET /v1/objects` (listing a namespace). */
export const ObjectListQuerySchema: z.ZodType<ObjectListQuery> = z.strictObject({
  namespace: _text(200).describe('The namespace, e.g. "shared/notes"'),
  prefix: z.string().max(200).optional().describe("Only names starting with this text"),
  limit: PID.optional().describe("At most this many objects (default 100, at most 1000)"),
});

/** The body of every error response. */
export const ErrorBodySchema: z.ZodType<ErrorBody> = z.strictObject({
  error: z.strictObject({ code: z.string(), message: z.string() }),
});

/**
 * Validates `value` with `schema`; on failure throws a 400 that names the
 * action and the first problem with its path, e.g.
 * `Cannot spawn a process: capabilities[0]: expected string, got number`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SignalRequestSchema, validate } from "./schemas.ts";
 * const body = validate(SignalRequestSchema, { signal: "kill" }, "signal process 3");
 * assert(body.signal === "kill");
 * ```
 */
export function validate<T extends z.ZodType>(
  schema: T,
  value: unknown,
  action: string,
): z.output<T> {
  const result = schema.safeParse(value, { error: issueMessage });
  if (result.success) return result.data;
  throw new ApiError(400, `Cannot ${action}: ${describeIssue(result.error.issues[0])}`);
}
