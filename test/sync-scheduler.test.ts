// The sync scheduler: Safe-Browsing-style backoff, persisted in SQLite and honoured after a restart, and
// `outpost serve` pulling an upstream on its cron schedule from a real loopback server.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../appliance/config.ts';
import { createLogger } from '../appliance/log.ts';
import { openDb } from '../appliance/db.ts';
import { generateKeyPair, loadPrivateKey } from '../sync/keys.ts';
import { buildPackage } from '../sync/provider-build.ts';
import { publishTree } from '../sync/publish.ts';
import type { UpstreamOutcome } from '../sync/pull.ts';
import { rotateRoot } from '../sync/root.ts';
import { SyncScheduler } from '../sync/scheduler.ts';
import { addUpstream, backoffMs, getUpstream } from '../sync/upstreams.ts';
import { DATA, serve, tmpDir } from './helpers.ts';
import { startStaticServer, type StaticServer } from './sync-fixture.ts';

const MIN = 60_000;
const quiet = createLogger('silent');

describe('sync scheduler', () => {
  const work = tmpDir('outpost-sched-');
  const closers: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const c of closers.reverse()) await c();
  });

  it('backs off min(2^(N-1) · 15 min · (1 + rand), 24 h)', () => {
    expect(backoffMs(0)).toBe(0);
    expect(backoffMs(1, 0)).toBe(15 * MIN);
    expect(backoffMs(1, 0.999)).toBeCloseTo(29.985 * MIN, 0);
    expect(backoffMs(2, 0)).toBe(30 * MIN);
    expect(backoffMs(3, 0.5)).toBe(90 * MIN);
    expect(backoffMs(7, 0)).toBe(16 * 60 * MIN);
    expect(backoffMs(8, 0)).toBe(24 * 60 * MIN);
    expect(backoffMs(500, 0.3)).toBe(24 * 60 * MIN);
  });

  it('a failing upstream backs off; the state survives a restart and is honoured', async () => {
    const dataDir = path.join(work, 'backoff');
    const cfg = loadConfig({ dataDir });
    let db = openDb(dataDir);
    // Port 9 on loopback: nothing listens, the connection is refused.
    await addUpstream(db, 'down', 'http://127.0.0.1:9/', { schedule: '* * * * * *' });
    const results: UpstreamOutcome[] = [];
    const s1 = new SyncScheduler(cfg, db, quiet, { jitterMs: 0, onResult: (r) => results.push(r) });
    s1.start();
    await until(() => results.length >= 1);
    await s1.stop();
    expect(results[0]).toMatchObject({ ok: false, code: 'E_DOWNLOAD' });
    const row = getUpstream(db, 'down');
    expect(row.failures).toBe(1);
    const wait = Date.parse(row.next_attempt_at!) - Date.parse(row.last_attempt_at!);
    expect(wait).toBeGreaterThanOrEqual(15 * MIN);
    expect(wait).toBeLessThanOrEqual(30 * MIN);
    db.close();

    // "Restart": a new connection and a new scheduler skip the upstream until next_attempt_at.
    db = openDb(dataDir);
    closers.push(() => void db.close());
    const s2 = new SyncScheduler(cfg, db, quiet, { jitterMs: 0 });
    expect(await s2.runIfDue('down')).toBeNull();
    expect(getUpstream(db, 'down')).toMatchObject({ failures: 1, last_attempt_at: row.last_attempt_at });
    // Once the backoff has passed it tries again, and the next wait doubles.
    db.prepare("UPDATE upstreams SET next_attempt_at = '2000-01-01T00:00:00.000Z' WHERE name = 'down'").run();
    expect(await s2.runIfDue('down')).toMatchObject({ ok: false, code: 'E_DOWNLOAD' });
    const row2 = getUpstream(db, 'down');
    expect(row2.failures).toBe(2);
    const wait2 = Date.parse(row2.next_attempt_at!) - Date.parse(row2.last_attempt_at!);
    expect(wait2).toBeGreaterThanOrEqual(30 * MIN);
    expect(wait2).toBeLessThanOrEqual(60 * MIN);
    await s2.stop();
  });

  it('outpost serve pulls an upstream on its schedule', async () => {
    const tree = path.join(work, 'tree');
    const keys = path.join(work, 'keys');
    const root = generateKeyPair(keys, 'root');
    const signer = generateKeyPair(keys, 'provider');
    rotateRoot({ tree, rootKeys: [loadPrivateKey(root.privatePath)], addSigningKeys: [signer.publicPath] });
    const pkg = await buildPackage({ feed: 'firehol', keyPath: signer.privatePath, outDir: path.join(work, 'pk'), files: [path.join(DATA, 'firehol/firehol_level1.netset')], version: 7 });
    await publishTree({ from: path.join(work, 'pk'), out: tree, keyPath: signer.privatePath });
    const server: StaticServer = await startStaticServer(tree);
    closers.push(() => server.close());

    const dataDir = path.join(work, 'served');
    const db = openDb(dataDir);
    await addUpstream(db, 'prov', server.url, { schedule: '* * * * * *', rootFile: path.join(tree, 'root.json') });
    db.close();
    const app = await serve(dataDir, ['--no-demo'], { OUTPOST_SYNC_JITTER_S: '0' });
    closers.push(() => app.stop());
    const feed = () => {
      const ro = new Database(path.join(dataDir, 'outpost.db'), { readonly: true });
      try {
        return ro.prepare("SELECT version, state FROM feeds WHERE name = 'firehol'").get() as { version: number; state: string } | undefined;
      } finally {
        ro.close();
      }
    };
    await until(() => feed() !== undefined, 60_000);
    expect(feed()).toEqual({ version: 7, state: pkg.manifest.state });
    expect(server.log.some((e) => e.path === `/packages/${pkg.sha256}.tar`)).toBe(true);
    expect(fs.existsSync(path.join(dataDir, 'outpost.db'))).toBe(true);
  });
});

async function until(cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}
