// The signed package format on real data: write → stage → verify → read back, the canonical state hash,
// keys, and the by-hand verification walkthrough of docs/package-format.md run with real tar/openssl.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Indicator, Manifest } from '../appliance/types.ts';
import { generateKeyPair, keyIdOf, loadPrivateKey, loadPublicKey } from '../sync/keys.ts';
import { readIndicators, stagePackage, type Limits, type StagedPackage } from '../sync/package-reader.ts';
import { StateHasher, canonicalLine, writePackage } from '../sync/package-writer.ts';
import { compareIndicators } from '../sync/records.ts';
import { verifyPackage, type TrustedKey } from '../sync/verify.ts';
import { DATA, ROOT, tmpDir } from './helpers.ts';

const LIMITS: Limits = { maxPackageBytes: 64 * 1024 * 1024, maxUncompressedBytes: 64 * 1024 * 1024 };
const EXPIRES = '2099-01-01T00:00:00.000Z';

/** IPsum level 3 as ipv4 indicators (a plain map, no normalizer), with some optional fields on some lines. */
function ipsumIndicators(): Indicator[] {
  const values = fs.readFileSync(path.join(DATA, 'ipsum/levels/3.txt'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const inds = [...new Set(values)].map((v, i): Indicator => {
    const ind: Indicator = { v, t: 'ipv4' };
    if (i % 7 === 0) ind.cat = 'scanner';
    if (i % 11 === 0) ind.conf = i % 101;
    if (i % 13 === 0) ind.ls = '2026-08-22T00:00:00.000Z';
    if (i % 17 === 0) ind.ports = [22, 23];
    if (i % 19 === 0) ind.ctx = { source: 'ipsum', level: 3 };
    return ind;
  });
  return inds.sort(compareIndicators);
}

async function readAll(staged: StagedPackage, m: Manifest, role?: string): Promise<Indicator[]> {
  const out: Indicator[] = [];
  for (const f of m.files) {
    if (role && f.role !== role) continue;
    for await (const ind of readIndicators(staged, f, LIMITS)) out.push(ind);
  }
  return out;
}

function sha256File(p: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
}

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return 'accepted';
}

describe('package round trip on real data', () => {
  const work = tmpDir();
  let keys: ReturnType<typeof generateKeyPair>;
  let trusted: TrustedKey[];
  let input: Indicator[];
  let pkg: { path: string; sha256: string; manifest: Manifest };

  const write = (outDir: string, extra: Partial<Parameters<typeof writePackage>[0]> = {}) =>
    writePackage({
      outDir,
      privateKey: loadPrivateKey(keys.privatePath),
      manifest: { feed: 'ipsum', kind: 'block', type: 'full', version: 7, created: '2026-08-22T00:00:00.000Z', expires: EXPIRES, defaults: { category: 'scanner', confidence: 70 } },
      files: [{ role: 'indicators', indicators: input }],
      maxLinesPerFile: 4000,
      ...extra,
    });

  beforeAll(async () => {
    keys = generateKeyPair(path.join(work, 'keys'));
    trusted = [{ key_id: keys.keyId, public_pem: fs.readFileSync(keys.publicPath, 'utf8'), revoked_at: null }];
    input = ipsumIndicators();
    pkg = await write(path.join(work, 'out'));
  });

  it('writes <feed>-<version>-full.tar with a manifest describing the split files', () => {
    expect(input.length).toBeGreaterThan(10_000);
    expect(path.basename(pkg.path)).toBe('ipsum-7-full.tar');
    expect(sha256File(pkg.path)).toBe(pkg.sha256);
    const m = pkg.manifest;
    expect(m.format).toBe('outpost-package/1');
    expect(m.key_id).toBe(keys.keyId);
    expect(m.counts).toEqual({ total: input.length, by_type: { ipv4: input.length } });
    const parts = Math.ceil(input.length / 4000);
    expect(m.files.map((f) => f.name)).toEqual(Array.from({ length: parts }, (_, i) => `indicators-000${i + 1}.ndjson.gz`));
    expect(m.files.map((f) => f.count)).toEqual(Array.from({ length: parts }, (_, i) => Math.min(4000, input.length - i * 4000)));
    // No temp files left next to the package.
    expect(fs.readdirSync(path.dirname(pkg.path))).toEqual(['ipsum-7-full.tar']);
  });

  it('stages, verifies and reads back exactly the indicators written; state equals a StateHasher over the sorted input', async () => {
    const staged = await stagePackage(pkg.path, path.join(work, 'staging'), LIMITS);
    try {
      expect(staged.sha256).toBe(pkg.sha256);
      expect(staged.size).toBe(fs.statSync(pkg.path).size);
      expect(fs.statSync(staged.dir).mode & 0o777).toBe(0o700);
      // Staged under our own names, never the entry names.
      for (const p of staged.files.values()) expect(path.basename(p)).toMatch(/^data-\d{4}$/);
      const m = verifyPackage(staged, trusted);
      expect(m).toEqual(pkg.manifest);
      const back = await readAll(staged, m);
      expect(back).toEqual(input);
      const h = new StateHasher();
      for (const ind of [...input].sort(compareIndicators)) h.update(ind);
      expect(m.state).toBe(h.digest());
      // The state of a full package is the sha256 of its decompressed lines, as the doc says.
      expect(crypto.createHash('sha256').update(back.map((i) => canonicalLine(i) + '\n').join('')).digest('hex')).toBe(m.state);
    } finally {
      staged.cleanup();
    }
    expect(fs.existsSync(staged.dir)).toBe(false);
  });

  it('the same input gives the same tar, byte for byte', async () => {
    const again = await write(path.join(work, 'out-again'));
    expect(again.sha256).toBe(pkg.sha256);
  });

  it('stages from a stream as well as from a path', async () => {
    const staged = await stagePackage(Readable.from([fs.readFileSync(pkg.path)]), path.join(work, 'staging'), LIMITS);
    try {
      expect(staged.sha256).toBe(pkg.sha256);
      expect(verifyPackage(staged, trusted).version).toBe(7);
    } finally {
      staged.cleanup();
    }
  });

  it('a given state must agree with the lines (E_STATE); unsorted or duplicated input is refused (E_INPUT)', async () => {
    const out = path.join(work, 'refused');
    const base = { feed: 'ipsum', kind: 'block' as const, type: 'full' as const, version: 8, created: '2026-08-22T00:00:00Z', expires: EXPIRES, defaults: {} };
    expect(await codeOf(write(out, { manifest: { ...base, state: 'a'.repeat(64) } }))).toBe('E_STATE');
    expect(await codeOf(write(out, { files: [{ role: 'indicators', indicators: [input[1], input[0]] }] }))).toBe('E_INPUT');
    expect(await codeOf(write(out, { files: [{ role: 'indicators', indicators: [input[0], input[0]] }] }))).toBe('E_INPUT');
    expect(await codeOf(write(out, { manifest: { ...base, feed: '../evil' } }))).toBe('E_INPUT');
    expect(await codeOf(write(out, { files: [{ role: 'add', indicators: [] }] }))).toBe('E_INPUT');
    const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
    expect(await codeOf(write(out, { privateKey: rsa }))).toBe('E_KEY');
    // Nothing half-written is left behind.
    expect(fs.readdirSync(out)).toEqual([]);
  });

  it('writes and reads a delta: remove and add files, base version and state, counts from the lines', async () => {
    const removed = input.slice(0, 2500);
    const added: Indicator[] = ['198.51.100.1', '198.51.100.2', '203.0.113.9'].map((v) => ({ v, t: 'ipv4', cat: 'c2' }));
    const after = [...input.slice(2500), ...added].sort(compareIndicators);
    const h = new StateHasher();
    for (const ind of after) h.update(ind);
    const res = await writePackage({
      outDir: path.join(work, 'delta'),
      privateKey: loadPrivateKey(keys.privatePath),
      manifest: { feed: 'ipsum', kind: 'block', type: 'delta', version: 9, base_version: 7, base_state: pkg.manifest.state, state: h.digest(), created: '2026-08-23T00:00:00Z', expires: EXPIRES, defaults: {}, counts: { total: after.length } },
      files: [{ role: 'remove', indicators: removed }, { role: 'add', indicators: added }],
      maxLinesPerFile: 1000,
    });
    expect(path.basename(res.path)).toBe('ipsum-9-delta.tar');
    expect(res.manifest.files.map((f) => f.name)).toEqual(['remove-0001.ndjson.gz', 'remove-0002.ndjson.gz', 'remove-0003.ndjson.gz', 'add-0001.ndjson.gz']);
    expect(res.manifest.counts).toMatchObject({ total: after.length, added: 3, removed: 2500 });
    const staged = await stagePackage(res.path, path.join(work, 'staging'), LIMITS);
    try {
      const m = verifyPackage(staged, trusted);
      expect(m.base_state).toBe(pkg.manifest.state);
      expect(await readAll(staged, m, 'remove')).toEqual(removed);
      expect(await readAll(staged, m, 'add')).toEqual(added);
    } finally {
      staged.cleanup();
    }
  });
});

describe('canonical lines and the state hash', () => {
  it('orders keys, drops empty fields and sorts nested keys', () => {
    const line = canonicalLine({ ctx: { z: 1, a: { y: 2, b: 3 } }, tags: [], v: 'example.com', cat: undefined, conf: 50, t: 'domain', extra: 'x' } as unknown as Indicator);
    expect(line).toBe('{"t":"domain","v":"example.com","conf":50,"ctx":{"a":{"b":3,"y":2},"z":1}}');
  });

  it('the empty state is sha256 of nothing; out-of-order input is refused', () => {
    expect(new StateHasher().digest()).toBe(crypto.createHash('sha256').digest('hex'));
    const h = new StateHasher();
    h.update({ t: 'ipv4', v: '2.2.2.2' });
    expect(() => h.update({ t: 'ipv4', v: '1.1.1.1' })).toThrow(expect.objectContaining({ code: 'E_STATE' }));
    expect(() => h.update({ t: 'ipv4', v: '2.2.2.2' })).toThrow(expect.objectContaining({ code: 'E_STATE' }));
    h.update({ t: 'ipv4-cidr', v: '1.0.0.0/8' }); // types sort before values: 'ipv4' < 'ipv4-cidr'
  });
});

describe('keys', () => {
  const dir = tmpDir();

  it('writes a 0600 PKCS8 private key and an SPKI public key, and refuses to overwrite them', () => {
    const k = generateKeyPair(dir, 'feedsigner');
    expect(fs.statSync(k.privatePath).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(k.privatePath, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(fs.readFileSync(k.publicPath, 'utf8')).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    expect(k.keyId).toMatch(/^[0-9a-f]{16}$/);
    expect(keyIdOf(fs.readFileSync(k.publicPath, 'utf8'))).toBe(k.keyId);
    expect(keyIdOf(loadPublicKey(k.publicPath))).toBe(k.keyId);
    expect(keyIdOf(loadPrivateKey(k.privatePath))).toBe(k.keyId);
    const before = fs.readFileSync(k.privatePath, 'utf8');
    expect(() => generateKeyPair(dir, 'feedsigner')).toThrow(expect.objectContaining({ code: 'E_CONFLICT' }));
    expect(fs.readFileSync(k.privatePath, 'utf8')).toBe(before);
    // key_id as openssl computes it: sha256 of the raw key (last 32 bytes of the DER), first 16 hex chars.
    const der = spawnSync('openssl', ['pkey', '-pubin', '-in', k.publicPath, '-outform', 'DER']).stdout;
    expect(crypto.createHash('sha256').update(der.subarray(der.length - 32)).digest('hex').slice(0, 16)).toBe(k.keyId);
  });

  it('wrong key material is E_KEY with a clear message', () => {
    const k = generateKeyPair(dir, 'other');
    const rsaPem = crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    fs.writeFileSync(path.join(dir, 'rsa.key'), rsaPem);
    fs.writeFileSync(path.join(dir, 'junk.key'), 'not a key\n');
    const err = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e as { code: string; message: string };
      }
      throw new Error('accepted');
    };
    expect(err(() => loadPrivateKey(k.publicPath))).toMatchObject({ code: 'E_KEY', message: expect.stringMatching(/not a private key/) });
    expect(err(() => loadPrivateKey(path.join(dir, 'rsa.key')))).toMatchObject({ code: 'E_KEY', message: expect.stringMatching(/rsa.*Ed25519/) });
    expect(err(() => loadPrivateKey(path.join(dir, 'junk.key')))).toMatchObject({ code: 'E_KEY' });
    expect(err(() => loadPrivateKey(path.join(dir, 'missing.key')))).toMatchObject({ code: 'E_KEY', message: expect.stringMatching(/ENOENT/) });
    expect(err(() => loadPublicKey(k.privatePath))).toMatchObject({ code: 'E_KEY', message: expect.stringMatching(/is a private key/) });
    expect(err(() => loadPublicKey(path.join(dir, 'junk.key')))).toMatchObject({ code: 'E_KEY' });
  });
});

describe('by-hand verification walkthrough (docs/package-format.md) with tar, sha256sum and openssl', () => {
  const work = tmpDir();
  let pkgPath: string;
  let manifest: Manifest;
  let pub: string;
  const script = (() => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs/package-format.md'), 'utf8');
    const m = /<!-- walkthrough:begin -->\s*```sh\n([\s\S]*?)```\s*<!-- walkthrough:end -->/.exec(doc);
    if (!m) throw new Error('walkthrough block not found in docs/package-format.md');
    return m[1];
  })();

  const run = (pkg: string) => {
    const dir = fs.mkdtempSync(path.join(work, 'run-'));
    fs.copyFileSync(pub, path.join(dir, 'provider.pub'));
    const r = spawnSync('bash', ['-c', script], { cwd: dir, env: { ...process.env, PKG: pkg }, encoding: 'utf8' });
    return { code: r.status, out: r.stdout + r.stderr };
  };

  beforeAll(async () => {
    const keys = generateKeyPair(path.join(work, 'keys'));
    pub = keys.publicPath;
    const res = await writePackage({
      outDir: path.join(work, 'out'),
      privateKey: loadPrivateKey(keys.privatePath),
      manifest: { feed: 'ipsum', kind: 'block', type: 'full', version: 3, created: '2026-08-22T00:00:00.000Z', expires: EXPIRES, defaults: { category: 'scanner' } },
      files: [{ role: 'indicators', indicators: ipsumIndicators() }],
      maxLinesPerFile: 5000,
    });
    pkgPath = res.path;
    manifest = res.manifest;
  });

  it('every step passes on a genuine package', () => {
    const r = run(pkgPath);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(`key_id OK: ${manifest.key_id}`);
    expect(r.out).toContain('Signature Verified Successfully');
    for (const f of manifest.files) expect(r.out).toContain(`${f.name}: OK`);
    expect(manifest.files.length).toBe(3);
    expect(r.out).toContain('entries OK');
    expect(r.out).toContain(`expires OK: ${EXPIRES}`);
    expect(r.out).toContain(`state OK: ${manifest.state}`);
    expect(r.out).toContain('{"t":"ipv4","v":');
  });

  it('the files taken out by hand, re-packed with GNU tar, are accepted with identical content', async () => {
    const dir = fs.mkdtempSync(path.join(work, 'repack-'));
    fs.copyFileSync(pub, path.join(dir, 'provider.pub'));
    expect(spawnSync('bash', ['-c', script], { cwd: dir, env: { ...process.env, PKG: pkgPath } }).status).toBe(0);
    fs.copyFileSync(path.join(dir, 'manifest.json'), path.join(dir, 'files/manifest.json'));
    fs.copyFileSync(path.join(dir, 'manifest.sig'), path.join(dir, 'files/manifest.sig'));
    const repacked = path.join(work, 'repacked.tar');
    const names = ['manifest.json', 'manifest.sig', ...manifest.files.map((f) => f.name)];
    const r = spawnSync('tar', ['--format=ustar', '-cf', repacked, '-C', path.join(dir, 'files'), ...names], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(sha256File(repacked)).not.toBe(sha256File(pkgPath)); // other header fields and record padding
    const staged = await stagePackage(repacked, path.join(work, 'staging'), LIMITS);
    try {
      const m = verifyPackage(staged, [{ key_id: manifest.key_id, public_pem: fs.readFileSync(pub, 'utf8'), revoked_at: null }]);
      expect(m).toEqual(manifest);
      expect(await readAll(staged, m)).toEqual(ipsumIndicators());
    } finally {
      staged.cleanup();
    }
  });

  it('a changed manifest byte fails the openssl signature check; a changed data byte fails sha256sum', () => {
    const bytes = fs.readFileSync(pkgPath);
    const manifestAt = bytes.indexOf('"feed": "ipsum"');
    const m = Buffer.from(bytes);
    m[manifestAt + 10] = 'X'.charCodeAt(0); // "ipsum" → "iXsum": content bytes, so the tar header stays valid
    fs.writeFileSync(path.join(work, 'bad-manifest.tar'), m);
    const r1 = run(path.join(work, 'bad-manifest.tar'));
    expect(r1.code).not.toBe(0);
    expect(r1.out).toContain('Signature Verification Failure');

    const d = Buffer.from(bytes);
    // The header block of the first data file, then a byte inside its content.
    let header = -1;
    for (let at = 0; (at = bytes.indexOf('indicators-0001.ndjson.gz', at + 1)) !== -1; ) {
      if (at % 512 === 0) {
        header = at;
        break;
      }
    }
    expect(header).toBeGreaterThan(0);
    d[header + 512 + 100] ^= 0xff;
    fs.writeFileSync(path.join(work, 'bad-data.tar'), d);
    const r2 = run(path.join(work, 'bad-data.tar'));
    expect(r2.code).not.toBe(0);
    expect(r2.out).toContain('Signature Verified Successfully');
    expect(r2.out).toMatch(/indicators-0001\.ndjson\.gz: FAILED/);
  });
});
