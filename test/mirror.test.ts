// The mirror chain national provider → regional appliance A → site appliance B, all real: a published tree
// on a loopback static server, A as a running appliance (startAppliance) serving /mirror/, B pulling from
// it with only the provider's root.json. B must end with A's indicators, verified with the provider's keys;
// anything damaged on A's disk is refused by B with B unchanged. Plus HTTP semantics of /mirror/ (ETag,
// Last-Modified, Range, HEAD), traversal attempts, what is never served, token auth, status and config.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../appliance/config.ts';
import { layout, openDb, type DB } from '../appliance/db.ts';
import { createLogger } from '../appliance/log.ts';
import { startAppliance, type RunningAppliance } from '../appliance/serve.ts';
import { applianceStatus, nextCronRun } from '../appliance/status.ts';
import { createToken } from '../appliance/tokens.ts';
import { getFeed } from '../sync/apply.ts';
import { DEFAULT_FETCH_LIMITS, fetchLimitsOf, type FetchLimits } from '../sync/fetch.ts';
import { importPackage } from '../sync/import.ts';
import { generateKeyPair, loadPrivateKey } from '../sync/keys.ts';
import { parseRange, prefetchMirror } from '../sync/mirror.ts';
import { buildPackage } from '../sync/provider-build.ts';
import { publishTree, type LatestDoc } from '../sync/publish.ts';
import { syncUpstream } from '../sync/pull.ts';
import { parseEnvelope, rotateRoot } from '../sync/root.ts';
import { trustAdd } from '../sync/trust.ts';
import { addUpstream } from '../sync/upstreams.ts';
import { DATA, cli, dbDigest, readLines, tmpDir } from './helpers.ts';
import { startStaticServer, type StaticServer } from './sync-fixture.ts';

/** Never fires during a test run: syncs happen only when the test asks. */
const NEVER = '0 0 1 1 *';

/** Digest of one feed's indicator rows (feeds.applied_at and generations differ between appliances; A also has an offline feed). */
function indicatorDigest(dataDir: string, feed = 'ipsum'): { digest: string; rows: number } {
  const db = new Database(path.join(dataDir, 'outpost.db'), { readonly: true });
  const h = crypto.createHash('sha256');
  let rows = 0;
  for (const row of db.prepare('SELECT * FROM indicators WHERE feed = ? ORDER BY type, value').iterate(feed)) {
    h.update(JSON.stringify(row) + '\n');
    rows++;
  }
  db.close();
  return { digest: h.digest('hex'), rows };
}

/** A raw HTTP request: the path goes out exactly as written (fetch would normalize "..", "%2e%2e"). */
function rawGet(url: string, rawPath: string): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method: 'GET', path: rawPath }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('mirror: provider → regional appliance → site appliance', () => {
  const work = tmpDir('outpost-mirror-');
  const tree = path.join(work, 'tree');
  const pk = path.join(work, 'pk');
  const keys = path.join(work, 'keys');
  const dirA = path.join(work, 'A');
  const dirB = path.join(work, 'B');
  const rootFile = path.join(work, 'root-v1.json');
  const limits: FetchLimits = { ...DEFAULT_FETCH_LIMITS, deadlineMs: 30_000, windowMs: 5000, minBytesPerSec: 100, attempts: 2, docDeadlineMs: 10_000 };
  let provider: StaticServer;
  let A: RunningAppliance;
  let cfgA: Config;
  let cfgB: Config;
  let dbB: DB;
  let mirror: string;
  let r1: ReturnType<typeof generateKeyPair>, sA: typeof r1, sB: typeof r1, local: typeof r1;
  const fulls = new Map<number, Awaited<ReturnType<typeof buildPackage>>>();

  let l3: string[];
  let ipsum: string[];
  // Real, moving source data: IPsum level 3 minus a different cut per version plus a sliding ipsum window.
  const build = async (version: number, base?: number) => {
    const n = version / 100;
    const src = path.join(work, `src-${n}.txt`);
    fs.writeFileSync(src, [...l3.filter((_, i) => i % (n + 3) !== 0), ...ipsum.slice(1500 + n * 700, 3500 + n * 700)].join('\n') + '\n');
    const r = await buildPackage({ feed: 'ipsum', keyPath: sA.privatePath, outDir: pk, files: [src], version, base: base ? fulls.get(base)!.path : undefined });
    fulls.set(version, r);
    await publishTree({ from: pk, out: tree, keyPath: sA.privatePath });
    return r;
  };
  const syncA = () => syncUpstream(cfgA, A.db, 'national', { limits });
  const syncB = (l: FetchLimits = limits) => syncUpstream(cfgB, dbB, 'regional', { limits: l });
  const keptA = (feed = 'ipsum') => fs.readdirSync(path.join(layout(dirA).packages, feed)).sort();

  /** A sync of B that must be refused with `code`, leaving B's database content as it was. */
  const refusedB = async (code: string, l: FetchLimits = limits) => {
    const before = dbDigest(dirB);
    const r = await syncB(l);
    expect(r, JSON.stringify(r)).toMatchObject({ ok: false, code });
    expect(dbDigest(dirB)).toBe(before);
    return r;
  };

  beforeAll(async () => {
    l3 = readLines(path.join(DATA, 'ipsum/levels/3.txt')).filter((l) => l && !l.startsWith('#'));
    ipsum = readLines(path.join(DATA, 'ipsum/ipsum.txt')).filter((l) => l && !l.startsWith('#'));
    r1 = generateKeyPair(keys, 'root1');
    sA = generateKeyPair(keys, 'signA');
    sB = generateKeyPair(keys, 'signB');
    local = generateKeyPair(keys, 'local');
    rotateRoot({ tree, rootKeys: [loadPrivateKey(r1.privatePath)], addSigningKeys: [sA.publicPath] });
    fs.copyFileSync(path.join(tree, 'root.json'), rootFile);
    await build(100);
    provider = await startStaticServer(tree);

    cfgA = loadConfig({ dataDir: dirA, port: 0, noDemo: true, logLevel: 'silent' }, {});
    A = await startAppliance(cfgA, createLogger('silent'));
    mirror = `${A.url}/mirror/`;
    await addUpstream(A.db, 'national', provider.url, { rootFile, schedule: NEVER });

    cfgB = loadConfig({ dataDir: dirB, noDemo: true }, {});
    dbB = openDb(dirB);
    await addUpstream(dbB, 'regional', mirror, { rootFile, schedule: NEVER });
  }, 120_000);

  afterAll(async () => {
    dbB?.close();
    await A?.close();
    await provider?.close();
  });

  it('A syncs full then delta; B pulls from A\'s mirror with the provider\'s root only and ends with the same indicators', async () => {
    expect(await syncA()).toMatchObject({ ok: true, feeds: [{ feed: 'ipsum', action: 'applied', version: 100, via: 'full' }] });
    const v2 = await build(200, 100);
    expect(await syncA()).toMatchObject({ ok: true, feeds: [{ action: 'applied', version: 200, via: 'delta' }] });
    // A reached 200 by a delta: it never downloaded the full package of 200.
    expect(keptA().some((f) => f.startsWith('200-full-'))).toBe(false);

    const r = await syncB();
    expect(r, JSON.stringify(r)).toMatchObject({ ok: true, root_version: 1, feeds: [{ feed: 'ipsum', action: 'applied', version: 200, via: 'full' }] });
    // A fetched the full package on demand (hash- and signature-checked) and kept it.
    expect(keptA()).toContain(`200-full-${v2.sha256.slice(0, 16)}.tar`);
    expect(A.db.prepare("SELECT count(*) AS n FROM audit WHERE action = 'mirror.fetch' AND subject = 'ipsum@200'").get()).toEqual({ n: 1 });

    const a = indicatorDigest(dirA);
    expect(a.rows).toBeGreaterThan(1000);
    expect(dbB.prepare('SELECT count(*) AS n FROM indicators').get()).toEqual({ n: a.rows }); // B holds nothing else
    expect(indicatorDigest(dirB)).toEqual(a);
    const fb = getFeed(dbB, 'ipsum')!;
    expect(fb).toMatchObject({ version: 200, state: v2.manifest.state, package_sha256: v2.sha256, key_id: sA.keyId });
  });

  it('a root rotation and a delta travel through the mirror; B\'s audit names the provider\'s keys; downloads resume with Range', async () => {
    // The provider authorizes a second signing key: root version 2, signed by its root key.
    rotateRoot({ tree, rootKeys: [loadPrivateKey(r1.privatePath)], addSigningKeys: [sB.publicPath] });
    const v3 = await build(300, 200);
    expect(await syncA()).toMatchObject({ ok: true, root_version: 2, feeds: [{ version: 300, via: 'delta' }] });

    // Half of the delta is already in B's private staging (an interrupted earlier download).
    const deltaBytes = fs.readFileSync(v3.delta!.path);
    const part = path.join(layout(dirB).staging, 'downloads', 'regional', `${v3.delta!.sha256}.part`);
    fs.mkdirSync(path.dirname(part), { recursive: true });
    fs.writeFileSync(part, deltaBytes.subarray(0, Math.floor(deltaBytes.length / 2)));

    const r = await syncB();
    expect(r, JSON.stringify(r)).toMatchObject({ ok: true, root_version: 2, feeds: [{ action: 'applied', version: 300, via: 'delta', steps: 1 }] });
    expect(indicatorDigest(dirB)).toEqual(indicatorDigest(dirA));
    const resumed = dbB.prepare("SELECT detail FROM audit WHERE action = 'sync.download.resume' ORDER BY id DESC LIMIT 1").get() as { detail: string };
    expect(JSON.parse(resumed.detail)).toMatchObject({ offset: Math.floor(deltaBytes.length / 2), url: `${mirror}packages/${v3.delta!.sha256}.tar` });
    // B accepted root 2 from the mirror only because the provider's root key signed it.
    const root = dbB.prepare("SELECT detail FROM audit WHERE action = 'sync.root' ORDER BY id DESC LIMIT 1").get() as { detail: string };
    expect(JSON.parse(root.detail)).toMatchObject({ root_keys: [r1.keyId], signing_keys: [sA.keyId, sB.keyId] });
    expect(getFeed(dbB, 'ipsum')).toMatchObject({ version: 300, key_id: sA.keyId });
    // The documents B holds are byte-for-byte the provider's.
    const latestB = (dbB.prepare("SELECT latest_doc FROM upstream_feeds WHERE feed = 'ipsum'").get() as { latest_doc: string }).latest_doc;
    expect(latestB).toBe(fs.readFileSync(path.join(tree, 'feeds/ipsum/latest.json'), 'utf8'));
    expect((dbB.prepare('SELECT document FROM roots WHERE version = 2').get() as { document: string }).document).toBe(fs.readFileSync(path.join(tree, 'root/2.json'), 'utf8'));
  });

  it('serves documents and packages with ETag, Last-Modified, conditional answers, ranges, HEAD and content types', async () => {
    const latestUrl = `${mirror}feeds/ipsum/latest.json`;
    const res = await fetch(latestUrl);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    const text = await res.text();
    expect(text).toBe(fs.readFileSync(path.join(tree, 'feeds/ipsum/latest.json'), 'utf8'));
    const etag = res.headers.get('etag')!;
    const lm = res.headers.get('last-modified')!;
    expect(etag).toMatch(/^"[0-9a-f]{32}"$/);
    const created = (JSON.parse(parseEnvelope(text, 'x').signed) as LatestDoc).created;
    expect(Date.parse(lm)).toBe(Date.parse(created));
    expect((await fetch(latestUrl, { headers: { 'if-none-match': etag } })).status).toBe(304);
    expect((await fetch(latestUrl, { headers: { 'if-none-match': '"other"' } })).status).toBe(200);
    expect((await fetch(latestUrl, { headers: { 'if-modified-since': lm } })).status).toBe(304);
    expect((await fetch(latestUrl, { headers: { 'if-modified-since': new Date(Date.parse(lm) - 1000).toUTCString() } })).status).toBe(200);
    for (const p of ['index.json', 'root.json', 'root/1.json', 'root/2.json']) {
      const r = await fetch(`${mirror}${p}`);
      expect(r.status, p).toBe(200);
      expect(await r.text(), p).toBe(fs.readFileSync(path.join(tree, p), 'utf8'));
    }

    const v3 = fulls.get(300)!;
    const bytes = fs.readFileSync(v3.delta!.path);
    const pkgUrl = `${mirror}packages/${v3.delta!.sha256}.tar`;
    const whole = await fetch(pkgUrl);
    expect(whole.status).toBe(200);
    expect(whole.headers.get('content-type')).toBe('application/x-tar');
    expect(whole.headers.get('etag')).toBe(`"${v3.delta!.sha256}"`);
    expect(whole.headers.get('accept-ranges')).toBe('bytes');
    expect(Buffer.from(await whole.arrayBuffer()).equals(bytes)).toBe(true);
    const mid = await fetch(pkgUrl, { headers: { range: 'bytes=10-99' } });
    expect(mid.status).toBe(206);
    expect(mid.headers.get('content-range')).toBe(`bytes 10-99/${bytes.length}`);
    expect(Buffer.from(await mid.arrayBuffer()).equals(bytes.subarray(10, 100))).toBe(true);
    const tail = await fetch(pkgUrl, { headers: { range: 'bytes=-7' } });
    expect(Buffer.from(await tail.arrayBuffer()).equals(bytes.subarray(bytes.length - 7))).toBe(true);
    const beyond = await fetch(pkgUrl, { headers: { range: `bytes=${bytes.length}-` } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get('content-range')).toBe(`bytes */${bytes.length}`);
    // If-Range with another ETag: the whole file, not a range of a different version.
    expect((await fetch(pkgUrl, { headers: { range: 'bytes=0-9', 'if-range': '"stale"' } })).status).toBe(200);
    expect((await fetch(pkgUrl, { headers: { 'if-none-match': `"${v3.delta!.sha256}"` } })).status).toBe(304);
    const head = await fetch(pkgUrl, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(bytes.length));
    expect((await head.arrayBuffer()).byteLength).toBe(0);

    expect(parseRange('bytes=0-1,5-6', 100)).toBeNull();
    expect(parseRange('bytes=5-2', 100)).toBeNull();
    expect(parseRange('bytes=-0', 100)).toBe('unsatisfiable');
    expect(parseRange('bytes=90-500', 100)).toEqual([90, 99]);
  });

  it('never lists directories and never leaves the layout: "..", %2e%2e, encoded slashes, absolute paths', async () => {
    const dbBytes = fs.readFileSync(layout(dirA).db).subarray(0, 16).toString('latin1');
    expect(dbBytes).toMatch(/^SQLite format 3/);
    const attempts = [
      '/mirror/', '/mirror/packages/', '/mirror/feeds/', '/mirror/feeds/ipsum/', '/mirror/root/', '/mirror/upstreams/national/',
      '/mirror/../outpost.db', '/mirror/../../../../etc/passwd', '/mirror/%2e%2e/outpost.db', '/mirror/%2E%2E/%2E%2E/etc/passwd',
      '/mirror/packages/..%2f..%2foutpost.db', '/mirror/packages/%2e%2e%2f%2e%2e%2foutpost.db', '/mirror/feeds/..%2f..%2f..%2foutpost.db/latest.json',
      '/mirror/feeds/ipsum/../../../outpost.db', '/mirror//etc/passwd', '/mirror/%2fetc%2fpasswd', '/mirror/upstreams/national/../../outpost.db',
      '/mirror/upstreams/..%2f..%2f/root.json', '/mirror/upstreams/%2e%2e/%2e%2e/outpost.db', '/mirror/root/..%2f..%2foutpost.db.json',
      '/mirror/packages/ipsum', '/mirror/packages/' + 'a'.repeat(64) + '.tar', '/mirror/outpost.db', '/mirror/index.json/', '/mirror/root.json%00',
      `/mirror/${path.resolve(dirA, 'outpost.db')}`, '/mirror/C:%5cWindows%5cwin.ini',
    ];
    for (const p of attempts) {
      const r = await rawGet(A.url, p);
      expect(r.status, p).toBe(404);
      expect(r.body, p).not.toContain('SQLite format 3');
      expect(r.body, p).not.toContain('root:');
    }
    // The kept package files themselves are not reachable by their on-disk names either.
    for (const f of keptA()) expect((await rawGet(A.url, `/mirror/packages/${f}`)).status, f).toBe(404);
  });

  it('serves only upstream documents it has applied: an offline-imported feed and a not-yet-applied version stay out', async () => {
    // A feed imported offline (trusted directly, no upstream document): nothing signed by the provider to serve.
    trustAdd(A.db, local.publicPath);
    const loc = await buildPackage({ feed: 'localonly', keyPath: local.privatePath, outDir: path.join(work, 'pkL'), files: [path.join(DATA, 'firehol/firehol_level1.netset')], version: 1 });
    await importPackage(cfgA, A.db, loc.path);
    expect(getFeed(A.db, 'localonly')).toBeTruthy();
    expect((await fetch(`${mirror}feeds/localonly/latest.json`)).status).toBe(404);
    expect((await fetch(`${mirror}packages/${loc.sha256}.tar`)).status).toBe(404);
    const index = JSON.parse(parseEnvelope(await (await fetch(`${mirror}index.json`)).text(), 'index').signed) as { feeds: { name: string }[] };
    expect(index.feeds.map((f) => f.name)).toEqual(['ipsum']);

    // The provider announces 400 but A cannot download it: A keeps the verified latest.json (version floor),
    // yet the mirror does not serve a document pointing at data A does not hold.
    const v4 = await build(400, 300);
    provider.hooks.set('/packages/*', (_req, res) => {
      res.writeHead(500).end('broken');
      return true;
    });
    try {
      expect(await syncA()).toMatchObject({ ok: false, code: 'E_DOWNLOAD' });
    } finally {
      provider.hooks.clear();
    }
    expect((A.db.prepare("SELECT version FROM upstream_feeds WHERE feed = 'ipsum'").get() as { version: number }).version).toBe(400);
    expect(getFeed(A.db, 'ipsum')!.version).toBe(300);
    expect((await fetch(`${mirror}feeds/ipsum/latest.json`)).status).toBe(404);
    expect((await fetch(`${mirror}packages/${v4.delta!.sha256}.tar`)).status).toBe(404);
    await refusedB('E_DOWNLOAD');
    expect(getFeed(dbB, 'ipsum')!.version).toBe(300);

    expect(await syncA()).toMatchObject({ ok: true, feeds: [{ version: 400, via: 'delta' }] });
  });

  it('a package or document damaged on A\'s disk is refused by B (E_HASH, E_SIG) and B stays unchanged', async () => {
    const v4 = fulls.get(400)!;
    // Keep the full package of 400 too (what serve does after each scheduled sync).
    const pre = await prefetchMirror(cfgA, A.db, { limits });
    expect(pre).toEqual([{ upstream: 'national', feed: 'ipsum', version: 400, sha256: v4.sha256, action: 'fetched' }]);
    expect(await prefetchMirror(cfgA, A.db, { limits })).toMatchObject([{ action: 'present' }]);
    const dir = path.join(layout(dirA).packages, 'ipsum');
    const files = [`400-delta-${v4.delta!.sha256.slice(0, 16)}.tar`, `400-full-${v4.sha256.slice(0, 16)}.tar`].map((f) => path.join(dir, f));
    const originals = files.map((f) => fs.readFileSync(f));
    for (const [i, f] of files.entries()) {
      const bad = Buffer.from(originals[i]);
      bad[Math.floor(bad.length / 2)] ^= 0xff; // same size: only the hash tells
      fs.writeFileSync(f, bad);
    }
    const r = await refusedB('E_HASH');
    expect(r.feeds[0]).toMatchObject({ action: 'failed', code: 'E_HASH' });
    // The delta failed first, then the full package: both refused on their hash, before any unpacking.
    const fallback = dbB.prepare("SELECT code FROM audit WHERE action = 'sync.fallback' ORDER BY id DESC LIMIT 1").get() as { code: string };
    expect(fallback.code).toBe('E_HASH');
    for (const [i, f] of files.entries()) fs.writeFileSync(f, originals[i]);

    // A latest.json altered in A's database (one signed field changed, signature kept): E_SIG at B.
    const row = A.db.prepare("SELECT latest_doc FROM upstream_feeds WHERE upstream = 'national' AND feed = 'ipsum'").get() as { latest_doc: string };
    const env = parseEnvelope(row.latest_doc, 'latest');
    const forged = { ...env, signed: env.signed.replace(/"expires": "(\d{4})/, (_m, y: string) => `"expires": "${Number(y) + 5}`) };
    expect(forged.signed).not.toBe(env.signed);
    A.db.prepare("UPDATE upstream_feeds SET latest_doc = ? WHERE upstream = 'national' AND feed = 'ipsum'").run(JSON.stringify(forged));
    try {
      await refusedB('E_SIG');
    } finally {
      A.db.prepare("UPDATE upstream_feeds SET latest_doc = ? WHERE upstream = 'national' AND feed = 'ipsum'").run(row.latest_doc);
    }

    // Status shows the failure, the backoff and when the scheduler will try again.
    const s = applianceStatus(dbB, cfgB.staleAfterS).upstreams;
    expect(s).toHaveLength(1);
    expect(s[0]).toMatchObject({ name: 'regional', url: mirror, last: { ok: false, code: 'E_SIG' }, failures: 3 });
    expect(Date.parse(s[0].backoff_until!)).toBeGreaterThan(Date.now());
    expect(Date.parse(s[0].next_due!)).toBeGreaterThanOrEqual(Date.parse(s[0].backoff_until!));
    expect(new Date(s[0].next_due!).getMonth()).toBe(0); // NEVER = 1 January, 00:00
    const text = cli(['status'], { dataDir: dirB });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`upstream regional ${mirror.replace(/[.?*+()[\]/]/g, '\\$&')} .*last sync FAILED at .*: E_SIG: .*3 failure\\(s\\) in a row, backing off until .*; next due `));
    const json = JSON.parse(cli(['status', '--json'], { dataDir: dirB }).stdout);
    expect(json.upstreams[0]).toMatchObject({ name: 'regional', last: { ok: false, code: 'E_SIG' }, failures: 3, backoff_until: s[0].backoff_until, next_due: s[0].next_due });

    // Repaired: B catches up by the delta and matches A again; the status resets.
    expect(await syncB()).toMatchObject({ ok: true, feeds: [{ version: 400, via: 'delta' }] });
    expect(indicatorDigest(dirB)).toEqual(indicatorDigest(dirA));
    expect(applianceStatus(dbB, cfgB.staleAfterS).upstreams[0]).toMatchObject({ last: { ok: true, code: null }, failures: 0, backoff_until: null });
  });

  it('OUTPOST_MIRROR_AUTH=token needs an export-scope token (sent by B from OUTPOST_SYNC_TOKEN_FILE); off hides the mirror', async () => {
    cfgA.mirrorAuth = 'token'; // read per request
    try {
      const anon = await fetch(`${mirror}index.json`);
      expect(anon.status).toBe(401);
      expect(((await anon.json()) as { error: { code: string } }).error.code).toBe('E_AUTH');
      const lookupTok = createToken(A.db, 'reader', 'lookup').token;
      expect((await fetch(`${mirror}index.json`, { headers: { authorization: `Bearer ${lookupTok}` } })).status).toBe(403);
      const exportTok = createToken(A.db, 'site-b', 'export').token;
      expect((await fetch(`${mirror}index.json`, { headers: { authorization: `Bearer ${exportTok}` } })).status).toBe(200);

      await build(500, 400);
      expect(await syncA()).toMatchObject({ ok: true, feeds: [{ version: 500 }] });
      await refusedB('E_DOWNLOAD'); // no token configured on B

      const tokenFile = path.join(work, 'sync-tokens');
      fs.writeFileSync(tokenFile, `# upstream base URL, token\n${provider.url} not-for-the-provider\n${mirror} ${exportTok}\n`, { mode: 0o644 });
      fs.chmodSync(tokenFile, 0o644);
      expect(() => fetchLimitsOf(loadConfig({ dataDir: dirB }, { OUTPOST_SYNC_TOKEN_FILE: tokenFile }))).toThrow(/readable by others/);
      fs.chmodSync(tokenFile, 0o600);
      const withToken = { ...limits, tokens: fetchLimitsOf(loadConfig({ dataDir: dirB }, { OUTPOST_SYNC_TOKEN_FILE: tokenFile })).tokens };
      expect(withToken.tokens).toEqual([{ base: provider.url, token: 'not-for-the-provider' }, { base: mirror, token: exportTok }]);
      expect(await syncB(withToken)).toMatchObject({ ok: true, feeds: [{ version: 500 }] });
      expect(indicatorDigest(dirB)).toEqual(indicatorDigest(dirA));
    } finally {
      cfgA.mirrorAuth = 'off';
    }
    const off = await fetch(`${mirror}index.json`);
    expect(off.status).toBe(404);
    cfgA.mirrorAuth = 'none';
    expect((await fetch(`${mirror}index.json`)).status).toBe(200);
    // Per-upstream trees are served too.
    expect((await fetch(`${A.url}/mirror/upstreams/national/index.json`)).status).toBe(200);
    expect((await fetch(`${A.url}/mirror/upstreams/nobody/index.json`)).status).toBe(404);
  });

  it('sync settings come from the config module', () => {
    const cfg = loadConfig({}, { OUTPOST_SYNC_DEADLINE_S: '12', OUTPOST_SYNC_MIN_BPS: '99', OUTPOST_SYNC_WINDOW_S: '3', OUTPOST_SYNC_JITTER_S: '0' });
    expect(fetchLimitsOf(cfg)).toMatchObject({ deadlineMs: 12_000, minBytesPerSec: 99, windowMs: 3000, tokens: undefined });
    expect(cfg.syncJitterS).toBe(0);
    expect(fetchLimitsOf(loadConfig({}, {}))).toMatchObject({ deadlineMs: 1_800_000, minBytesPerSec: 4096, windowMs: 30_000 });
    expect(() => loadConfig({}, { OUTPOST_SYNC_DEADLINE_S: '0' })).toThrow(/OUTPOST_SYNC_DEADLINE_S must be a positive number/);
    expect(() => loadConfig({}, { OUTPOST_SYNC_MIN_BPS: 'fast' })).toThrow(/E_CONFIG|non-negative/);
    expect(() => loadConfig({}, { OUTPOST_MIRROR_AUTH: 'maybe' })).toThrow(/none, token or off/);
    expect(nextCronRun('*/30 * * * *', new Date('2024-03-01T10:31:10Z'))?.toISOString()).toBe(new Date(new Date('2024-03-01T10:31:10Z').getTime() + (29 * 60 - 10) * 1000).toISOString());
  });
});
