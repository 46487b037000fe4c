/**
 * Object Memory (SPEC section 9): typed JSON objects in namespaces, kept in
 * Deno KV. Every object carries a version, raised by one on each write in an
 * atomic check-and-set, and the pid of its last writer. Types are JSON
 * Schemas registered per namespace and enforced on every write.
 *
 * Authorization is not done here: the broker checks the caller's `obj:`
 * capabilities before it calls this store.
 *
 * Keys:
 * - `["obj", namespace, name]`: the record, with the value's JSON as UTF-8
 *   bytes inline when it fits in 60 KiB, or else a marker naming its chunks;
 * - `["obj_chunk", namespace, name, blob, i]`: the chunks of a large value,
 *   where `blob` is a random id of one write (so concurrent writers never
 *   share chunk keys), at most 60 KiB each;
 * - `["obj_type", namespace, name]`: an {@link ObjectType}.
 *
 * With a {@link StorageMeter}, every write charges the bytes of the object
 * it stores to the process named by `chargeTo` (in the write's own commit,
 * so a write over a quota stores nothing) and gives back the bytes of the
 * object it replaces to whoever was charged for that one; a delete gives
 * them back too.
 *
 * Each write is also available prepared, as a change of the store for a
 * commit of the caller's ({@link ObjectMemory.preparePut},
 * `prepareDelete`, `prepareDefineType`): the broker commits an `obj.*`
 * call's write with the call's journal and audit records.
 *
 * @module
 */

import { digestOf } from "../broker/digest.ts";
import { SyscallError } from "../broker/errors.ts";
import type { CapabilitySpec } from "../broker/capability.ts";
import { commitStoreChange, type StoreChange } from "../broker/store_change.ts";
import { CommittedEntries } from "./committed_entries.ts";
import {
  type CompiledSchema,
  compileSchema,
  MAX_SCHEMA_BYTES,
  SchemaError,
  type SchemaIssue,
} from "../broker/json_schema.ts";

/** An object as stored: its value and its metadata. */
export interface ObjectRecord {
  /** The namespace the object lives in. */
  namespace: string;
  /** The object's name within its namespace. */
  name: string;
  /** The JSON value. */
  value: unknown;
  /** The type the value satisfies, when the object is typed. */
  type?: string;
  /** 1 for a new object, one more on every write. */
  version: number;
  /** The pid of the last writer. */
  writer: number;
  /** Time of the last write, in milliseconds since the epoch. */
  updatedAt: number;
}

/** A type: a JSON Schema registered in a namespace. */
export interface ObjectType {
  /** The namespace the type is defined in. */
  namespace: string;
  /** The type's name within its namespace. */
  name: string;
  /** The JSON Schema values of this type must satisfy. */
  schema: Record<string, unknown>;
  /** The pid that defined it. */
  definedBy: number;
  /** Time of the definition, in milliseconds since the epoch. */
  definedAt: number;
}

/** Options for {@link ObjectMemory.prototype.put}. */
export interface PutOptions {
  /** The pid of the writer, recorded on the object. */
  writer: number;
  /** The type to enforce; by default the object's current type, if any. */
  type?: string;
  /** Write only when the object is at this version (0: does not exist). */
  expectedVersion?: number;
  /** The process whose storage quota pays for the object (none: an operator's write). */
  chargeTo?: number;
}

/** Options for {@link ObjectMemory.prototype.list}. */
export interface ListOptions {
  /** Only names starting with this text. */
  prefix?: string;
  /** At most this many records. */
  limit?: number;
}

/** Options for the {@link ObjectMemory} constructor. */
export interface ObjectMemoryOptions {
  /** The clock for `updatedAt` and `definedAt` (default `Date.now`). */
  now?: () => number;
  /** Charges stored bytes to processes (default: nothing is charged). */
  meter?: StorageMeter;
}

/** What charges the bytes of objects to processes' storage quotas. */
export interface StorageMeter {
  /**
   * The checked mutations that charge (positive) or give back (negative)
   * bytes to processes, as a change for the commit of the write they pay
   * for (told when it is committed); throws (`EBUDGET`) when a charge goes
   * over a quota.
   */
  prepareCharges(
    changes: readonly { pid: number; bytes: number }[],
    action: string,
  ): Promise<StoreChange<void>>;
}

/**
 * Bytes an object is charged for beyond its value: its record and keys, so
 * that many small objects count too.
 */
export const OBJECT_OVERHEAD_BYTES = 256;

/** Largest value JSON, in UTF-8 bytes, kept inline in the record. */
const INLINE_BYTES = 60 * 1024;
/** Size of one chunk of a larger value. */
const CHUNK_BYTES = 60 * 1024;
/** Chunks written per KV commit (a commit carries at most 800 KiB). */
const CHUNKS_PER_COMMIT = 12;
/** Largest value JSON accepted, in UTF-8 bytes. */
const MAX_VALUE_BYTES = 1024 * 1024;
/** Deepest nesting of arrays and objects accepted in a value. */
const MAX_DEPTH = 512;
/** Compiled schemas kept in memory. */
const SCHEMA_CACHE_SIZE = 256;

const NAME = /^[A-Za-z0-9._-]{1,200}$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;

/** The record as it is kept in KV. */
interface _Stored {
  namespace: string;
  name: string;
  type?: string;
  version: number;
  writer: number;
  updatedAt: number;
  /** UTF-8 bytes of the value's JSON. */
  size: number;
  /** The value's JSON, when inline. */
  data?: Uint8Array;
  /** The chunk set id, when chunked. */
  blob?: string;
  /** The number of chunks, when chunked. */
  chunks?: number;
  /** The process charged for the object's bytes, if any. */
  chargedTo?: number;
}

/** The metadata a write decides; the store adds the value's placement. */
type _Meta = Pick<_Stored, "type" | "version" | "writer" | "updatedAt" | "chargedTo">;

/** The type record as it is kept in KV: an ObjectType and its schema digest. */
interface _StoredType extends ObjectType {
  digest: string;
}

/** Where a large value's chunks were written. */
interface _Chunks {
  blob: string;
  chunks: number;
}

/**
 * Throws `EINVAL` unless `value` is a valid name of its kind. Namespaces are
 * segments of `[A-Za-z0-9._-]` separated by `/`, with no empty segment, no
 * `..` and at most 200 characters; object and type names are
 * `[A-Za-z0-9._-]{1,200}`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { validateName } from "./object_memory.ts";
 * validateName("namespace", "shared/notes");
 * let refused = false;
 * try {
 *   validateName("namespace", "../x");
 * } catch {
 *   refused = true;
 * }
 * assert(refused);
 * ```
 */
export function validateName(
  kind: "namespace" | "object" | "type",
  value: string,
): void {
  const label = kind === "namespace" ? "namespace" : `${kind} name`;
  if (typeof value !== "string") {
    throw new SyscallError("EINVAL", `Cannot use ${label}: expected a string`);
  }
  if (kind !== "namespace") {
    if (!NAME.test(value)) {
      throw new SyscallError(
        "EINVAL",
        `Cannot use ${label} ${_quote(value)}: expected 1 to 200 letters, digits, ".", "_" or "-"`,
      );
    }
    return;
  }
  const valid = value.length > 0 && value.length <= 200 &&
    !value.includes("..") &&
    value.split("/").every((segment) => SEGMENT.test(segment));
  if (!valid) {
    throw new SyscallError(
      "EINVAL",
      `Cannot use namespace ${
        _quote(value)
      }: expected "/"-separated segments of letters, digits, ".", "_" or "-", without "..", at most 200 characters`,
    );
  }
}

/** The capability every process holds on its own private object namespace, `proc/<pid>`. */
export function privateNamespace(pid: number): CapabilitySpec {
  return { resource: "obj", rights: ["read", "write", "delete"], scope: `proc/${pid}` };
}

/**
 * The typed object store over one KV handle.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ObjectMemory } from "./object_memory.ts";
 * const kv = await Deno.openKv(":memory:");
 * const objects = new ObjectMemory(kv);
 * await objects.defineType("shared", "note", {
 *   type: "object",
 *   properties: { title: { type: "string" } },
 *   required: ["title"],
 * }, { definer: 1 });
 * const record = await objects.put("shared", "n1", { title: "hi" }, { writer: 1, type: "note" });
 * assert(record.version === 1);
 * assert((await objects.get("shared", "n1")).type === "note");
 * kv.close();
 * ```
 */
export class ObjectMemory {
  #kv: Deno.Kv;
  #now: () => number;
  #meter: StorageMeter | undefined;
  #schemas = new Map<string, CompiledSchema>();
  /** Records this host last committed, without their values (see {@link preparePut}). */
  #committed = new CommittedEntries<Omit<_Stored, "data">>();

  /** Creates a store over `kv`. */
  constructor(kv: Deno.Kv, options: ObjectMemoryOptions = {}) {
    this.#kv = kv;
    this.#now = options.now ?? Date.now;
    this.#meter = options.meter;
  }

  /**
   * Writes an object: its version becomes the previous one plus one (1 when
   * new). With `type`, or when the object is already typed, the value must
   * satisfy that type's schema. Fails with `EEXIST` when `expectedVersion`
   * is given and differs from the current version, `ENOENT` for an
   * undefined type, `EINVAL` for a value that is not JSON, is larger than
   * 1 MiB or does not match its type, `EBUDGET` when it would take the
   * `chargeTo` process over a storage quota; nothing is stored then.
   */
  put(
    namespace: string,
    name: string,
    value: unknown,
    options: PutOptions,
  ): Promise<ObjectRecord> {
    return commitStoreChange(this.#kv, () => this.preparePut(namespace, name, value, options));
  }

  /**
   * Prepares {@link put} as a change of the store, checked against the
   * object and the quota counters as read now; fails as `put` does, with
   * nothing stored. A large value's chunks are written now, under keys no
   * record refers to until the change commits (`discard` removes them).
   */
  async preparePut(
    namespace: string,
    name: string,
    value: unknown,
    options: PutOptions,
  ): Promise<StoreChange<ObjectRecord>> {
    validateName("namespace", namespace);
    validateName("object", name);
    const action = `Cannot put object ${_quote(`${namespace}/${name}`)}`;
    if (options.type !== undefined) validateName("type", options.type);
    if (!Number.isSafeInteger(options.writer) || options.writer < 0) {
      throw new SyscallError(
        "EINVAL",
        `${action}: writer ${options.writer} is not a pid`,
      );
    }
    const expected = options.expectedVersion;
    if (
      expected !== undefined && (!Number.isSafeInteger(expected) || expected < 0)
    ) {
      throw new SyscallError(
        "EINVAL",
        `${action}: expected version ${expected} is not a non-negative integer`,
      );
    }
    const bytes = _encodeJson(value, action, MAX_VALUE_BYTES);
    const parsed = _decodeJson(bytes);
    if (options.type !== undefined) {
      await this.#enforce(namespace, options.type, parsed, action);
    }
    const prepare = (fresh: boolean) =>
      this.#prepareStore(namespace, name, bytes, action, { fresh }, async (current) => {
        const found = current?.version ?? 0;
        if (expected !== undefined && expected !== found) {
          throw new SyscallError(
            "EEXIST",
            `${action}: version ${expected} expected, found ${found}`,
          );
        }
        const type = options.type ?? current?.type;
        if (options.type === undefined && type !== undefined) {
          await this.#enforce(namespace, type, parsed, action);
        }
        return {
          type,
          version: found + 1,
          writer: options.writer,
          updatedAt: this.#now(),
          chargedTo: options.chargeTo,
        };
      });
    let change: StoreChange<_Stored>;
    try {
      change = await prepare(false);
    } catch (error) {
      if (!(error instanceof SyscallError)) throw error;
      // What this host last committed may be behind another host's write: refuse only from the store.
      change = await prepare(true);
    }
    return { ...change, result: _toRecord(change.result, parsed) };
  }

  /** Reads an object; `ENOENT` when there is none. */
  async get(namespace: string, name: string): Promise<ObjectRecord> {
    validateName("namespace", namespace);
    validateName("object", name);
    const action = `Cannot get object ${_quote(`${namespace}/${name}`)}`;
    const found = await this.#read(namespace, name, action);
    if (!found) throw new SyscallError("ENOENT", `${action}: not found`);
    return _toRecord(found.stored, _decodeJson(found.bytes));
  }

  /** Lists a namespace's objects, without their values, sorted by name. */
  async list(
    namespace: string,
    options: ListOptions = {},
  ): Promise<Omit<ObjectRecord, "value">[]> {
    validateName("namespace", namespace);
    const { prefix = "", limit } = options;
    if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 1)) {
      throw new SyscallError(
        "EINVAL",
        `Cannot list namespace ${_quote(namespace)}: limit ${limit} is not a positive integer`,
      );
    }
    // Names only hold these characters, so no other prefix can match.
    if (prefix !== "" && !NAME.test(prefix)) return [];
    const selector: Deno.KvListSelector = prefix === ""
      ? { prefix: ["obj", namespace] }
      : { start: ["obj", namespace, prefix], end: ["obj", namespace, `${prefix}\x7f`] };
    const out: Omit<ObjectRecord, "value">[] = [];
    for await (const entry of this.#kv.list<_Stored>(selector, { limit })) {
      out.push(_summary(entry.value));
    }
    return out;
  }

  /** Deletes an object and its chunks; `ENOENT` when there is none. */
  delete(namespace: string, name: string): Promise<void> {
    return commitStoreChange(this.#kv, () => this.prepareDelete(namespace, name));
  }

  /**
   * Prepares {@link delete} as a change of the store, checked against the
   * object as read now; `ENOENT` when there is none.
   */
  async prepareDelete(namespace: string, name: string): Promise<StoreChange<void>> {
    validateName("namespace", namespace);
    validateName("object", name);
    const key = ["obj", namespace, name];
    const action = `Cannot delete object ${_quote(`${namespace}/${name}`)}`;
    const current = await this.#committed.take(this.#kv, key, { fresh: true });
    const stored = current.value;
    if (!stored) throw new SyscallError("ENOENT", `${action}: not found`);
    const refund = await this.#charges(null, stored, action);
    return {
      result: undefined,
      apply: (op) => {
        op.check(current).delete(key);
        _deleteChunks(op, stored);
        refund?.apply(op);
      },
      committed: refund?.committed,
    };
  }

  /**
   * Registers a type: a JSON Schema in the subset `broker/json_schema.ts`
   * checks (`EINVAL` otherwise; `pattern`, `patternProperties` and
   * `format: "regex"` are refused, as no regular expression from a process
   * runs on the host). Defining it again with the same schema returns the
   * existing type; with another schema, `EEXIST`.
   */
  async defineType(
    namespace: string,
    name: string,
    schema: Record<string, unknown>,
    options: { definer: number },
  ): Promise<ObjectType> {
    return await commitStoreChange(
      this.#kv,
      () => this.prepareDefineType(namespace, name, schema, options),
    );
  }

  /**
   * Prepares {@link defineType} as a change of the store, checked against
   * the type as read now; fails as `defineType` does.
   */
  async prepareDefineType(
    namespace: string,
    name: string,
    schema: Record<string, unknown>,
    options: { definer: number },
  ): Promise<StoreChange<ObjectType>> {
    validateName("namespace", namespace);
    validateName("type", name);
    const action = `Cannot define type ${_quote(`${namespace}/${name}`)}`;
    if (schema === null || typeof schema !== "object" || Array.isArray(schema)) {
      throw new SyscallError("EINVAL", `${action}: the schema is not an object`);
    }
    if (!Number.isSafeInteger(options.definer) || options.definer < 0) {
      throw new SyscallError(
        "EINVAL",
        `${action}: definer ${options.definer} is not a pid`,
      );
    }
    const copy = _decodeJson(
      _encodeJson(schema, action, MAX_SCHEMA_BYTES, "schema"),
    ) as Record<string, unknown>;
    const digest = await digestOf(copy);
    try {
      this.#compile(namespace, name, copy, digest);
    } catch (error) {
      if (!(error instanceof SchemaError)) throw error;
      throw new SyscallError("EINVAL", `${action}: ${error.message}`);
    }
    const type: _StoredType = {
      namespace,
      name,
      schema: copy,
      definedBy: options.definer,
      definedAt: this.#now(),
      digest,
    };
    const change = await this.#prepareType(type, action);
    return { ...change, result: _publicType(change.result) };
  }

  /**
   * Copies every type and object of `from` into `to`, keeping versions,
   * writers and times (fork uses it). Objects of the same name in `to` are
   * replaced, so repeating an interrupted copy completes it. Fails with
   * `EEXIST`, before copying anything, when `to` defines a type of the same
   * name with another schema. The copies are charged to `options.chargeTo`
   * (`EBUDGET` over its quota), or to nobody. Returns the number of objects
   * copied.
   */
  async copyNamespace(
    from: string,
    to: string,
    options: { chargeTo?: number } = {},
  ): Promise<number> {
    validateName("namespace", from);
    validateName("namespace", to);
    const action = `Cannot copy namespace ${_quote(from)} to ${_quote(to)}`;
    if (from === to) {
      throw new SyscallError("EINVAL", `${action}: it is the same namespace`);
    }
    const types: _StoredType[] = [];
    for await (
      const entry of this.#kv.list<_StoredType>({ prefix: ["obj_type", from] })
    ) {
      const existing = await this.#kv.get<_StoredType>([
        "obj_type",
        to,
        entry.value.name,
      ]);
      if (existing.value && existing.value.digest !== entry.value.digest) {
        throw new SyscallError(
          "EEXIST",
          `${action}: type ${_quote(entry.value.name)} is defined there with another schema`,
        );
      }
      types.push(entry.value);
    }
    for (const type of types) {
      await commitStoreChange(
        this.#kv,
        () => this.#prepareType({ ...type, namespace: to }, action),
      );
    }
    let count = 0;
    for await (const entry of this.#kv.list<_Stored>({ prefix: ["obj", from] })) {
      const source = await this.#read(from, entry.value.name, action);
      if (!source) continue;
      const { type, version, writer, updatedAt } = source.stored;
      const chargedTo = options.chargeTo;
      await commitStoreChange(this.#kv, () =>
        this.#prepareStore(
          to,
          source.stored.name,
          source.bytes,
          action,
          { fresh: true },
          () => Promise.resolve({ type, version, writer, updatedAt, chargedTo }),
        ));
      count++;
    }
    return count;
  }

  /**
   * Prepares storing `bytes` as the value of an object: the record `decide`
   * makes from the current one replaces it (and its chunks) in one
   * check-and-set with the storage charges it moves. A large value's chunks
   * are written now, once the charges are known to fit, under a fresh blob
   * id; `discard` removes them when the change is not committed.
   *
   * The current record is the one this host last committed under that key
   * when it knows it (see `committed_entries.ts`), unless `fresh`: the
   * change's check of it then fails the commit when another host or path
   * wrote the object since, and the change is prepared again from the store.
   */
  async #prepareStore(
    namespace: string,
    name: string,
    bytes: Uint8Array,
    action: string,
    options: { fresh: boolean },
    decide: (current: _Stored | null) => Promise<_Meta>,
  ): Promise<StoreChange<_Stored>> {
    const key = ["obj", namespace, name];
    const current = await this.#committed.take(this.#kv, key, options);
    const meta = await decide(current.value);
    const charges = await this.#charges(
      { size: bytes.length, chargedTo: meta.chargedTo },
      current.value,
      action,
    );
    const chunks = bytes.length > INLINE_BYTES
      ? await this.#writeChunks(namespace, name, bytes)
      : undefined;
    const record: _Stored = {
      namespace,
      name,
      ...meta,
      size: bytes.length,
      ...(chunks ? chunks : { data: bytes }),
    };
    if (record.type === undefined) delete record.type;
    if (record.chargedTo === undefined) delete record.chargedTo;
    return {
      result: record,
      apply: (op) => {
        op.check(current).set(key, record);
        if (current.value) _deleteChunks(op, current.value);
        charges?.apply(op);
      },
      discard: chunks && (() => this.#dropChunks(namespace, name, chunks)),
      committed: (versionstamp) => {
        // Kept without the value: a write needs only the record's metadata.
        const { data: _, ...meta } = record;
        this.#committed.record(key, meta, versionstamp);
        charges?.committed?.(versionstamp);
      },
    };
  }

  /**
   * The storage charges of replacing `old` with `next` (either may be
   * absent): the new object's bytes to its payer, the old one's back to its
   * payer. Undefined when nothing is charged.
   */
  async #charges(
    next: Pick<_Stored, "size" | "chargedTo"> | null,
    old: Pick<_Stored, "size" | "chargedTo"> | null,
    action: string,
  ): Promise<StoreChange<void> | undefined> {
    const changes: { pid: number; bytes: number }[] = [];
    if (next?.chargedTo !== undefined) {
      changes.push({ pid: next.chargedTo, bytes: next.size + OBJECT_OVERHEAD_BYTES });
    }
    if (old?.chargedTo !== undefined) {
      changes.push({ pid: old.chargedTo, bytes: -(old.size + OBJECT_OVERHEAD_BYTES) });
    }
    if (!changes.length || !this.#meter) return undefined;
    return await this.#meter.prepareCharges(changes, action);
  }

  /** Writes a large value's chunks under a fresh blob id. */
  async #writeChunks(
    namespace: string,
    name: string,
    bytes: Uint8Array,
  ): Promise<_Chunks> {
    const blob = crypto.randomUUID();
    const chunks = Math.ceil(bytes.length / CHUNK_BYTES);
    try {
      for (let first = 0; first < chunks; first += CHUNKS_PER_COMMIT) {
        const op = this.#kv.atomic();
        const last = Math.min(chunks, first + CHUNKS_PER_COMMIT);
        for (let i = first; i < last; i++) {
          op.set(
            ["obj_chunk", namespace, name, blob, i],
            bytes.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES),
          );
        }
        await op.commit();
      }
    } catch (error) {
      await this.#dropChunks(namespace, name, { blob, chunks });
      throw error;
    }
    return { blob, chunks };
  }

  /** Removes chunks no record refers to. */
  async #dropChunks(
    namespace: string,
    name: string,
    chunks: _Chunks,
  ): Promise<void> {
    const op = this.#kv.atomic();
    _deleteChunks(op, { namespace, name, ...chunks });
    await op.commit();
  }

  /**
   * Reads a record and its value's bytes as one consistent pair, or null
   * when there is no such object. A read that races a write which removed
   * the chunks it was reading starts again.
   */
  async #read(
    namespace: string,
    name: string,
    action: string,
  ): Promise<{ stored: _Stored; bytes: Uint8Array } | null> {
    const key = ["obj", namespace, name];
    for (;;) {
      const entry = await this.#kv.get<_Stored>(key);
      const stored = entry.value;
      if (!stored) return null;
      if (stored.data) return { stored, bytes: stored.data };
      const bytes = await this.#readChunks(stored);
      if (bytes) return { stored, bytes };
      const again = await this.#kv.get<_Stored>(key);
      if (again.versionstamp === entry.versionstamp) {
        throw new SyscallError(
          "ENOENT",
          `${action}: the stored value is missing chunks`,
        );
      }
    }
  }

  /** The bytes of a chunked value, or null when some chunk is gone. */
  async #readChunks(stored: _Stored): Promise<Uint8Array | null> {
    const bytes = new Uint8Array(stored.size);
    let offset = 0;
    let count = 0;
    const prefix = ["obj_chunk", stored.namespace, stored.name, stored.blob!];
    for await (const entry of this.#kv.list<Uint8Array>({ prefix })) {
      if (entry.key[4] !== count || offset + entry.value.length > stored.size) {
        return null;
      }
      bytes.set(entry.value, offset);
      offset += entry.value.length;
      count++;
    }
    return count === stored.chunks && offset === stored.size ? bytes : null;
  }

  /**
   * Prepares storing a type unless one of that name exists: an existing type
   * with the same schema is the result as is (nothing to store), one with
   * another schema is `EEXIST`.
   */
  async #prepareType(type: _StoredType, action: string): Promise<StoreChange<_StoredType>> {
    const key = ["obj_type", type.namespace, type.name];
    const existing = await this.#kv.get<_StoredType>(key);
    if (existing.value) {
      if (existing.value.digest === type.digest) {
        return { result: existing.value, apply: () => {} };
      }
      throw new SyscallError(
        "EEXIST",
        `${action}: type ${
          _quote(`${type.namespace}/${type.name}`)
        } is already defined with another schema`,
      );
    }
    return { result: type, apply: (op) => op.check(existing).set(key, type) };
  }

  /** Throws unless `value` satisfies the type `type` of `namespace`. */
  async #enforce(
    namespace: string,
    type: string,
    value: unknown,
    action: string,
  ): Promise<void> {
    const stored = (await this.#kv.get<_StoredType>([
      "obj_type",
      namespace,
      type,
    ])).value;
    if (!stored) {
      throw new SyscallError(
        "ENOENT",
        `${action}: type ${_quote(type)} is not defined`,
      );
    }
    let issue: SchemaIssue | undefined;
    try {
      issue = this.#compile(namespace, type, stored.schema, stored.digest).check(value);
    } catch (error) {
      if (!(error instanceof SchemaError)) throw error;
      throw new SyscallError(
        "EINVAL",
        `${action}: value cannot be checked against type ${_quote(type)}: ${error.message}`,
      );
    }
    if (issue) {
      const where = issue.path.map(String).join(".");
      throw new SyscallError(
        "EINVAL",
        `${action}: value does not match type ${_quote(type)}: ${
          where ? `${where}: ` : ""
        }${issue.message}`,
      );
    }
  }

  /**
   * The compiled schema of a type, from the cache when possible. Throws a
   * `SchemaError` for a schema the checker refuses (a type stored before a
   * keyword was refused is refused here, on every write).
   */
  #compile(
    namespace: string,
    type: string,
    schema: Record<string, unknown>,
    digest: string,
  ): CompiledSchema {
    const key = `${namespace}\0${type}\0${digest}`;
    const cached = this.#schemas.get(key);
    if (cached) return cached;
    const compiled = compileSchema(schema);
    if (this.#schemas.size >= SCHEMA_CACHE_SIZE) {
      const oldest = this.#schemas.keys().next().value;
      if (oldest !== undefined) this.#schemas.delete(oldest);
    }
    this.#schemas.set(key, compiled);
    return compiled;
  }
}

/** Quotes a name for an error message, escaping control characters. */
function _quote(value: string): string {
  const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value;
  return JSON.stringify(shown);
}

/**
 * The UTF-8 JSON of a value, after checking that it is JSON: plain objects,
 * arrays, strings, finite numbers, booleans and null, no cycles, at most
 * `maxBytes`. Object members that are undefined are dropped, as in JSON.
 */
function _encodeJson(
  value: unknown,
  action: string,
  maxBytes: number,
  what = "value",
): Uint8Array {
  const problem = _notJson(value, [], new Set());
  if (problem) {
    const where = problem.path.length ? `${what} at ${_quote(problem.path.join("."))}` : what;
    throw new SyscallError(
      "EINVAL",
      `${action}: ${where} is not JSON (${problem.reason})`,
    );
  }
  const bytes = new TextEncoder().encode(JSON.stringify(value));
  if (bytes.length > maxBytes) {
    throw new SyscallError(
      "EINVAL",
      `${action}: ${what} is ${bytes.length} bytes of JSON, more than the ${maxBytes} allowed`,
    );
  }
  return bytes;
}

/** The first part of `value` that is not JSON, with its path. */
function _notJson(
  value: unknown,
  path: string[],
  ancestors: Set<object>,
): { path: string[]; reason: string } | undefined {
  switch (typeof value) {
    case "string":
    case "boolean":
      return undefined;
    case "number":
      return Number.isFinite(value) ? undefined : { path, reason: `the number ${value}` };
    case "object":
      break;
    case "undefined":
      return { path, reason: "undefined" };
    default:
      return { path, reason: `a ${typeof value}` };
  }
  if (value === null) return undefined;
  if (ancestors.has(value)) return { path, reason: "a cycle" };
  if (path.length >= MAX_DEPTH) {
    return { path, reason: `nested deeper than ${MAX_DEPTH} levels` };
  }
  const isArray = Array.isArray(value);
  const proto = Object.getPrototypeOf(value);
  if (!isArray && proto !== Object.prototype && proto !== null) {
    return { path, reason: `a ${proto?.constructor?.name ?? "non-plain"} object` };
  }
  ancestors.add(value);
  try {
    if (isArray) {
      for (let i = 0; i < value.length; i++) {
        const problem = _notJson(value[i], [...path, String(i)], ancestors);
        if (problem) return problem;
      }
      return undefined;
    }
    for (const [key, member] of Object.entries(value)) {
      if (member === undefined) continue;
      const problem = _notJson(member, [...path, key], ancestors);
      if (problem) return problem;
    }
    return undefined;
  } finally {
    ancestors.delete(value);
  }
}

function _decodeJson(bytes: Uint8Array): unknown {
  return JSON.parse(new TextDecoder().decode(bytes));
}

/** Adds to `op` the deletion of a record's chunks, if it has any. */
function _deleteChunks(
  op: Deno.AtomicOperation,
  stored: Pick<_Stored, "namespace" | "name" | "blob" | "chunks">,
): void {
  if (stored.blob === undefined) return;
  for (let i = 0; i < (stored.chunks ?? 0); i++) {
    op.delete(["obj_chunk", stored.namespace, stored.name, stored.blob, i]);
  }
}

function _summary(stored: _Stored): Omit<ObjectRecord, "value"> {
  const out: Omit<ObjectRecord, "value"> = {
    namespace: stored.namespace,
    name: stored.name,
    version: stored.version,
    writer: stored.writer,
    updatedAt: stored.updatedAt,
  };
  if (stored.type !== undefined) out.type = stored.type;
  return out;
}

function _toRecord(stored: _Stored, value: unknown): ObjectRecord {
  return { ..._summary(stored), value };
}

function _publicType(stored: _StoredType): ObjectType {
  const { digest: _digest, ...type } = stored;
  return type;
}
