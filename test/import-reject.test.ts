// Refusals of the import path: tampered bytes, an untrusted key, replays and equivocation each get
// their stable code, and the database content is exactly what it was before.
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair } from '../sync/keys.ts';
import { buildPackage } from '../sync/provider-build.ts';
import { DATA, cli, dbDigest, tmpDir } from './helpers.ts';

describe('import refuses bad packages and changes nothing', () => {
  const work = tmpDir();
  const dataDir = path.join(work, 'var');
  const out = path.join(work, 'out');
  let key: ReturnType<typeof generateKeyPair>;
  let v1: string;
  let v2: string;

  const build = async (version: number, files: string[], k = key) =>
    (await buildPackage({ feed: 'ipsum', keyPath: k.privatePath, outDir: path.join(out, String(version) + path.basename(k.privatePath)), files, version, category: 'scanner' })).path;

  beforeAll(async () => {
    key = generateKeyPair(path.join(work, 'keys'));
    v1 = await build(100, [path.join(DATA, 'ipsum/levels/3.txt')]);
    v2 = await build(200, [path.join(DATA, 'ipsum/levels/3.txt'), path.join(DATA, 'threatfox/ips.txt')]);
    expect(cli(['trust', 'add', key.publicPath], { dataDir }).code).toBe(0);
    const r = cli(['import', v1], { dataDir });
    expect(r.code, r.stderr).toBe(0);
  });

  it('dry-run verifies and reports without changing anything', () => {
    const before = dbDigest(dataDir);
    const r = cli(['import', '--dry-run', v2], { dataDir });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.lastLine)).toMatchObject({ ok: true, dry_run: true, feed: 'ipsum', version: 200 });
    expect(dbDigest(dataDir)).toBe(before);
  });

  it('a one-byte change anywhere in the package is refused', () => {
    const bytes = fs.readFileSync(v2);
    const before = dbDigest(dataDir);
    // Offsets across the manifest header and body, the signature, the data file and the end.
    const offsets = [0, 100, 600, 700, 1100, 1300, 1600, 2100, Math.floor(bytes.length / 2), bytes.length - 2000, bytes.length - 1100];
    const codes = new Set<string>();
    for (const off of offsets) {
      const copy = Buffer.from(bytes);
      copy[off] ^= 0x01;
      const f = path.join(work, `tampered-${off}.tar`);
      fs.writeFileSync(f, copy);
      const r = cli(['import', f], { dataDir });
      if (r.code === 0) {
        // Only a byte in tar padding could be harmless; then the content must be exactly what was signed.
        throw new Error(`tampered byte at ${off} was accepted`);
      }
      expect(r.code).toBe(1);
      const code = /^(E_[A-Z_]+):/m.exec(r.stderr)?.[1];
      expect(['E_SIG', 'E_HASH', 'E_FORMAT', 'E_TAR', 'E_SIZE', 'E_UNKNOWN_KEY']).toContain(code);
      codes.add(code!);
      expect(dbDigest(dataDir)).toBe(before);
    }
    expect(codes.size).toBeGreaterThan(1);
  });

  it('a package signed by a key that is not trusted is refused with E_UNKNOWN_KEY', async () => {
    const other = generateKeyPair(path.join(work, 'other-keys'), 'other');
    const pkg = await build(300, [path.join(DATA, 'threatfox/ips.txt')], other);
    const before = dbDigest(dataDir);
    const r = cli(['import', pkg], { dataDir });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^E_UNKNOWN_KEY:/m);
    expect(dbDigest(dataDir)).toBe(before);
  });

  it('a newer version applies; replaying an older or the same version is E_ROLLBACK', () => {
    const ok = cli(['import', v2], { dataDir });
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.lastLine)).toMatchObject({ ok: true, version: 200 });
    const before = dbDigest(dataDir);
    for (const pkg of [v1, v2]) {
      const r = cli(['import', pkg], { dataDir });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^E_ROLLBACK:/m);
      expect(dbDigest(dataDir)).toBe(before);
    }
  });

  it('the same version with different content is E_EQUIVOCATION', async () => {
    const twin = await build(200, [path.join(DATA, 'threatfox/ips.txt')]);
    const before = dbDigest(dataDir);
    const r = cli(['import', twin], { dataDir });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^E_EQUIVOCATION:/m);
    expect(dbDigest(dataDir)).toBe(before);
  });

  it('every refusal is recorded with its code', () => {
    const s = cli(['status', '--json'], { dataDir });
    const st = JSON.parse(s.lastLine);
    expect(st.last_package.status).toBe('rejected');
    expect(st.last_package.code).toBe('E_EQUIVOCATION');
  });
});
