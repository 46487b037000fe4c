import assert from "node:assert/strict";
import type { SyscallReply, SyscallRequest } from "./abi.ts";
import { AuditLog, type AuditRecord } from "./audit.ts";
import {
  Broker,
  type BrokerReply,
  type CallContext,
  type HandlerTable,
  OutcomeChange,
  PARKED,
} from "./broker.ts";
import type { CapabilitySpec } from "./capability.ts";
import { CapabilityStore } from "./capability_store.ts";
import { canonicalJson, sha256Hex } from "./digest.ts";
import { SyscallError } from "./errors.ts";
import { Journal, type JournalRecord } from "./journal.ts";
import { parsePolicy, type PolicyRule } from "./policy.ts";
import { rawControls } from "../test/_terminal.ts";
import { beforeNextCommit, watchCommits } from "../test/_kv_commits.ts";

/** How often each stage of a fake handler ran. */
interface Counts {
  planned: number;
  ran: number;
}

interface Fixture {
  kv: Deno.Kv;
  caps: CapabilityStore;
  journal: Journal;
  broker: Broker;
  counts: Counts;
  /** Calls the broker as `pid` (default 1) and returns the reply. */
  call(
    name: string,
    args: unknown,
    options?: { pid?: number; policy?: PolicyRule[] },
  ): Promise<SyscallReply>;
  grant(pid: number, spec: CapabilitySpec, boundTo?: string): Promise<string>;
  audit(): Promise<AuditRecord[]>;
}

/** What fake handlers saw while running. */
interface Seen {
  /** The journal record of a write's own seq while it ran. */
  intent?: JournalRecord | null;
  /** The value an `obj.put` was handed. */
  value?: unknown;
  /** How often an `event.emit` prepared its change of the store. */
  prepared?: number;
  /** Runs inside the run of an `fs.read`, after it was authorized. */
  duringRead?: () => Promise<void>;
  /** How often a `model.complete` prepared the change its outcome makes. */
  outcomes?: number;
  /** The errors a `model.complete` outcome could not be recorded with. */
  unrecorded?: unknown[];
}

/**
 * A fake handler table: `fs.read` needs fs:read on `/ws/<path>` and has no
 * effect, `fs.write` needs fs:write and is idempotent, `fs.rename` needs
 * delete on the source and write on the target, `fs.stat` fails in its plan,
 * `fs.list` fails in its run, `fs.mkdir` is refused for lack of authority
 * in its run (after `fs:write` allowed it), `event.emit` is a change of
 * the store alone (the next seq of a counter under `["fake_topic", topic]`),
 * `model.complete` runs, then its outcome changes the store (adds one to
 * `["fake_spent"]`; refused with `EBUDGET` when `maxTokens` is 1). Every
 * stage counts its invocations.
 */
function fakeHandlers(counts: Counts, kv: Deno.Kv, seen: Seen) {
  const at = (path: string) => `/ws/${path}`;
  const handlers: HandlerTable = {
    "fs.read": (_ctx, args) => {
      counts.planned++;
      return {
        ops: [{ resource: "fs", right: "read", target: at(args.path) }],
        effect: "none",
        run: async () => {
          counts.ran++;
          await seen.duringRead?.();
          return `content of ${args.path}`;
        },
      };
    },
    "fs.write": (ctx, args) => {
      counts.planned++;
      return {
        ops: [{ resource: "fs", right: "write", target: at(args.path) }],
        effect: "idempotent",
        run: async () => {
          counts.ran++;
          seen.intent = (await kv.get<JournalRecord>(["journal", ctx.pid, ctx.seq])).value;
          return { bytes: args.content.length };
        },
      };
    },
    "fs.rename": (_ctx, args) => {
      counts.planned++;
      return {
        ops: [
          { resource: "fs", right: "delete", target: at(args.from) },
          { resource: "fs", right: "write", target: at(args.to) },
        ],
        effect: "effect",
        run: () => {
          counts.ran++;
          return Promise.resolve(null);
        },
      };
    },
    "fs.stat": (_ctx, args) => {
      counts.planned++;
      throw new SyscallError("ENOENT", `Cannot stat "${args.path}": no such file`);
    },
    "fs.list": (_ctx, args) => {
      counts.planned++;
      return {
        ops: [{ resource: "fs", right: "read", target: at(args.path) }],
        effect: "none",
        run: () => {
          counts.ran++;
          return Promise.reject(
            args.path === "missing" ? new Deno.errors.NotFound("gone") : new Error("disk on fire"),
          );
        },
      };
    },
    "fs.mkdir": (_ctx, args) => {
      counts.planned++;
      return {
        ops: [{ resource: "fs", right: "write", target: at(args.path) }],
        effect: "effect",
        run: () => {
          counts.ran++;
          throw new SyscallError("EPERM", `Cannot create directory "${args.path}": not yours`);
        },
      };
    },
    "event.emit": (_ctx, args) => {
      counts.planned++;
      return {
        ops: [{ resource: "event", right: "emit", target: args.topic }],
        effect: "effect",
        prepare: async () => {
          seen.prepared = (seen.prepared ?? 0) + 1;
          const counter = await kv.get<number>(["fake_topic", args.topic]);
          const seq = (counter.value ?? 0) + 1;
          return {
            result: { seq },
            apply: (op) => op.check(counter).set(["fake_topic", args.topic], seq),
          };
        },
      };
    },
    "model.complete": (_ctx, args) => {
      counts.planned++;
      return {
        ops: [],
        effect: "none",
        run: () => {
          counts.ran++;
          return Promise.resolve(
            new OutcomeChange(
              async () => {
                seen.outcomes = (seen.outcomes ?? 0) + 1;
                if (args.maxTokens === 1) throw new SyscallError("EBUDGET", "Cannot spend: over");
                const spent = await kv.get<number>(["fake_spent"]);
                const total = (spent.value ?? 0) + 1;
                return {
                  result: { total },
                  apply: (op) => op.check(spent).set(["fake_spent"], total),
                };
              },
              (error) => {
                (seen.unrecorded ??= []).push(error);
                return Promise.resolve();
              },
            ),
          );
        },
      };
    },
    "obj.put": (_ctx, args) => {
      counts.planned++;
      seen.value = args.value;
      return { ops: [], effect: "none", run: () => Promise.resolve({ version: 1 }) };
    },
    // Its run meets one more operation (a redirect to `argv[0]`) and asks the broker.
    "exec.run": (_ctx, args) => ({
      ops: [],
      effect: "none",
      run: async (_grant, authorize) => {
        const used = await authorize([{ resource: "net", right: "fetch", target: args.argv[0] }], {
          context: 'redirected from "https://start.test/"',
          step: "a redirect",
        });
        counts.ran++;
        return used.map((cap) => cap.id);
      },
    }),
    // Declares the working directory it moves to; fails for a path named "missing".
    "proc.chdir": (_ctx, args) => ({
      ops: [],
      effect: "none",
      after: { cwd: at(args.path) },
      run: () =>
        args.path === "missing"
          ? Promise.reject(new SyscallError("ENOENT", `Cannot chdir to "${args.path}"`))
          : Promise.resolve(at(args.path)),
    }),
    "time.now": () => {
      counts.planned++;
      return {
        ops: [],
        effect: "none",
        run: () => {
          counts.ran++;
          return Promise.resolve(42);
        },
      };
    },
  };
  return handlers;
}

async function withBroker(
  fn: (f: Fixture & { seen: Seen }) => Promise<void>,
): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  const caps = new CapabilityStore(kv);
  const log = new AuditLog(kv);
  const journal = new Journal(kv, log);
  const counts: Counts = { planned: 0, ran: 0 };
  const seen: Seen = {};
  const broker = new Broker({ caps, journal, handlers: fakeHandlers(counts, kv, seen) });
  let seq = 0;
  let id = 0;
  const fixture = {
    kv,
    caps,
    journal,
    broker,
    counts,
    seen,
    call: async (
      name: string,
      args: unknown,
      options: { pid?: number; policy?: PolicyRule[] } = {},
    ): Promise<SyscallReply> => {
      const ctx: Omit<CallContext, "argsDigest"> = {
        pid: options.pid ?? 1,
        image: "demo@1.0.0",
        workspace: "/ws",
        policy: options.policy ?? [],
        seq: ++seq,
      };
      const request: SyscallRequest = { id: ++id, name, args };
      const reply = await broker.dispatch(ctx, request);
      assert.equal(typeof reply, "object", "the call was answered, not parked");
      const answered = reply as SyscallReply;
      assert.equal(answered.id, request.id);
      return answered;
    },
    grant: async (pid: number, spec: CapabilitySpec, boundTo?: string) =>
      (await caps.grant(pid, spec, { grantedBy: "operator", boundTo })).id,
    audit: async () => {
      await journal.flush();
      const out: AuditRecord[] = [];
      for await (const record of log.list()) out.push(record);
      return out;
    },
  };
  try {
    await fn(fixture);
  } finally {
    await journal.close();
    kv.close();
  }
}

function errorOf(reply: SyscallReply): { code: string; message: string } {
  assert.equal(reply.ok, false, `expected an error, got ${JSON.stringify(reply)}`);
  return (reply as Extract<SyscallReply, { ok: false }>).error;
}

const READ_WS: CapabilitySpec = { resource: "fs", rights: ["read"], scope: "/ws/**" };
const EMIT_ANY: CapabilitySpec = { resource: "event", rights: ["emit"], scope: "**" };
const WRITE_WS: CapabilitySpec = { resource: "fs", rights: ["write"], scope: "/ws/**" };

Deno.test("an unknown syscall fails with ENOSYS before any handler, and is audited", async () => {
  await withBroker(async (f) => {
    const error = errorOf(await f.call("fs.chmod", { path: "a" }));
    assert.equal(error.code, "ENOSYS");
    assert.match(error.message, /Unknown syscall "fs\.chmod"/);
    assert.deepEqual(f.counts, { planned: 0, ran: 0 });
    const [record] = await f.audit();
    assert.equal(record.syscall, "fs.chmod");
    assert.equal(record.outcome, "error");
    assert.equal(record.code, "ENOSYS");
    assert.equal(record.decision, "deny");
  });
});

Deno.test("an overlong unknown syscall name is cut in the reply and the audit", async () => {
  await withBroker(async (f) => {
    const name = "x".repeat(10_000);
    const error = errorOf(await f.call(name, {}));
    assert.equal(error.code, "ENOSYS");
    assert.ok(error.message.length < 200);
    const [record] = await f.audit();
    assert.ok(record.syscall.length <= 100);
  });
});

Deno.test("an unknown syscall name is audited and answered escaped, never raw", async () => {
  await withBroker(async (f) => {
    const name = "fs.read\u001b[2K\r\n  7  1  fs.write\u202e\u009b31m";
    const error = errorOf(await f.call(name, {}));
    assert.equal(error.code, "ENOSYS");
    const [record] = await f.audit();
    for (const text of [record.syscall, record.reason!, error.message]) {
      assert.deepEqual(rawControls(text), []);
      assert.ok(text.includes("fs.read\\u001b[2K\\r\\n  7  1  fs.write\\u202e\\u009b31m"), text);
    }
  });
});

Deno.test("a syscall of the ABI without a handler fails with ENOSYS", async () => {
  await withBroker(async (f) => {
    const error = errorOf(await f.call("net.fetch", { url: "https://example.com/" }));
    assert.equal(error.code, "ENOSYS");
    assert.match(error.message, /"net\.fetch" is not implemented/);
  });
});

Deno.test("bad arguments fail with EINVAL naming the field, before planning", async () => {
  await withBroker(async (f) => {
    await f.grant(1, READ_WS);
    const wrongType = errorOf(await f.call("fs.read", { path: 7 }));
    assert.equal(wrongType.code, "EINVAL");
    assert.match(wrongType.message, /^Invalid arguments for fs\.read: path: /);
    const missing = errorOf(await f.call("fs.write", { path: "a.txt" }));
    assert.match(missing.message, /content: /);
    const extra = errorOf(await f.call("fs.read", { path: "a.txt", mode: "r" }));
    assert.equal(extra.code, "EINVAL");
    assert.match(extra.message, /"mode"/);
    const nested = errorOf(await f.call("fs.read", { path: "a.txt", maxBytes: -1 }));
    assert.match(nested.message, /maxBytes: /);
    for (const args of [null, [], "a.txt", 3, undefined]) {
      assert.equal(errorOf(await f.call("fs.read", args)).code, "EINVAL");
    }
    assert.deepEqual(f.counts, { planned: 0, ran: 0 });
  });
});

Deno.test("__proto__ keys are refused at the top level and harmless inside values", async () => {
  await withBroker(async (f) => {
    await f.grant(1, READ_WS);
    const attack = JSON.parse('{"path":"a.txt","__proto__":{"polluted":true,"path":"../etc"}}');
    const error = errorOf(await f.call("fs.read", attack));
    assert.equal(error.code, "EINVAL");
    assert.match(error.message, /__proto__/);
    assert.equal(f.counts.planned, 0);
    const value = JSON.parse('{"__proto__":{"polluted":true},"a":1}');
    const reply = await f.call("obj.put", { namespace: "self", name: "n", value });
    assert.equal(reply.ok, true);
    const handed = f.seen.value as Record<string, unknown>;
    assert.equal(handed.a, 1);
    assert.equal(handed.polluted, undefined);
    assert.equal(Object.getPrototypeOf(handed), Object.prototype);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(Object.prototype.hasOwnProperty.call(Object.prototype, "polluted"), false);
  });
});

Deno.test("a call without a capability is planned but never run", async () => {
  await withBroker(async (f) => {
    const error = errorOf(await f.call("fs.read", { path: "secret.txt" }));
    assert.equal(error.code, "EPERM");
    assert.match(
      error.message,
      /^Cannot read file "(\/ws\/|\.\/)?secret\.txt": no capability grants fs:read on it$/,
    );
    assert.deepEqual(f.counts, { planned: 1, ran: 0 });
    await f.grant(1, READ_WS);
    const reply = await f.call("fs.read", { path: "secret.txt" });
    assert.equal(reply.ok, true);
    assert.equal((reply as { value: unknown }).value, "content of secret.txt");
    assert.deepEqual(f.counts, { planned: 2, ran: 1 });
  });
});

Deno.test("another process's capability authorizes nothing", async () => {
  await withBroker(async (f) => {
    await f.grant(2, READ_WS);
    assert.equal(errorOf(await f.call("fs.read", { path: "a.txt" }, { pid: 1 })).code, "EPERM");
    assert.equal((await f.call("fs.read", { path: "a.txt" }, { pid: 2 })).ok, true);
    assert.equal(f.counts.ran, 1);
  });
});

Deno.test("policy deny beats a capability and the call never runs", async () => {
  await withBroker(async (f) => {
    await f.grant(1, READ_WS);
    const policy = parsePolicy({ "fs:read:secret.txt": "deny" }, "image");
    const error = errorOf(await f.call("fs.read", { path: "secret.txt" }, { policy }));
    assert.equal(error.code, "EPERM");
    assert.match(error.message, /denied by policy "fs:read:secret\.txt"/);
    assert.equal(f.counts.ran, 0);
    assert.equal((await f.call("fs.read", { path: "public.txt" }, { policy })).ok, true);
    assert.equal(f.counts.ran, 1);
  });
});

Deno.test("policy ask fails closed when no human can be asked", async () => {
  await withBroker(async (f) => {
    const policy = parsePolicy({ "fs:write:**": "ask" }, "image");
    for (const held of [false, true]) {
      if (held) await f.grant(1, WRITE_WS);
      const error = errorOf(await f.call("fs.write", { path: "a.txt", content: "x" }, { policy }));
      assert.equal(error.code, "EPERM");
      assert.match(error.message, /policy "fs:write:\*\*" asks a human/);
    }
    assert.equal(f.counts.ran, 0);
  });
});

Deno.test("every operation of a call must be authorized before it runs", async () => {
  await withBroker(async (f) => {
    await f.grant(1, WRITE_WS);
    const error = errorOf(await f.call("fs.rename", { from: "a.txt", to: "b.txt" }));
    assert.equal(error.code, "EPERM");
    assert.match(error.message, /fs:delete/);
    await f.grant(1, { resource: "fs", rights: ["delete"], scope: "/ws/a.txt" });
    assert.equal((await f.call("fs.rename", { from: "a.txt", to: "b.txt" })).ok, true);
    assert.deepEqual(f.counts, { planned: 2, ran: 1 });
  });
});

Deno.test("an effect's intent is journaled before it runs", async () => {
  await withBroker(async (f) => {
    await f.grant(1, WRITE_WS);
    assert.equal((await f.call("fs.write", { path: "a.txt", content: "hello" })).ok, true);
    assert.equal(f.seen.intent?.phase, "intent");
    assert.equal(f.seen.intent?.name, "fs.write");
    await f.journal.flush();
    const done = (await f.kv.get<JournalRecord>(["journal", 1, 1])).value;
    assert.equal(done?.phase, "done");
    assert.equal(done?.ok, true);
    assert.deepEqual(done?.value, { bytes: 5 });
  });
});

Deno.test("a failing plan or run becomes an error reply with its ABI code", async () => {
  await withBroker(async (f) => {
    await f.grant(1, READ_WS);
    const plan = errorOf(await f.call("fs.stat", { path: "a.txt" }));
    assert.equal(plan.code, "ENOENT");
    assert.equal(f.counts.ran, 0);
    assert.equal(errorOf(await f.call("fs.list", { path: "missing" })).code, "ENOENT");
    const crash = errorOf(await f.call("fs.list", { path: "other" }));
    assert.equal(crash.code, "EINVAL");
    assert.match(crash.message, /disk on fire/);
    const records = await f.audit();
    assert.deepEqual(records.map((r) => [r.syscall, r.decision, r.code]), [
      ["fs.stat", "deny", "ENOENT"],
      ["fs.list", "allow", "ENOENT"],
      ["fs.list", "allow", "EINVAL"],
    ]);
  });
});

Deno.test("a refusal for lack of authority is audited deny, whichever step refused", async () => {
  await withBroker(async (f) => {
    await f.grant(1, WRITE_WS);
    await f.grant(1, { ...READ_WS, uses: 1 });
    // Refused in its run, after capabilities and policy allowed it.
    assert.equal(errorOf(await f.call("fs.mkdir", { path: "d" })).code, "EPERM");
    assert.equal(f.counts.ran, 1);
    // Refused by authorization: no capability, and a policy deny.
    assert.equal(errorOf(await f.call("fs.rename", { from: "a", to: "b" })).code, "EPERM");
    const policy = parsePolicy({ "fs:write:**": "deny" }, "operator");
    assert.equal(
      errorOf(await f.call("fs.write", { path: "a", content: "" }, { policy })).code,
      "EPERM",
    );
    // A one-shot grant that a concurrent call used first.
    const reads = await Promise.all([
      f.call("fs.read", { path: "a" }),
      f.call("fs.read", { path: "b" }),
    ]);
    assert.equal(reads.filter((r) => !r.ok && r.error.code === "EPERM").length, 1);
    const refused = (await f.audit()).filter((r) => r.code === "EPERM");
    assert.equal(refused.length, 4);
    assert.deepEqual(refused.map((r) => [r.syscall, r.decision, r.outcome]).sort(), [
      ["fs.mkdir", "deny", "error"],
      ["fs.read", "deny", "error"],
      ["fs.rename", "deny", "error"],
      ["fs.write", "deny", "error"],
    ]);
  });
});

Deno.test("a one-shot capability authorizes exactly one of two concurrent calls", async () => {
  await withBroker(async (f) => {
    await f.grant(1, { ...WRITE_WS, uses: 1 });
    const replies = await Promise.all([
      f.call("fs.write", { path: "a.txt", content: "1" }),
      f.call("fs.write", { path: "a.txt", content: "2" }),
    ]);
    assert.equal(replies.filter((r) => r.ok).length, 1);
    assert.equal(errorOf(replies.find((r) => !r.ok)!).code, "EPERM");
    assert.equal(f.counts.ran, 1);
    assert.equal(errorOf(await f.call("fs.write", { path: "a.txt", content: "3" })).code, "EPERM");
    assert.equal(f.counts.ran, 1);
    assert.deepEqual(await f.caps.list(1), []);
  });
});

Deno.test("a one-shot grant bound to one call authorizes only that exact call", async () => {
  await withBroker(async (f) => {
    const args = { path: "a.txt", content: "approved" };
    const digest = await sha256Hex(canonicalJson({ name: "fs.write", args }));
    await f.grant(1, { ...WRITE_WS, uses: 1 }, digest);
    const other = errorOf(await f.call("fs.write", { path: "a.txt", content: "changed" }));
    assert.equal(other.code, "EPERM");
    assert.equal(f.counts.ran, 0);
    assert.equal((await f.call("fs.write", args)).ok, true);
    assert.equal(errorOf(await f.call("fs.write", args)).code, "EPERM");
    assert.equal(f.counts.ran, 1);
  });
});

Deno.test("every call is journaled and audited with its decision and capability", async () => {
  await withBroker(async (f) => {
    const cap = await f.grant(1, READ_WS);
    await f.call("fs.read", { path: "a.txt" });
    await f.call("fs.write", { path: "a.txt", content: "x" });
    await f.call("time.now", {});
    const records = await f.audit();
    assert.deepEqual(
      records.map((r) => [r.syscall, r.decision, r.outcome, r.capability]),
      [
        ["fs.read", "allow", "ok", cap],
        ["fs.write", "deny", "error", undefined],
        ["time.now", "allow", "ok", undefined],
      ],
    );
    for (let seq = 1; seq <= 3; seq++) {
      const entry = (await f.kv.get<JournalRecord>(["journal", 1, seq])).value;
      assert.equal(entry?.phase, "done");
    }
  });
});

const HOP = "https://next.test/page";
const NET_NEXT: CapabilitySpec = {
  resource: "net",
  rights: ["fetch"],
  scope: "https://next.test/**",
};

Deno.test("an operation met while a call runs is authorized by the broker with lasting grants", async () => {
  await withBroker(async (f) => {
    // Nothing held: refused, and the run stops there.
    const none = errorOf(await f.call("exec.run", { argv: [HOP] }));
    assert.equal(none.code, "EPERM");
    assert.equal(
      none.message,
      `Cannot run command "${HOP}" (redirected from "https://start.test/"): no lasting capability grants net:fetch on it`,
    );
    // A one-shot grant was for the call as planned: it covers no follow-up, and stays unspent.
    const oneShot = await f.grant(1, { ...NET_NEXT, uses: 1 });
    assert.match(
      errorOf(await f.call("exec.run", { argv: [HOP] })).message,
      /no lasting capability/,
    );
    assert.equal((await f.caps.list(1)).find((c) => c.id === oneShot)?.uses, 1);
    assert.equal(f.counts.ran, 0);
    // A lasting grant allows it, and is the capability used.
    const lasting = await f.grant(1, NET_NEXT);
    const ok = await f.call("exec.run", { argv: [HOP] });
    assert.equal(ok.ok, true);
    assert.deepEqual((ok as { value: unknown }).value, [lasting]);
    // Policy still decides: deny refuses, ask cannot wait for a human.
    const deny = parsePolicy({ "net:fetch:https://next.test/**": "deny" }, "operator");
    assert.match(
      errorOf(await f.call("exec.run", { argv: [HOP] }, { policy: deny })).message,
      /denied by policy "net:fetch:https:\/\/next.test\/\*\*"/,
    );
    const ask = parsePolicy({ "net:fetch:https://next.test/**": "ask" }, "operator");
    assert.match(
      errorOf(await f.call("exec.run", { argv: [HOP] }, { policy: ask })).message,
      /asks a human, which a redirect cannot wait for/,
    );
    // A human's lasting grant answers the question.
    const human = (await f.caps.grant(1, NET_NEXT, { grantedBy: "human:r1" })).id;
    const approved = await f.call("exec.run", { argv: [HOP] }, { policy: ask });
    assert.deepEqual((approved as { value: unknown }).value, [human]);
    assert.equal(f.counts.ran, 2);
    const decisions = (await f.audit()).map((r) => r.decision);
    assert.deepEqual(decisions, ["deny", "deny", "allow", "deny", "deny", "allow"]);
  });
});

Deno.test("a plan's after-effects reach the reply and the journal only when the call succeeds", async () => {
  await withBroker(async (f) => {
    const ctx = { pid: 1, image: "demo@1.0.0", workspace: "/ws", policy: [], seq: 1 };
    const moved = await f.broker.dispatch(ctx, {
      id: 1,
      name: "proc.chdir",
      args: { path: "sub" },
    });
    assert.notEqual(moved, PARKED);
    assert.deepEqual((moved as BrokerReply).after, { cwd: "/ws/sub" });
    const failed = await f.broker.dispatch({ ...ctx, seq: 2 }, {
      id: 2,
      name: "proc.chdir",
      args: { path: "missing" },
    });
    assert.equal((failed as BrokerReply).ok, false);
    assert.equal((failed as BrokerReply).after, undefined);
    await f.journal.flush();
    const journaled = async (seq: number) =>
      (await f.kv.get<JournalRecord>(["journal", 1, seq])).value?.after;
    assert.deepEqual(await journaled(1), { cwd: "/ws/sub" });
    assert.equal(await journaled(2), undefined);
  });
});

Deno.test("with checkResults, a result that does not fit its declared type fails the call", async () => {
  const kv = await Deno.openKv(":memory:");
  const journal = new Journal(kv, new AuditLog(kv));
  // `fs.write` answers `{ bytes }`; this handler answers a number.
  const handlers: HandlerTable = {
    "fs.write": () => ({ ops: [], effect: "none", run: () => Promise.resolve(7) }),
    "time.now": () => ({ ops: [], effect: "none", run: () => Promise.resolve(42) }),
  };
  const ctx = { pid: 1, image: "demo@1.0.0", workspace: "/ws", policy: [], seq: 1 };
  try {
    const write = { id: 1, name: "fs.write", args: { path: "a", content: "b" } };
    const lax = new Broker({ caps: new CapabilityStore(kv), journal, handlers });
    assert.equal(((await lax.dispatch(ctx, write)) as SyscallReply).ok, true);
    const strict = new Broker({
      caps: new CapabilityStore(kv),
      journal,
      handlers,
      checkResults: true,
    });
    const refused = errorOf((await strict.dispatch({ ...ctx, seq: 2 }, write)) as SyscallReply);
    assert.equal(refused.code, "EINVAL");
    assert.match(refused.message, /^Cannot answer fs\.write: its result does not fit/);
    const now = await strict.dispatch({ ...ctx, seq: 3 }, { id: 3, name: "time.now", args: {} });
    assert.equal((now as { value: unknown }).value, 42);
  } finally {
    await journal.close();
    kv.close();
  }
});

Deno.test("with checkResults, a recorded result answered at replay that does not fit its type fails", async () => {
  const kv = await Deno.openKv(":memory:");
  const journal = new Journal(kv, new AuditLog(kv));
  const options = { caps: new CapabilityStore(kv), journal, handlers: {} };
  // What a wait's end wrote for `time.sleep` (declared `null`) and `proc.wait` (a child's end).
  const done = (name: string, value: unknown): JournalRecord => ({
    pid: 1,
    seq: 1,
    name,
    argsDigest: "d",
    effect: "none",
    phase: "done",
    at: 5,
    ok: true,
    value,
  });
  const sleep = { id: 7, name: "time.sleep", args: { ms: 10 } };
  const wait = { id: 8, name: "proc.wait", args: { pid: 2 } };
  try {
    const lax = new Broker(options);
    assert.deepEqual(lax.answerRecorded(sleep, done("time.sleep", "late")), {
      id: 7,
      ok: true,
      value: "late",
      at: 5,
      after: undefined,
    });
    const strict = new Broker({ ...options, checkResults: true });
    const refused = strict.answerRecorded(sleep, done("time.sleep", "late"));
    assert.equal(refused.at, 5);
    assert.equal(errorOf(refused).code, "EINVAL");
    assert.match(errorOf(refused).message, /^Cannot answer time\.sleep: its result does not fit/);
    assert.equal(
      errorOf(strict.answerRecorded(wait, done("proc.wait", { pid: 2 }))).code,
      "EINVAL",
    );
    // A result that fits, and a recorded error, are answered as they were written.
    const end = { pid: 2, state: "exited", result: 3 };
    assert.deepEqual(strict.answerRecorded(wait, done("proc.wait", end)), {
      id: 8,
      ok: true,
      value: end,
      at: 5,
      after: undefined,
    });
    const error = { code: "ETIMEDOUT" as const, message: "Cannot wait for process 2: timed out" };
    assert.deepEqual(
      strict.answerRecorded(wait, { ...done("proc.wait", undefined), ok: false, error }),
      { id: 8, ok: false, error, at: 5 },
    );
  } finally {
    await journal.close();
    kv.close();
  }
});

Deno.test("a change of the store commits with its done record and audit record, in one commit", async () => {
  await withBroker(async (f) => {
    await f.grant(1, EMIT_ANY);
    const watch = watchCommits(f.kv);
    const reply = await f.call("event.emit", { topic: "t", data: 1 });
    watch.stop();
    assert.deepEqual(reply, { id: 1, ok: true, value: { seq: 1 }, at: (reply as BrokerReply).at });
    // The one commit holds the change, the call's record and its audit record.
    assert.equal(watch.commits.length, 1);
    const keys = watch.commits[0].keys.map((key) => JSON.stringify(key));
    for (
      const key of [["fake_topic", "t"], ["journal", 1, 1], ["audit", "rec", 1], ["audit", "head"]]
    ) {
      assert.ok(keys.includes(JSON.stringify(key)), `${JSON.stringify(key)} in ${keys}`);
    }
    // Never an intent without its outcome: the record is done once the call returns.
    const record = (await f.kv.get<JournalRecord>(["journal", 1, 1])).value;
    assert.equal(record?.phase, "done");
    assert.deepEqual(record?.value, { seq: 1 });
    assert.equal(f.journal.stats.commits, 1);
    assert.equal((await f.audit())[0].syscall, "event.emit");
  });
});

Deno.test("a change whose check fails is prepared again and committed once", async () => {
  await withBroker(async (f) => {
    await f.grant(1, EMIT_ANY);
    // Another writer moves the counter after the call read it.
    const raced = beforeNextCommit(f.kv, async () => {
      await f.kv.set(["fake_topic", "t"], 5);
    });
    const reply = await f.call("event.emit", { topic: "t" });
    await raced;
    assert.deepEqual((reply as BrokerReply & { ok: true }).value, { seq: 6 });
    assert.equal(f.seen.prepared, 2);
    assert.equal((await f.kv.get(["fake_topic", "t"])).value, 6);
    assert.equal((await f.audit()).length, 1);
  });
});

const HELLO = { messages: [{ role: "user", content: "hello" }] };

Deno.test("a run whose outcome changes the store commits the change with its done and audit records, in one durable commit", async () => {
  await withBroker(async (f) => {
    const watch = watchCommits(f.kv);
    const reply = await f.call("model.complete", HELLO);
    watch.stop();
    assert.deepEqual((reply as BrokerReply & { ok: true }).value, { total: 1 });
    // Committed before the reply, with nothing left for a later group commit.
    assert.equal(watch.commits.length, 1);
    const keys = watch.commits[0].keys.map((key) => JSON.stringify(key));
    for (const key of [["fake_spent"], ["journal", 1, 1], ["audit", "rec", 1], ["audit", "head"]]) {
      assert.ok(keys.includes(JSON.stringify(key)), `${JSON.stringify(key)} in ${keys}`);
    }
    const record = (await f.kv.get<JournalRecord>(["journal", 1, 1])).value;
    assert.equal(record?.phase, "done");
    assert.deepEqual(record?.value, { total: 1 });
    assert.equal(f.counts.ran, 1);
    assert.equal(f.seen.unrecorded, undefined);
  });
});

Deno.test("an outcome whose check fails is prepared again and committed once; the run is not repeated", async () => {
  await withBroker(async (f) => {
    // Another writer moves the counter after the outcome read it.
    const raced = beforeNextCommit(f.kv, async () => {
      await f.kv.set(["fake_spent"], 5);
    });
    const reply = await f.call("model.complete", HELLO);
    await raced;
    assert.deepEqual((reply as BrokerReply & { ok: true }).value, { total: 6 });
    assert.equal(f.counts.ran, 1);
    assert.equal(f.seen.outcomes, 2);
    assert.equal((await f.kv.get(["fake_spent"])).value, 6);
    const records = await f.audit();
    assert.equal(records.length, 1);
    assert.equal(records[0].outcome, "ok");
  });
});

Deno.test("an outcome that cannot be recorded fails the call, writes nothing of it and is handed to unrecorded", async () => {
  await withBroker(async (f) => {
    const reply = await f.call("model.complete", { ...HELLO, maxTokens: 1 });
    assert.equal(errorOf(reply).code, "EBUDGET");
    assert.equal(f.counts.ran, 1);
    assert.equal((await f.kv.get(["fake_spent"])).value, null);
    assert.equal(f.seen.unrecorded?.length, 1);
    assert.equal((f.seen.unrecorded![0] as SyscallError).code, "EBUDGET");
    // The failure is journaled and audited as any failed call.
    await f.journal.flush();
    const record = (await f.kv.get<JournalRecord>(["journal", 1, 1])).value;
    assert.equal(record?.ok, false);
    assert.equal((await f.audit())[0].code, "EBUDGET");
  });
});

Deno.test("a revocation committed after authorization refuses the change of the store, which writes nothing", async () => {
  await withBroker(async (f) => {
    const id = await f.grant(1, EMIT_ANY);
    // The revocation lands after the call read its capabilities, just before its commit.
    const revoked = beforeNextCommit(f.kv, async () => {
      await f.caps.revoke(id);
    });
    const refused = errorOf(await f.call("event.emit", { topic: "t" }));
    await revoked;
    assert.equal(refused.code, "EPERM");
    assert.match(refused.message, /no capability grants event:emit/);
    assert.equal((await f.kv.get(["fake_topic", "t"])).value, null);
    const [record] = await f.audit();
    assert.deepEqual([record.decision, record.outcome, record.code], ["deny", "error", "EPERM"]);
    const done = (await f.kv.get<JournalRecord>(["journal", 1, 1])).value;
    assert.deepEqual([done?.phase, done?.ok], ["done", false]);
  });
});

Deno.test("a grant to the caller committed after authorization does not refuse its change", async () => {
  await withBroker(async (f) => {
    await f.grant(1, EMIT_ANY);
    const granted = beforeNextCommit(f.kv, async () => {
      await f.grant(1, READ_WS);
    });
    const reply = await f.call("event.emit", { topic: "t" });
    await granted;
    assert.equal(reply.ok, true);
    // Authorized again on the new version of its capabilities, and prepared again.
    assert.equal(f.seen.prepared, 2);
    assert.equal((await f.kv.get(["fake_topic", "t"])).value, 1);
  });
});

Deno.test("a revocation committed after authorization refuses an effect before its intent, and it never runs", async () => {
  await withBroker(async (f) => {
    const id = await f.grant(1, WRITE_WS);
    const revoked = beforeNextCommit(f.kv, async () => {
      await f.caps.revoke(id);
    });
    const refused = errorOf(await f.call("fs.write", { path: "a.txt", content: "x" }));
    await revoked;
    assert.equal(refused.code, "EPERM");
    assert.equal(f.counts.ran, 0);
    await f.journal.flush();
    const done = (await f.kv.get<JournalRecord>(["journal", 1, 1])).value;
    assert.deepEqual([done?.phase, done?.ok], ["done", false]);
  });
});

Deno.test("a read authorized before a revocation commits may still answer; every later call is refused", async () => {
  await withBroker(async (f) => {
    const id = await f.grant(1, READ_WS);
    // The revocation lands while the read runs: the read was authorized before it.
    f.seen.duringRead = async () => {
      f.seen.duringRead = undefined;
      await f.caps.revoke(id);
    };
    const read = await f.call("fs.read", { path: "a.txt" });
    assert.equal(read.ok, true);
    assert.equal(errorOf(await f.call("fs.read", { path: "a.txt" })).code, "EPERM");
    assert.equal(f.counts.ran, 1);
  });
});
