// Pulling from a published tree on a real loopback static server: full then delta syncs, root rotation,
// revoked keys, replayed and expired latest.json, and hostile downloads (hash, size, stall, truncation).
// Every refusal asserts its stable code and that the database content did not change.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../appliance/config.ts';
import { layout, openDb, type DB } from '../appliance/db.ts';
import { getFeed } from '../sync/apply.ts';
import { DEFAULT_FETCH_LIMITS, type FetchLimits } from '../sync/fetch.ts';
import { generateKeyPair, loadPrivateKey } from '../sync/keys.ts';
import { buildPackage } from '../sync/provider-build.ts';
import { publishTree, type LatestDoc } from '../sync/publish.ts';
import { syncUpstream } from '../sync/pull.ts';
import { parseEnvelope, rotateRoot, signEnvelope, verifyRootSelf } from '../sync/root.ts';
import { addUpstream } from '../sync/upstreams.ts';
import { spawn } from 'node:child_process';
import { BIN, DATA, ROOT, dbDigest, readLines, tmpDir } from './helpers.ts';
import { startStaticServer, type StaticServer } from './sync-fixture.ts';

describe('sync from a static tree', () => {
  const work = tmpDir('outpost-pull-');
  const tree = path.join(work, 'tree');
  const pkA = path.join(work, 'pkA');
  const pkB = path.join(work, 'pkB');
  const dataDir = path.join(work, 'var');
  const keys = path.join(work, 'keys');
  let r1: ReturnType<typeof generateKeyPair>, r2: typeof r1, r3: typeof r1, sA: typeof r1, sB: typeof r1;
  let server: StaticServer;
  let db: DB;
  const cfg = loadConfig({ dataDir });
  const limits: FetchLimits = { ...DEFAULT_FETCH_LIMITS, deadlineMs: 8000, windowMs: 1000, minBytesPerSec: 100, attempts: 3, docDeadlineMs: 5000 };
  const fulls = new Map<number, string>();

  // Real sources that move: level 3 minus a different cut each version, plus a sliding window of ipsum.txt.
  let l3: string[];
  let ipsum: string[];
  const source = (n: number) => {
    const f = path.join(work, `src-${n}.txt`);
    fs.writeFileSync(f, [...l3.filter((_, i) => i % (n + 3) !== 0), ...ipsum.slice(1500 + n * 700, 3500 + n * 700)].join('\n') + '\n');
    return f;
  };
  const build = async (version: number, signer: typeof r1, out: string, base?: number) => {
    const r = await buildPackage({ feed: 'ipsum', keyPath: signer.privatePath, outDir: out, files: [source(version / 100)], version, base: base ? fulls.get(base) : undefined });
    fulls.set(version, r.path);
    return r;
  };
  const sync = (l: Partial<FetchLimits> = {}) => syncUpstream(cfg, db, 'prov', { limits: { ...limits, ...l } });
  const latestPath = path.join(tree, 'feeds/ipsum/latest.json');
  const packagesRequested = () => server.log.filter((e) => e.path.startsWith('/packages/'));

  /** Runs a sync that must be refused with `code`, leaving the database content as it was. */
  const refused = async (code: string, l: Partial<FetchLimits> = {}) => {
    const before = dbDigest(dataDir);
    const r = await sync(l);
    expect(r, JSON.stringify(r)).toMatchObject({ ok: false, code });
    expect(dbDigest(dataDir)).toBe(before);
    const row = db.prepare("SELECT code FROM audit WHERE action = 'sync.result' ORDER BY id DESC LIMIT 1").get() as { code: string };
    expect(row.code).toBe(code);
    return r;
  };

  beforeAll(async () => {
    l3 = readLines(path.join(DATA, 'ipsum/levels/3.txt')).filter((l) => l && !l.startsWith('#'));
    ipsum = readLines(path.join(DATA, 'ipsum/ipsum.txt')).filter((l) => l && !l.startsWith('#'));
    [r1, r2, r3] = ['r1', 'r2', 'r3'].map((n) => generateKeyPair(keys, n));
    sA = generateKeyPair(keys, 'signA');
    sB = generateKeyPair(keys, 'signB');
    rotateRoot({ tree, rootKeys: [loadPrivateKey(r1.privatePath)], addSigningKeys: [sA.publicPath] });
    await build(100, sA, pkA);
    await publishTree({ from: pkA, out: tree, keyPath: sA.privatePath });
    server = await startStaticServer(tree);
    db = openDb(dataDir);
    await addUpstream(db, 'prov', server.url, { rootFile: path.join(tree, 'root.json') });
  });

  afterAll(async () => {
    db?.close();
    await server?.close();
  });

  it('syncs the full package first, then a delta, then answers 304 when nothing changed', async () => {
    const r1s = await sync();
    expect(r1s).toMatchObject({ ok: true, root_version: 1, feeds: [{ feed: 'ipsum', action: 'applied', version: 100, via: 'full' }] });
    const v2 = await build(200, sA, pkA, 100);
    await publishTree({ from: pkA, out: tree, keyPath: sA.privatePath });
    server.log.length = 0;
    const r2s = await sync();
    expect(r2s).toMatchObject({ ok: true, feeds: [{ feed: 'ipsum', action: 'applied', version: 200, via: 'delta', steps: 1 }] });
    // Only the delta was downloaded, not the full package.
    expect(packagesRequested().map((e) => e.path)).toEqual([`/packages/${v2.delta!.sha256}.tar`]);
    expect(getFeed(db, 'ipsum')).toMatchObject({ version: 200, state: v2.manifest.state, count: v2.manifest.counts.total });

    server.log.length = 0;
    expect(await sync()).toMatchObject({ ok: true, feeds: [{ action: 'up-to-date', version: 200 }] });
    const latestReq = server.log.find((e) => e.path === '/feeds/ipsum/latest.json')!;
    expect(latestReq.inm).toBeTruthy();
    expect(latestReq.status).toBe(304);
    expect(packagesRequested()).toEqual([]);
  });

  it('accepts a root rotation signed by a threshold of the old keys, refuses one with too few (E_ROOT)', async () => {
    const v2 = rotateRoot({ tree, rootKeys: [r1, r2].map((k) => loadPrivateKey(k.privatePath)), addRootKeys: [r2.publicPath], threshold: 2 });
    expect(v2).toMatchObject({ version: 2, draft: null });
    expect(await sync()).toMatchObject({ ok: true, root_version: 2 });

    // Root 3 hands trust to r3, signed by r1 and r3: enough for itself, but only 1 of root 2's threshold of 2.
    const doc = {
      ...verifyRootSelf(fs.readFileSync(path.join(tree, 'root.json'))).root,
      version: 3,
      root_keys: [r1, r3].map((k) => ({ key_id: k.keyId, public_pem: fs.readFileSync(k.publicPath, 'utf8') })),
    };
    fs.writeFileSync(path.join(tree, 'root/3.json'), signEnvelope(doc, [r1, r3].map((k) => loadPrivateKey(k.privatePath))));
    const r = await refused('E_ROOT');
    expect(r.message).toMatch(/previous root's keys/);
    expect((db.prepare("SELECT max(version) AS v FROM roots WHERE upstream = 'prov'").get() as { v: number }).v).toBe(2);
    // The provider's own tool refuses to make such a root at all.
    fs.rmSync(path.join(tree, 'root/3.json'));
    expect(() => rotateRoot({ tree, rootKeys: [loadPrivateKey(r1.privatePath)], addRootKeys: [r3.publicPath] })).toThrow(/E_ROOT|signature/);
  });

  it('a revoked signing key is refused (E_REVOKED_KEY) for documents and packages', async () => {
    const rot = rotateRoot({ tree, rootKeys: [r1, r2].map((k) => loadPrivateKey(k.privatePath)), revokeSigningKeys: [sA.keyId], addSigningKeys: [sB.publicPath] });
    expect(rot.version).toBe(3);
    // index.json and latest.json are still the ones signed by A.
    await refused('E_REVOKED_KEY');
    expect((db.prepare("SELECT root_version FROM upstreams WHERE name = 'prov'").get() as { root_version: number }).root_version).toBe(3);
    // The provider cannot publish with the revoked key either.
    await expect(publishTree({ from: pkA, out: tree, keyPath: sA.privatePath })).rejects.toMatchObject({ code: 'E_REVOKED_KEY' });

    // B publishes version 300 (delta from 200). A hostile latest signed by B points at a package signed by A.
    const v3 = await build(300, sB, pkB, 200);
    await publishTree({ from: pkB, out: tree, keyPath: sB.privatePath });
    const good = fs.readFileSync(latestPath, 'utf8');
    const evil = await build(300, sA, path.join(work, 'evil'));
    fs.copyFileSync(evil.path, path.join(tree, `packages/${evil.sha256}.tar`));
    const latest = JSON.parse(parseEnvelope(good, 'latest').signed) as LatestDoc;
    const hostile: LatestDoc = { ...latest, state: evil.manifest.state, deltas: [], full: { path: `packages/${evil.sha256}.tar`, sha256: evil.sha256, size: fs.statSync(evil.path).size, version: 300, state: evil.manifest.state } };
    fs.writeFileSync(latestPath, signEnvelope(hostile, [loadPrivateKey(sB.privatePath)]));
    await refused('E_REVOKED_KEY');

    fs.writeFileSync(latestPath, good);
    expect(await sync()).toMatchObject({ ok: true, feeds: [{ action: 'applied', version: 300, via: 'delta' }] });
    expect(getFeed(db, 'ipsum')!.state).toBe(v3.manifest.state);
  });

  it('a replayed older latest.json is E_ROLLBACK (CLI: exit 1 with the code)', async () => {
    const old = fs.readFileSync(latestPath, 'utf8');
    await build(400, sB, pkB, 300);
    await publishTree({ from: pkB, out: tree, keyPath: sB.privatePath });
    const current = fs.readFileSync(latestPath, 'utf8');
    expect(await sync()).toMatchObject({ ok: true, feeds: [{ action: 'applied', version: 400 }] });
    fs.writeFileSync(latestPath, old);
    await refused('E_ROLLBACK');
    const before = dbDigest(dataDir);
    // The CLI as a child process, asynchronously: the static server runs in this process.
    const r = await cliAsync(['sync', 'prov'], dataDir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^E_ROLLBACK:/m);
    expect(dbDigest(dataDir)).toBe(before);
    fs.writeFileSync(latestPath, current);
  });

  it('an expired latest.json is E_EXPIRED (freeze attack), even when the server answers 304', async () => {
    const current = fs.readFileSync(latestPath, 'utf8');
    const doc = JSON.parse(parseEnvelope(current, 'latest').signed) as LatestDoc;
    const stale = signEnvelope({ ...doc, expires: new Date(Date.now() - 3600_000).toISOString().replace(/\.\d+Z$/, 'Z') }, [loadPrivateKey(sB.privatePath)]);
    fs.writeFileSync(latestPath, stale);
    await refused('E_EXPIRED');
    fs.writeFileSync(latestPath, current);
    expect(await sync()).toMatchObject({ ok: true, feeds: [{ action: 'up-to-date' }] });
    // A cached latest.json is re-verified on 304: one that expired since is still a freeze.
    const later = () => new Date(Date.parse(doc.expires) + 1000);
    const before = dbDigest(dataDir);
    const r = await syncUpstream(cfg, db, 'prov', { limits, now: later });
    expect(r).toMatchObject({ ok: false, code: 'E_EXPIRED' });
    expect(dbDigest(dataDir)).toBe(before);
  });

  describe('hostile downloads of version 500', () => {
    let v5: Awaited<ReturnType<typeof build>>;
    beforeAll(async () => {
      v5 = await build(500, sB, pkB, 400);
      await publishTree({ from: pkB, out: tree, keyPath: sB.privatePath });
    });

    it('a package whose bytes differ from the signed sha256 is E_HASH (delta and the full fallback)', async () => {
      server.hooks.set('/packages/*', (_req, res, file) => {
        const body = Buffer.from(fs.readFileSync(file!));
        body[body.length >> 1] ^= 0xff;
        res.writeHead(200, { 'content-length': body.length }).end(body);
        return true;
      });
      await refused('E_HASH');
      const fallback = db.prepare("SELECT code FROM audit WHERE action = 'sync.fallback' ORDER BY id DESC LIMIT 1").get() as { code: string };
      expect(fallback.code).toBe('E_HASH');
      server.hooks.clear();
    });

    it('more bytes than the signed size is E_SIZE, with or without a Content-Length', async () => {
      for (const declare of [true, false]) {
        server.hooks.set('/packages/*', (_req, res, file) => {
          const body = Buffer.concat([fs.readFileSync(file!), Buffer.alloc(64 * 1024, 0x41)]);
          res.writeHead(200, declare ? { 'content-length': body.length } : {});
          res.write(body.subarray(0, 1000));
          res.end(body.subarray(1000));
          return true;
        });
        await refused('E_SIZE');
      }
      server.hooks.clear();
    });

    it('a server that stalls is E_TIMEOUT within the deadline', async () => {
      server.hooks.set('/packages/*', (_req, res, file) => {
        res.writeHead(200, { 'content-length': fs.statSync(file!).size });
        res.write(fs.readFileSync(file!).subarray(0, 10)); // then nothing, connection kept open
        return true;
      });
      await refused('E_TIMEOUT', { windowMs: 300, deadlineMs: 3000 });
      server.hooks.clear();
    });

    it('a truncated download resumes with a Range request and applies', async () => {
      // Start from clean staging, as serve does at start (the stall above left a partial file).
      fs.rmSync(path.join(layout(dataDir).staging, 'downloads'), { recursive: true, force: true });
      const cut = new Set<string>();
      server.hooks.set('/packages/*', (req, res, file) => {
        if (cut.has(req.url!)) return false;
        cut.add(req.url!);
        const body = fs.readFileSync(file!);
        res.writeHead(200, { 'content-length': body.length });
        res.write(body.subarray(0, body.length >> 1), () => res.destroy());
        return true;
      });
      server.log.length = 0;
      const r = await sync();
      expect(r).toMatchObject({ ok: true, feeds: [{ action: 'applied', version: 500, via: 'delta' }] });
      const reqs = packagesRequested();
      expect(reqs[0].range).toBeUndefined();
      expect(reqs[1].range).toMatch(/^bytes=\d+-$/);
      expect(Number(/=(\d+)-/.exec(reqs[1].range!)![1])).toBeGreaterThan(0);
      expect(reqs[1].status).toBe(206);
      expect(getFeed(db, 'ipsum')!.state).toBe(v5.manifest.state);
      server.hooks.clear();
    });
  });
});

function cliAsync(args: string[], dataDir: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, OUTPOST_DATA_DIR: dataDir, OUTPOST_LOG_LEVEL: 'warn' } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}
