/**
 * Bearer tokens and roles of the HTTP control API.
 *
 * Tokens come from `{ "tokens": [ { "name", "token", "role" } ] }`, read
 * from a file, given as an object, or taken from the `LIBOS_TOKENS`
 * environment variable (the same JSON). A presented token is hashed with
 * SHA-256 and compared with the hash of every configured token, byte by
 * byte without an early exit, so the time taken says nothing about how
 * much of a token was right or which one matched. Tokens are never logged
 * and never appear in an error message.
 *
 * Roles and their rights:
 *
 * | role       | read | answer | write | admin |
 * | ---------- | ---- | ------ | ----- | ----- |
 * | `admin`    | yes  | yes    | yes   | yes   |
 * | `operator` | yes  | yes    | yes   |       |
 * | `approver` | yes  | yes    |       |       |
 * | `viewer`   | yes  |        |       |       |
 *
 * `read` covers every `GET`, `answer` answering human requests, `write`
 * registering images, spawning, signalling and posting events, and
 * `admin` token administration.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { z } from "zod";
import { ApiError } from "./errors.ts";

/** The roles a token can have. */
export const ROLES = ["admin", "operator", "approver", "viewer"] as const;

/** One of {@link ROLES}. */
export type Role = typeof ROLES[number];

/** What a route needs. */
export type Right = "read" | "answer" | "write" | "admin";

/** The rights of each role. */
export const ROLE_RIGHTS: Readonly<Record<Role, readonly Right[]>> = {
  admin: ["read", "answer", "write", "admin"],
  operator: ["read", "answer", "write"],
  approver: ["read", "answer"],
  viewer: ["read"],
};

/** One configured token. */
export interface TokenEntry {
  /** Who holds it; recorded as `api:<name>` on what they do. */
  name: string;
  /** The secret. */
  token: string;
  /** What it may do. */
  role: Role;
}

/** The token file's shape. */
export interface TokenConfig {
  /** The tokens. */
  tokens: TokenEntry[];
}

/** Who made a request, once authenticated. */
export interface Principal {
  /** The token's name. */
  name: string;
  /** The token's role. */
  role: Role;
}

/** The Hono environment of the API: the authenticated principal. */
export interface ApiEnv {
  /** Request-scoped values. */
  Variables: {
    /** Set by {@link authenticate}. */
    principal: Principal;
  };
}

/** The environment variable tokens are read from when no file is given. */
export const TOKENS_ENV = "LIBOS_TOKENS";

/** The shortest token accepted. */
export const MIN_TOKEN_CHARS = 16;

/**
 * The zod schema of a token configuration: names of `[A-Za-z0-9._-]`,
 * tokens of 16 to 512 visible ASCII characters, known roles, no unknown
 * fields, at least one token, no name or token used twice.
 */
export const TokenConfigSchema: z.ZodType<TokenConfig> = z.strictObject({
  tokens: z.array(z.strictObject({
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, {
      error: 'expected 1 to 64 letters, digits, ".", "_" or "-"',
    }),
    token: z.string().min(MIN_TOKEN_CHARS, {
      error: `must be at least ${MIN_TOKEN_CHARS} characters`,
    }).max(512, { error: "must be at most 512 characters" }).regex(/^[\x21-\x7e]+$/, {
      error: "must be visible ASCII characters without spaces",
    }),
    role: z.enum(ROLES, { error: `expected one of ${ROLES.join(", ")}` }),
  })).min(1, { error: "must list at least one token" }),
}).superRefine((config, ctx) => {
  const names = new Set<string>();
  const secrets = new Set<string>();
  config.tokens.forEach((entry, i) => {
    if (names.has(entry.name)) {
      ctx.addIssue({
        code: "custom",
        path: ["tokens", i, "name"],
        message: `the name "${entry.name}" is used twice`,
      });
    }
    if (secrets.has(entry.token)) {
      ctx.addIssue({
        code: "custom",
        path: ["tokens", i, "token"],
        message: "the same token is listed twice",
      });
    }
    names.add(entry.name);
    secrets.add(entry.token);
  });
});

/**
 * Validates a token configuration. Throws an error naming `source` and the
 * first problem (never a token's value).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseTokenConfig } from "./auth.ts";
 * const config = parseTokenConfig({
 *   tokens: [{ name: "ci", token: "0123456789abcdef-ci", role: "viewer" }],
 * });
 * assert(config.tokens[0].role === "viewer");
 * ```
 */
export function parseTokenConfig(value: unknown, source = "the token configuration"): TokenConfig {
  const result = TokenConfigSchema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = issue.path.map((p) => typeof p === "number" ? `[${p}]` : `.${String(p)}`)
    .join("").replace(/^\./, "");
  const message = issue.code === "unrecognized_keys"
    ? `unknown field${issue.keys.length > 1 ? "s" : ""} ${
      issue.keys.map((k) => `"${k}"`).join(", ")
    }`
    : issue.code === "invalid_type"
    ? `expected ${issue.expected}`
    : issue.message;
  throw new Error(`Cannot load tokens from ${source}: ${path ? `${path}: ` : ""}${message}`);
}

/**
 * Loads the token configuration from a file path, an object, or (with no
 * argument) the `LIBOS_TOKENS` environment variable.
 *
 * @example
 * ```ts ignore
 * import { loadTokens } from "./auth.ts";
 * const config = await loadTokens("tokens.json");
 * ```
 */
export async function loadTokens(source?: string | TokenConfig): Promise<TokenConfig> {
  if (typeof source === "object") return parseTokenConfig(source);
  if (source === undefined) {
    const text = Deno.env.get(TOKENS_ENV);
    if (text === undefined || text.trim() === "") {
      throw new Error(
        `Cannot load tokens: no token file was given and ${TOKENS_ENV} is not set`,
      );
    }
    return parseTokenConfig(_parseJson(text, TOKENS_ENV), TOKENS_ENV);
  }
  let text: string;
  try {
    text = await Deno.readTextFile(source);
  } catch (error) {
    const why = error instanceof Deno.errors.NotFound ? "no such file" : (error as Error).message;
    throw new Error(`Cannot load tokens from "${source}": ${why}`);
  }
  return parseTokenConfig(_parseJson(text, `"${source}"`), `"${source}"`);
}

function _parseJson(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`Cannot load tokens from ${source}: invalid JSON`);
  }
}

/**
 * Checks presented bearer tokens against a configuration in constant time.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TokenVerifier } from "./auth.ts";
 * const verifier = new TokenVerifier({
 *   tokens: [{ name: "ops", token: "ops-token-0123456789", role: "operator" }],
 * });
 * assert((await verifier.verify("ops-token-0123456789"))?.name === "ops");
 * assert((await verifier.verify("ops-token-0123456780")) === undefined);
 * ```
 */
export class TokenVerifier {
  #principals: Principal[];
  #hashes: Uint8Array[];

  /** Validates `config` and hashes its tokens. */
  constructor(config: TokenConfig) {
    const valid = parseTokenConfig(config);
    this.#principals = valid.tokens.map(({ name, role }) => ({ name, role }));
    this.#hashes = valid.tokens.map((entry) => _sha256(entry.token));
  }

  /** The configured principals (names and roles, never tokens). */
  principals(): Principal[] {
    return this.#principals.map((p) => ({ ...p }));
  }

  /** The principal `token` belongs to, or undefined. */
  verify(token: string): Promise<Principal | undefined> {
    const presented = _sha256(token);
    const hashes = this.#hashes;
    let found = -1;
    for (let i = 0; i < hashes.length; i++) {
      let diff = 0;
      for (let j = 0; j < presented.length; j++) diff |= presented[j] ^ hashes[i][j];
      found = diff === 0 ? i : found;
    }
    return Promise.resolve(found < 0 ? undefined : { ...this.#principals[found] });
  }
}

/**
 * Hashed in place: every request is verified, and under load an async
 * `crypto.subtle` digest held the host's event loop longer than the
 * hashing itself takes.
 */
function _sha256(text: string): Uint8Array {
  return createHash("sha256").update(text).digest();
}

const CHALLENGE = { "WWW-Authenticate": 'Bearer realm="libos"' };

/**
 * Middleware that requires `Authorization: Bearer <token>` with a known
 * token and stores its {@link Principal} as `c.var.principal`; otherwise
 * the request fails with 401.
 *
 * @example
 * ```ts ignore
 * app.use("/v1/*", authenticate(verifier));
 * ```
 */
export function authenticate(verifier: TokenVerifier): MiddlewareHandler<ApiEnv> {
  return async (c, next) => {
    const header = c.req.header("authorization");
    if (header === undefined) {
      throw new ApiError(401, "Cannot authenticate the request: no bearer token was sent", {
        headers: CHALLENGE,
      });
    }
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
    if (!match) {
      throw new ApiError(
        401,
        'Cannot authenticate the request: expected "Authorization: Bearer <token>"',
        { headers: CHALLENGE },
      );
    }
    const principal = await verifier.verify(match[1]);
    if (!principal) {
      throw new ApiError(401, "Cannot authenticate the request: the token is not valid", {
        headers: CHALLENGE,
      });
    }
    c.set("principal", principal);
    await next();
  };
}

/**
 * Middleware that requires the authenticated principal's role to have
 * `right`; otherwise the request fails with 403 naming `action`.
 *
 * @example
 * ```ts ignore
 * app.post("/v1/processes", authorize("write", "spawn a process"), handler);
 * ```
 */
export function authorize(right: Right, action: string): MiddlewareHandler<ApiEnv> {
  return async (c, next) => {
    const principal = c.get("principal");
    if (!principal || !ROLE_RIGHTS[principal.role].includes(right)) {
      throw new ApiError(
        403,
        `Cannot ${action}: the role "${principal?.role ?? "none"}" lacks the "${right}" right`,
      );
    }
    await next();
  };
}
