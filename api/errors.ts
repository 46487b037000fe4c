/**
 * Errors of the HTTP control API. Every error leaves the server as
 * `{ "error": { "code", "message" } }` with a status that says what went
 * wrong, and never with a stack:
 *
 * | status | code                     | when                                              |
 * | ------ | ------------------------ | ------------------------------------------------- |
 * | 400    | `invalid_request`        | malformed JSON, unknown fields, bad values, EINVAL |
 * | 401    | `unauthenticated`        | no bearer token, or an unknown one                |
 * | 403    | `forbidden`              | the role lacks the right, a foreign host or origin, EPERM |
 * | 404    | `not_found`              | unknown route, pid, image, request, object, ENOENT |
 * | 405    | `method_not_allowed`     | a known route with another method                 |
 * | 409    | `conflict`               | already answered, already ended, EEXIST           |
 * | 413    | `payload_too_large`      | a body over the limit                             |
 * | 415    | `unsupported_media_type` | a body that is not `application/json`             |
 * | 500    | `internal`               | anything else, with a generic message             |
 * | 501    | `not_implemented`        | ENOSYS                                            |
 *
 * @module
 */

import { SyscallError } from "../broker/errors.ts";

/** The HTTP statuses the API answers errors with. */
export type ErrorStatus = 400 | 401 | 403 | 404 | 405 | 409 | 413 | 415 | 500 | 501;

/** The stable error codes of the API, one per status. */
export const ERROR_CODES_BY_STATUS: Readonly<Record<ErrorStatus, string>> = {
  400: "invalid_request",
  401: "unauthenticated",
  403: "forbidden",
  404: "not_found",
  405: "method_not_allowed",
  409: "conflict",
  413: "payload_too_large",
  415: "unsupported_media_type",
  500: "internal",
  501: "not_implemented",
};

/** The body of every error response. */
export interface ErrorBody {
  /** The error. */
  error: {
    /** A stable code from {@link ERROR_CODES_BY_STATUS}. */
    code: string;
    /** One sentence naming the action and the value. */
    message: string;
  };
}

/** The message every unexpected failure is answered with. */
export const INTERNAL_MESSAGE = "The server failed to handle the request";

/**
 * An error the API answers with its own status and message.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ApiError } from "./errors.ts";
 * const error = new ApiError(404, 'Cannot find process 7');
 * assert(error.code === "not_found");
 * ```
 */
export class ApiError extends Error {
  /** The HTTP status. */
  readonly status: ErrorStatus;
  /** The stable error code of {@link status}. */
  readonly code: string;
  /** Extra response headers, e.g. `WWW-Authenticate` or `Allow`. */
  readonly headers: Readonly<Record<string, string>>;

  /** Creates an error with a status, a one-line message and optional response headers. */
  constructor(
    status: ErrorStatus,
    message: string,
    options: { headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = ERROR_CODES_BY_STATUS[status];
    this.headers = { ...options.headers };
  }
}

const SYSCALL_STATUS: Readonly<Record<string, ErrorStatus>> = {
  ENOENT: 404,
  EEXIST: 409,
  EPERM: 403,
  EINVAL: 400,
  ENOSYS: 501,
};

/** What {@link toErrorResponse} found: the status, the body, and whether it was unexpected. */
export interface MappedError {
  /** The HTTP status to answer with. */
  status: ErrorStatus;
  /** The JSON body. */
  body: ErrorBody;
  /** Extra response headers. */
  headers: Readonly<Record<string, string>>;
  /** True for a failure the API did not expect (answered 500 with a generic message). */
  unexpected: boolean;
}

/**
 * Maps any thrown value to an error response. An {@link ApiError} keeps
 * its status and message; a `SyscallError` maps by code (ENOENT 404,
 * EEXIST 409, EPERM 403, EINVAL 400, ENOSYS 501) with its message; any
 * other code or value becomes a 500 with a generic message, so no stack or
 * internal detail leaves the server.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SyscallError } from "../broker/errors.ts";
 * import { toErrorResponse } from "./errors.ts";
 * const { status, body } = toErrorResponse(new SyscallError("ENOENT", "Cannot find process 9"));
 * assert(status === 404 && body.error.code === "not_found");
 * ```
 */
export function toErrorResponse(error: unknown): MappedError {
  if (error instanceof ApiError) {
    return {
      status: error.status,
      body: errorBody(error.status, error.message),
      headers: error.headers,
      unexpected: false,
    };
  }
  if (error instanceof SyscallError) {
    const status = SYSCALL_STATUS[error.code];
    if (status !== undefined) {
      return {
        status,
        body: errorBody(status, _oneLine(error.message)),
        headers: {},
        unexpected: false,
      };
    }
  }
  return { status: 500, body: errorBody(500, INTERNAL_MESSAGE), headers: {}, unexpected: true };
}

/**
 * The JSON body of an error with `status` and `message`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { errorBody } from "./errors.ts";
 * assert(errorBody(409, "Cannot answer request x: already answered").error.code === "conflict");
 * ```
 */
export function errorBody(status: ErrorStatus, message: string): ErrorBody {
  return { error: { code: ERROR_CODES_BY_STATUS[status], message } };
}

function _oneLine(text: string): string {
  return text.split("\n", 1)[0].slice(0, 1000);
}
