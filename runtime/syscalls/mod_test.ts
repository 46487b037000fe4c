import assert from "node:assert/strict";
import { SYSCALL_NAMES, type SyscallName } from "../../broker/abi.ts";
import type { HandlerTable, Plan } from "../../broker/broker.ts";
import { Kernel } from "../kernel.ts";
import { handlerTable, registerHandlers, UNIMPLEMENTED } from "./mod.ts";

const plan = (): Plan => ({ ops: [], effect: "none", run: () => Promise.resolve(null) });

/** A handler for every ABI syscall but those named, as one module's table. */
function allBut(...left: SyscallName[]): HandlerTable {
  return Object.fromEntries(
    SYSCALL_NAMES.filter((name) => !left.includes(name)).map((name) => [name, plan]),
  ) as HandlerTable;
}

Deno.test("registerHandlers refuses a syscall that two modules define", () => {
  assert.throws(
    () =>
      registerHandlers([
        { module: "time.ts", handlers: allBut() },
        { module: "wait.ts", handlers: { "time.sleep": plan } },
      ]),
    { message: 'Cannot register syscall "time.sleep": defined by both time.ts and wait.ts' },
  );
});

Deno.test("registerHandlers refuses a handler for a name that is not in the ABI", () => {
  const extra = { ...allBut(), "time.warp": plan } as HandlerTable;
  assert.throws(
    () => registerHandlers([{ module: "time.ts", handlers: extra }]),
    { message: 'Cannot register syscall "time.warp" of time.ts: it is not in the ABI' },
  );
});

Deno.test("registerHandlers refuses an ABI syscall with no handler unless it is listed", () => {
  assert.throws(
    () => registerHandlers([{ module: "all.ts", handlers: allBut("ckpt.list", "net.fetch") }]),
    {
      message: 'Cannot register the syscall handlers: "net.fetch", "ckpt.list" of the ABI ' +
        "have no handler and are not listed as unimplemented",
    },
  );
  const table = registerHandlers([{ module: "all.ts", handlers: allBut("ckpt.list") }], {
    unimplemented: ["ckpt.list"],
  });
  assert.equal(table["ckpt.list"], undefined);
  assert.throws(
    () =>
      registerHandlers([{ module: "all.ts", handlers: allBut() }], {
        unimplemented: ["ckpt.list"],
      }),
    { message: 'Cannot register syscall "ckpt.list" of all.ts: it is listed as unimplemented' },
  );
});

Deno.test("the kernel's handler table defines every ABI syscall once", async () => {
  const kernel = await Kernel.open({ store: ":memory:" });
  try {
    const table = handlerTable(kernel);
    const missing = SYSCALL_NAMES.filter((name) => typeof table[name] !== "function");
    assert.deepEqual(missing, [...UNIMPLEMENTED]);
    assert.deepEqual(
      Object.keys(table).sort(),
      SYSCALL_NAMES.filter((name) => !UNIMPLEMENTED.includes(name)).sort(),
    );
  } finally {
    await kernel.close();
  }
});
