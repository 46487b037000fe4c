import assert from "node:assert/strict";
import type { CapabilitySpec } from "./capability.ts";
import { CapabilityStore } from "./capability_store.ts";

const READ_WS: CapabilitySpec = { resource: "fs", rights: ["read"], scope: "/ws/**" };

async function withStore(
  fn: (caps: CapabilityStore, kv: Deno.Kv) => Promise<void>,
): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  try {
    await fn(new CapabilityStore(kv), kv);
  } finally {
    kv.close();
  }
}

/** Commits one consumption of `id`'s use; true when it won. */
async function consume(
  caps: CapabilityStore,
  kv: Deno.Kv,
  id: string,
): Promise<boolean> {
  const cap = await caps.get(id);
  assert.ok(cap, `capability ${id} exists`);
  const apply = await caps.consumption(cap);
  const op = kv.atomic();
  apply(op);
  const ok = (await op.commit()).ok;
  caps.invalidate(cap.holder);
  return ok;
}

Deno.test("a grant is listed for its holder only, with its attributes", async () => {
  await withStore(async (caps) => {
    const cap = await caps.grant(1, { ...READ_WS, delegable: true, uses: 3 }, {
      grantedBy: "operator",
      now: 1000,
    });
    assert.equal(cap.holder, 1);
    assert.equal(cap.grantedBy, "operator");
    assert.equal(cap.createdAt, 1000);
    assert.equal(cap.delegable, true);
    assert.equal(cap.uses, 3);
    assert.deepEqual((await caps.list(1, 1000)).map((c) => c.id), [cap.id]);
    assert.deepEqual(await caps.list(2, 1000), []);
    assert.deepEqual(await caps.get(cap.id), cap);
  });
});

Deno.test("a ttl capability is listed until it expires, and not after", async () => {
  await withStore(async (caps) => {
    const cap = await caps.grant(1, { ...READ_WS, ttlMs: 60_000 }, {
      grantedBy: "operator",
      now: 1000,
    });
    assert.equal(cap.expiresAt, 61_000);
    assert.equal((await caps.list(1, 60_999)).length, 1);
    assert.equal((await caps.list(1, 61_000)).length, 0);
    const fixed = await caps.grant(1, READ_WS, { grantedBy: "operator", now: 0, expiresAt: 5 });
    assert.equal(fixed.expiresAt, 5);
    assert.deepEqual((await caps.list(1, 4)).map((c) => c.id).includes(fixed.id), true);
    assert.deepEqual((await caps.list(1, 5)).map((c) => c.id).includes(fixed.id), false);
  });
});

Deno.test("a one-shot capability is consumed once, even by concurrent users", async () => {
  await withStore(async (caps, kv) => {
    const cap = await caps.grant(1, { ...READ_WS, uses: 1 }, { grantedBy: "operator" });
    const fresh = (await caps.get(cap.id))!;
    // Both users read the record before either commits.
    const [a, b] = await Promise.all([caps.consumption(fresh), caps.consumption(fresh)]);
    const commit = async (apply: (op: Deno.AtomicOperation) => void) => {
      const op = kv.atomic();
      apply(op);
      return (await op.commit()).ok;
    };
    const results = await Promise.all([commit(a), commit(b)]);
    assert.deepEqual(results.filter(Boolean).length, 1);
    caps.invalidate(1);
    assert.equal(await caps.get(cap.id), undefined);
    assert.deepEqual(await caps.list(1), []);
    await assert.rejects(caps.consumption(fresh), { code: "EPERM" });
  });
});

Deno.test("a capability with several uses counts them down", async () => {
  await withStore(async (caps, kv) => {
    const cap = await caps.grant(1, { ...READ_WS, uses: 2 }, { grantedBy: "operator" });
    assert.equal(await consume(caps, kv, cap.id), true);
    assert.equal((await caps.list(1))[0].uses, 1);
    assert.equal(await consume(caps, kv, cap.id), true);
    assert.deepEqual(await caps.list(1), []);
  });
});

Deno.test("revocation cascades through every generation of derived capabilities", async () => {
  await withStore(async (caps) => {
    const root = await caps.grant(1, READ_WS, { grantedBy: "operator" });
    const child = await caps.grant(2, { ...READ_WS, scope: "/ws/src/**" }, {
      grantedBy: "pid:1",
      parent: root,
    });
    const grandchild = await caps.grant(3, { ...READ_WS, scope: "/ws/src/a.ts" }, {
      grantedBy: "pid:2",
      parent: child,
    });
    const sibling = await caps.grant(2, { ...READ_WS, scope: "/ws/docs/**" }, {
      grantedBy: "pid:1",
      parent: root,
    });
    const unrelated = await caps.grant(2, READ_WS, { grantedBy: "operator" });
    // Fill the holder caches first: revocation must not leave stale entries behind.
    for (const pid of [1, 2, 3]) await caps.list(pid);
    const revoked = await caps.revoke(child.id);
    assert.deepEqual(revoked.sort(), [child.id, grandchild.id].sort());
    assert.deepEqual(
      (await caps.list(2)).map((c) => c.id).sort(),
      [sibling.id, unrelated.id].sort(),
    );
    assert.deepEqual(await caps.list(3), []);
    assert.deepEqual((await caps.list(1)).map((c) => c.id), [root.id]);
    const all = await caps.revoke(root.id);
    assert.deepEqual(all.sort(), [root.id, sibling.id].sort());
    assert.deepEqual((await caps.list(2)).map((c) => c.id), [unrelated.id]);
  });
});

Deno.test("nothing can be derived from a revoked capability", async () => {
  await withStore(async (caps) => {
    const root = await caps.grant(1, READ_WS, { grantedBy: "operator" });
    await caps.revoke(root.id);
    await assert.rejects(
      caps.grant(2, READ_WS, { grantedBy: "pid:1", parent: root }),
      (error: Error & { code: string }) => {
        assert.equal(error.code, "EPERM");
        assert.match(error.message, /revoked/);
        return true;
      },
    );
    assert.deepEqual(await caps.list(2), []);
  });
});

Deno.test("a grant from a parent is refused unless it is a subset in every attribute", async () => {
  await withStore(async (caps) => {
    const now = 1_000_000;
    const parent = await caps.grant(1, { ...READ_WS, uses: 3, delegable: false }, {
      grantedBy: "operator",
      expiresAt: now + 60_000,
      now,
    });
    const derive = (spec: CapabilitySpec, expiresAt?: number) =>
      caps.grant(2, spec, { grantedBy: "pid:1", parent, expiresAt, now });
    const wider: [CapabilitySpec, number | undefined, RegExp][] = [
      [{ ...READ_WS, rights: ["write"], uses: 1 }, now + 1, /right "write" is not held/],
      [{ ...READ_WS, scope: "/**", uses: 1 }, now + 1, /scope "\/\*\*" is wider/],
      [{ ...READ_WS, uses: 4 }, now + 1, /uses 4 exceed the 3 left/],
      [READ_WS, now + 1, /unlimited uses exceed/],
      [{ ...READ_WS, uses: 1 }, now + 60_001, /expiry is later/],
      [{ ...READ_WS, uses: 1 }, undefined, /the child never expires/],
      [{ ...READ_WS, uses: 1, delegable: true }, now + 1, /delegable, but the parent is not/],
    ];
    for (const [spec, expiresAt, why] of wider) {
      await assert.rejects(derive(spec, expiresAt), (error: Error & { code: string }) => {
        assert.equal(error.code, "EPERM");
        assert.match(error.message, /^Cannot derive "fs:[a-z]+:\/[^"]*" from capability "[^"]+": /);
        assert.match(error.message, why);
        return true;
      });
      // The synchronous form used inside larger commits refuses the same.
      assert.throws(
        () => caps.prepareGrant(2, spec, { grantedBy: "pid:1", parent, expiresAt, now }),
        why,
      );
    }
    assert.deepEqual(await caps.list(2, now), []);
    const ok = await derive({ ...READ_WS, scope: "/ws/src/**", uses: 3 }, now + 60_000);
    assert.equal(ok.parent, parent.id);
  });
});

Deno.test("a grant is checked against its parent as stored, not as the caller last saw it", async () => {
  await withStore(async (caps, kv) => {
    const parent = await caps.grant(1, { ...READ_WS, uses: 2 }, { grantedBy: "operator" });
    await consume(caps, kv, parent.id);
    await assert.rejects(
      caps.grant(2, { ...READ_WS, uses: 2 }, { grantedBy: "pid:1", parent }),
      /uses 2 exceed the 1 left/,
    );
    await caps.grant(2, { ...READ_WS, uses: 1 }, { grantedBy: "pid:1", parent });
  });
});

Deno.test("a process can drop only its own capabilities", async () => {
  await withStore(async (caps) => {
    const mine = await caps.grant(1, READ_WS, { grantedBy: "operator" });
    const theirs = await caps.grant(2, READ_WS, { grantedBy: "operator" });
    await assert.rejects(caps.drop(1, theirs.id), { code: "ENOENT" });
    await assert.rejects(caps.drop(1, "no-such-id"), { code: "ENOENT" });
    assert.equal((await caps.list(2)).length, 1);
    assert.deepEqual(await caps.drop(1, mine.id), [mine.id]);
    assert.deepEqual(await caps.list(1), []);
  });
});

Deno.test({
  name: "a revocation through another store instance is seen at once",
  fn: async () => {
    await withStore(async (host, kv) => {
      const operator = new CapabilityStore(kv);
      const cap = await host.grant(1, READ_WS, { grantedBy: "operator" });
      assert.equal((await host.list(1)).length, 1);
      await operator.revoke(cap.id);
      assert.deepEqual(await host.list(1), []);
    });
  },
});
