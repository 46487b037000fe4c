import { openBenchKernel } from "./_common.ts";
const bench = await openBenchKernel({ warmCells: 2, execSandbox: "none" });
const CALLER = `export default async function main(sys) {
  await sys.tool.register({ name: "echo", description: "e", input: { type: "object" }, manifest: { capabilities: [] },
    source: "export function run(args: { n: number }) { return args.n; }" });
  for (let i = 0; i < 8; i++) await sys.tool.call("echo", { n: i });
  return "done";
}`;
const t0 = performance.now();
const log: string[] = [];
const broker = bench.kernel.broker; const dispatch = broker.dispatch;
broker.dispatch = async function (ctx, req) {
  const s = performance.now(); const r = await dispatch.call(broker, ctx, req);
  log.push(`${(s - t0).toFixed(1)} pid ${ctx.pid} ${req.name} took ${(performance.now() - s).toFixed(1)}`);
  return r;
};
const tag = await bench.program("caller", CALLER, { capabilities: ["tool:register:*", "tool:call:*"] });
const proc = await bench.kernel.spawn({ image: tag, workspace: bench.workspace });
bench.kernel.start(proc.pid);
const end = await bench.kernel.waitFor(proc.pid);
console.log(end.state, end.result);
console.log(log.slice(-20).join("\n"));
await bench.close();
