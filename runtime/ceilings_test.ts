import assert from "node:assert/strict";
import { parsePolicy } from "../broker/policy.ts";
import {
  askedGrant,
  type CeilingKernel,
  requestedGrant,
  requireWithinImageCeiling,
} from "./ceilings.ts";
import type { AgentImage, RegisteredImage } from "./image.ts";
import { ProcessTable } from "./process_table.ts";

const NOW = 1_000_000;

/** A kernel whose every process runs one image with `capabilities` as its ceiling. */
async function withKernel(
  capabilities: string[],
  fn: (kernel: CeilingKernel, pid: number) => Promise<void>,
): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  try {
    const processes = new ProcessTable(kv);
    const image: RegisteredImage = {
      tag: "demo@1.0.0",
      digest: "d",
      image: { capabilities } as AgentImage,
      registeredAt: 0,
    };
    const { pid } = await processes.create({
      ppid: null,
      image: image.tag,
      digest: image.digest,
      cwd: "/ws",
      workspace: "/ws",
      policy: [],
      onParentExit: "kill",
      budget: {},
    });
    await fn({ processes, now: () => NOW, imageOf: () => Promise.resolve(image) }, pid);
  } finally {
    kv.close();
  }
}

Deno.test("a process may ask for a capability only within its image's ceiling", async () => {
  await withKernel(
    ["fs:read:src/**", "net:fetch:https://a.test/**;ttl=1h"],
    async (kernel, pid) => {
      assert.deepEqual(await requestedGrant(kernel, pid, "fs:read:src/a.ts"), {
        resource: "fs",
        rights: ["read"],
        scope: "/ws/src/a.ts",
      });
      for (
        const [text, shown] of [
          ["fs:read:**", "fs:read:/ws/**"],
          ["fs:write:src/a.ts", "fs:write:/ws/src/a.ts"],
          ["fs:read:src/a.ts;delegable", "fs:read:/ws/src/a.ts;delegable"],
          ["net:fetch:https://a.test/x", "net:fetch:https://a.test/x"],
        ]
      ) {
        await assert.rejects(requestedGrant(kernel, pid, text), {
          code: "EPERM",
          message: `Cannot grant "${shown}": beyond the ceiling of image "demo@1.0.0"`,
        });
      }
      await assert.rejects(requestedGrant(kernel, pid, "fs:read:../x"), { code: "EINVAL" });
    },
  );
});

Deno.test("a capability given to a running process stays within its image's ceiling", async () => {
  await withKernel(["obj:read:shared/**"], async (kernel, pid) => {
    await requireWithinImageCeiling(kernel, pid, {
      resource: "obj",
      rights: ["read"],
      scope: "shared/notes",
    });
    await assert.rejects(
      requireWithinImageCeiling(kernel, pid, {
        resource: "obj",
        rights: ["read", "write"],
        scope: "shared/notes",
      }),
      {
        code: "EPERM",
        message: `Cannot give "obj:read,write:shared/notes" to process ${pid}: ` +
          'beyond the ceiling of image "demo@1.0.0"',
      },
    );
    await assert.rejects(
      requireWithinImageCeiling(kernel, 99, { resource: "obj", rights: ["read"], scope: "x" }),
      {
        code: "ENOENT",
      },
    );
  });
});

Deno.test("a human may grant an asked call only its one target, and only within the ceiling", async () => {
  await withKernel(["fs:write:out/**"], async (kernel, pid) => {
    const [rule] = parsePolicy({ "fs:write:**": "ask" }, "image");
    // A file named `**` is that file only, not the tree under `out`.
    const spec = await askedGrant(kernel, pid, {
      name: "fs.write",
      rule,
      op: { resource: "fs", right: "write", target: "/ws/out/**" },
    });
    assert.deepEqual(spec, { resource: "fs", rights: ["write"], scope: "/ws/out/\\*\\*" });
    await assert.rejects(
      askedGrant(kernel, pid, {
        name: "fs.write",
        rule,
        op: { resource: "fs", right: "write", target: "/ws/src/a.ts" },
      }),
      {
        code: "EPERM",
        message: 'Cannot fs.write "/ws/src/a.ts": policy "fs:write:**" asks, but no human may ' +
          'grant what image "demo@1.0.0" never allows',
      },
    );
  });
});
