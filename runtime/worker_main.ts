/**
 * The program side of a process: the entry module of the Worker that runs
 * inside a cell with `permissions: "none"`. It locks down what the Worker
 * could use to reach around the broker, then runs either the built-in
 * `libos:agent` loop or the image's entry module, giving it the libc.
 *
 * This file and what it imports are bundled into `_worker_bundle.ts`
 * (`deno task bundle`), because a zero-permission cell cannot read module
 * files: it starts the Worker from that text.
 *
 * @module
 */

import { createSys, SysError } from "./libc.ts";
import { runAgent } from "./agent.ts";
import type { CellToWorker, WorkerToCell } from "./cell_protocol.ts";

declare const self: {
  postMessage(message: WorkerToCell): void;
  onmessage: ((event: MessageEvent<CellToWorker>) => void) | null;
};

function lockDown(): void {
  const refuse = (what: string) => () => {
    throw new Error(`${what} is not available inside a libOS process`);
  };
  const g = globalThis as Record<string, unknown>;
  for (const name of ["Worker", "SharedWorker"]) {
    Object.defineProperty(g, name, {
      value: function Refused() {
        refuse(`Creating a nested ${name}`)();
      },
      configurable: false,
      writable: false,
    });
  }
  const permissions = Deno.permissions as unknown as Record<string, unknown>;
  for (const name of ["request", "requestSync", "revoke", "revokeSync"]) {
    try {
      Object.defineProperty(permissions, name, {
        value: refuse(`Deno.permissions.${name}`),
        configurable: false,
        writable: false,
      });
    } catch {
      // Already locked by the runtime; the cell's --no-prompt still refuses.
    }
  }
}

const pending = new Map<
  number,
  { resolve: (value: unknown) => void; reject: (error: unknown) => void }
>();
let nextId = 1;

const sys = createSys((name, args) =>
  new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    self.postMessage({ t: "syscall", id, name, args });
  })
);

async function start(message: Extract<CellToWorker, { t: "start" }>) {
  try {
    let result: unknown;
    if (message.entry.kind === "agent") {
      result = await runAgent(sys, message.input, message.entry.config);
    } else {
      const url = "data:application/typescript;base64," +
        btoa(String.fromCharCode(...new TextEncoder().encode(message.entry.source)));
      const module = await import(url);
      if (typeof module.default !== "function") {
        throw new Error("The entry module has no default export function");
      }
      result = await module.default(sys, message.input);
    }
    await sys.proc.exit(result === undefined ? null : result);
  } catch (error) {
    self.postMessage({
      t: "fail",
      code: error instanceof SysError ? error.code : undefined,
      message: error instanceof Error ? error.message : String(error),
    });
  }
}

lockDown();
self.onmessage = (event) => {
  const message = event.data;
  if (message.t === "start") {
    start(message);
  } else if (message.t === "reply") {
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    if (message.ok) waiter.resolve(message.value);
    else {
      waiter.reject(new SysError(message.error.code, message.error.message));
    }
  }
};
