import { openBenchKernel } from "./_common.ts";
const LOOP = `export default async function main(sys, input) {
  const end = Date.now() + input.ms;
  let i = 0;
  while (Date.now() < end) await sys.obj.put("self", "k" + (i++ % 16), i);
  return i;
}`;
const bench = await openBenchKernel({ maxCells: 64, cellSharing: "principal" });
const tag = await bench.program("put", LOOP);
const pids: number[] = [];
for (let i = 0; i < 64; i++) pids.push((await bench.kernel.spawn({ image: tag, workspace: bench.workspace, input: { ms: 6000 } })).pid);
const t0 = performance.now();
for (const pid of pids) bench.kernel.start(pid);
const ends = await Promise.all(pids.map((pid) => bench.kernel.waitFor(pid)));
const total = ends.reduce((n, e) => n + (e.result as number), 0);
console.log("calls", total, "per s", (total / ((performance.now() - t0) / 1000)).toFixed(0), ends[0].state);
await bench.close();
