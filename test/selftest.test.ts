// `outpost selftest` as a real child process on real packages: zero malicious verdicts for the
// warninglists, 100% recall on exact values and every variant, exit 0; a non-canonical row that no
// lookup can reach makes exact recall drop and the command exit 1; a local block override on an
// allowlisted value shows up as a false positive without failing the run.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../appliance/db.ts';
import { cli } from './helpers.ts';
import { prepare, realFeeds, type Prepared } from './verdicts-fixture.ts';

let p: Prepared;

beforeAll(async () => {
  p = await prepare(realFeeds({ small: true }), 'outpost-selftest-');
}, 240_000);

afterAll(() => {
  if (p) fs.rmSync(p.work, { recursive: true, force: true });
});

describe('outpost selftest', () => {
  it('reports zero false positives and full recall on the shipped data', () => {
    const r = cli(['selftest', '--json'], { dataDir: p.dataDir });
    expect(r.code, r.stderr).toBe(0);
    const rep = JSON.parse(r.lastLine);
    expect(rep.false_positives.allow_feeds).toEqual(['warninglists']);
    expect(rep.false_positives.values).toBeGreaterThan(80_000);
    expect(rep.false_positives.malicious).toBe(0);
    expect(rep.false_positives.conflicts).toBeGreaterThan(0);
    expect(rep.recall.block_feeds).toEqual(['firehol', 'ipsum', 'maltrail', 'sigbase', 'urlhaus']);
    expect(rep.recall.exact.tested).toBeGreaterThan(1000);
    expect(rep.recall.exact.found).toBe(rep.recall.exact.tested);
    for (const name of ['defanged', 'uppercase', 'trailing-dot', 'subdomain', 'inside-network', 'with-port', 'url-on-domain']) {
      const f = rep.recall.variants[name];
      expect(f?.tested, name).toBeGreaterThan(10);
      expect(f.found, name).toBe(f.tested);
    }
    expect(rep.ok).toBe(true);

    const text = cli(['selftest'], { dataDir: p.dataDir });
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/false positives: 0 of \d+ lookups/);
    expect(text.stdout).toMatch(/exact: (\d+)\/\1 \(100%\)/);
    expect(text.lastLine).toBe('selftest ok');
  }, 120_000);

  it('a local block override on an allowlisted value is counted as a false positive', () => {
    const add = cli(['override', 'add', 'block', '8.8.8.8', '--reason', 'selftest check'], { dataDir: p.dataDir });
    expect(add.code, add.stderr).toBe(0);
    const r = cli(['selftest', '--json', '--sample', '20'], { dataDir: p.dataDir });
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.lastLine);
    expect(rep.false_positives.malicious).toBe(1);
    expect(rep.false_positives.examples[0]).toMatchObject({ value: '8.8.8.8', rule: 'override:block' });
  }, 120_000);

  it('exits 1 when a listed value cannot be found', () => {
    // A row stored in non-canonical form (as a broken importer would) is unreachable by any lookup.
    const db = openDb(p.dataDir);
    db.prepare("INSERT INTO indicators(type, value, feed, kind) VALUES ('domain', 'UNREACHABLE-C2.EXAMPLE', 'sigbase', 'block')").run();
    db.prepare("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'").run();
    db.close();
    const r = cli(['selftest', '--sample', '0'], { dataDir: p.dataDir });
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('MISSED sigbase UNREACHABLE-C2.EXAMPLE → exact');
    expect(r.lastLine).toBe('selftest FAILED');
  }, 120_000);
});
