/**
 * `cap.list` gives a program its capabilities as records (SPEC section 5):
 * a program can find what it may touch from `resource`, `rights` and
 * `scope`, not only from the text form.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import type { CapabilityView } from "../broker/abi.ts";
import { type Attempt, program, withKernel } from "./_programs.ts";

Deno.test("a program reads scope and rights from cap.list and writes where its scope says", async () => {
  await withKernel(async (h) => {
    await Deno.mkdir(join(h.workspace, "out"));
    const end = await h.run(
      program(`
        const caps = await sys.cap.list();
        const writable = caps.find((c) => c.resource === "fs" && c.rights.includes("write"));
        const dir = writable.scope.replace(/\\/\\*\\*$/, "");
        return {
          caps,
          written: await attempt(() => sys.fs.write(dir + "/found.txt", "here")),
        };
      `),
      { image: { capabilities: ["fs:read:docs/**", "fs:write:out/**;delegable", "time:sleep:*"] } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const { caps, written } = end.result as { caps: CapabilityView[]; written: Attempt };
    assert.equal(written.ok, true, JSON.stringify(written));
    assert.equal(await Deno.readTextFile(join(h.workspace, "out", "found.txt")), "here");
    const write = caps.find((c) => c.text.startsWith("fs:write:"))!;
    assert.deepEqual(
      {
        resource: write.resource,
        rights: write.rights,
        scope: write.scope,
        delegable: write.delegable,
        grantedBy: write.grantedBy,
      },
      {
        resource: "fs",
        rights: ["write"],
        scope: `${h.workspace}/out/**`,
        delegable: true,
        grantedBy: "operator",
      },
    );
    const read = caps.find((c) => c.resource === "fs" && c.rights.includes("read"))!;
    assert.equal(read.scope, `${h.workspace}/docs/**`);
    assert.equal(read.delegable, false);
    const own = caps.find((c) => c.resource === "obj")!;
    assert.deepEqual(own.rights, ["read", "write", "delete"]);
    assert.equal(own.scope, `proc/${end.pid}`);
    for (const cap of caps) {
      assert.equal(typeof cap.id, "string");
      assert.equal(cap.parent, undefined);
      assert.equal(cap.expiresAt, undefined);
    }
  });
});

Deno.test("cap.list shows uses left, expiry and parent of derived capabilities", async () => {
  await withKernel(async (h) => {
    const child = await h.program("child", program(`return await sys.cap.list();`), {
      capabilities: ["fs:read:**"],
    });
    const end = await h.run(
      program(`
        const { pid } = await sys.proc.spawn({
          image: input.child,
          capabilities: ["fs:read:src/**;uses=2;ttl=1h"],
        });
        return { own: await sys.cap.list(), child: (await sys.proc.wait(pid)).result };
      `),
      { input: { child }, image: { capabilities: ["proc:spawn:*", "fs:read:**"] } },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const { own, child: theirs } = end.result as { own: CapabilityView[]; child: CapabilityView[] };
    const parentRead = own.find((c) => c.resource === "fs")!;
    const derived = theirs.find((c) => c.resource === "fs")!;
    assert.equal(derived.scope, `${h.workspace}/src/**`);
    assert.deepEqual(derived.rights, ["read"]);
    assert.equal(derived.uses, 2);
    assert.equal(typeof derived.expiresAt, "number");
    assert.equal(derived.parent, parentRead.id);
    assert.equal(derived.grantedBy, `pid:${end.pid}`);
  });
});
