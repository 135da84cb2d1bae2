#!/usr/bin/env node
// Entry point: registers the TypeScript loader (tsx) and runs the CLI from source.
import fs from 'node:fs';
import os from 'node:os';

// Batch commands run at nice 10, every thread of the process (Linux keeps a nice value per thread): an
// `outpost import` from a shell beside a serving appliance otherwise compiles its TypeScript and stages the
// package at the priority of the lookups, and on a small machine their p50 went from 0.3 to 17 ms while
// it started (docs/performance.md). Threads started later inherit it. On an idle machine nice changes
// nothing. serve, lookup and the admin commands keep the normal priority.
const BATCH_COMMANDS = new Set(['import', 'sync', 'rollback', 'purge', 'export', 'backup', 'inbox']);
const BATCH_NICE = 10;
if (BATCH_COMMANDS.has(process.argv[2])) {
  let tids = ['0'];
  try {
    tids = fs.readdirSync('/proc/self/task');
  } catch {
    /* not Linux: the calling thread (process) only */
  }
  for (const tid of tids) {
    try {
      if (os.getPriority(Number(tid)) < BATCH_NICE) os.setPriority(Number(tid), BATCH_NICE);
    } catch {
      /* a thread that ended meanwhile, or not permitted: run as started */
    }
  }
}

const { register } = await import('tsx/esm/api');
register();
const { main } = await import('../appliance/cli.ts');
await main(process.argv);
