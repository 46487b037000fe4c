/**
 * A host decides store-only effects from what it last read or committed
 * (the caller's capabilities, the object, the quota counters) without
 * reading them back; another host or the CLI on the same store may have
 * changed them since. These tests make that change through a second kernel
 * on the same KV file and check that the first host's next call is decided
 * as if it had read the store: a revocation refuses every effect that
 * starts after it and leaves the store unchanged, a call without effects
 * is refused at once, and an object or a counter another host wrote is
 * built on, never overwritten from a stale copy.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import type { SyscallRequest } from "../broker/abi.ts";
import type { BrokerReply } from "../broker/broker.ts";
import type { CapabilitySpec } from "../broker/capability.ts";
import { Kernel } from "../runtime/kernel.ts";
import { type Harness, withHarness } from "./_harness.ts";

/** Runs `body` with a host over a store file and a second kernel (as the CLI opens one) on it. */
async function withTwoHosts(
  body: (h: Harness, second: Kernel) => Promise<void>,
): Promise<void> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-test-" }));
  const store = join(dir, "store.db");
  try {
    await withHarness(async (h) => {
      const second = await Kernel.open({ store, runs: false });
      try {
        await body(h, second);
      } finally {
        await second.close();
      }
    }, { store });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A process of an image granted `capabilities`, and a way to make its calls in journal order. */
async function callerWith(h: Harness, capabilities: string[]) {
  const tag = await h.program(`p${crypto.randomUUID().slice(0, 8)}`, "export default () => 0;", {
    capabilities,
  });
  const { pid } = await h.kernel.spawn({ image: tag, workspace: h.workspace });
  let seq = 0;
  return {
    pid,
    async call(name: string, args: unknown): Promise<BrokerReply> {
      const request: SyscallRequest = { id: seq + 1, name, args };
      const reply = await h.kernel.broker.dispatch(
        { pid, image: tag, workspace: h.workspace, policy: [], seq: ++seq },
        request,
      );
      assert.equal(typeof reply, "object", "the call was answered, not parked");
      return reply as BrokerReply;
    },
  };
}

function errorCode(reply: BrokerReply): string | undefined {
  return reply.ok ? undefined : reply.error.code;
}

/** Revokes, through `second`, the capability of `pid` on `scope`; checks the first host still has it cached. */
async function revokeElsewhere(
  h: Harness,
  second: Kernel,
  pid: number,
  scope: string,
): Promise<void> {
  const cap = (await second.caps.list(pid)).find((c) => c.scope === scope)!;
  assert.deepEqual(await second.caps.revoke(cap.id), [cap.id]);
  const cached = h.kernel.caps.cachedHoldings(pid)?.capabilities ?? [];
  assert.ok(
    cached.some((c) => c.id === cap.id),
    "the first host still holds the revoked capability in its cache",
  );
}

Deno.test("an obj.put after a second kernel revoked its capability is refused, though the host's cache still held it", async () => {
  await withTwoHosts(async (h, second) => {
    const writer = await callerWith(h, ["obj:write:shared/**"]);
    const first = await writer.call("obj.put", { namespace: "shared/a", name: "k", value: "v1" });
    assert.deepEqual(first, { ...first, ok: true, value: { version: 1 } });
    const used = (await h.kernel.quotas.usage(writer.pid)).storageBytes;
    await revokeElsewhere(h, second, writer.pid, "shared/**");

    const reply = await writer.call("obj.put", { namespace: "shared/a", name: "k", value: "v2" });
    assert.equal(errorCode(reply), "EPERM");
    const stored = await second.objects.get("shared/a", "k");
    assert.deepEqual([stored.value, stored.version], ["v1", 1]);
    assert.equal((await second.quotas.usage(writer.pid)).storageBytes, used);
    // And again: the refusal does not depend on the first attempt's retry.
    const again = await writer.call("obj.put", { namespace: "shared/a", name: "k", value: "v3" });
    assert.equal(errorCode(again), "EPERM");
    assert.equal((await second.objects.get("shared/a", "k")).value, "v1");
  });
});

Deno.test("an fs.write after a second kernel revoked its capability is refused, and the file is unchanged", async () => {
  await withTwoHosts(async (h, second) => {
    const writer = await callerWith(h, [`fs:read,write:${h.workspace}/**`]);
    const path = join(h.workspace, "notes.txt");
    assert.equal((await writer.call("fs.write", { path, content: "before" })).ok, true);
    await revokeElsewhere(h, second, writer.pid, `${h.workspace}/**`);

    const reply = await writer.call("fs.write", { path, content: "after" });
    assert.equal(errorCode(reply), "EPERM");
    assert.equal(await Deno.readTextFile(path), "before");
  });
});

Deno.test("a call without effects after a second kernel revoked its capability is refused at once", async () => {
  await withTwoHosts(async (h, second) => {
    const reader = await callerWith(h, ["obj:read,write:shared/**"]);
    await reader.call("obj.put", { namespace: "shared/a", name: "k", value: "secret" });
    const read = await reader.call("obj.get", { namespace: "shared/a", name: "k" });
    assert.equal(read.ok, true);
    await revokeElsewhere(h, second, reader.pid, "shared/**");

    const reply = await reader.call("obj.get", { namespace: "shared/a", name: "k" });
    assert.equal(errorCode(reply), "EPERM");
    assert.doesNotMatch(JSON.stringify(reply), /secret/);
  });
});

Deno.test("an object a second kernel wrote is built on by the host's next obj.put, whose expected version is judged against the store", async () => {
  await withTwoHosts(async (h, second) => {
    const writer = await callerWith(h, ["obj:read,write:shared/**"]);
    const put = (value: string, expectedVersion?: number) =>
      writer.call("obj.put", { namespace: "shared/a", name: "k", value, expectedVersion });
    assert.equal((await put("host 1")).ok, true);
    // The host committed version 1 and keeps it; the other kernel writes version 2.
    await second.objects.put("shared/a", "k", "elsewhere 2", { writer: 0 });

    // Version 2 is not what the host last committed, but it is what is stored.
    const current = await put("host 3", 2);
    assert.deepEqual(current, { ...current, ok: true, value: { version: 3 } });
    await second.objects.put("shared/a", "k", "elsewhere 4", { writer: 0 });
    // Version 3 is what the host last committed, and no longer what is stored.
    assert.equal(errorCode(await put("stale", 3)), "EEXIST");
    assert.equal((await second.objects.get("shared/a", "k")).value, "elsewhere 4");
    const next = await put("host 5");
    assert.deepEqual(next, { ...next, ok: true, value: { version: 5 } });
    const stored = await second.objects.get("shared/a", "k");
    assert.deepEqual([stored.value, stored.version], ["host 5", 5]);
  });
});

Deno.test("storage a second kernel charged counts against the host's next obj.put: its quota is judged against the store", async () => {
  await withTwoHosts(async (h, second) => {
    const tag = await h.program("quota", "export default () => 0;");
    const { pid } = await h.kernel.spawn({
      image: tag,
      workspace: h.workspace,
      budget: { storageBytes: 4096 },
    });
    const put = (name: string, value: string) =>
      h.kernel.broker.dispatch(
        { pid, image: tag, workspace: h.workspace, policy: [], seq: Number(name.slice(1)) },
        { id: 1, name: "obj.put", args: { namespace: "self", name, value } },
      ) as Promise<BrokerReply>;
    assert.equal((await put("k1", "x".repeat(1000))).ok, true);
    // Another host stores 2,000 bytes charged to the same process.
    await second.objects.put(`proc/${pid}`, "other", "y".repeat(2000), {
      writer: pid,
      chargeTo: pid,
    });
    const used = (await second.quotas.usage(pid)).storageBytes;
    assert.ok(used > 3000 && used < 4096, `${used} bytes charged`);

    // 1,000 more bytes fit the counter the host committed, not the stored one.
    assert.equal(errorCode(await put("k2", "z".repeat(1000))), "EBUDGET");
    assert.equal((await second.quotas.usage(pid)).storageBytes, used);
    assert.equal((await put("k3", "small")).ok, true);
    assert.ok((await second.quotas.usage(pid)).storageBytes > used);

    // The other host gives its 2,000 bytes back: what the host committed
    // last is now more than is stored, and would refuse what fits.
    await second.objects.delete(`proc/${pid}`, "other");
    assert.equal((await put("k4", "w".repeat(2000))).ok, true);
    assert.equal((await second.objects.get(`proc/${pid}`, "k4")).version, 1);
  });
});

Deno.test("a one-shot grant used up by a second kernel is not the host's reason to refuse: another grant made there serves", async () => {
  await withTwoHosts(async (h, second) => {
    const writer = await callerWith(h, ["obj:read:shared/**"]);
    const oneShot: CapabilitySpec = {
      resource: "obj",
      rights: ["write"],
      scope: "shared/**",
      uses: 1,
    };
    const first = await second.caps.grant(writer.pid, oneShot, { grantedBy: "operator" });
    // The host reads the caller's capabilities, the one-shot grant among them.
    assert.equal(
      errorCode(await writer.call("obj.get", { namespace: "shared/a", name: "k" })),
      "ENOENT",
    );
    assert.ok(
      h.kernel.caps.cachedHoldings(writer.pid)?.capabilities.some((c) => c.id === first.id),
    );
    // Elsewhere, that grant is used and another is made.
    const use = await second.caps.consumption(first);
    const op = second.store.kv.atomic();
    use(op);
    assert.equal((await op.commit()).ok, true);
    const next = await second.caps.grant(writer.pid, oneShot, { grantedBy: "operator" });

    const reply = await writer.call("obj.put", { namespace: "shared/a", name: "k", value: 1 });
    assert.equal(reply.ok, true, JSON.stringify(reply));
    assert.equal((await second.objects.get("shared/a", "k")).value, 1);
    assert.equal(await second.caps.get(next.id), undefined, "the grant that served is used up");
    // Both grants are spent: the next write is refused.
    const again = await writer.call("obj.put", { namespace: "shared/a", name: "k", value: 2 });
    assert.equal(errorCode(again), "EPERM");
    assert.equal((await second.objects.get("shared/a", "k")).value, 1);
  });
});
