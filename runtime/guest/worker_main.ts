/**
 * The program side of a process: the entry module of the Worker that runs
 * inside a cell with `permissions: "none"`. It locks down what the Worker
 * could use to reach around the broker, then runs either the built-in
 * `libos:agent` loop or the image's entry module, giving it the libc.
 *
 * This file and what it imports (the `runtime/guest/` folder, `tools/`, and
 * the ABI contract in `broker/abi.ts`) are bundled into
 * `runtime/_worker_bundle.ts` (`deno task bundle`), because a
 * zero-permission cell cannot read module files: it starts the Worker from
 * that text.
 *
 * @module
 */

import { createChannel, createSys, SysError } from "./libc.ts";
import { runAgent } from "./agent.ts";
import type { CellToWorker, WorkerControl, WorkerPort, WorkerToCell } from "./cell_protocol.ts";
import { determinize, type ReplayClock } from "./determinism.ts";

declare const self: {
  onmessage: ((event: MessageEvent<WorkerPort>) => void) | null;
  close(): void;
};

/** Web storage globals a Worker may have; each is `undefined` in a process. */
const STORAGE_GLOBALS = [
  "caches",
  "CacheStorage",
  "Cache",
  "localStorage",
  "sessionStorage",
  "Storage",
  "indexedDB",
  "IDBFactory",
];

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
  // Storage that outlives the process would write to the host's disk with
  // no capability and no quota: none of it exists inside a process.
  for (const name of STORAGE_GLOBALS) {
    Object.defineProperty(g, name, { value: undefined, configurable: false, writable: false });
  }
  // Deno KV (only with --unstable-kv, which a cell never has) would be one more.
  if ("openKv" in Deno) {
    Object.defineProperty(Deno, "openKv", {
      value: refuse("Deno.openKv"),
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

/** The `data:` URL a program's entry module is imported from. */
function moduleUrl(source: string, javascript = false): string {
  return `data:application/${javascript ? "javascript" : "typescript"};base64,` +
    btoa(String.fromCharCode(...new TextEncoder().encode(source)));
}

/**
 * Sets up, ahead of any program, the globals a program's start uses first:
 * Deno makes some of them (the Web Crypto object, the text encoder) on
 * first use, which costs a start about 0.4 ms that a spare Worker pays
 * before it is taken.
 */
function warmGlobals(): void {
  globalThis.crypto.getRandomValues(new Uint8Array(1));
  performance.now();
  moduleUrl("");
}

let clock: ReplayClock | undefined;

/** The port to the cell's switchboard: every message of this Worker goes on it. */
let port: MessagePort | undefined;
const post = (message: WorkerToCell | WorkerControl) => port!.postMessage(message);
const channel = createChannel(post);
const sys = createSys(channel.call);

async function start(message: Extract<CellToWorker, { t: "start" }>) {
  try {
    clock = determinize(globalThis, message.epoch, message.seed);
    let result: unknown;
    if (message.entry.kind === "agent") {
      result = await runAgent(sys, message.input, message.entry.config, message.checkpoint);
    } else {
      const module = await import(moduleUrl(message.entry.source, message.entry.javascript));
      if (typeof module.default !== "function") {
        throw new Error("The entry module has no default export function");
      }
      result = await module.default(sys, message.input, { checkpoint: message.checkpoint });
    }
    await sys.proc.exit(result === undefined ? null : result);
  } catch (error) {
    post({
      t: "fail",
      code: error instanceof SysError ? error.code : undefined,
      message: error instanceof Error ? error.message : String(error),
    });
  }
}

function receive(message: CellToWorker): void {
  if (message.t === "start") {
    start(message);
  } else if (message.t === "reply") {
    if (message.at !== undefined) clock?.advance(message.at);
    channel.receive(message);
  } else if (message.t === "close") {
    // The event loop is free (this message ran): say so, and end.
    post({ t: "closing" });
    self.close();
  }
}

lockDown();
warmGlobals();
// A Worker's first dynamic import sets up its module loading and the
// TypeScript transform, which costs a program's start 1 to 3 ms more than
// later imports do: a spare Worker does it before it says it is loaded.
const warmed = import("data:application/typescript,export%20default%20(0%20as%20number)%3B");
// The cell's first message brings the port; the Worker object is not spoken on again.
self.onmessage = (event) => {
  if (port || event.data?.t !== "port" || event.ports.length !== 1) return;
  port = event.ports[0];
  self.onmessage = null;
  port.onmessage = (message: MessageEvent<CellToWorker>) => receive(message.data);
  const loaded = () => post({ t: "loaded" });
  warmed.then(loaded, loaded);
};
