/**
 * The routes of the HTTP control API and the OpenAPI 3.1 document made
 * from them. Request bodies and query strings are described by the same
 * zod schemas (in `schemas.ts`) that validate them, through
 * `z.toJSONSchema`, so the document cannot drift from the server.
 *
 * @module
 */

import { z } from "zod";
import type { Right } from "./auth.ts";
import {
  AuditQuerySchema,
  ErrorBodySchema,
  EventPostSchema,
  HumanAnswerSchema,
  ImageUploadSchema,
  ObjectListQuerySchema,
  ProcessListQuerySchema,
  SignalRequestSchema,
  SpawnRequestSchema,
  StreamQuerySchema,
} from "./schemas.ts";

/** One route of the API. */
export interface RouteSpec {
  /** The HTTP method. */
  method: "GET" | "POST";
  /** The path in OpenAPI form, e.g. `/v1/processes/{pid}`. */
  path: string;
  /** One line on what it does. */
  summary: string;
  /** The right it needs; undefined for a route without authentication. */
  right?: Right;
  /** The schema of its JSON body. */
  body?: z.ZodType;
  /** The schema of its query string (an object of strings). */
  query?: z.ZodType;
  /** Its path parameters and what they are. */
  params?: Readonly<Record<string, string>>;
  /** Its success status. */
  status: 200 | 201;
  /** The media type of a success response (default `application/json`). */
  produces?: string;
}

/** Every route of the API. */
export const API_ROUTES: readonly RouteSpec[] = [
  { method: "GET", path: "/v1/health", summary: "Liveness and version", status: 200 },
  {
    method: "GET",
    path: "/v1/openapi.json",
    summary: "This document",
    status: 200,
  },
  {
    method: "POST",
    path: "/v1/images",
    summary: "Register an image (a document, or { image, entrySource } for a module entry)",
    right: "write",
    body: ImageUploadSchema,
    status: 201,
  },
  {
    method: "GET",
    path: "/v1/images",
    summary: "List registered images",
    right: "read",
    status: 200,
  },
  {
    method: "POST",
    path: "/v1/processes",
    summary: "Spawn a process and start it",
    right: "write",
    body: SpawnRequestSchema,
    status: 201,
  },
  {
    method: "GET",
    path: "/v1/processes",
    summary: "List processes",
    right: "read",
    query: ProcessListQuerySchema,
    status: 200,
  },
  {
    method: "GET",
    path: "/v1/processes/{pid}",
    summary: "A process with its children, capabilities and pending human requests",
    right: "read",
    params: { pid: "The process id" },
    status: 200,
  },
  {
    method: "GET",
    path: "/v1/processes/{pid}/transcript",
    summary: "The messages a process exchanged with its model",
    right: "read",
    params: { pid: "The process id" },
    status: 200,
  },
  {
    method: "GET",
    path: "/v1/processes/{pid}/events",
    summary: "The state transitions of a process, in order",
    right: "read",
    params: { pid: "The process id" },
    status: 200,
  },
  {
    method: "POST",
    path: "/v1/processes/{pid}/signal",
    summary: "Deliver a signal to a process",
    right: "write",
    params: { pid: "The process id" },
    body: SignalRequestSchema,
    status: 200,
  },
  {
    method: "GET",
    path: "/v1/human",
    summary: "Pending human requests, oldest first",
    right: "read",
    status: 200,
  },
  {
    method: "POST",
    path: "/v1/human/{id}",
    summary: "Answer a human request",
    right: "answer",
    params: { id: "The request id" },
    body: HumanAnswerSchema,
    status: 200,
  },
  {
    method: "POST",
    path: "/v1/events",
    summary: "Post an event on a topic",
    right: "write",
    body: EventPostSchema,
    status: 201,
  },
  {
    method: "GET",
    path: "/v1/events/stream",
    summary: "Server-sent events: transitions, human requests, audit records",
    right: "read",
    query: StreamQuerySchema,
    status: 200,
    produces: "text/event-stream",
  },
  {
    method: "GET",
    path: "/v1/audit",
    summary: "Audit records in seq order",
    right: "read",
    query: AuditQuerySchema,
    status: 200,
  },
  {
    method: "GET",
    path: "/v1/audit/verify",
    summary: "Verify the audit hash chain",
    right: "read",
    status: 200,
  },
  {
    method: "GET",
    path: "/v1/objects",
    summary: "List the objects of a namespace (without values)",
    right: "read",
    query: ObjectListQuerySchema,
    status: 200,
  },
  {
    method: "GET",
    path: "/v1/objects/{namespace}/{name}",
    summary: "One object; the namespace may span several path segments (shared/notes/n1)",
    right: "read",
    params: {
      namespace: 'The namespace, "/"-separated segments',
      name: "The object name (the last path segment)",
    },
    status: 200,
  },
  {
    method: "GET",
    path: "/v1/tokens",
    summary: "Configured token names and roles (never the tokens)",
    right: "admin",
    status: 200,
  },
];

/** Options of {@link openApiDocument}. */
export interface OpenApiOptions {
  /** The API's version (default `0.0.0`). */
  version?: string;
}

/**
 * The OpenAPI 3.1 document of {@link API_ROUTES}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { openApiDocument } from "./openapi.ts";
 * const doc = openApiDocument({ version: "1.2.3" }) as { paths: Record<string, unknown> };
 * assert("/v1/processes" in doc.paths);
 * ```
 */
export function openApiDocument(options: OpenApiOptions = {}): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of API_ROUTES) {
    const operation: Record<string, unknown> = {
      summary: route.summary,
      operationId: _operationId(route),
      responses: _responses(route),
    };
    if (route.right) {
      operation.security = [{ bearer: [] }];
      operation.description = `Needs the "${route.right}" right.`;
    } else operation.security = [];
    const parameters = [
      ...Object.entries(route.params ?? {}).map(([name, description]) => ({
        name,
        in: "path",
        required: true,
        description,
        schema: { type: "string" },
      })),
      ..._queryParameters(route.query),
    ];
    if (parameters.length) operation.parameters = parameters;
    if (route.body) {
      operation.requestBody = {
        required: true,
        content: { "application/json": { schema: _jsonSchema(route.body) } },
      };
    }
    (paths[route.path] ??= {})[route.method.toLowerCase()] = operation;
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "Agent libOS control API",
      version: options.version ?? "0.0.0",
      description:
        'Errors are { "error": { "code", "message" } }. Authenticate with "Authorization: Bearer <token>".',
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas: { Error: _jsonSchema(ErrorBodySchema) },
    },
    paths,
  };
}

function _operationId(route: RouteSpec): string {
  const words = route.path.replace(/^\/v1\//, "").replace(/[{}.]/g, "").split(/[/_-]/);
  return route.method.toLowerCase() +
    words.map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join("");
}

function _responses(route: RouteSpec): Record<string, unknown> {
  const error = {
    content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
  };
  const out: Record<string, unknown> = {
    [String(route.status)]: {
      description: "Success",
      content: { [route.produces ?? "application/json"]: {} },
    },
    "400": { description: "Malformed JSON, unknown fields or bad values", ...error },
    "403": { description: "A foreign host or origin, or a role without the right", ...error },
    "404": { description: "Not found", ...error },
    "405": { description: "Method not allowed", ...error },
  };
  if (route.right) out["401"] = { description: "No or a bad bearer token", ...error };
  if (route.body) {
    out["409"] = { description: "Conflict", ...error };
    out["413"] = { description: "The body is too large", ...error };
    out["415"] = { description: "The body is not application/json", ...error };
  }
  out["500"] = { description: "Internal error", ...error };
  out["501"] = { description: "Not implemented", ...error };
  return out;
}

function _queryParameters(query: z.ZodType | undefined): Record<string, unknown>[] {
  if (!query) return [];
  const schema = _jsonSchema(query) as {
    properties?: Record<string, Record<string, unknown>>;
    required?: string[];
  };
  return Object.entries(schema.properties ?? {}).map(([name, property]) => {
    const { description, ...rest } = property;
    return {
      name,
      in: "query",
      required: schema.required?.includes(name) ?? false,
      ...(description === undefined ? {} : { description }),
      schema: rest,
    };
  });
}

function _jsonSchema(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, {
    io: "input",
    unrepresentable: "any",
  }) as Record<string, unknown>;
  return rest;
}
