/**
 * Handing capabilities on (SPEC section 5): every derived capability is a
 * subset of its source in every attribute, `delegable` included, and
 * `cap.delegate` (like `obj.share` of a namespace the caller was given)
 * reaches only the caller's descendants, within their image ceilings. Each
 * attack asserts the receiver holds nothing new.
 */

import assert from "node:assert/strict";
import { formatCapability } from "../broker/capability.ts";
import type { Harness } from "./_harness.ts";
import { type Attempt, failed, program, succeeded, withKernel } from "./_programs.ts";

/** A program that waits for a message that never comes. */
const IDLE = program(`await sys.msg.recv(); return null;`);

/** The text forms of `pid`'s capabilities on `resource`, sorted. */
async function held(h: Harness, pid: number, resource: string): Promise<string[]> {
  return (await h.kernel.caps.list(pid)).filter((c) => c.resource === resource)
    .map((c) => formatCapability(c)).sort();
}

/** An idle process of an image allowing `capabilities`, spawned by the operator in `workspace`. */
async function stranger(h: Harness, capabilities: string[], workspace: string): Promise<number> {
  const tag = await h.program(`stranger-${crypto.randomUUID().slice(0, 8)}`, IDLE, {
    capabilities,
  });
  const { pid } = await h.kernel.spawn({ image: tag, workspace, capabilities: [] });
  h.kernel.start(pid);
  return pid;
}

Deno.test("cap.delegate needs a delegable capability, a descendant, and room in its ceiling; a refused receiver holds nothing new", async () => {
  await withKernel(async (h) => {
    const narrow = await h.program("narrow", IDLE, { capabilities: ["fs:read:data/**"] });
    const empty = await h.program("empty", IDLE, { capabilities: [] });
    const open = await h.program("open", IDLE, { capabilities: ["fs:read:**;delegable"] });
    const other = await stranger(h, [], h.outside);
    const end = await h.run(
      program(`
      const spawn = async (image) => (await sys.proc.spawn({ image, capabilities: [] })).pid;
      const kids = {
        narrow: await spawn(input.narrow),
        empty: await spawn(input.empty),
        open: await spawn(input.open),
      };
      const give = (pid, text) => attempt(() => sys.cap.delegate(pid, text));
      return {
        kids,
        notDelegable: await give(kids.narrow, "fs:write:data/x"),
        beyondEmptyCeiling: await give(kids.empty, "fs:read:data/**"),
        widerThanCeiling: await give(kids.narrow, "fs:read:**"),
        delegableBeyondCeiling: await give(kids.narrow, "fs:read:data/**;delegable"),
        notADescendant: await give(input.other, "fs:read:data/**"),
        narrowed: await give(kids.narrow, "fs:read:data/**"),
        passedOn: await give(kids.open, "fs:read:**;delegable"),
      };
    `),
      {
        input: { narrow, empty, open, other },
        image: { capabilities: ["fs:read:**;delegable", "fs:write:**", "proc:spawn:*"] },
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const out = end.result as Record<string, Attempt> & { kids: Record<string, number> };
    failed(out.notDelegable, "EPERM", /holds no delegable capability that covers it/);
    failed(out.beyondEmptyCeiling, "EPERM", /beyond the ceiling of image "empty@1\.0\.0"/);
    failed(out.widerThanCeiling, "EPERM", /beyond the ceiling of image "narrow@1\.0\.0"/);
    failed(out.delegableBeyondCeiling, "EPERM", /beyond the ceiling of image "narrow@1\.0\.0"/);
    failed(out.notADescendant, "EPERM", /^Cannot delegate to process \d+: it is not a descendant/);
    succeeded(out.narrowed);
    succeeded(out.passedOn);
    const ws = h.workspace;
    assert.deepEqual(await held(h, out.kids.narrow, "fs"), [`fs:read:${ws}/data/**`]);
    assert.deepEqual(await held(h, out.kids.empty, "fs"), []);
    assert.deepEqual(await held(h, out.kids.open, "fs"), [`fs:read:${ws}/**;delegable`]);
    assert.deepEqual(await held(h, other, "fs"), []);
  });
});

Deno.test("a fork keeps each capability's expiry and delegability, and no spawn or fork makes one delegable", async () => {
  await withKernel(async (h) => {
    const open = await h.program("open", IDLE, { capabilities: ["fs:write:**;delegable"] });
    const end = await h.run(
      program(`
      const { pid } = await sys.proc.fork();
      if (pid === 0) return { caps: await sys.cap.list() };
      const child = await sys.proc.wait(pid);
      return {
        own: await sys.cap.list(),
        forked: child.result.caps,
        forkDelegable: await attempt(() => sys.proc.fork({ capabilities: ["fs:write:**;delegable"] })),
        spawnDelegable: await attempt(() =>
          sys.proc.spawn({ image: input.open, capabilities: ["fs:write:**;delegable"] })),
      };
    `),
      {
        input: { open },
        image: {
          capabilities: [
            "fs:read:**;ttl=1h",
            "fs:write:**",
            "net:fetch:https://example.com/**;delegable",
            "proc:fork:self",
            "proc:spawn:*",
          ],
        },
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    type Listed = { text: string; expiresAt?: number };
    const out = end.result as {
      own: Listed[];
      forked: Listed[];
      forkDelegable: Attempt;
      spawnDelegable: Attempt;
    };
    const find = (caps: Listed[], prefix: string) => caps.find((c) => c.text.startsWith(prefix));
    const read = find(out.own, "fs:read:")!;
    assert.ok(read.expiresAt !== undefined);
    assert.equal(find(out.forked, "fs:read:")?.expiresAt, read.expiresAt, "the copy expires too");
    assert.match(find(out.forked, "net:fetch:")?.text ?? "", /;delegable$/);
    assert.doesNotMatch(find(out.forked, "fs:write:")?.text ?? "", /delegable/);
    failed(out.forkDelegable, "EPERM", /the parent holds no capability that covers it/);
    failed(out.spawnDelegable, "EPERM", /the parent holds no capability that covers it/);
    for (const child of await h.kernel.processes.children(end.pid)) {
      assert.ok(!(await held(h, child, "fs")).some((text) => text.includes("delegable")));
    }
  });
});

Deno.test("obj.share of a namespace the caller was given follows the rules of cap.delegate; its own it shares with anyone", async () => {
  await withKernel(async (h) => {
    const kid = await h.program("kid", IDLE, { capabilities: ["obj:read:shared/**"] });
    const other = await stranger(h, ["obj:read:shared/**"], h.workspace);
    const end = await h.run(
      program(`
      const kid = (await sys.proc.spawn({ image: input.kid, capabilities: [] })).pid;
      return {
        kid,
        own: await attempt(() => sys.obj.share("self", input.other, ["read"])),
        plainToKid: await attempt(() => sys.obj.share("shared/plain", kid, ["read"])),
        openToStranger: await attempt(() => sys.obj.share("shared/open", input.other, ["read"])),
        openToKid: await attempt(() => sys.obj.share("shared/open", kid, ["read"])),
      };
    `),
      {
        input: { kid, other },
        image: {
          capabilities: ["obj:read:shared/plain", "obj:read:shared/open;delegable", "proc:spawn:*"],
        },
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const out = end.result as Record<string, Attempt> & { kid: number };
    succeeded(out.own);
    failed(out.plainToKid, "EPERM", /capability on it is not delegable/);
    failed(out.openToStranger, "EPERM", /^Cannot share with process \d+: it is not a descendant/);
    succeeded(out.openToKid);
    assert.deepEqual(
      await held(h, out.kid, "obj"),
      ["obj:read:shared/open", `obj:read,write,delete:proc/${out.kid}`].sort(),
    );
    assert.deepEqual(
      await held(h, other, "obj"),
      [`obj:read,write,delete:proc/${other}`, `obj:read:proc/${end.pid}`].sort(),
    );
  });
});

Deno.test("a fork from a snapshot keeps each capability's expiry and does not copy one-shot grants", async () => {
  await withKernel(async (h) => {
    const tag = await h.program("snapped", IDLE, {
      capabilities: ["fs:read:**;ttl=1h", "fs:write:out/**;uses=2", "exec:run:git;delegable"],
    });
    const { pid } = await h.kernel.spawn({ image: tag, workspace: h.workspace });
    h.kernel.start(pid);
    const snap = await h.kernel.snapshots.save(pid);
    const copy = await h.kernel.snapshots.fork(snap.id);
    const original = await h.kernel.caps.list(pid);
    const copied = await h.kernel.caps.list(copy.pid);
    const read = (caps: typeof original) =>
      caps.find((c) => c.resource === "fs" && c.rights.includes("read"));
    assert.ok(read(original)?.expiresAt !== undefined);
    assert.equal(read(copied)?.expiresAt, read(original)?.expiresAt);
    assert.deepEqual(await held(h, copy.pid, "fs"), [
      `fs:read:${h.workspace}/**;expires=${new Date(read(original)!.expiresAt!).toISOString()}`,
    ]);
    assert.deepEqual(await held(h, copy.pid, "exec"), ["exec:run:git;delegable"]);
  });
});
