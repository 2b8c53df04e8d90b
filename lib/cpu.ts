/** The machine's CPU count as compute threads see it. */
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

/** Physical cores on Linux (hyperthreads share a core's SIMD units); logical CPUs elsewhere. */
export function physicalCores(): number {
  try {
    const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
    const cores = new Set<string>();
    let phys = "0";
    for (const line of cpuinfo.split("\n")) {
      const [k, v] = line.split(":").map((s) => s?.trim());
      if (k === "physical id") phys = v;
      if (k === "core id") cores.add(`${phys}:${v}`);
    }
    if (cores.size > 0) return cores.size;
  } catch {
    /* not Linux */
  }
  return availableParallelism();
}
