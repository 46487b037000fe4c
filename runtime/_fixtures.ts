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

/** Counts the commits tried on `kv` from now on, landed or not: returns the count so far. */
export function countCommits(kv: Deno.Kv): () => number {
  let tried = 0;
  const atomic = kv.atomic.bind(kv);
  kv.atomic = () => {
    const op = atomic();
    const commit = op.commit.bind(op);
    op.commit = () => (tried++, commit());
    return op;
  };
  return () => tried;
}
