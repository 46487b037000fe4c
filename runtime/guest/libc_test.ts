import assert from "node:assert/strict";
import type { WorkerToCell } from "./cell_protocol.ts";
import { createChannel, createSys, SysError } from "./libc.ts";

type Posted = Extract<WorkerToCell, { t: "syscall" }>;

Deno.test("each call is posted once with its own id, name and arguments", () => {
  const posted: Posted[] = [];
  const channel = createChannel((message) => posted.push(message));
  channel.call("fs.read", { path: "a" });
  channel.call("fs.read", { path: "b" });
  channel.call("time.now", {});
  assert.deepEqual(posted.map(({ name, args }) => ({ name, args })), [
    { name: "fs.read", args: { path: "a" } },
    { name: "fs.read", args: { path: "b" } },
    { name: "time.now", args: {} },
  ]);
  assert.ok(posted.every((m) => m.t === "syscall"));
  assert.equal(new Set(posted.map((m) => m.id)).size, 3);
});

Deno.test("replies settle the calls they answer, whatever their order", async () => {
  const posted: Posted[] = [];
  const channel = createChannel((message) => posted.push(message));
  const first = channel.call("fs.read", { path: "a" });
  const second = channel.call("fs.read", { path: "b" });
  channel.receive({ id: posted[1].id, ok: true, value: "bytes of b" });
  channel.receive({ id: posted[0].id, ok: true, value: "bytes of a" });
  assert.deepEqual(await Promise.all([first, second]), ["bytes of a", "bytes of b"]);
});

Deno.test("a refused call rejects with a SysError carrying the ABI code", async () => {
  const posted: Posted[] = [];
  const channel = createChannel((message) => posted.push(message));
  const call = channel.call("fs.write", { path: "x", data: "y" });
  channel.receive({
    id: posted[0].id,
    ok: false,
    error: { code: "EPERM", message: 'Cannot write file "x": no capability' },
  });
  await assert.rejects(call, (error: unknown) => {
    assert.ok(error instanceof SysError);
    assert.equal(error.code, "EPERM");
    assert.equal(error.message, 'Cannot write file "x": no capability');
    return true;
  });
});

Deno.test("a reply to no pending call, or a second reply to one, changes nothing", async () => {
  const posted: Posted[] = [];
  const channel = createChannel((message) => posted.push(message));
  const call = channel.call("time.now", {});
  channel.receive({ id: posted[0].id + 100, ok: true, value: "forged" });
  channel.receive({ id: posted[0].id, ok: true, value: 42 });
  channel.receive({ id: posted[0].id, ok: false, error: { code: "EINTR", message: "late" } });
  assert.equal(await call, 42);
  const next = channel.call("time.now", {});
  assert.notEqual(posted[1].id, posted[0].id);
  channel.receive({ id: posted[1].id, ok: true, value: 43 });
  assert.equal(await next, 43);
});

Deno.test("a typed call goes out as its syscall and resolves with the reply's value", async () => {
  const posted: Posted[] = [];
  const channel = createChannel((message) => posted.push(message));
  const sys = createSys(channel.call);
  const write = sys.fs.write("notes.txt", "hello");
  assert.deepEqual(posted.map(({ name, args }) => ({ name, args })), [
    { name: "fs.write", args: { path: "notes.txt", content: "hello" } },
  ]);
  channel.receive({ id: posted[0].id, ok: true, value: { bytes: 5 } });
  assert.deepEqual(await write, { bytes: 5 });
});

Deno.test("tool.call answers the tool's result, and throws when the tool did not exit", async () => {
  const posted: Posted[] = [];
  const channel = createChannel((message) => posted.push(message));
  const sys = createSys(channel.call);
  const done = sys.tool.call("sum", { a: 1 });
  channel.receive({ id: posted[0].id, ok: true, value: { state: "exited", result: 3 } });
  assert.equal(await done, 3);
  const failed = sys.tool.call("sum", { a: "x" });
  channel.receive({
    id: posted[1].id,
    ok: true,
    value: { state: "failed", error: { code: "EINVAL", message: "bad input" } },
  });
  await assert.rejects(failed, (error: unknown) => {
    assert.ok(error instanceof SysError);
    assert.equal(error.code, "EINVAL");
    assert.equal(error.message, 'Tool "sum" failed: bad input');
    return true;
  });
});
