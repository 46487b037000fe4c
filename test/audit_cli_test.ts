/**
 * The audit trail as an operator reads it (SPEC section 12): every refusal
 * for lack of authority is a `deny` record that `libos audit --denied`
 * finds, whichever step refused it, and nothing a process writes (even the
 * name of a syscall it made up) can forge a row or send a control sequence
 * to the operator's terminal.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import type { AuditRecord } from "../broker/audit.ts";
import { Kernel } from "../runtime/kernel.ts";
import type { AgentImage } from "../runtime/image.ts";
import type { ProcessRecord } from "../runtime/process_table.ts";
import { cli } from "./_cli.ts";
import { program } from "./_programs.ts";
import { rawControls } from "./_terminal.ts";

/** An image registered beside the one under test. */
interface OtherImage {
  name: string;
  source: string;
  capabilities: string[];
}

/**
 * Runs `source` with `input` as a process of an image with `image` fields,
 * on a store file, after registering `others`, until it ends; returns its
 * end record.
 */
async function runOnStore(
  kv: string,
  workspace: string,
  source: string,
  options: {
    image: Partial<AgentImage> & { name: string };
    input?: unknown;
    others?: OtherImage[];
  },
): Promise<ProcessRecord> {
  const { image, input, others = [] } = options;
  const kernel = await Kernel.open({ store: kv });
  try {
    for (const other of others) {
      await kernel.images.register({
        name: other.name,
        version: "1.0.0",
        entry: "./main.ts",
        tools: [],
        capabilities: other.capabilities,
        policy: {},
      } as AgentImage, { entrySource: other.source });
    }
    const { tag } = await kernel.images.register({
      version: "1.0.0",
      entry: "./main.ts",
      tools: [],
      capabilities: [],
      policy: {},
      ...image,
    } as AgentImage, { entrySource: source });
    const end = await kernel.run({ image: tag, workspace, input });
    await kernel.journal.flush();
    return end;
  } finally {
    await kernel.close();
  }
}

async function withStore(body: (kv: string, workspace: string) => Promise<void>): Promise<void> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "libos-audit-cli-" }));
  const workspace = join(dir, "ws");
  await Deno.mkdir(workspace);
  try {
    await body(join(dir, "libos.db"), workspace);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("refusals in a handler's run are audited deny and listed by audit --denied", async () => {
  await withStore(async (kv, workspace) => {
    const end = await runOnStore(
      kv,
      workspace,
      program(`
        const { pid } = await sys.proc.spawn({ image: "child@1.0.0", capabilities: [] });
        await sys.proc.wait(pid);
        return {
          widen: await attempt(() =>
            sys.proc.spawn({ image: "child@1.0.0", capabilities: ["fs:write:**"] })),
          delegate: await attempt(() => sys.cap.delegate(pid, "fs:read:**")),
          read: await attempt(() => sys.fs.read("notes.txt")),
        };
      `),
      {
        image: { name: "parent", capabilities: ["proc:spawn:*", "fs:read:**"] },
        others: [{
          name: "child",
          source: program("return null;"),
          capabilities: ["fs:read:**", "fs:write:**"],
        }],
      },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const pid = end.pid;
    const json = await cli(["audit", "--denied", "--json", "--kv", kv]);
    assert.equal(json.code, 0, json.err.join("\n"));
    const denied: AuditRecord[] = json.out.filter(Boolean).map((line) => JSON.parse(line));
    assert.ok(denied.length > 0 && denied.every((r) => r.decision === "deny"));
    const mine = denied.filter((r) => r.pid === pid);
    assert.deepEqual(mine.map((r) => [r.syscall, r.outcome, r.code]), [
      ["proc.spawn", "error", "EPERM"],
      ["cap.delegate", "error", "EPERM"],
    ]);
    assert.match(mine[0].reason ?? "", /parent holds no capability that covers it/);
    assert.match(mine[1].reason ?? "", /holds no delegable capability/);

    // Everything else is absent: the allowed calls of the same process.
    const all = await cli(["audit", "--pid", String(pid), "--json", "--kv", kv]);
    const allowed = all.out.filter(Boolean).map((line) => JSON.parse(line) as AuditRecord)
      .filter((r) => r.decision !== "deny");
    assert.ok(allowed.some((r) => r.syscall === "proc.spawn" && r.outcome === "ok"));
    assert.ok(allowed.every((r) => !denied.some((d) => d.seq === r.seq)));

    const shown = await cli(["audit", "--denied", "--kv", kv]);
    assert.equal(shown.code, 0);
    assert.match(shown.out[0], /^SEQ\s+PID\s+SYSCALL\s+ARGS\s+DECISION\s+OUTCOME$/);
    assert.equal(shown.out.length, 1 + denied.length);
    assert.ok(
      shown.out.slice(1).every((line) => /\sdeny\s+error EPERM$/.test(line)),
      shown.out.join("\n"),
    );
  });
});

Deno.test("a syscall name with escape sequences and newlines cannot forge an audit row", async () => {
  await withStore(async (kv, workspace) => {
    const forged = "fs.read\u001b[2K\u001b[1A\r\n    7  9    fs.write  {}  allow  ok\u202e\u009b";
    const end = await runOnStore(
      kv,
      workspace,
      program(`return await attempt(() => sys.call(input, {}));`),
      { image: { name: "forger" }, input: forged },
    );
    assert.equal(end.state, "exited", end.error?.message);
    const pid = end.pid;
    const json = await cli(["audit", "--pid", String(pid), "--json", "--kv", kv]);
    const records: AuditRecord[] = json.out.filter(Boolean).map((line) => JSON.parse(line));
    const made = records.find((r) => r.code === "ENOSYS")!;
    assert.ok(made, "the made-up call is audited");
    assert.ok(made.syscall.startsWith("fs.read\\u001b[2K\\u001b[1A\\r\\n    7  9"), made.syscall);
    const table = await cli(["audit", "--pid", String(pid), "--kv", kv]);
    assert.equal(table.out.length, 1 + records.length, table.out.join("\n"));
    for (const line of [...table.out, ...json.out]) assert.deepEqual(rawControls(line), [], line);
    assert.ok(!table.out.some((line) => /^\s*7\s+9\s+fs\.write/.test(line)), "no forged row");
    const logs = await cli(["logs", String(pid), "--kv", kv]);
    for (const line of logs.out) assert.deepEqual(rawControls(line), [], line);
  });
});

Deno.test("ps and logs show what a process wrote escaped, one row per process", async () => {
  await withStore(async (kv, workspace) => {
    const spoof = 'done\u001b[2J\u001b[H\r\n2    -     root@1.0.0  exited  \u202e"ok"\u009b';
    const end = await runOnStore(
      kv,
      workspace,
      program(`throw new Error(input);`),
      { image: { name: "spoofer" }, input: spoof },
    );
    assert.equal(end.state, "failed");
    assert.ok(end.error?.message.includes(spoof), "the message is kept as written");
    const pid = end.pid;
    for (const args of [["ps"], ["ps", "--tree"], ["ps", "--json"], ["logs", String(pid)]]) {
      const shown = await cli([...args, "--kv", kv]);
      assert.equal(shown.code, 0, shown.err.join("\n"));
      for (const line of shown.out) assert.deepEqual(rawControls(line), [], `${args}: ${line}`);
      if (args[0] === "ps" && args[1] !== "--json") assert.equal(shown.out.length, 2);
    }
  });
});
