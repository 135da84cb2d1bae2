// The import figures of `outpost bench` (scripts/bench.ts), measured in a fresh process of their own, as an
// admin's `outpost import` runs: import the signed package into the store (stage + verify + apply +
// filters in the apply worker), then open a LookupEngine on it, which loads the persisted filters. The
// process's peak RSS (getrusage maxrss: every thread, the whole life of the process) is the import's
// memory; in the bench process it would include the bench's own generated data set (GiBs at 10M).
import type { Config } from '../appliance/config.ts';
import { openDb } from '../appliance/db.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { importPackage } from '../sync/import.ts';
import { childMain } from './bench-child.ts';

export interface ImportInput {
  cfg: Config;
  tarPath: string;
}

export interface ImportFigures {
  /** Indicators in the store after the import. */
  total: number;
  /** importPackage(): stage, verify, apply, filters built and persisted. */
  applyMs: number;
  /** A LookupEngine on the store after that: loads the persisted filters (or builds them). */
  readyMs: number;
  /** CPU time of every thread of the process over both. */
  cpuMs: number;
  /** Peak resident memory of the process, MiB. */
  peakRssMb: number;
  filterBytes: number;
}

export async function importFigures({ cfg, tarPath }: ImportInput): Promise<ImportFigures> {
  const db = openDb(cfg.dataDir);
  try {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const imported = await importPackage(cfg, db, tarPath, { actor: 'bench' });
    const tApplied = performance.now();
    const engine = new LookupEngine(db, { fpRate: cfg.filterFpRate, worker: false });
    const tReady = performance.now();
    const cpu = process.cpuUsage(cpu0);
    return {
      total: imported.total ?? 0,
      applyMs: tApplied - t0,
      readyMs: tReady - tApplied,
      cpuMs: (cpu.user + cpu.system) / 1000,
      peakRssMb: process.resourceUsage().maxRSS / 1024,
      filterBytes: engine.stats().filterBytes,
    };
  } finally {
    db.close();
  }
}

childMain<ImportInput, ImportFigures>(import.meta.url, importFigures);
