/**
 * Test helper: asks the host's `GET /v1/health` over and over while an
 * attack runs, to show the host's event loop kept answering.
 *
 * @module
 */

import { createApp } from "../api/app.ts";
import type { Kernel } from "../runtime/kernel.ts";

/**
 * A gap between two answers this long means the host's event loop was
 * frozen. The attacks in these tests freeze an unguarded host for far longer
 * (about 47 s measured on an idle machine, more on a busy one); a host that
 * is only busy with the rest of the suite, type checks included, answers well
 * within it.
 */
export const FROZEN_MS = 15_000;

/** What {@link watchHealth} saw. */
export interface HealthWatch {
  /** Health requests answered `200`. */
  answers: number;
  /** The longest time between two answers (or from the start to the first), in ms. */
  longestGapMs: number;
}

/**
 * Starts asking `/v1/health` of an API over `kernel`, one request after the
 * other with a host timer between them; `stop()` ends the loop and reports.
 * A frozen event loop answers neither the request nor the timer, so it shows
 * as a long gap.
 */
export function watchHealth(kernel: Kernel): { stop(): Promise<HealthWatch> } {
  // Health needs no token; the API wants at least one configured.
  const token = { name: "watch", token: crypto.randomUUID(), role: "viewer" as const };
  const app = createApp(kernel, { tokens: { tokens: [token] } });
  let running = true;
  let answers = 0;
  let longestGapMs = 0;
  let last = performance.now();
  const loop = (async () => {
    while (running) {
      const response = await app.request("/v1/health");
      await response.body?.cancel();
      if (response.status === 200) answers++;
      const now = performance.now();
      longestGapMs = Math.max(longestGapMs, now - last);
      last = now;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { answers, longestGapMs };
    },
  };
}
