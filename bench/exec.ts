/**
 * `exec.run` of `true`: what running a command costs with the OS sandbox
 * (bubblewrap, the process's view, limits, on a root host a pids cgroup)
 * and without it (`--exec-sandbox none`), and with a network grant (the
 * sandbox plus the host proxy, its bridge and the relay inside).
 *
 * A program loops `exec.run(["true"])`; the host records when each call
 * reaches the broker, and one gap between arrivals is one full command
 * round trip (see `_common.ts`). The kernels take turns per round, so noise
 * hits them alike. The process holds `fs:read:**` on its workspace, so the
 * sandbox binds a tree, as for a coding agent.
 *
 * @module
 */

import {
  type BenchKernel,
  type BenchOptions,
  gaps,
  median,
  openBenchKernel,
  percentile,
  probeDispatch,
  round,
  type Row,
  type Section,
} from "./_common.ts";

const LOOP = `export default async function main(sys, input) {
  for (let i = 0; i < input.n; i++) {
    const result = await sys.exec.run(["true"]);
    if (result.code !== 0) throw new Error("true failed: " + result.stderr);
  }
  return input.n;
}`;

const MODES = ["none", "bwrap", "bwrap+net"] as const;

/**
 * Measures `exec.run` of `true` with and without the sandbox.
 *
 * @example
 * ```ts ignore
 * const section = await benchExec({ quick: true, log: console.log });
 * ```
 */
export async function benchExec(options: BenchOptions): Promise<Section> {
  const rounds = options.quick ? 3 : 5;
  const calls = options.quick ? 20 : 60;
  const warm = 3;
  const kernels: Record<string, BenchKernel> = {
    none: await openBenchKernel({ execSandbox: "none" }),
    bwrap: await openBenchKernel(),
  };
  kernels["bwrap+net"] = kernels.bwrap;
  const status = await kernels.bwrap.kernel.execSandboxStatus();
  if (status.mode !== "bwrap") throw new Error(`Cannot measure the sandbox: ${status.detail}`);
  const per: Record<string, { p50: number[]; p99: number[] }> = {};
  const probes = Object.fromEntries(
    Object.entries(kernels).map(([mode, bench]) => [mode, probeDispatch(bench.kernel)]),
  );
  try {
    for (let r = 0; r < rounds; r++) {
      for (const mode of MODES) {
        const bench = kernels[mode];
        const capabilities = ["exec:run:true", "fs:read:**"];
        if (mode === "bwrap+net") capabilities.push("net:fetch:http://127.0.0.1:9/**");
        const tag = await bench.program(`exec-${mode.replace("+", "-")}-${r}`, LOOP, {
          capabilities,
        });
        const n = (mode === "bwrap+net" ? Math.ceil(calls / 3) : calls) + warm;
        const proc = await bench.kernel.run({
          image: tag,
          workspace: bench.workspace,
          input: { n },
        });
        if (proc.state !== "exited") {
          throw new Error(
            `Cannot measure ${mode}: the program ${proc.state}: ${proc.error?.message}`,
          );
        }
        const probe = probes[mode];
        const times = (probe.arrivals.get(proc.pid) ?? []).filter((a) => a.name === "exec.run")
          .map((a) => a.at);
        probe.arrivals.delete(proc.pid);
        const samples = gaps(times).slice(warm);
        per[mode] ??= { p50: [], p99: [] };
        per[mode].p50.push(percentile(samples, 50));
        per[mode].p99.push(percentile(samples, 99));
      }
      options.log(
        `  round ${r + 1}/${rounds}: ` +
          MODES.map((m) => `${m} ${per[m].p50.at(-1)!.toFixed(1)} ms`).join(", "),
      );
    }
  } finally {
    for (const probe of new Set(Object.values(probes))) probe.stop();
    await kernels.none.close();
    await kernels.bwrap.close();
  }
  const med = (mode: string, p: "p50" | "p99") => round(median(per[mode][p]), 2);
  const overhead = round(med("bwrap", "p50") - med("none", "p50"), 2);
  const rows: Row[] = [];
  for (const p of ["p50", "p99"] as const) {
    rows.push({ name: `exec.true.none.${p}`, value: med("none", p), unit: "ms" });
    rows.push({
      name: `exec.true.sandbox.${p}`,
      value: med("bwrap", p),
      unit: "ms",
      floor: med("none", p),
      floorName: "exec_sandbox_none",
      ratio: round(med("bwrap", p) / med("none", p), 2),
    });
    rows.push({
      name: `exec.true.sandbox_net.${p}`,
      value: med("bwrap+net", p),
      unit: "ms",
      floor: med("none", p),
      floorName: "exec_sandbox_none",
      note: "with a net:fetch grant: the host proxy, its bridge and the relay start per command",
    });
  }
  rows.push({
    name: "exec.true.sandbox_overhead.p50",
    value: overhead,
    unit: "ms",
    target: "<= 15 ms",
    met: overhead <= 15,
    note: "p50 with the sandbox minus p50 without it",
  });
  return {
    section: "exec",
    rows,
    details: {
      rounds,
      callsPerRound: calls,
      warmUpCalls: warm,
      perRound: per,
      processLimit: status.detail,
      method: "host-side gaps between consecutive exec.run arrivals at Broker.dispatch",
    },
  };
}
