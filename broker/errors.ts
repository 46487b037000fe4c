/**
 * Error codes of the syscall ABI (SPEC section 6) and the error type that
 * carries them from a provider, through the broker, to the program.
 *
 * @module
 */

/** The error codes a syscall can fail with. */
export const ERROR_CODES = [
  "EPERM",
  "EINVAL",
  "ENOENT",
  "EEXIST",
  "ETIMEDOUT",
  "EBUDGET",
  "EINTR",
  "EUNCERTAIN",
  "ENOSYS",
] as const;

/** One of {@link ERROR_CODES}. */
export type ErrorCode = typeof ERROR_CODES[number];

/**
 * A failed syscall. The broker turns it into
 * `{ id, ok: false, error: { code, message } }`; the worker-side libc turns
 * that back into a `SyscallError` thrown to the program.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SyscallError } from "./errors.ts";
 * const err = new SyscallError("EPERM", 'Cannot read file "x": outside the granted scope');
 * assert(err.code === "EPERM");
 * ```
 */
export class SyscallError extends Error {
  /** The ABI error code. */
  readonly code: ErrorCode;

  /** Creates an error with an ABI code and a one-line message. */
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = "SyscallError";
    this.code = code;
  }
}

/** True when `value` is one of the ABI error codes. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" &&
    (ERROR_CODES as readonly string[]).includes(value);
}

/**
 * Maps any thrown value to an ABI error: a {@link SyscallError} keeps its
 * code, Deno's filesystem errors map to `ENOENT`/`EEXIST`/`EPERM`, anything
 * else becomes `EINVAL` with its message.
 */
export function toSyscallError(error: unknown): SyscallError {
  if (error instanceof SyscallError) return error;
  if (error instanceof Deno.errors.NotFound) {
    return new SyscallError("ENOENT", error.message);
  }
  if (error instanceof Deno.errors.AlreadyExists) {
    return new SyscallError("EEXIST", error.message);
  }
  if (
    error instanceof Deno.errors.PermissionDenied ||
    error instanceof Deno.errors.NotCapable
  ) {
    return new SyscallError("EPERM", error.message);
  }
  if (error instanceof Deno.errors.TimedOut) {
    return new SyscallError("ETIMEDOUT", error.message);
  }
  const message = error instanceof Error ? error.message : String(error);
  return new SyscallError("EINVAL", message);
}
