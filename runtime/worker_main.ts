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
import type { CellToWorker, WorkerLoaded, WorkerToCell } from "./cell_protocol.ts";

declare const self: {
  postMessage(message: WorkerToCell | WorkerLoaded): void;
  onmessage: ((event: MessageEvent<CellToWorker>) => void) | null;
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

/**
 * Makes the program's clock and randomness replay-safe. The clock reads
 * the journal time of the latest syscall reply (so a replay sees the times
 * the first run saw), never the wall clock; randomness comes from a PRNG
 * seeded per process. `crypto.getRandomValues` and `crypto.randomUUID` are
 * therefore predictable from the seed: a program that needs secrets must
 * not make them itself.
 */
let clock = 0;
function determinize(epoch: number, seed: number): void {
  clock = epoch;
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const RealDate = Date;
  class ReplayDate extends RealDate {
    constructor(...args: unknown[]) {
      super(...((args.length ? args : [clock]) as [string]));
    }
    static override now(): number {
      return clock;
    }
  }
  const define = (target: object, name: string, value: unknown) =>
    Object.defineProperty(target, name, { value, configurable: false, writable: false });
  define(globalThis, "Date", ReplayDate);
  define(Math, "random", next);
  define(performance, "now", () => clock - epoch);
  define(crypto, "getRandomValues", <T extends ArrayBufferView | null>(array: T): T => {
    if (array) {
      const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
      for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(next() * 256);
    }
    return array;
  });
  define(crypto, "randomUUID", () => {
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${
      h.slice(20)
    }`;
  });
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
    determinize(message.epoch, message.seed);
    let result: unknown;
    if (message.entry.kind === "agent") {
      result = await runAgent(sys, message.input, message.entry.config, message.checkpoint);
    } else {
      const url = "data:application/typescript;base64," +
        btoa(String.fromCharCode(...new TextEncoder().encode(message.entry.source)));
      const module = await import(url);
      if (typeof module.default !== "function") {
        throw new Error("The entry module has no default export function");
      }
      result = await module.default(sys, message.input, { checkpoint: message.checkpoint });
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
    if (message.at !== undefined && message.at > clock) clock = message.at;
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    if (message.ok) waiter.resolve(message.value);
    else {
      waiter.reject(new SysError(message.error.code, message.error.message));
    }
  }
};
self.postMessage({ t: "loaded" });
