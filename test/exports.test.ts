// Export formats on a real store filled from ../shared/data: the shared rules (block feeds only,
// unexpired, allowlists win, deduplicated), then each format's syntax on edge values.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Ajv } from 'ajv';
import ipaddr from 'ipaddr.js';
import formatsPlugin from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OutpostError } from '../appliance/errors.ts';
import { exportFileSets, loadConfig } from '../appliance/config.ts';
import { currentGeneration, setMeta } from '../appliance/db.ts';
import { createLogger } from '../appliance/log.ts';
import { startAppliance } from '../appliance/serve.ts';
import { contentType, EXPORT_FILE_NAMES, EXPORT_FORMATS, exportFormat, exportsStatus, writeExportFiles, type ExportStats } from '../lookup/exports/index.ts';
import { writeMispFeed } from '../lookup/exports/misp-feed.ts';
import { FileSink, runPass, type RowFile } from '../lookup/exports/pass.ts';
import { csvFile } from '../lookup/exports/csv.ts';
import { rpzIpOwner, rpzName } from '../lookup/exports/rpz.ts';
import { ipRange } from '../lookup/exports/ranges.ts';
import { AllowIndex, Liveness, newStats, sourceContext } from '../lookup/exports/source.ts';
import { ruleContent } from '../lookup/exports/suricata.ts';
import { OUTPOST_NAMESPACE, stixFile, stixPattern, uuidv5 } from '../lookup/exports/stix.ts';
import { ZEEK_HEADER } from '../lookup/exports/zeek.ts';
import { ExportRegenerator } from '../lookup/exports/regenerate.ts';
import { addFeed, addRow, buildFixture, collect, DAY, freshDb, NOW, warninglist, type Fixture } from './exports-fixture.ts';

/** RFC 4180 reader (quoted cells, doubled quotes, CRLF), written from the RFC for the test. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let i = 0;
  let quoted = false;
  while (i < text.length) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') { cell += '"'; i += 2; continue; }
      if (ch === '"') { quoted = false; i++; continue; }
      cell += ch; i++; continue;
    }
    if (ch === '"' && cell === '') { quoted = true; i++; continue; }
    if (ch === ',') { row.push(cell); cell = ''; i++; continue; }
    if (ch === '\r' && text[i + 1] === '\n') { row.push(cell); rows.push(row); row = []; cell = ''; i += 2; continue; }
    if (ch === '\n' || ch === '\r' || ch === '"') throw new Error(`bare ${JSON.stringify(ch)} at ${i}`);
    cell += ch; i++;
  }
  if (cell !== '' || row.length) throw new Error('last record not terminated by CRLF');
  return rows;
}

const csvOf = (fx: Fixture, stats?: ExportStats) => parseCsv(collect(exportFormat(fx.db, 'csv', { now: NOW, stats })));
const valuesOf = (rows: string[][]) => new Set(rows.slice(1).map((r) => r[0]));

describe('export registry', () => {
  it('lists the contract formats with media types', () => {
    expect(EXPORT_FORMATS).toEqual(['suricata-dataset', 'suricata-iprep', 'zeek-intel', 'rpz', 'csv', 'stix']);
    expect(contentType('stix')).toBe('application/stix+json;version=2.1');
    expect(contentType('csv')).toMatch(/^text\/csv/);
    expect(contentType('suricata-dataset')).toBe('application/x-tar');
  });

  it('refuses an unknown format or a bad walled-garden name with E_INPUT, before streaming', () => {
    const { db, close } = freshDb();
    try {
      expect(() => exportFormat(db, 'snort')).toThrow(OutpostError);
      try { exportFormat(db, 'snort'); } catch (e) { expect((e as OutpostError).code).toBe('E_INPUT'); }
      try { contentType('nope'); } catch (e) { expect((e as OutpostError).code).toBe('E_INPUT'); }
      try {
        exportFormat(db, 'rpz', { rpzPolicy: { cname: 'bad name!' } });
        expect.unreachable();
      } catch (e) {
        expect((e as OutpostError).code).toBe('E_INPUT');
      }
    } finally {
      close();
    }
  });

  it('exports an empty store as valid, empty documents', () => {
    const { db, close } = freshDb();
    try {
      expect(collect(exportFormat(db, 'csv', { now: NOW }))).toBe('value,type,feed,category,confidence,first_seen,last_seen,expires_at\r\n');
      expect(collect(exportFormat(db, 'zeek-intel', { now: NOW }))).toBe(ZEEK_HEADER);
      expect(JSON.parse(collect(exportFormat(db, 'stix', { now: NOW }))).objects).toHaveLength(1);
      expect(collect(exportFormat(db, 'suricata-iprep', { now: NOW }))).toBe('');
    } finally {
      close();
    }
  });
});

describe('shared export rules on real data', () => {
  let fx: Fixture;
  beforeAll(() => {
    fx = buildFixture();
  });
  afterAll(() => fx.close());

  it('exports every type from the real lists, one row per value, streamed in chunks', () => {
    const chunks = [...exportFormat(fx.db, 'csv', { now: NOW })];
    expect(chunks.length).toBeGreaterThan(3); // ~64 KiB chunks, not one string
    const rows = parseCsv(chunks.join(''));
    const types = new Set(rows.slice(1).map((r) => r[1]));
    for (const t of ['ipv4', 'ipv4-cidr', 'domain', 'url', 'md5', 'sha1', 'sha256']) expect(types).toContain(t);
    const keys = rows.slice(1).map((r) => `${r[1]}:${r[0]}`);
    expect(new Set(keys).size).toBe(keys.length);
    expect(rows.length - 1).toBeGreaterThan(3000);
  });

  it('deduplicates across feeds: max confidence, its category, all feeds, widest time span', () => {
    const ip = fx.inserted.get('threatfox')![0].value;
    addRow(fx.db, 'ipsum', 'block', 'ipv4', ip, { confidence: 99, category: 'scanner', first_seen: NOW - 90 * DAY, expires_at: null });
    const row = csvOf(fx).find((r) => r[0] === ip)!;
    expect(row[2]).toBe('ipsum;threatfox');
    expect(row[3]).toBe('scanner');
    expect(row[4]).toBe('99');
    expect(row[5]).toBe(new Date((NOW - 90 * DAY) * 1000).toISOString().replace('.000Z', 'Z'));
    // The ipsum listing has no expiry of its own: like a lookup, it lasts the IPv4 default (30 days) from
    // the package's creation (2026-09-01), so the value expires with the later threatfox listing.
    expect(row[7]).toBe(new Date((NOW + 30 * DAY) * 1000).toISOString().replace('.000Z', 'Z'));
    // With no default lifetime configured for addresses, that listing never expires, nor does the value.
    const noDefault = parseCsv(collect(exportFormat(fx.db, 'csv', { now: NOW, expiryDays: { ip: 0, url: 60, domain: 180, hash: 365 } })));
    expect(noDefault.find((r) => r[0] === ip)![7]).toBe('');
  });

  it('uses the feed default confidence when a row has none', () => {
    const ip = fx.inserted.get('ipsum')![5].value; // ipsum feed default is 40
    const row = csvOf(fx).find((r) => r[0] === ip)!;
    expect(row[4]).toBe('40');
  });

  it('leaves out expired indicators and allow-feed-only values', () => {
    addRow(fx.db, 'lummac2', 'block', 'domain', 'expired-listing.example', { expires_at: NOW - 1 });
    addRow(fx.db, 'lummac2', 'block', 'domain', 'expires-later.example', { expires_at: NOW + 1 });
    const values = valuesOf(csvOf(fx));
    expect(values).not.toContain('expired-listing.example');
    expect(values).toContain('expires-later.example');
    expect(values).not.toContain('google.com'); // on the tranco allow feed only
  });

  it('drops a value also on an allow feed (real overlap: repocket.com is C2-listed and in tranco10k)', () => {
    expect(fx.inserted.get('c2-iocs')!.some((x) => x.value === 'repocket.com')).toBe(true);
    const stats: ExportStats = { written: 0, skipped: {} };
    expect(valuesOf(csvOf(fx, stats))).not.toContain('repocket.com');
    expect(stats.skipped.allowlisted).toBeGreaterThanOrEqual(1);
  });

  it('drops addresses inside allowed networks (Google Cloud ranges) and internal space', () => {
    const gcp = warninglist('known-benign/warninglists/google-gcp.json').find((n) => n.startsWith('34.') && n.endsWith('/16'))!;
    const inside = gcp.replace(/\.0\.0\/16$/, '.7.7');
    addRow(fx.db, 'threatfox', 'block', 'ipv4', inside);
    addRow(fx.db, 'threatfox', 'block', 'ipv4', '10.1.2.3');
    addRow(fx.db, 'firehol', 'block', 'ipv4-cidr', '192.168.0.0/16');
    const stats: ExportStats = { written: 0, skipped: {} };
    const values = valuesOf(csvOf(fx, stats));
    expect(values).not.toContain(inside);
    expect(values).not.toContain('10.1.2.3');
    expect(values).not.toContain('192.168.0.0/16');
    expect(values).not.toContain('0.0.0.0/8'); // real FireHOL level1 entry
    expect(stats.skipped['allowlisted-network']).toBeGreaterThanOrEqual(1);
    expect(stats.skipped['internal-address-space']).toBeGreaterThanOrEqual(3);
  });

  it('reads addresses and networks into ranges as ipaddr.js does (the store\'s dotted quads take a fast path)', () => {
    const reference = (v: string) => {
      const [addr, prefix] = v.includes('/') ? ipaddr.parseCIDR(v) : [ipaddr.parse(v), v.includes(':') ? 128 : 32];
      const n = BigInt(`0x${Buffer.from(addr.toByteArray()).toString('hex')}`);
      const host = BigInt((addr.kind() === 'ipv4' ? 32 : 128) - prefix);
      const start = (n >> host) << host;
      return { family: addr.kind() === 'ipv4' ? 4 : 6, start, end: start | ((1n << host) - 1n) };
    };
    const stored = (fx.db.prepare(`SELECT value FROM indicators WHERE type IN ('ipv4', 'ipv4-cidr', 'ipv6', 'ipv6-cidr') LIMIT 3000`).all() as { value: string }[]).map((r) => r.value);
    const edges = ['0.0.0.0', '255.255.255.255', '0.0.0.0/0', '1.2.3.4/32', '1.2.3.4/31', '1.2.3.4/1', '10.9.8.7/8', '203.0.113.9/24', '2001:db8::/32', '::ffff:1.2.3.4'];
    for (const v of [...stored, ...edges]) expect(ipRange(v), v).toEqual(reference(v));
    expect(stored.length).toBeGreaterThan(1000);
    // What neither reads: not an address, a prefix out of range or written oddly is left to ipaddr.js, which refuses it.
    for (const v of ['1.2.3.4/33', '1.2.3.4/', '1.2.3.4/-1', '256.1.1.1', 'evil.example']) expect(ipRange(v), v).toBeNull();
    expect(ipRange('1.2.3.4/08')).toEqual(ipRange('1.2.3.4/8')); // ipaddr.js reads a padded prefix; so do exports
  });

  it('drops domains under an allowed domain, but keeps listed URLs on allowed hosts', () => {
    const allowed = new Set(warninglist('known-benign/warninglists/tranco10k.json'));
    addRow(fx.db, 'lummac2', 'block', 'domain', 'malicious-sub.github.com');
    addRow(fx.db, 'urlhaus', 'block', 'url', 'http://github.com/evil/payload.exe');
    const values = valuesOf(csvOf(fx));
    expect(values).not.toContain('malicious-sub.github.com');
    expect(values).toContain('http://github.com/evil/payload.exe');
    // Allowed domains are held in memory up to a limit, asked one query per parent beyond it: same answers.
    for (const held of [0, 1_000_000]) {
      const allow = new AllowIndex(fx.db, NOW, new Liveness(fx.db, NOW), held);
      expect(allow.parentDomainAllowed('malicious-sub.github.com')).toBe(true);
      expect(allow.parentDomainAllowed('a.b.github.com')).toBe(true);
      expect(allow.parentDomainAllowed('github.com')).toBe(false); // the domain itself is matched by grouping, not here
      expect(allow.parentDomainAllowed('malicious-sub.github.com.evil.example')).toBe(false);
    }
    // The real data agrees: no exported domain has an allowlisted parent.
    for (const v of values) {
      if (!/^[a-z0-9.-]+$/.test(v) || /^\d/.test(v)) continue;
      const labels = v.split('.');
      for (let i = 1; i < labels.length - 1; i++) expect(allowed.has(labels.slice(i).join('.'))).toBe(false);
    }
  });

  it('ignores indicators of allow feeds in every block format', () => {
    const out = collect(exportFormat(fx.db, 'zeek-intel', { now: NOW }));
    expect(out).not.toMatch(/^8\.8\.8\.8\t/m);
    expect(out).not.toMatch(/^google\.com\t/m);
  });
});

describe('Suricata export', () => {
  let fx: Fixture;
  let dir: string;
  let written: string[];
  beforeAll(async () => {
    fx = buildFixture();
    dir = path.join(fx.dir, 'exports');
    written = await writeExportFiles(fx.db, dir, { now: NOW });
  });
  afterAll(() => fx.close());
  const lines = (name: string) => fs.readFileSync(path.join(dir, 'suricata', name), 'utf8').split('\n');

  it('writes the whole file set and a summary, with no temp files left', () => {
    for (const f of ['domains.lst', 'ipv4.lst', 'ipv6.lst', 'md5.lst', 'sha1.lst', 'sha256.lst', 'outpost.rules', 'outpost-iprep.rules', 'categories.txt', 'outpost.list']) {
      expect(written).toContain(path.join(dir, 'suricata', f));
    }
    for (const f of ['outpost.intel', 'outpost.rpz', 'outpost.csv', 'outpost.stix.json', 'exports.json']) expect(written).toContain(path.join(dir, f));
    const all = [...fs.readdirSync(dir), ...fs.readdirSync(path.join(dir, 'suricata'))];
    expect(all.filter((f) => f.includes('.tmp-'))).toEqual([]);
    const summary = JSON.parse(fs.readFileSync(path.join(dir, 'exports.json'), 'utf8'));
    expect(summary.files['outpost.csv'].written).toBeGreaterThan(3000);
  });

  it('datasets: base64 domains, hex hashes, plain addresses; no comments, no CR, no CIDR', () => {
    const domains = lines('domains.lst');
    expect(domains.pop()).toBe('');
    expect(domains.length).toBeGreaterThan(1000);
    for (const l of domains) {
      expect(l).toMatch(/^[A-Za-z0-9+/]+={0,2}$/);
      expect(Buffer.from(Buffer.from(l, 'base64').toString('utf8')).toString('base64')).toBe(l);
      expect(Buffer.from(l, 'base64').toString('utf8')).toMatch(/^[a-z0-9_.-]+$/);
    }
    for (const [f, re] of [['md5.lst', /^[0-9a-f]{32}$/], ['sha1.lst', /^[0-9a-f]{40}$/], ['sha256.lst', /^[0-9a-f]{64}$/], ['ipv4.lst', /^\d+\.\d+\.\d+\.\d+$/]] as const) {
      const ls = lines(f).filter(Boolean);
      expect(ls.length).toBeGreaterThan(100);
      for (const l of ls) expect(l).toMatch(re);
    }
    for (const f of ['domains.lst', 'ipv4.lst', 'md5.lst', 'outpost.list']) expect(fs.readFileSync(path.join(dir, 'suricata', f), 'utf8')).not.toMatch(/[\r#]/);
  });

  it('iprep: networks and addresses with a known category and a 1–127 score; networks only here', () => {
    const cats = new Map(lines('categories.txt').filter(Boolean).map((l) => l.split(',')).map(([id, name]) => [id, name]));
    for (const id of cats.keys()) expect(Number(id)).toBeLessThanOrEqual(60);
    const list = lines('outpost.list').filter(Boolean).map((l) => l.split(','));
    expect(list.some(([ip]) => ip.includes('/'))).toBe(true);
    for (const [ip, cat, score] of list) {
      expect(ipRange(ip)).not.toBeNull();
      expect(cats.has(cat)).toBe(true);
      expect(Number(score)).toBeGreaterThanOrEqual(1);
      expect(Number(score)).toBeLessThanOrEqual(127);
    }
    const cidrs = list.filter(([ip]) => ip.includes('/')).map(([ip]) => ip);
    const everywhereElse = ['ipv4.lst', 'ipv6.lst'].flatMap((f) => lines(f));
    for (const c of cidrs.slice(0, 50)) expect(everywhereElse).not.toContain(c);
    expect(collect(exportFormat(fx.db, 'suricata-iprep', { now: NOW }))).toBe(fs.readFileSync(path.join(dir, 'suricata', 'outpost.list'), 'utf8'));
  });

  it('rules: dataset rules, unique sids, per-URL rules only for http:// with escaped content', () => {
    const rules = lines('outpost.rules').filter((l) => l && !l.startsWith('#'));
    const sids = rules.map((r) => Number(/sid:(\d+);/.exec(r)![1]));
    expect(new Set(sids).size).toBe(sids.length);
    expect(rules.some((r) => r.includes('dns.query; to_lowercase; dataset:isset,outpost-domains,type string,load domains.lst;'))).toBe(true);
    expect(rules.some((r) => r.includes('filesha256:sha256.lst;'))).toBe(true);
    const urlRules = rules.filter((r) => r.includes('OUTPOST listed URL'));
    expect(urlRules.length).toBeGreaterThan(50);
    expect(lines('outpost.rules').join('\n')).toMatch(/# skipped URLs: https [1-9]\d*/);
  });

  it('rule content escapes the rule language characters and non-ASCII as hex', () => {
    expect(ruleContent('/a;b"c\\d|e')).toBe('/a|3B|b|22|c|5C|d|7C|e');
    expect(ruleContent('/caf\u00e9 x')).toBe('/caf|C3 A9| x');
  });

  it('the stream is a tar of the same file set (read back by GNU tar)', () => {
    const tarFile = path.join(fx.dir, 'suricata.tar');
    fs.writeFileSync(tarFile, Buffer.from(collect(exportFormat(fx.db, 'suricata-dataset', { now: NOW })), 'latin1'));
    const out = path.join(fx.dir, 'untar');
    fs.mkdirSync(out);
    const r = spawnSync('tar', ['-xf', tarFile, '-C', out], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    for (const f of fs.readdirSync(path.join(dir, 'suricata'))) {
      expect(fs.readFileSync(path.join(out, f), 'utf8')).toBe(fs.readFileSync(path.join(dir, 'suricata', f), 'utf8'));
    }
  });
});

describe('every file set in one pass over the store', () => {
  let fx: Fixture;
  let dir: string;
  let summary: { files: Record<string, ExportStats> };
  beforeAll(async () => {
    fx = buildFixture();
    dir = path.join(fx.dir, 'exports');
    await writeExportFiles(fx.db, dir, { now: NOW });
    summary = JSON.parse(fs.readFileSync(path.join(dir, 'exports.json'), 'utf8'));
  });
  afterAll(() => fx.close());

  it('writes each file with the bytes the format streams alone', async () => {
    for (const format of ['zeek-intel', 'rpz', 'csv', 'suricata-iprep'] as const) {
      const file = format === 'suricata-iprep' ? path.join(dir, 'suricata', 'outpost.list') : path.join(dir, EXPORT_FILE_NAMES[format]);
      const text = fs.readFileSync(file, 'utf8');
      expect(text.length, format).toBeGreaterThan(1000);
      expect(text, format).toBe(collect(exportFormat(fx.db, format, { now: NOW })));
    }
    const bundleId = /"bundle--[0-9a-f-]{36}"/;
    expect(fs.readFileSync(path.join(dir, 'outpost.stix.json'), 'utf8').replace(bundleId, 'B')).toBe(collect(exportFormat(fx.db, 'stix', { now: NOW })).replace(bundleId, 'B'));
    const alone = path.join(fx.dir, 'misp-alone');
    const res = await writeMispFeed(fx.db, alone, { now: NOW });
    expect(res.attributes).toBeGreaterThan(1000);
    expect(fs.readdirSync(alone).sort()).toEqual(fs.readdirSync(path.join(dir, 'misp-feed')).sort());
    for (const f of fs.readdirSync(alone)) expect(fs.readFileSync(path.join(dir, 'misp-feed', f), 'utf8'), f).toBe(fs.readFileSync(path.join(alone, f), 'utf8'));
  });

  it('a pass that fails part way leaves every previous file as it was and no temp file', () => {
    const csvPath = path.join(dir, 'outpost.csv');
    const stixPath = path.join(dir, 'outpost.stix.json');
    const before = [fs.readFileSync(csvPath, 'utf8'), fs.readFileSync(stixPath, 'utf8')];
    fs.writeFileSync(path.join(dir, 'marker.csv'), 'old\n');
    let rows = 0;
    const failing: RowFile = { name: 'marker.csv', types: ['domain'], line: (r) => { if (++rows === 100) throw new Error('disk full'); return r.value + '\n'; } };
    const ctx = sourceContext(fx.db, NOW, newStats());
    // It fails at its 100th domain: the other files are part way through their temp files by then.
    const sinks = [new FileSink(csvPath, { ...csvFile, head: 'changed\r\n' }, newStats()), new FileSink(stixPath, stixFile(NOW), newStats()), new FileSink(path.join(dir, 'marker.csv'), failing, newStats())];
    expect(() => runPass(ctx, sinks)).toThrow('disk full');
    expect(rows).toBe(100);
    expect([fs.readFileSync(csvPath, 'utf8'), fs.readFileSync(stixPath, 'utf8')]).toEqual(before);
    expect(fs.readFileSync(path.join(dir, 'marker.csv'), 'utf8')).toBe('old\n');
    expect(fs.readdirSync(dir, { recursive: true }).filter((f) => String(f).includes('.tmp-'))).toEqual([]);
    fs.rmSync(path.join(dir, 'marker.csv'));
  });

  it('records when and for which generation the files were written; a run under way shows', () => {
    const st = exportsStatus(dir)!;
    expect(st).toMatchObject({ generated_at: new Date(NOW * 1000).toISOString(), generation: currentGeneration(fx.db), running: false, not_written: [] });
    expect(st.sets).toEqual(['suricata/', 'outpost.intel', 'outpost.rpz', 'outpost.csv', 'outpost.stix.json', 'misp-feed/']);
    expect(st.took_ms).toBeGreaterThanOrEqual(0);
    const tmp = path.join(dir, 'outpost.csv.tmp-123-0a1b2c3d'); // what AtomicFile writes before its rename
    fs.writeFileSync(tmp, '');
    expect(exportsStatus(dir)!.running).toBe(true);
    fs.rmSync(tmp);
    expect(exportsStatus(path.join(fx.dir, 'no-such-dir'))).toBeNull();
  });

  it("reports each set's counts, a value left out counted once per set", () => {
    const csv: ExportStats = { written: 0, skipped: {} };
    collect(exportFormat(fx.db, 'csv', { now: NOW, stats: csv }));
    expect(summary.files['outpost.csv']).toEqual(csv);
    expect(csv.skipped['internal-address-space']).toBeGreaterThanOrEqual(1);
    // Internal space and allowed networks are IP rules; the Suricata set has IP lists and the iprep list,
    // and still counts each address it leaves out once.
    for (const reason of ['internal-address-space', 'allowlisted-network']) {
      expect(summary.files['suricata/'].skipped[reason] ?? 0, reason).toBe(csv.skipped[reason] ?? 0);
    }
    // RPZ takes domains only: no IP reason in its report.
    expect(summary.files['outpost.rpz'].skipped['internal-address-space']).toBeUndefined();
    expect(summary.files['misp-feed/'].written).toBeGreaterThanOrEqual(csv.written);
  });
});

describe('Zeek Intel export', () => {
  let fx: Fixture;
  beforeAll(() => {
    fx = buildFixture();
    addRow(fx.db, 'urlhaus', 'block', 'url', 'http://tab.example/a%09b?x=1');
  });
  afterAll(() => fx.close());

  it('has the #fields header and five tab-separated fields per line with Zeek types', () => {
    const out = collect(exportFormat(fx.db, 'zeek-intel', { now: NOW }));
    const [header, ...body] = out.split('\n');
    expect(header + '\n').toBe(ZEEK_HEADER);
    expect(body.pop()).toBe('');
    const seen = new Set<string>();
    for (const l of body) {
      const f = l.split('\t');
      expect(f).toHaveLength(5);
      expect(f.every((x) => x.length > 0)).toBe(true);
      expect(f[1]).toMatch(/^Intel::(ADDR|SUBNET|DOMAIN|URL|FILE_HASH|EMAIL)$/);
      seen.add(f[1]);
      if (f[1] === 'Intel::URL') expect(f[0]).not.toMatch(/^[a-z]+:\/\//);
      if (f[1] === 'Intel::SUBNET') expect(f[0]).toContain('/');
      expect(f[4]).toBe('-');
    }
    expect(seen.size).toBeGreaterThanOrEqual(5);
    expect(body).toContain('tab.example/a%09b?x=1\tIntel::URL\toutpost:urlhaus\tmalware_download; confidence 90\t-');
  });
});

describe('RPZ export', () => {
  let fx: Fixture;
  beforeAll(() => {
    fx = buildFixture();
    addRow(fx.db, 'lummac2', 'block', 'domain', 'bücher-test.example'); // a store row that kept Unicode
    addRow(fx.db, 'lummac2', 'block', 'domain', `${'a'.repeat(64)}.example`); // label too long for DNS
    addRow(fx.db, 'lummac2', 'block', 'domain', 'bad name.example');
  });
  afterAll(() => fx.close());

  it('has SOA and NS, a name and wildcard record per listed domain, passthru for allowlisted names', () => {
    const stats: ExportStats = { written: 0, skipped: {} };
    const zone = collect(exportFormat(fx.db, 'rpz', { now: NOW, stats }));
    expect(zone).toMatch(/^\$TTL 300\n@ 3600 IN SOA localhost\. hostmaster\.localhost\. 1790000000 /);
    expect(zone).toMatch(/^@ 3600 IN NS localhost\.$/m);
    const lummaDomain = fx.inserted.get('lummac2')!.find((x) => x.type === 'domain')!.value;
    expect(zone).toContain(`\n${lummaDomain} CNAME .\n*.${lummaDomain} CNAME .\n`);
    expect(zone).toContain('\ngithub.com CNAME rpz-passthru.\n*.github.com CNAME rpz-passthru.\n');
    expect(zone).toContain('\nrepocket.com CNAME rpz-passthru.\n');
    expect(zone).not.toMatch(/^repocket\.com CNAME \.$/m);
    for (const l of zone.split('\n')) {
      if (!l || l.startsWith(';') || l.startsWith('$') || l.startsWith('@')) continue;
      expect(l).toMatch(/^(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)* CNAME (\.|rpz-passthru\.)$/);
    }
    expect(zone).toContain('\nxn--bcher-test-9db.example CNAME .\n');
    expect(zone).not.toContain('a'.repeat(64));
    expect(stats.skipped['rpz-invalid-name']).toBeGreaterThanOrEqual(2);
    expect(zone).toMatch(/; skipped invalid names: [1-9]/);
  });

  it('validates names and encodes IP triggers', () => {
    expect(rpzName('Bücher.Example.')).toBe('xn--bcher-kva.example');
    expect(rpzName('-container.supertms.com')).toBe('-container.supertms.com');
    expect(rpzName('a..b')).toBeNull();
    expect(rpzName(`${'x'.repeat(60)}.${'y'.repeat(60)}.${'z'.repeat(60)}.${'w'.repeat(10)}`)).toBeNull();
    expect(rpzIpOwner('1.2.3.4')).toBe('32.4.3.2.1.rpz-ip');
    expect(rpzIpOwner('10.0.0.0/8')).toBe('8.0.0.0.10.rpz-ip');
    expect(rpzIpOwner('2001:db8::1')).toBe('128.1.zz.db8.2001.rpz-ip');
    expect(rpzIpOwner('2001:db8:0:1::/64')).toBe('64.zz.1.0.db8.2001.rpz-ip');
    const zone = collect(exportFormat(fx.db, 'rpz', { now: NOW, rpzIpTriggers: true }));
    const ip = fx.inserted.get('threatfox')![0].value.split('.').reverse().join('.');
    expect(zone).toContain(`\n32.${ip}.rpz-ip CNAME .\n`);
  });
});

describe('CSV export', () => {
  let fx: ReturnType<typeof freshDb>;
  beforeAll(() => {
    fx = freshDb();
    addFeed(fx.db, 'edge', 'block', 'phish,"ing"', 70);
    addRow(fx.db, 'edge', 'block', 'url', 'http://evil.example/a,b"c?d=1');
    addRow(fx.db, 'edge', 'block', 'domain', '-container.supertms.com');
    addRow(fx.db, 'edge', 'block', 'url', 'http://evil.example/=cmd|calc');
    addRow(fx.db, 'edge', 'block', 'email', '+hostile@evil.example', { category: '@SUM(1+1)' });
  });
  afterAll(() => fx.close());

  it('quotes per RFC 4180 and neutralises formula-looking cells with a leading apostrophe', () => {
    const text = collect(exportFormat(fx.db, 'csv', { now: NOW }));
    expect(text.endsWith('\r\n')).toBe(true);
    const rows = parseCsv(text);
    expect(rows[0]).toEqual(['value', 'type', 'feed', 'category', 'confidence', 'first_seen', 'last_seen', 'expires_at']);
    for (const r of rows) expect(r).toHaveLength(8);
    const byValue = new Map(rows.slice(1).map((r) => [r[0], r]));
    expect(byValue.get('http://evil.example/a,b"c?d=1')![3]).toBe('phish,"ing"');
    expect(byValue.has("'-container.supertms.com")).toBe(true);
    expect(byValue.get("'+hostile@evil.example")![3]).toBe("'@SUM(1+1)");
    expect(byValue.has('http://evil.example/=cmd|calc')).toBe(true); // starts with h: left alone
    expect(text).toContain('"http://evil.example/a,b""c?d=1"');
  });
});

describe('STIX 2.1 export', () => {
  let fx: Fixture;
  beforeAll(() => {
    fx = buildFixture();
    addRow(fx.db, 'urlhaus', 'block', 'url', "http://evil.example/it's\\here?q='x'");
  });
  afterAll(() => fx.close());

  // Written from the STIX 2.1 specification (OASIS CS02): common properties (§3.2), identifier
  // syntax (§2.9), timestamps (§2.10, RFC 3339 UTC 'Z'), Identity (§4.5), Indicator (§4.7), Bundle (§8).
  const uuid = '[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}';
  const timestamp = { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?Z$', format: 'date-time' };
  const timestampMs = { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z$', format: 'date-time' };
  const nonEmptyStrings = { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } };
  const custom = { '^x_[a-z0-9_]{1,248}$': {} };
  const identitySchema = {
    type: 'object',
    required: ['type', 'spec_version', 'id', 'created', 'modified', 'name'],
    properties: {
      type: { const: 'identity' }, spec_version: { const: '2.1' }, id: { type: 'string', pattern: `^identity--${uuid}$` },
      created: timestampMs, modified: timestampMs, name: { type: 'string', minLength: 1 }, description: { type: 'string' },
      identity_class: { type: 'string' }, roles: nonEmptyStrings, sectors: nonEmptyStrings, contact_information: { type: 'string' },
    },
    patternProperties: custom,
    additionalProperties: false,
  };
  const indicatorSchema = {
    type: 'object',
    required: ['type', 'spec_version', 'id', 'created', 'modified', 'pattern', 'pattern_type', 'valid_from'],
    properties: {
      type: { const: 'indicator' }, spec_version: { const: '2.1' }, id: { type: 'string', pattern: `^indicator--${uuid}$` },
      created_by_ref: { type: 'string', pattern: `^identity--${uuid}$` },
      created: timestampMs, modified: timestampMs, revoked: { type: 'boolean' }, labels: nonEmptyStrings,
      confidence: { type: 'integer', minimum: 0, maximum: 100 }, lang: { type: 'string' },
      external_references: { type: 'array', minItems: 1 }, object_marking_refs: { type: 'array', minItems: 1 },
      granular_markings: { type: 'array', minItems: 1 },
      name: { type: 'string' }, description: { type: 'string' }, indicator_types: nonEmptyStrings,
      pattern: { type: 'string', minLength: 1 }, pattern_type: { type: 'string', minLength: 1 }, pattern_version: { type: 'string' },
      valid_from: timestamp, valid_until: timestamp, kill_chain_phases: { type: 'array', minItems: 1 },
    },
    patternProperties: custom,
    additionalProperties: false,
  };
  const bundleSchema = {
    type: 'object',
    required: ['type', 'id'],
    properties: {
      type: { const: 'bundle' }, id: { type: 'string', pattern: `^bundle--${uuid}$` },
      objects: { type: 'array', items: { oneOf: [{ $ref: 'identity' }, { $ref: 'indicator' }] } },
    },
    additionalProperties: false,
  };

  /** The comparison forms we emit: `[path = 'literal']` with only \\ and \' escaped inside the literal. */
  const PATTERN = /^\[(ipv4-addr:value|ipv6-addr:value|domain-name:value|url:value|email-addr:value|file:hashes\.MD5|file:hashes\.'SHA-1'|file:hashes\.'SHA-256') = '((?:[^'\\]|\\['\\])*)'\]$/;

  it('is a bundle whose every object validates against the STIX 2.1 schema', () => {
    const ajv = new Ajv({ allErrors: true, strict: false });
    // ajv-formats is CommonJS: under NodeNext its default export arrives wrapped.
    const mod = formatsPlugin as unknown as { default?: (a: Ajv) => Ajv } & ((a: Ajv) => Ajv);
    const addFormats = mod.default ?? mod;
    addFormats(ajv);
    ajv.addSchema(identitySchema, 'identity');
    ajv.addSchema(indicatorSchema, 'indicator');
    const validate = ajv.compile(bundleSchema);
    const bundle = JSON.parse(collect(exportFormat(fx.db, 'stix', { now: NOW })));
    const ok = validate(bundle);
    expect(ok, JSON.stringify(validate.errors?.slice(0, 3))).toBe(true);
    const indicators = bundle.objects.filter((o: { type: string }) => o.type === 'indicator');
    expect(indicators.length).toBeGreaterThan(3000);
    for (const ind of indicators) {
      expect(ind.modified >= ind.created).toBe(true);
      if (ind.valid_until) expect(ind.valid_until > ind.valid_from).toBe(true);
      const m = PATTERN.exec(ind.pattern);
      expect(m, ind.pattern).not.toBeNull();
      expect(m![2].replace(/\\(['\\])/g, '$1')).toBe(ind.name);
    }
  });

  it("escapes ' and \\ in pattern literals", () => {
    expect(stixPattern('url', "http://e.example/it's\\x")).toBe("[url:value = 'http://e.example/it\\'s\\\\x']");
    expect(stixPattern('sha256', 'ab'.repeat(32))).toBe(`[file:hashes.'SHA-256' = '${'ab'.repeat(32)}']`);
    const bundle = JSON.parse(collect(exportFormat(fx.db, 'stix', { now: NOW })));
    const ind = bundle.objects.find((o: { name?: string }) => o.name === "http://evil.example/it's\\here?q='x'");
    expect(ind.pattern).toBe("[url:value = 'http://evil.example/it\\'s\\\\here?q=\\'x\\'']");
  });

  it('gives a value the same indicator id on every export (UUIDv5 of type and value)', () => {
    const ids = () => JSON.parse(collect(exportFormat(fx.db, 'stix', { now: NOW }))).objects.map((o: { id: string }) => o.id).slice(1, 200);
    expect(ids()).toEqual(ids());
    expect(uuidv5('domain:evil.example')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(uuidv5('domain:evil.example')).not.toBe(uuidv5('url:evil.example'));
    // RFC 4122 §4.3 by its own steps, and the well-known vector (DNS namespace, www.example.com).
    const reference = (name: string, ns: string) => {
      const h = createHash('sha1').update(Buffer.from(ns.replace(/-/g, ''), 'hex')).update(name, 'utf8').digest().subarray(0, 16);
      h[6] = (h[6] & 0x0f) | 0x50;
      h[8] = (h[8] & 0x3f) | 0x80;
      const x = h.toString('hex');
      return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
    };
    const dns = '6ba7b810-9dad-11d1-80b4-00c04fd430c8';
    expect(uuidv5('www.example.com', dns)).toBe('2ed6657d-e927-568b-95e1-2665a8aea6a2');
    for (const name of ['', 'url:http://bücher.example/ä', 'x'.repeat(4080), 'x'.repeat(5000), '日本'.repeat(2000)]) {
      expect(uuidv5(name)).toBe(reference(name, OUTPOST_NAMESPACE));
      expect(uuidv5(name, dns)).toBe(reference(name, dns));
    }
  });
});

describe('export regeneration under serve', () => {
  it('a run stopped mid-write (serve shutting down) leaves the previous files; the next run removes its temp files', async () => {
    const fx = buildFixture();
    try {
      const dir = path.join(fx.dir, 'exports');
      await writeExportFiles(fx.db, dir, { now: NOW });
      const before = fs.readFileSync(path.join(dir, 'outpost.csv'), 'utf8');
      // What a terminated worker leaves behind: half-written temp files next to the previous files.
      const stale = [path.join(dir, `outpost.csv.tmp-4242-0badc0de`), path.join(dir, 'suricata', `ipv4.lst.tmp-4242-deadbeef`)];
      for (const f of stale) fs.writeFileSync(f, 'half a file');
      expect(fs.readFileSync(path.join(dir, 'outpost.csv'), 'utf8')).toBe(before);
      await writeExportFiles(fx.db, dir, { now: NOW });
      for (const f of stale) expect(fs.existsSync(f), f).toBe(false);
      expect(fs.readFileSync(path.join(dir, 'outpost.csv'), 'utf8')).toBe(before);
    } finally {
      fx.close();
    }
  });

  it('close() stops the run under way instead of waiting for it, and drops pending requests', async () => {
    let calls = 0;
    let sawAbort = false;
    const run = new ExportRegenerator(
      (signal) =>
        new Promise<void>((resolve) => {
          calls++;
          signal.addEventListener('abort', () => {
            sawAbort = true;
            resolve();
          });
        }),
      10,
    );
    const first = run.run();
    run.request(); // would run again after the first; close() drops it
    await run.close();
    await first;
    expect(sawAbort).toBe(true);
    await new Promise((r) => setTimeout(r, 50));
    expect(calls).toBe(1);
  });
});

describe('export file sets (OUTPOST_EXPORT_FILES)', () => {
  let fx: Fixture;
  beforeAll(() => {
    fx = buildFixture();
  });
  afterAll(() => fx.close());

  it('the configuration names the sets; an unknown one is E_CONFIG', () => {
    expect(exportFileSets(loadConfig({ exportFiles: 'all' }, {}))).toEqual(['suricata', 'zeek-intel', 'rpz', 'csv', 'stix', 'misp-feed']);
    expect(exportFileSets(loadConfig({}, {}))).toHaveLength(6); // the default writes every set
    expect(exportFileSets(loadConfig({}, { OUTPOST_EXPORT_FILES: ' RPZ, suricata ' }))).toEqual(['suricata', 'rpz']);
    expect(exportFileSets(loadConfig({ exportFiles: 'none' }, {}))).toEqual([]);
    expect(() => loadConfig({ exportFiles: 'rpz,stixx' }, {})).toThrow(/OUTPOST_EXPORT_FILES .*"stixx"/);
  });

  it('only the sets asked for are written; a set switched off loses its files', async () => {
    const dir = path.join(fx.dir, 'exports-sets');
    await writeExportFiles(fx.db, dir, { now: NOW });
    expect(fs.existsSync(path.join(dir, 'outpost.stix.json'))).toBe(true);
    const written = await writeExportFiles(fx.db, dir, { now: NOW, files: ['suricata', 'rpz'] });
    expect(written).toContain(path.join(dir, 'outpost.rpz'));
    expect(written).toContain(path.join(dir, 'suricata', 'outpost.rules'));
    expect(fs.readdirSync(dir).sort()).toEqual(['exports.json', 'outpost.rpz', 'suricata']);
    const summary = JSON.parse(fs.readFileSync(path.join(dir, 'exports.json'), 'utf8'));
    expect(summary.not_written).toEqual(['zeek-intel', 'csv', 'stix', 'misp-feed']);
    expect(Object.keys(summary.files).sort()).toEqual(['outpost.rpz', 'suricata/']);
    await writeExportFiles(fx.db, dir, { now: NOW, files: [] });
    expect(fs.readdirSync(dir)).toEqual(['exports.json']);
  });

  it('serve writes the configured sets after a new generation', async () => {
    setMeta(fx.db, 'generation', '1'); // rows of the fixture, as an apply would leave them
    const cfg = loadConfig({ dataDir: fx.dir, port: 0, noDemo: true, exportFiles: 'zeek-intel' }, {});
    const running = await startAppliance(cfg, createLogger('silent'));
    try {
      const summaryFile = path.join(fx.dir, 'exports', 'exports.json');
      for (let i = 0; i < 600 && !fs.existsSync(summaryFile); i++) await new Promise((r) => setTimeout(r, 100));
      expect(fs.readdirSync(path.join(fx.dir, 'exports')).sort()).toEqual(['exports.json', 'outpost.intel']);
      expect(fs.readFileSync(path.join(fx.dir, 'exports', 'outpost.intel'), 'utf8')).toMatch(/^#fields\t/);
    } finally {
      await running.close();
    }
  }, 120_000);
});
