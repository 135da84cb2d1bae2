// Backup and restore on real data: an online backup while HTTP lookups keep flowing, restore refused while
// serving, restore of a good backup, refusal of corrupted / foreign / too-new files with the live database
// unchanged, and a damaged live database at start naming the newest backup.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkIntegrityInBackground, verifyDatabaseFile } from '../appliance/backup.ts';
import { spawn } from 'node:child_process';
import { BIN, DATA, cli, dbDigest, serve, tmpDir, type Served } from './helpers.ts';
import { bearer, cliAsync, createToken, listValues, prepareRealData, request } from './ops-fixture.ts';

const LISTED = listValues('ipsum/levels/3.txt');

/** dbDigest of a loose database file (it reads <dir>/outpost.db). */
function fileDigest(file: string, work: string): string {
  const dir = fs.mkdtempSync(path.join(work, 'digest-'));
  fs.copyFileSync(file, path.join(dir, 'outpost.db'));
  return dbDigest(dir);
}

/** Overwrites a few whole pages in the middle of a database file with seeded garbage. */
function corruptPages(file: string, seed = 7): void {
  const db = new Database(file);
  db.pragma('wal_checkpoint(TRUNCATE)');
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  db.close();
  const pages = Math.floor(fs.statSync(file).size / pageSize);
  const fd = fs.openSync(file, 'r+');
  for (const at of [0.3, 0.5, 0.7]) {
    const page = Math.max(2, Math.floor(pages * at));
    const junk = crypto.createHash('sha512').update(`${seed}:${page}`).digest();
    const buf = Buffer.alloc(pageSize);
    for (let i = 0; i < pageSize; i++) buf[i] = junk[i % junk.length] ^ (i & 0xff);
    fs.writeSync(fd, buf, 0, pageSize, (page - 1) * pageSize);
  }
  fs.closeSync(fd);
}

describe('backup and restore', () => {
  const work = tmpDir('outpost-backup-');
  const backups = path.join(work, 'backups');
  let dataDir: string;
  let key: string;
  let out: string;
  let token: string;
  let server: Served | undefined;
  let backupFile: string;
  let backupDigest: string;

  beforeAll(async () => {
    const real = prepareRealData(work, ['ipsum/levels/3.txt']);
    ({ dataDir, key, out } = real);
    token = createToken(dataDir, 'backup-test');
    fs.mkdirSync(backups);
    server = await serve(dataDir, ['--no-demo']);
  });

  afterAll(async () => {
    await server?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('backs up online while HTTP lookups keep being answered correctly', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    let done = false;
    const seen = { ok: 0, bad: [] as string[] };
    const loop = async (w: number) => {
      for (let i = w; !done; i += 4) {
        const value = LISTED[(i * 37) % LISTED.length];
        try {
          const r = await request(`${server!.url}/api/v1/lookup?value=${value}`, { headers: bearer(token), agent });
          const body = JSON.parse(r.text);
          if (r.status === 200 && body.verdict === 'malicious') seen.ok++;
          else seen.bad.push(`${value}: ${r.status} ${r.text.slice(0, 200)}`);
        } catch (e) {
          seen.bad.push(`${value}: ${(e as Error).message}`);
        }
      }
    };
    const loops = [0, 1, 2, 3].map(loop);
    // Let lookups run before, during and after the backup.
    while (seen.ok < 200) await new Promise((r) => setTimeout(r, 20));
    backupFile = path.join(backups, 'one.db');
    const b = await cliAsync(['backup', backupFile], { dataDir });
    const during = seen.ok;
    while (seen.ok < during + 200) await new Promise((r) => setTimeout(r, 20));
    done = true;
    await Promise.all(loops);
    agent.destroy();

    expect(b.code, b.stderr).toBe(0);
    const rec = JSON.parse(b.lastLine);
    expect(rec).toMatchObject({ ok: true, path: backupFile, generation: 1 });
    expect(seen.bad).toEqual([]);
    expect(seen.ok).toBeGreaterThanOrEqual(400);

    expect(fs.statSync(backupFile).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(backups)).toEqual(['one.db']); // no partial files left
    const copy = path.join(work, 'check.db');
    fs.copyFileSync(backupFile, copy);
    const check = verifyDatabaseFile(copy);
    const live = new Database(path.join(dataDir, 'outpost.db'), { readonly: true });
    const n = (live.prepare('SELECT count(*) AS n FROM indicators').get() as { n: number }).n;
    const meta = JSON.parse((live.prepare("SELECT value FROM meta WHERE key = 'last_backup'").get() as { value: string }).value);
    live.close();
    expect(check.indicators).toBe(n);
    expect(meta.path).toBe(backupFile);
    expect(JSON.parse(fs.readFileSync(path.join(dataDir, 'last-backup.json'), 'utf8')).path).toBe(backupFile);
    backupDigest = fileDigest(backupFile, work);
  });

  it('refuses to overwrite an existing backup (E_CONFLICT)', () => {
    const r = cli(['backup', backupFile], { dataDir });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^E_CONFLICT/m);
  });

  it('refuses to restore while serve holds the data dir (E_LOCKED), changing nothing', () => {
    const before = dbDigest(dataDir);
    const r = cli(['restore', backupFile], { dataDir });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^E_LOCKED/m);
    expect(dbDigest(dataDir)).toBe(before);
  });

  it('restores a good backup over later changes; the restored appliance serves the backed-up state', async () => {
    await server!.stop();
    server = undefined;
    // A change after the backup: a second feed from another real list, and a new token.
    const fire = cli(['provider', 'build', '--feed', 'firehol', '--key', key, '--out', out, '--version', '1', path.join(DATA, 'firehol/firehol_level1.netset')]);
    expect(fire.code, fire.stderr).toBe(0);
    expect(cli(['import', fire.lastLine], { dataDir }).code).toBe(0);
    const lateToken = createToken(dataDir, 'after-backup');
    expect(dbDigest(dataDir)).not.toBe(backupDigest);

    const r = cli(['restore', backupFile], { dataDir });
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.lastLine);
    expect(info).toMatchObject({ ok: true, generation: 1, feeds: 1 });
    expect(fs.existsSync(info.previous)).toBe(true);
    expect(fs.statSync(path.join(dataDir, 'outpost.db')).mode & 0o777).toBe(0o600);
    expect(dbDigest(dataDir)).toBe(backupDigest);

    server = await serve(dataDir, ['--no-demo']);
    const listed = await request(`${server.url}/api/v1/lookup?value=${LISTED[5]}`, { headers: bearer(token) });
    expect(JSON.parse(listed.text).verdict).toBe('malicious');
    const feeds = JSON.parse((await request(`${server.url}/api/v1/lookup?value=${LISTED[6]}`, { headers: bearer(token) })).text).matches.map((m: any) => m.feed);
    expect(feeds).toEqual(['threats']);
    expect((await request(`${server.url}/api/v1/lookup?value=1.1.1.1`, { headers: bearer(lateToken) })).status).toBe(401);
  });

  it('refuses corrupted, foreign, too-new and missing backups with the live database unchanged', async () => {
    await server!.stop();
    server = undefined;
    const before = dbDigest(dataDir);
    const entries = fs.readdirSync(dataDir).sort();

    const corrupt = path.join(work, 'corrupt.db');
    fs.copyFileSync(backupFile, corrupt);
    corruptPages(corrupt);
    const tooNew = path.join(work, 'too-new.db');
    fs.copyFileSync(backupFile, tooNew);
    const tn = new Database(tooNew);
    tn.pragma('user_version = 999');
    tn.close();
    const foreign = path.join(work, 'foreign.db');
    const fdb = new Database(foreign);
    fdb.exec('CREATE TABLE meta (key TEXT, value TEXT); PRAGMA user_version = 1;');
    fdb.close();
    const noise = path.join(work, 'noise.db');
    fs.writeFileSync(noise, crypto.createHash('sha256').update('not sqlite').digest().toString('hex').repeat(200));

    const cases: [string, RegExp][] = [
      [corrupt, /^E_DB: .*(integrity_check|malformed|not a readable)/m],
      [tooNew, /^E_DB: .*schema version 999, newer/m],
      [foreign, /^E_DB: .*lacks required tables: feeds, indicators/m],
      [noise, /^E_DB: .*not a readable SQLite database/m],
      [path.join(work, 'missing.db'), /^E_NOT_FOUND/m],
    ];
    for (const [file, expected] of cases) {
      const r = cli(['restore', file], { dataDir });
      expect(r.code, file).toBe(1);
      expect(r.stderr, file).toMatch(expected);
      expect(dbDigest(dataDir), file).toBe(before);
    }
    expect(fs.readdirSync(dataDir).sort()).toEqual(entries); // no restore copies left behind
  });

  it('a damaged database stops `serve` with E_DB naming the newest backup; restoring it recovers', async () => {
    corruptPages(path.join(dataDir, 'outpost.db'), 11);
    const err = await serve(dataDir, ['--no-demo']).then(
      (s) => s.stop().then(() => 'started'),
      (e: Error) => e.message,
    );
    expect(err).toMatch(/E_DB: database .*outpost\.db failed its integrity check/);
    expect(err).toContain(`newest backup: ${backupFile}`);
    expect(err).toContain(`outpost restore ${backupFile}`);

    const r = cli(['restore', backupFile], { dataDir });
    expect(r.code, r.stderr).toBe(0);
    expect(dbDigest(dataDir)).toBe(backupDigest);
    server = await serve(dataDir, ['--no-demo']);
    const listed = await request(`${server.url}/api/v1/lookup?value=${LISTED[7]}`, { headers: bearer(token) });
    expect(JSON.parse(listed.text).verdict).toBe('malicious');
  });

  it('a store over OUTPOST_START_CHECK_INLINE_MB is checked in a background thread once serving; damage there or met at start is the same E_DB', async () => {
    await server?.stop();
    server = undefined;
    // A sound store at 0 MiB ("every store is large"): serving starts, the thread checks and passes.
    const logs: string[] = [];
    const runServe = (env: NodeJS.ProcessEnv, until: RegExp | null) => {
      const child = spawn(process.execPath, [BIN, 'serve', '--no-demo', '--port', '0'], {
        env: { ...process.env, OUTPOST_DATA_DIR: dataDir, OUTPOST_START_CHECK_INLINE_MB: '0', OUTPOST_LOG_LEVEL: 'info', ...env },
      });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      return new Promise<{ code: number | null; out: string }>((resolve) => {
        const t = setInterval(() => {
          if (until && until.test(out)) {
            clearInterval(t);
            child.kill('SIGTERM');
          }
        }, 50);
        child.on('exit', (code) => {
          clearInterval(t);
          logs.push(out);
          resolve({ code, out });
        });
      });
    };
    const good = await runServe({}, /database check passed/);
    expect(good.out).toContain('checking the database in the background');
    expect(good.out).toContain('outpost serving');
    expect(good.out.indexOf('outpost serving')).toBeLessThan(good.out.indexOf('database check passed'));
    // The thread itself on a damaged copy: the same E_DB with the newest backup as the inline check.
    const copy = tmpDir('outpost-bgcheck-');
    fs.copyFileSync(path.join(dataDir, 'outpost.db'), path.join(copy, 'outpost.db'));
    corruptPages(path.join(copy, 'outpost.db'), 11);
    const err = await checkIntegrityInBackground(copy, 'quick').then(() => null, (e: { code: string; message: string }) => e);
    expect(err?.code).toBe('E_DB');
    expect(err?.message).toMatch(/outpost\.db failed its integrity check/);
    await expect(checkIntegrityInBackground(dataDir, 'quick')).resolves.toBeUndefined();
    fs.rmSync(copy, { recursive: true, force: true });
    // A damaged live store at 0 MiB: whichever meets the damage first (start or the thread) stops serve with E_DB.
    corruptPages(path.join(dataDir, 'outpost.db'), 11);
    const bad = await runServe({}, null);
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(/E_DB: database .*outpost\.db failed its integrity check/);
    expect(bad.out).toContain(`outpost restore ${backupFile}`);
    expect(cli(['restore', backupFile], { dataDir }).code).toBe(0);
    expect(dbDigest(dataDir)).toBe(backupDigest);
  }, 120_000);

  // Last: its backup becomes the newest, which the tests above expect to be backupFile.
  it('makes a missing backup directory (0700), as the README example `backups/…` needs', () => {
    const file = path.join(work, 'new-dir', 'nested', 'outpost.db');
    const r = cli(['backup', file], { dataDir });
    expect(r.code, r.stderr).toBe(0);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(verifyDatabaseFile(file).generation).toBeGreaterThan(0);
  });
});
