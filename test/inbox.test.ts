// Offline inbox of a running server: packages built from real data are dropped into <data dir>/inbox
// (one written slowly, as from removable media); each ends in accepted/ or rejected/ with a
// .result.json holding the stable code, an audit row says the same, and lookups reflect the good one.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATA, cli, dbDigest, getJson, readLines, serve, tmpDir, type Served } from './helpers.ts';
import { tamper } from './sync-b-fixture.ts';

const SOURCES = ['maltrail/malware/emotet.txt', 'maltrail/malware/lummac2.txt', 'ipsum/levels/3.txt'].map((f) => path.join(DATA, f));

async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 90_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const sidecar = (file: string) => JSON.parse(fs.readFileSync(`${file}.result.json`, 'utf8')) as { ok: boolean; code: string | null; message: string; feed?: string; version?: number };

describe('offline inbox while serving', () => {
  const work = tmpDir('outpost-inbox-');
  const dataDir = path.join(work, 'var');
  const inbox = path.join(dataDir, 'inbox');
  let server: Served;
  let token: string;
  let good: string;

  beforeAll(async () => {
    const keys = path.join(work, 'keys');
    expect(cli(['provider', 'keygen', '--out', keys]).code).toBe(0);
    const b = cli(['provider', 'build', '--feed', 'threats', '--key', path.join(keys, 'provider.key'), '--out', path.join(work, 'out'), '--category', 'malware', ...SOURCES]);
    expect(b.code, b.stderr).toBe(0);
    good = b.lastLine;
    expect(cli(['trust', 'add', path.join(keys, 'provider.pub')], { dataDir }).code).toBe(0);
    token = cli(['token', 'create', '--name', 'inbox'], { dataDir }).lastLine;
    server = await serve(dataDir, ['--no-demo'], { OUTPOST_INBOX_SCAN_MS: '200', OUTPOST_INBOX_STABLE_MS: '1500' });
  }, 120_000);

  afterAll(async () => {
    await server?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('takes a slowly written good package only when complete, applies it, files it under accepted/', async () => {
    const bytes = fs.readFileSync(good);
    const dest = path.join(inbox, 'threats.tar');
    // Written in 12 pieces, as a slow copy would: the watcher must wait until the size stays put.
    const fd = fs.openSync(dest, 'w');
    const piece = Math.ceil(bytes.length / 12);
    for (let off = 0; off < bytes.length; off += piece) {
      fs.writeSync(fd, bytes, off, Math.min(piece, bytes.length - off));
      await new Promise((r) => setTimeout(r, 60));
    }
    fs.closeSync(fd);

    const accepted = path.join(inbox, 'accepted', 'threats.tar');
    await until('the package in accepted/', () => fs.existsSync(`${accepted}.result.json`) && fs.existsSync(accepted));
    const r = sidecar(accepted);
    expect(r).toMatchObject({ ok: true, code: null, feed: 'threats' });
    expect(fs.readFileSync(accepted).equals(bytes)).toBe(true);
    expect(fs.existsSync(dest)).toBe(false);
    expect(fs.readdirSync(path.join(inbox, 'rejected')).filter((f) => f.endsWith('.tar'))).toEqual([]);

    // Lookups reflect it once the server follows the new generation.
    const ip = readLines(path.join(DATA, 'ipsum/levels/3.txt')).filter(Boolean)[100];
    const body = await until('a match from the inbox package', async () => {
      const x = await getJson(`${server.url}/api/v1/lookup?value=${ip}`, token);
      expect(x.status).toBe(200);
      return x.body.matches.some((m: { feed: string }) => m.feed === 'threats') ? x.body : undefined;
    });
    expect(body.verdict).not.toBe('unknown');
  }, 120_000);

  it('refuses a tampered and a replayed package with their codes, changing nothing', async () => {
    const before = dbDigest(dataDir);
    tamper(good, path.join(inbox, 'tampered.tar'));
    fs.copyFileSync(good, path.join(inbox, 'replayed.tar'));
    const tampered = path.join(inbox, 'rejected', 'tampered.tar');
    const replayed = path.join(inbox, 'rejected', 'replayed.tar');
    // The inbox moves a package with its sidecar, then audits, then logs: waiting for both log lines means
    // every effect of both decisions is there.
    const logged = (file: string) => new RegExp(`"file":"${file}".*inbox package rejected`).test(server.stderr());
    await until('both packages in rejected/ and logged', () => fs.existsSync(`${tampered}.result.json`) && fs.existsSync(`${replayed}.result.json`) && fs.existsSync(tampered) && fs.existsSync(replayed) && logged('tampered.tar') && logged('replayed.tar'));
    expect(sidecar(tampered)).toMatchObject({ ok: false, code: 'E_HASH' });
    expect(sidecar(replayed)).toMatchObject({ ok: false, code: 'E_ROLLBACK' });
    expect(sidecar(replayed).message).toMatch(/already applied/);
    expect(fs.readdirSync(inbox).filter((f) => f.endsWith('.tar'))).toEqual([]);
    expect(dbDigest(dataDir)).toBe(before);

    // Every decision is in the audit log with its code.
    const db = new Database(path.join(dataDir, 'outpost.db'), { readonly: true });
    const rows = db.prepare("SELECT action, code, detail FROM audit WHERE actor = 'inbox' AND action LIKE 'inbox.%' ORDER BY id").all() as { action: string; code: string | null; detail: string }[];
    db.close();
    const byFile = Object.fromEntries(rows.map((r) => [JSON.parse(r.detail).file, [r.action, r.code]]));
    expect(byFile).toEqual({ 'threats.tar': ['inbox.accept', null], 'tampered.tar': ['inbox.reject', 'E_HASH'], 'replayed.tar': ['inbox.reject', 'E_ROLLBACK'] });
    // and in the pino log
    expect(server.stderr()).toMatch(/"code":"E_HASH".*inbox package rejected|inbox package rejected.*"code":"E_HASH"/);
  }, 120_000);
});
