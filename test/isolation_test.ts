/**
 * SPEC section 8: programs run in zero-permission Workers inside
 * zero-permission cells. Each attack below is run as a process; each test
 * asserts that the attack's effect did not happen and that the host (and a
 * bystander process) kept running. Where it can, a control shows the same
 * attack works with the permissions the host has.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type Harness, withHarness } from "./_harness.ts";

const CANARY = "CANARY-" + crypto.randomUUID();

/** A bystander that must finish normally while an attacker misbehaves. */
const BYSTANDER = `export default async function main(sys) {
  for (let i = 0; i < 20; i++) await sys.time.now();
  return "bystander ok";
}`;

async function withBystander(h: Harness, attack: () => Promise<void>): Promise<void> {
  const tag = await h.program("bystander", BYSTANDER);
  const bystander = await h.kernel.spawn({ image: tag, workspace: h.workspace });
  h.kernel.start(bystander.pid);
  await attack();
  const end = await h.kernel.waitFor(bystander.pid);
  assert.equal(end.state, "exited");
  assert.equal(end.result, "bystander ok");
}

async function everythingRecorded(h: Harness, pid: number): Promise<string> {
  await h.kernel.journal.flush();
  const parts: unknown[] = [await h.kernel.processes.get(pid)];
  for await (const record of h.kernel.audit.list()) parts.push(record);
  parts.push(h.kernel.executionOf(pid)?.slot?.cell.output ?? []);
  return JSON.stringify(parts);
}

/** True while an OS process exists and is not a zombie (asked of `ps`, which needs no extra permission). */
function alive(osPid: number): boolean {
  const { stdout } = new Deno.Command("ps", { args: ["-o", "stat=", "-p", String(osPid)] })
    .outputSync();
  const stat = new TextDecoder().decode(stdout).trim();
  return stat !== "" && !stat.startsWith("Z");
}

Deno.test("a busy-looping program is killed at its CPU limit and its cell is gone within 5 s", async () => {
  await withHarness(async (h) => {
    await withBystander(h, async () => {
      const tag = await h.program("spin", "export default function main() { for (;;) {} }", {
        limits: { cpuMs: 300 },
      });
      const proc = await h.kernel.spawn({ image: tag, workspace: h.workspace });
      h.kernel.start(proc.pid);
      let osPid: number | undefined;
      while (osPid === undefined) {
        osPid = h.kernel.executionOf(proc.pid)?.slot?.cell.osPid;
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(alive(osPid), true, "the spinning cell is running before its limit");
      const end = await h.kernel.waitFor(proc.pid);
      const limitHit = performance.now();
      assert.equal(end.state, "failed");
      assert.match(end.error!.message, /CPU limit/);
      while (alive(osPid) && performance.now() - limitHit < 30_000) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(alive(osPid), false, "the spinning cell still exists 30 s after its limit");
    });
  });
});

Deno.test("a heap bomb kills only its own cell", async () => {
  await withHarness(async (h) => {
    await withBystander(h, async () => {
      const end = await h.run(
        `export default async function main() {
          const hoard = [];
          for (;;) hoard.push(new Array(1e6).fill(Math.random()));
        }`,
        { image: { limits: { memoryMb: 64, cpuMs: 60_000 } } },
      );
      assert.equal(end.state, "failed");
      assert.match(end.error!.message, /^Process \d+ exceeded its memory limit of 64 MB$/);
    });
    // The host still answers: a new process runs to its end.
    const after = await h.run(`export default async () => "still here";`);
    assert.equal(after.result, "still here");
  });
});

Deno.test("ArrayBuffers far over memoryMb fail the process with the memory reason", async () => {
  await withHarness(async (h) => {
    await withBystander(h, async () => {
      // Outside V8's heap: 1.5 GB of touched ArrayBuffers under a 128 MB limit,
      // and a second run that catches every refused allocation and goes on.
      for (const caught of [false, true]) {
        const end = await h.run(
          `export default async function main() {
            const hoard = [];
            for (let i = 0; i < 96; i++) {
              try {
                hoard.push(new Uint8Array(16 << 20).fill(1));
              } catch (error) {
                if (!${caught}) throw error;
              }
            }
            return "allocated " + hoard.length * 16 + " MB";
          }`,
          { image: { limits: { memoryMb: 128, cpuMs: 60_000 } } },
        );
        assert.equal(end.state, "failed", `caught=${caught}: ${JSON.stringify(end.result)}`);
        assert.equal(
          end.error!.message,
          `Process ${end.pid} exceeded its memory limit of 128 MB`,
        );
      }
    });
    // The host still answers: a new process runs to its end.
    const after = await h.run(`export default async () => "still here";`);
    assert.equal(after.result, "still here");
  });
});

Deno.test("the kernel refuses an allocation past the cap, before any resident memory grows", async () => {
  await withHarness(async (h) => {
    // 1 GiB never touched: resident memory stays small, so only the kernel
    // cap on writable memory of a cell of its own (idle cell + a Worker's
    // reservation + 2 x 128 MB) can refuse it.
    const end = await h.run(
      `export default async function main() {
        try {
          const buffer = new ArrayBuffer(1 << 30);
          return "allocated " + buffer.byteLength;
        } catch (error) {
          return "refused: " + error.message;
        }
      }`,
      { image: { limits: { memoryMb: 128 }, isolation: "process" } },
    );
    assert.equal(end.state, "exited", JSON.stringify(end.error));
    assert.match(String(end.result), /^refused: /);
  });
});

Deno.test("a message flood is stopped by the syscall rate limit", async () => {
  await withHarness(async (h) => {
    await withBystander(h, async () => {
      const end = await h.run(
        `export default async function main(sys) {
          const calls = [];
          for (let i = 0; i < 100000; i++) calls.push(sys.time.now().catch(() => {}));
          await Promise.all(calls);
          return "flooded";
        }`,
        { image: { limits: { syscallsPerSecond: 200 } } },
      );
      assert.equal(end.state, "failed");
      assert.match(end.error!.message, /rate limit/);
    });
  });
});

Deno.test("an oversized message kills the sender, not the host", async () => {
  await withHarness(async (h) => {
    const end = await h.run(
      `export default async function main(sys) {
        await sys.fs.write("big.txt", "x".repeat(2 * 1024 * 1024));
        return "sent";
      }`,
      { image: { capabilities: ["fs:write:**"], limits: { maxMessageBytes: 1024 * 1024 } } },
    );
    assert.equal(end.state, "failed");
    assert.match(end.error!.message, /over the 1048576-byte limit/);
    await assert.rejects(Deno.stat(join(h.workspace, "big.txt")), Deno.errors.NotFound);
  });
});

Deno.test("Deno.permissions.request is refused and raises no prompt", async () => {
  await withHarness(async (h) => {
    const end = await h.run(
      `export default async function main() {
        let state;
        try { state = (await Deno.permissions.request({ name: "read" })).state; }
        catch (e) { return "refused: " + e.message; }
        return "state: " + state;
      }`,
    );
    assert.equal(end.state, "exited");
    assert.match(String(end.result), /^refused: /);
  });
});

Deno.test("dynamic imports cannot read local JSON, reach the network or nest through data: URLs", async () => {
  await withHarness(async (h) => {
    const secret = join(h.workspace, "secret.json");
    await Deno.writeTextFile(secret, JSON.stringify({ token: CANARY }));
    const url = "file://" + secret;
    const end = await h.run(
      `export default async function main() {
        const out = {};
        const attempts = {
          json: () => import(${JSON.stringify(url)}, { with: { type: "json" } }),
          remote: () => import("https://127.0.0.1:9/x.ts"),
          nested: () => import("data:application/javascript," + encodeURIComponent(
            'import s from ${JSON.stringify(url)} with { type: "json" }; export default s;')),
        };
        for (const [name, attempt] of Object.entries(attempts)) {
          try { out[name] = JSON.stringify(await attempt()); } catch (e) { out[name] = "blocked"; }
        }
        return out;
      }`,
    );
    assert.equal(end.state, "exited");
    assert.deepEqual(end.result, { json: "blocked", remote: "blocked", nested: "blocked" });
    assert.ok(!(await everythingRecorded(h, end.pid)).includes(CANARY));
    // Control: with the host's permissions the same import reads the secret.
    const control = await import(url, { with: { type: "json" } });
    assert.equal(control.default.token, CANARY);
  });
});

Deno.test("nested Workers cannot be created", async () => {
  await withHarness(async (h) => {
    const end = await h.run(
      `export default async function main() {
        try { new Worker("data:application/javascript,postMessage(1)", { type: "module" }); return "created"; }
        catch (e) { return "refused: " + e.message; }
      }`,
    );
    assert.equal(end.state, "exited");
    assert.match(String(end.result), /^refused: .*nested Worker/);
  });
});

Deno.test("fetch from a program never reaches a loopback server", async () => {
  await withHarness(async (h) => {
    let hits = 0;
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
      hits++;
      return new Response(CANARY);
    });
    try {
      const url = `http://127.0.0.1:${server.addr.port}/`;
      const end = await h.run(
        `export default async function main() {
          try { return await (await fetch(${JSON.stringify(url)})).text(); }
          catch (e) { return "blocked"; }
        }`,
      );
      assert.equal(end.result, "blocked");
      assert.equal(hits, 0);
      // Control: the host itself can reach the server.
      assert.equal(await (await fetch(url)).text(), CANARY);
      assert.equal(hits, 1);
    } finally {
      await server.shutdown();
    }
  });
});

Deno.test("Deno.env is not readable and the host environment never reaches the cell", async () => {
  Deno.env.set("LIBOS_TEST_CANARY", CANARY);
  try {
    await withHarness(async (h) => {
      const end = await h.run(
        `export default async function main() {
          try { return Deno.env.get("LIBOS_TEST_CANARY") ?? "unset"; }
          catch (e) { return "blocked"; }
        }`,
      );
      assert.equal(end.result, "blocked");
      assert.ok(!(await everythingRecorded(h, end.pid)).includes(CANARY));
    });
  } finally {
    Deno.env.delete("LIBOS_TEST_CANARY");
  }
});

Deno.test("Deno.Command cannot run anything", async () => {
  await withHarness(async (h) => {
    const marker = join(h.outside, "pwned");
    const end = await h.run(
      `export default async function main() {
        try { await new Deno.Command("touch", { args: [${
        JSON.stringify(marker)
      }] }).output(); return "ran"; }
        catch (e) { return "blocked"; }
      }`,
    );
    assert.equal(end.result, "blocked");
    await assert.rejects(Deno.stat(marker), Deno.errors.NotFound);
  });
});

Deno.test("program output on stdout cannot forge protocol messages", async () => {
  await withHarness(async (h) => {
    const target = join(h.workspace, "forged.txt");
    const end = await h.run(
      `export default async function main() {
        const forged = JSON.stringify({ t: "syscall", id: 999, name: "fs.write", args: { path: ${
        JSON.stringify(target)
      }, content: "forged" } });
        console.log(forged);
        console.log("0".repeat(32) + " " + forged);
        return "printed";
      }`,
      { capabilities: [] },
    );
    assert.equal(end.state, "exited");
    await assert.rejects(Deno.stat(target), Deno.errors.NotFound);
  });
});
