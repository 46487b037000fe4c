/**
 * Fixtures of the unit tests that build a part of the kernel over an
 * in-memory KV: the KV, and the row of a root process.
 *
 * @module
 */

import type { NewProcess } from "./process_table.ts";

/** A new root process in `/ws` (image `t@1`), with `extra` over it. */
export function newProcess(extra: Partial<NewProcess> = {}): NewProcess {
  return {
    ppid: null,
    image: "t@1",
    digest: "d",
    cwd: "/ws",
    workspace: "/ws",
    policy: [],
    onParentExit: "kill",
    budget: {},
    ...extra,
  };
}

/** Runs `body` with a fresh in-memory KV, closed after it. */
export async function withMemoryKv<T>(body: (kv: Deno.Kv) => Promise<T>): Promise<T> {
  const kv = await Deno.openKv(":memory:");
  try {
    return await body(kv);
  } finally {
    kv.close();
  }
}
