import assert from "node:assert/strict";
import type { WorkerToCell } from "./cell_protocol.ts";
import { SysError } from "./libc.ts";
import { createChannel } from "./transport.ts";

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
