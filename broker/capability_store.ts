/**
 * Capability records in KV (SPEC section 5): grant, list by holder, one-shot
 * consumption inside the caller's atomic commit, and revocation that
 * cascades to every capability derived from the revoked one.
 *
 * Keys: `["cap", id]` the record, `["cap_holder", pid, id]` the holder
 * index, `["cap_derived", parentId, childId]` the derivation edges.
 *
 * @module
 */

import {
  attenuationError,
  type Capability,
  type CapabilitySpec,
  formatCapability,
} from "./capability.ts";
import { SyscallError } from "./errors.ts";
import type { StoreChange } from "./store_change.ts";

/** How a grant came about. */
export interface GrantOptions {
  /** `operator`, `pid:N` or `human:<request id>`. */
  grantedBy: string;
  /**
   * The capability this one is derived from: the grant must be a subset of
   * it in every attribute (`attenuationError`), or it fails with `EPERM`.
   */
  parent?: Capability;
  /** Digest of the single operation a one-shot human grant is bound to. */
  boundTo?: string;
  /** Absolute expiry; overrides the spec's `ttlMs`. */
  expiresAt?: number;
  /** The grant time in ms since the epoch (default `Date.now()`). */
  now?: number;
}

/** The live capabilities of one holder, as read at one version of them. */
export interface Holdings {
  /** The unexpired capabilities that are not used up. */
  readonly capabilities: Capability[];
  /**
   * Adds to an atomic operation a check that the holder's capabilities are
   * still at this version: a grant, use or revocation of any of them
   * committed since fails the commit.
   */
  unchanged(op: Deno.AtomicOperation): void;
  /**
   * The same check as a value, for a commit built elsewhere that reads
   * its checks back when it fails (to tell a stale read from a lost race).
   */
  readonly check: Deno.AtomicCheck;
}

/** The key whose versionstamp changes with every change to a holder's capabilities. */
function versionKey(holder: number): Deno.KvKey {
  return ["cap_ver", holder];
}

/** Holdings of `holder` from records read at `version`: those live at `now`, and their check. */
function _holdingsAt(
  holder: number,
  read: { version: string | null; caps: Capability[] },
  now: number,
): Holdings {
  const { version, caps } = read;
  return {
    capabilities: caps.filter((c) =>
      (c.expiresAt === undefined || c.expiresAt > now) &&
      (c.uses === undefined || c.uses > 0)
    ),
    unchanged: (op) => op.check({ key: versionKey(holder), versionstamp: version }),
    check: { key: versionKey(holder), versionstamp: version },
  };
}

/**
 * The capability store.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CapabilityStore } from "./capability_store.ts";
 * const kv = await Deno.openKv(":memory:");
 * const caps = new CapabilityStore(kv);
 * const cap = await caps.grant(1, { resource: "fs", rights: ["read"], scope: "/ws/**" }, { grantedBy: "operator" });
 * assert((await caps.list(1))[0].id === cap.id);
 * kv.close();
 * ```
 */
export class CapabilityStore {
  #kv: Deno.Kv;
  /** Cached records per holder, valid while the holder's version key is unchanged. */
  #byHolder = new Map<number, { version: string | null; caps: Capability[] }>();

  /** Wraps a KV handle. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /** Records a new capability for `holder`. */
  async grant(
    holder: number,
    spec: CapabilitySpec,
    options: GrantOptions,
  ): Promise<Capability> {
    const change = await this.prepareCheckedGrant(holder, spec, options);
    const op = this.#kv.atomic();
    change.apply(op);
    const result = await op.commit();
    if (!result.ok) {
      throw new SyscallError("EPERM", "Cannot grant a capability: a concurrent change won");
    }
    return change.result;
  }

  /**
   * Prepares a grant as a change of the store ({@link grant} commits one
   * alone): the parent, when there is one, is read as stored now and must
   * still exist (`EPERM` when it was revoked), the grant must be a subset of
   * it (`EPERM` otherwise), and the commit holds only while the parent is
   * unchanged.
   */
  async prepareCheckedGrant(
    holder: number,
    spec: CapabilitySpec,
    options: GrantOptions,
  ): Promise<StoreChange<Capability>> {
    let parent: Deno.KvEntryMaybe<Capability> | undefined;
    if (options.parent) {
      // The parent must still exist: a grant derived from a revoked capability fails.
      parent = await this.#kv.get<Capability>(["cap", options.parent.id]);
      if (!parent.value) {
        throw new SyscallError(
          "EPERM",
          `Cannot derive a capability from "${options.parent.id}": it was revoked`,
        );
      }
    }
    // Checked against the parent as stored now (its uses may have gone down).
    const { cap, apply } = this.prepareGrant(holder, spec, {
      ...options,
      parent: parent?.value ?? undefined,
    });
    return {
      result: cap,
      apply: (op) => {
        apply(op);
        if (parent) op.check(parent);
      },
    };
  }

  /**
   * Builds a capability record and the mutations that store it, for a
   * caller that must commit it together with other changes (and check
   * there that a parent is unchanged). A grant from a parent must be a
   * subset of it in every attribute: `EPERM` otherwise.
   */
  prepareGrant(
    holder: number,
    spec: CapabilitySpec,
    options: GrantOptions,
  ): { cap: Capability; apply: (op: Deno.AtomicOperation) => Capability } {
    const now = options.now ?? Date.now();
    const cap: Capability = {
      id: crypto.randomUUID(),
      holder,
      resource: spec.resource,
      rights: [...spec.rights],
      scope: spec.scope,
      delegable: spec.delegable ?? false,
      grantedBy: options.grantedBy,
      createdAt: now,
    };
    if (spec.uses !== undefined) cap.uses = spec.uses;
    const expiresAt = options.expiresAt ??
      (spec.ttlMs !== undefined ? now + spec.ttlMs : undefined);
    if (expiresAt !== undefined) cap.expiresAt = expiresAt;
    if (options.parent) {
      const why = attenuationError(cap, options.parent, now);
      if (why !== undefined) {
        throw new SyscallError(
          "EPERM",
          `Cannot derive "${
            formatCapability(spec)
          }" from capability "${options.parent.id}": ${why}`,
        );
      }
      cap.parent = options.parent.id;
    }
    if (options.boundTo) cap.boundTo = options.boundTo;
    this.#byHolder.delete(holder);
    return {
      cap,
      apply: (op) => {
        op.set(["cap", cap.id], cap).set(["cap_holder", holder, cap.id], true);
        op.set(versionKey(holder), crypto.randomUUID());
        if (cap.parent) op.set(["cap_derived", cap.parent, cap.id], true);
        this.#byHolder.delete(holder);
        return cap;
      },
    };
  }

  /**
   * The live (unexpired, not used up) capabilities of `holder`. Records are
   * cached per holder and revalidated on every call against the holder's
   * version key, which every change commits, so a revocation made by another
   * host or CLI on the same store is seen at once.
   */
  async list(holder: number, now: number = Date.now()): Promise<Capability[]> {
    return (await this.holdings(holder, now)).capabilities;
  }

  /**
   * Like {@link list}, with the check that keeps a decision made on these
   * capabilities exact: added to the commit of what the decision allowed,
   * it fails that commit when any of them changed since they were read (a
   * revocation included). Costs no read beyond {@link list}'s.
   */
  async holdings(holder: number, now: number = Date.now()): Promise<Holdings> {
    const version = (await this.#kv.get<string>(versionKey(holder))).versionstamp;
    let cached = this.#byHolder.get(holder);
    if (!cached || cached.version !== version) {
      this.#byHolder.delete(holder);
      const ids: string[] = [];
      for await (
        const entry of this.#kv.list({ prefix: ["cap_holder", holder] })
      ) ids.push(entry.key[2] as string);
      const caps: Capability[] = [];
      for (let i = 0; i < ids.length; i += 10) {
        const entries = await this.#kv.getMany<Capability[]>(
          ids.slice(i, i + 10).map((id) => ["cap", id]),
        );
        for (const e of entries) if (e.value) caps.push(e.value);
      }
      cached = { version, caps };
      this.#byHolder.set(holder, cached);
    }
    return _holdingsAt(holder, cached, now);
  }

  /**
   * The holdings of `holder` as this host last read them, with no read of
   * the store; undefined when it has none (then {@link holdings} reads
   * them). They may be behind a change another host or CLI committed since
   * (a revocation included), so they may only authorize a decision whose
   * commit carries their `unchanged` check: that check fails the commit when
   * any of the holder's capabilities changed since they were read, and the
   * caller must then {@link invalidate} them and decide again from
   * {@link holdings}. Nothing else may rest on them, a refusal included.
   */
  cachedHoldings(holder: number, now: number = Date.now()): Holdings | undefined {
    const cached = this.#byHolder.get(holder);
    return cached && _holdingsAt(holder, cached, now);
  }

  /** One capability by id, or undefined. */
  async get(id: string): Promise<Capability | undefined> {
    return (await this.#kv.get<Capability>(["cap", id])).value ?? undefined;
  }

  /**
   * Prepares the consumption of one use of `cap`: reads its current record
   * and returns a function that adds, to an atomic operation, a check that
   * the record is unchanged plus the decremented record (or its deletion at
   * zero). Committing that operation consumes the use; a lost check means
   * someone else used it first. `EPERM` when it is already used up.
   */
  async consumption(cap: Capability): Promise<(op: Deno.AtomicOperation) => void> {
    const entry = await this.#kv.get<Capability>(["cap", cap.id]);
    const current = entry.value;
    if (!current || current.uses === undefined || current.uses < 1) {
      throw new SyscallError(
        "EPERM",
        `Cannot use capability "${cap.id}": it is used up`,
      );
    }
    this.#byHolder.delete(cap.holder);
    return (op) => {
      op.check(entry);
      if (current.uses === 1) {
        op.delete(["cap", cap.id]).delete(["cap_holder", cap.holder, cap.id]);
      } else op.set(["cap", cap.id], { ...current, uses: current.uses! - 1 });
      op.set(versionKey(cap.holder), crypto.randomUUID());
    };
  }

  /** Forgets cached records of `holder` (after a commit that changed them). */
  invalidate(holder: number): void {
    this.#byHolder.delete(holder);
  }

  /**
   * Revokes a capability and, transitively, everything derived from it.
   * Returns the ids revoked.
   */
  async revoke(id: string): Promise<string[]> {
    const revoked: string[] = [];
    const queue = [id];
    while (queue.length) {
      const next = queue.shift()!;
      const entry = await this.#kv.get<Capability>(["cap", next]);
      for await (
        const child of this.#kv.list({ prefix: ["cap_derived", next] })
      ) queue.push(child.key[2] as string);
      const op = this.#kv.atomic().delete(["cap", next]);
      if (entry.value) {
        op.delete(["cap_holder", entry.value.holder, next]);
        op.set(versionKey(entry.value.holder), crypto.randomUUID());
        this.#byHolder.delete(entry.value.holder);
      }
      for await (
        const child of this.#kv.list({ prefix: ["cap_derived", next] })
      ) op.delete(child.key);
      await op.commit();
      if (entry.value) revoked.push(next);
    }
    return revoked;
  }

  /** Drops one of `holder`'s own capabilities (and what derives from it). */
  async drop(holder: number, id: string): Promise<string[]> {
    const cap = await this.get(id);
    if (!cap || cap.holder !== holder) {
      throw new SyscallError(
        "ENOENT",
        `Cannot drop capability "${id}": the process holds no such capability`,
      );
    }
    return await this.revoke(id);
  }
}
