// Source parsers and collectIndicators against the real data set in ../shared/data: per-file counts,
// the known malformed lines, context carried from each format, cross-file merging, and refusals.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isOutpostError } from '../appliance/errors.ts';
import type { Indicator, SourceReport } from '../appliance/types.ts';
import { normalize } from '../lookup/normalize.ts';
import { collectIndicators, type CollectOptions } from '../sync/collect.ts';
import { detectFormat, newReport, parseStixPattern, readSource, splitCsvRecord } from '../sync/sources/index.ts';
import { compareIndicators } from '../sync/records.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DATA = path.resolve(ROOT, '../shared/data');
const BLOCK: CollectOptions = { kind: 'block', confidence: 80 };

const cache = new Map<string, Promise<{ indicators: Indicator[]; reports: SourceReport[] }>>();
function collect(rel: string) {
  if (!cache.has(rel)) cache.set(rel, collectIndicators([path.join(DATA, rel)], BLOCK));
  return cache.get(rel)!;
}

/** Independent line statistics of a text file: physical lines (a last line without newline counts), comment/blank lines, bare `/path` entries. */
function textStats(rel: string) {
  const text = fs.readFileSync(path.join(DATA, rel), 'utf8');
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const trimmed = lines.map((l) => l.trim());
  return {
    lines: lines.length,
    skipped: trimmed.filter((l) => l === '' || l.startsWith('#')).length,
    barePaths: trimmed.filter((l) => l.startsWith('/')).length,
    entries: trimmed.filter((l) => l !== '' && !l.startsWith('#')),
  };
}

function tmp(name: string, content: string | Buffer): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'outpost-sources-'));
  const p = path.join(dir, name);
  fs.writeFileSync(p, content);
  return p;
}

function byType(inds: Indicator[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const i of inds) out[i.t] = (out[i.t] ?? 0) + 1;
  return out;
}

interface Expect { format: string; lines: number; accepted: number; malformed: number; duplicates: number; skipped: number }

// Expected outcome of every indicator source in ../shared/data, each file collected on its own.
// Derivations (README = ../shared/data/README.md "Files" table; "text" = textStats() in this file):
// - ipsum.txt: 120,437 lines; 7 `#` header lines; 120,430 IPs, all distinct (checked below with a Set).
// - levels/3.txt, threatfox/ips.txt (19,863 entries, no final newline), eset samples.*: one distinct value per line.
// - firehol: 33 header lines; README: 2,490 CIDRs + 402 IPv4 = 2,892, none repeated.
// - mass_scanner_cidr: README 1,096 CIDRs + 10 IPv4 = 1,106 entries; 4 `/20` networks are listed twice
//   (`awk '{print $1}' | sort | uniq -d` → 159.203.{192,208,224,240}.0/20) → 4 duplicates.
// - maltrail trails: entries = sum of the README type counts of the file; malformed = its "URL path only"
//   count (bare `/path`, also counted by text.barePaths) + the hand-checked typos listed in TYPOS;
//   accepted + duplicates = the rest (accepted = distinct canonical values, IPv4 part re-derived below).
// - c2-iocs: README 1,709 domains + 129 IPv4 + 6 `IP;65` = 1,844 entries (the `;65` lines are LOKI C2
//   scores and are accepted, see sync/sources/plain.ts); 1,773 distinct.
// - hash-iocs: README 1,259 + 1,039 + 926 = 3,224 hashes; 3,053 distinct.
// - urlhaus: 16,311 lines = header + 16,310 URLs; 20 collapse with another after canonicalization
//   (`//` collapsed, default port dropped — re-derived below with a small independent canonicalizer).
// - warninglists: one record per list entry (README list lengths); cisco_top10k's `-container.supertms.com` malformed.
// - MISP events: one record per attribute (README type counts: mozi 151, moustachedbouncer 340);
//   indicators = md5+sha1+sha256+url+ip-dst+domain+email (mozi 63+11+4 = 78; moustachedbouncer
//   87+11+11+6+4 = 119); everything else skipped (mozi's ip-src is a victim corporate-asset: skipped).
// - STIX: one record per object; apt1 12 indicators = 10 values + 2 x509 AND patterns (malformed), 64 other objects.
const EXPECTED: Record<string, Expect> = {
  'ipsum/ipsum.txt': { format: 'plain', lines: 120_437, accepted: 120_430, malformed: 0, duplicates: 0, skipped: 7 },
  'ipsum/levels/3.txt': { format: 'plain', lines: 14_217, accepted: 14_217, malformed: 0, duplicates: 0, skipped: 0 },
  'threatfox/ips.txt': { format: 'plain', lines: 19_863, accepted: 19_863, malformed: 0, duplicates: 0, skipped: 0 },
  'eset/nukesped_lazarus/samples.md5': { format: 'plain', lines: 555, accepted: 555, malformed: 0, duplicates: 0, skipped: 0 },
  'eset/nukesped_lazarus/samples.sha1': { format: 'plain', lines: 555, accepted: 555, malformed: 0, duplicates: 0, skipped: 0 },
  'eset/nukesped_lazarus/samples.sha256': { format: 'plain', lines: 555, accepted: 555, malformed: 0, duplicates: 0, skipped: 0 },
  'firehol/firehol_level1.netset': { format: 'plain', lines: 2_925, accepted: 2_892, malformed: 0, duplicates: 0, skipped: 33 },
  'maltrail/mass_scanner_cidr.txt': { format: 'plain', lines: 1_130, accepted: 1_102, malformed: 0, duplicates: 4, skipped: 24 },
  // 4943+4737+4704+418+232 = 15,034 entries; 4,737 bare paths
  'maltrail/malware/emotet.txt': { format: 'plain', lines: 17_844, accepted: 8_039, malformed: 4_737, duplicates: 2_258, skipped: 2_810 },
  // 10332+6973+291+58+14 = 17,668 entries; 58 paths + 4 `.xzy`
  'maltrail/malware/remcos.txt': { format: 'plain', lines: 23_452, accepted: 14_550, malformed: 62, duplicates: 3_056, skipped: 5_784 },
  // 16564+182+122+22+1 = 16,891 entries; 22 paths + 12 unknown TLDs
  'maltrail/malware/lummac2.txt': { format: 'plain', lines: 19_265, accepted: 16_585, malformed: 33, duplicates: 273, skipped: 2_374 },
  // 8053+4520+1992+116+16+3+1 = 14,701 entries; 116 paths + 3 ip:port:port + `.loc`
  'maltrail/malware/cobaltstrike.txt': { format: 'plain', lines: 36_002, accepted: 11_197, malformed: 120, duplicates: 3_384, skipped: 21_301 },
  // 18777+6261+322+28+2 = 25,390 entries; 28 paths + 4 bad ports + `.or`
  'maltrail/malware/asyncrat.txt': { format: 'plain', lines: 31_579, accepted: 15_549, malformed: 33, duplicates: 9_808, skipped: 6_189 },
  // 3903+871+530+166+99+4 = 5,573 entries; 99 paths
  'maltrail/malware/apt_lazarus.txt': { format: 'plain', lines: 8_182, accepted: 5_057, malformed: 99, duplicates: 417, skipped: 2_609 },
  'signature-base/c2-iocs.txt': { format: 'plain', lines: 1_911, accepted: 1_773, malformed: 0, duplicates: 71, skipped: 67 },
  'signature-base/hash-iocs.txt': { format: 'plain', lines: 3_357, accepted: 3_053, malformed: 0, duplicates: 171, skipped: 133 },
  'urlhaus/urls.csv': { format: 'csv', lines: 16_311, accepted: 16_290, malformed: 0, duplicates: 20, skipped: 1 },
  'known-benign/warninglists/tranco10k.json': { format: 'misp-warninglist', lines: 10_000, accepted: 10_000, malformed: 0, duplicates: 0, skipped: 0 },
  'known-benign/warninglists/cisco_top10k.json': { format: 'misp-warninglist', lines: 10_000, accepted: 9_999, malformed: 1, duplicates: 0, skipped: 0 },
  'known-benign/warninglists/public-dns-v4.json': { format: 'misp-warninglist', lines: 62_745, accepted: 62_745, malformed: 0, duplicates: 0, skipped: 0 },
  'known-benign/warninglists/amazon-aws.json': { format: 'misp-warninglist', lines: 3_847, accepted: 3_847, malformed: 0, duplicates: 0, skipped: 0 },
  'known-benign/warninglists/google-gcp.json': { format: 'misp-warninglist', lines: 471, accepted: 471, malformed: 0, duplicates: 0, skipped: 0 },
  'known-benign/warninglists/sinkholes.json': { format: 'misp-warninglist', lines: 107, accepted: 107, malformed: 0, duplicates: 0, skipped: 0 },
  'known-benign/warninglists/url-shortener.json': { format: 'misp-warninglist', lines: 255, accepted: 255, malformed: 0, duplicates: 0, skipped: 0 },
  'known-benign/warninglists/common-ioc-false-positive.json': { format: 'misp-warninglist', lines: 69, accepted: 69, malformed: 0, duplicates: 0, skipped: 0 },
  'eset/mozi/mozi.misp-event.json': { format: 'misp-event', lines: 151, accepted: 78, malformed: 0, duplicates: 0, skipped: 73 },
  'eset/moustachedbouncer/misp-moustachedbouncer.event.json': { format: 'misp-event', lines: 340, accepted: 119, malformed: 0, duplicates: 0, skipped: 221 },
  'mitre-cti/ics-attack.json': { format: 'stix', lines: 1_825, accepted: 0, malformed: 0, duplicates: 0, skipped: 1_825 },
  'stix21-examples/apt1.json': { format: 'stix', lines: 76, accepted: 10, malformed: 2, duplicates: 0, skipped: 64 },
  'stix21-examples/indicator-for-malicious-url.json': { format: 'stix', lines: 3, accepted: 1, malformed: 0, duplicates: 0, skipped: 2 },
  'stix21-examples/malware-indicator-for-file-hash.json': { format: 'stix', lines: 3, accepted: 1, malformed: 0, duplicates: 0, skipped: 2 },
  'stix21-examples/sighting-of-an-indicator.json': { format: 'stix', lines: 4, accepted: 1, malformed: 0, duplicates: 0, skipped: 3 },
  'stix21-examples/identifying-a-threat-actor-profile.json': { format: 'stix', lines: 3, accepted: 0, malformed: 0, duplicates: 0, skipped: 3 },
  'stix21-examples/using-marking-definitions.json': { format: 'stix', lines: 4, accepted: 1, malformed: 0, duplicates: 0, skipped: 3 },
};

/** Hand-checked typos in the maltrail trails (besides bare paths): value → reason fragment. */
const TYPOS: Record<string, [string, RegExp][]> = {
  'maltrail/malware/asyncrat.txt': [
    ['18.197.239.109:66086', /port/], ['74.119.194.180:0', /port/], ['91.109.190.5:660666', /port/],
    ['147.185.221.18:525310', /port/], ['gatex.observatoriocriticocuba.or', /top-level domain/],
  ],
  'maltrail/malware/cobaltstrike.txt': [
    ['139.9.234.13:33:1099', /ip:port/], ['54.246.146.207:22:50050', /ip:port/], ['45.86.163.188:443:444', /ip:port/],
    ['epic.pwnage.loc', /top-level domain/],
  ],
  'maltrail/malware/remcos.txt': ['coolcc1.xzy', 'coolget1.xzy', 'coolta1.xzy', 'coolta2.xzy'].map((v) => [v, /top-level domain/] as [string, RegExp]),
  'maltrail/malware/lummac2.txt': [
    'domainlumm.funlogin', 'ezaelwpyeh.eza', 'gtctotdh.eza', 'hzwgpctypld.eza', 'ncznzotwpqr.eza', 'spxtdaspcpik.eza',
    'tbczyczdp.eza', 'wfyzizcy.eza', 'live.irlecont', 'dynamiczl.lives', 'polishswimgownsayjwui.shops',
  ].map((v) => [v, /top-level domain/] as [string, RegExp]),
  'maltrail/malware/apt_lazarus.txt': [],
  'maltrail/malware/emotet.txt': [],
};

describe('every indicator source in ../shared/data', () => {
  for (const [rel, exp] of Object.entries(EXPECTED)) {
    it(`${rel}: counts`, async () => {
      const { indicators, reports } = await collect(rel);
      const r = reports[0];
      expect(r.file).toBe(path.basename(rel));
      expect({ format: r.format, lines: r.lines, accepted: r.accepted, malformed: r.malformed, duplicates: r.duplicates, skipped: r.skipped ?? 0 }).toEqual(exp);
      // The invariant, and one indicator per accepted entry.
      expect(r.lines).toBe(r.accepted + r.malformed + r.duplicates + (r.skipped ?? 0));
      expect(indicators.length).toBe(r.accepted);
      expect(r.samples.length).toBe(Math.min(20, r.malformed));
      for (const s of r.samples) {
        expect(s.text.length).toBeLessThanOrEqual(200);
        expect(s.error).toBeTruthy();
        expect(s.line).toBeGreaterThan(0);
      }
      if (!rel.endsWith('.json')) {
        // Text files: physical lines and comment/blank lines re-counted independently of the parser.
        const t = textStats(rel);
        expect(r.lines).toBe(t.lines);
        expect(r.skipped ?? 0).toBe(t.skipped + (rel.endsWith('.csv') ? 1 : 0)); // + the CSV header
        if (rel.startsWith('maltrail/malware/')) {
          expect(r.malformed).toBe(t.barePaths + TYPOS[rel].length);
        }
      }
    });
  }

  it('output is sorted, unique and canonical (every value normalizes to itself, as apply requires)', async () => {
    for (const rel of Object.keys(EXPECTED)) {
      const { indicators } = await collect(rel);
      for (let i = 1; i < indicators.length; i++) expect(compareIndicators(indicators[i - 1], indicators[i])).toBeLessThan(0);
      for (const ind of indicators) {
        const n = normalize(ind.v, ind.t);
        if (!n.ok || n.value !== ind.v || n.type !== ind.t) throw new Error(`${rel}: ${ind.t} ${ind.v} is not canonical`);
        if (ind.conf !== undefined) expect(ind.conf >= 0 && ind.conf <= 100).toBe(true);
      }
    }
  });

  it('simple lists: accepted equals the number of distinct values (re-derived with a Set)', async () => {
    for (const rel of ['ipsum/ipsum.txt', 'ipsum/levels/3.txt', 'threatfox/ips.txt', 'eset/nukesped_lazarus/samples.md5', 'eset/nukesped_lazarus/samples.sha1', 'eset/nukesped_lazarus/samples.sha256', 'firehol/firehol_level1.netset']) {
      const distinct = new Set(textStats(rel).entries.map((l) => l.split('\t')[0].toLowerCase()));
      const { reports } = await collect(rel);
      expect(reports[0].accepted, rel).toBe(distinct.size);
    }
  });

  it('maltrail: the IPv4 indicators are the distinct addresses of the ip[:port] lines with a valid port', async () => {
    for (const rel of Object.keys(TYPOS)) {
      const ips = new Set<string>();
      for (const l of textStats(rel).entries) {
        const m = /^(\d+\.\d+\.\d+\.\d+)(?::(\d+))?$/.exec(l);
        if (m && (m[2] === undefined || (Number(m[2]) >= 1 && Number(m[2]) <= 65535))) ips.add(m[1]);
      }
      const { indicators } = await collect(rel);
      expect(indicators.filter((i) => i.t === 'ipv4').length, rel).toBe(ips.size);
    }
  });
});

describe('known malformed lines are reported with reasons', () => {
  it('maltrail: exactly the hand-checked typos are refused besides bare paths, each with its reason', async () => {
    for (const [rel, typos] of Object.entries(TYPOS)) {
      // Samples stop at 20, so walk the file: structural refusals (paths) never reach normalize.
      const refused: [string, string][] = [];
      for await (const e of readSource(path.join(DATA, rel), newReport(rel))) {
        const n = normalize(e.raw, e.hint);
        if (!n.ok) refused.push([e.raw, n.error]);
      }
      expect(refused.map(([v]) => v).sort(), rel).toEqual(typos.map(([v]) => v).sort());
      for (const [value, reason] of typos) expect(refused.find(([v]) => v === value)![1]).toMatch(reason);
    }
    const cs = (await collect('maltrail/malware/cobaltstrike.txt')).reports[0];
    const s = cs.samples.find((x) => x.text === '139.9.234.13:33:1099');
    expect(s).toMatchObject({ line: 12159, error: expect.stringMatching(/ip:port/) });
  });

  it('bare URL paths are malformed with a reason naming the missing host', async () => {
    const r = (await collect('maltrail/malware/emotet.txt')).reports[0];
    expect(r.samples).toHaveLength(20);
    for (const s of r.samples) {
      expect(s.text.startsWith('/')).toBe(true);
      expect(s.error).toMatch(/URL path without host/);
    }
    const lz = (await collect('maltrail/malware/apt_lazarus.txt')).reports[0];
    expect(lz.samples[0]).toEqual({ line: 58, text: '/tbl_add.php', error: expect.stringMatching(/without host/) });
  });

  it('warninglist: -container.supertms.com is malformed (leading hyphen)', async () => {
    const r = (await collect('known-benign/warninglists/cisco_top10k.json')).reports[0];
    expect(r.samples).toEqual([{ line: 1, text: '-container.supertms.com', error: expect.stringMatching(/hyphen/) }]);
  });

  it('c2-iocs `IP;65`: LOKI C2 score → accepted with confidence 65 (decision: a score, not junk)', async () => {
    const { indicators } = await collect('signature-base/c2-iocs.txt');
    const lines = textStats('signature-base/c2-iocs.txt').entries.filter((l) => /;\d+$/.test(l));
    expect(lines).toHaveLength(6);
    for (const l of lines) {
      const ind = indicators.find((i) => i.v === l.split(';')[0]);
      expect(ind).toMatchObject({ t: 'ipv4', conf: 65, ctx: { score: 65 } });
      expect(String(ind!.ctx!.description)).toMatch(/Cleo/);
    }
    // The campaign comment above a block labels its entries (LOKI's own reading).
    expect(indicators.find((i) => i.v === 'suroot.com')?.ctx?.description).toBe('FireEye Operation Snowman https://goo.gl/x1v7mT');
  });
});

describe('context per format', () => {
  it('ipsum: count → ctx.blacklists and confidence min(95, 40 + 10·count)', async () => {
    const { indicators } = await collect('ipsum/ipsum.txt');
    const counts = new Map(textStats('ipsum/ipsum.txt').entries.map((l) => l.split('\t') as [string, string]));
    for (const ind of indicators.slice(0, 2000)) {
      const n = Number(counts.get(ind.v));
      expect(ind.ctx?.blacklists).toBe(n);
      expect(ind.conf).toBe(Math.min(95, 40 + 10 * n));
    }
  });

  it('maltrail: family, aliases, block references and ports', async () => {
    const { indicators } = await collect('maltrail/malware/emotet.txt');
    const first = indicators.find((i) => i.v === '66.210.228.178')!;
    expect(first).toMatchObject({ t: 'ipv4', ports: [80, 443], tags: ['emotet'] });
    expect(first.ctx).toMatchObject({ family: 'emotet', aliases: ['Emotet', 'Heodo', 'Geodo'], references: ['https://twitter.com/_lockhum/status/1221213324525867008'] });
    // Reference URLs are context, never indicators.
    expect(indicators.some((i) => i.v.includes('twitter.com/_lockhum'))).toBe(false);
    const cs = await collect('maltrail/malware/cobaltstrike.txt');
    expect(cs.indicators.every((i) => i.ctx?.family === 'cobaltstrike' && i.tags?.includes('cobaltstrike'))).toBe(true);
    const ms = await collect('maltrail/mass_scanner_cidr.txt');
    const rapid7 = ms.indicators.find((i) => i.v === '5.63.151.0/24')!;
    expect(rapid7).toMatchObject({ t: 'ipv4-cidr', ctx: { description: 'scanners.labs.rapid7.com' } });
    expect(rapid7.ctx?.family).toBeUndefined();
  });

  it('hash-iocs: HASH;COMMENT → description; ESET sample files hint their hash type', async () => {
    const { indicators } = await collect('signature-base/hash-iocs.txt');
    expect(indicators.find((i) => i.v === 'ce583821191345274cd954b2db7da9742c239fe413fc17dcb97ffdd7b51cb072')).toMatchObject({
      t: 'sha256', ctx: { description: 'Dark Caracal - MS Windows HtmlHelp Data' },
    });
    expect(byType(indicators)).toEqual({ md5: 986, sha1: 893, sha256: 1174 });
    const p = tmp('samples.md5', '0889a7ad0ad0822e9bce2ca316b57f4d\n0f01136f38ea50a6bebfd58c181622ad00c40723\n');
    const r = await collectIndicators([p], BLOCK);
    expect(r.reports[0]).toMatchObject({ accepted: 1, malformed: 1 });
    expect(r.reports[0].samples[0].error).toMatch(/md5/);
  });

  it('URLhaus: refanged, canonical URLs with tags and status; duplicates re-derived', async () => {
    const { indicators } = await collect('urlhaus/urls.csv');
    expect(indicators.every((i) => i.t === 'url' && !/\[|\]|hxxp/i.test(i.v))).toBe(true);
    expect(indicators.find((i) => i.v === 'http://123.189.148.227:50140/bin.sh')).toMatchObject({
      tags: ['32-bit', 'elf', 'mips', 'mozi'], ctx: { status: 'offline' },
    });
    // `http[:]//91[.]199[.]45[.]108[:]80` and `…108` are one URL: default port dropped, empty path → `/`.
    expect(indicators.filter((i) => i.v.startsWith('http://91.199.45.108/')).map((i) => i.v)).toContain('http://91.199.45.108/');
    // Independent canonicalizer for this file's shapes: refang, lowercase scheme+host, drop default port, collapse `//`.
    const text = fs.readFileSync(path.join(DATA, 'urlhaus/urls.csv'), 'utf8').trim().split('\n').slice(1);
    const canon = new Set(text.map((line) => {
      // Tags first (quoted when multi-valued), status last; the URL is what lies between.
      const afterTags = line.startsWith('"') ? line.indexOf('",') + 2 : line.indexOf(',') + 1;
      let url = line.slice(afterTags, line.lastIndexOf(','));
      if (url.startsWith('"')) url = url.slice(1, -1).replaceAll('""', '"'); // one URL has a comma: `…randint(1,1000000)…`
      url = url.replaceAll('[.]', '.').replaceAll('[:]', ':');
      const m = /^(\w+):\/\/([^/]*)(.*)$/.exec(url)!;
      let host = m[2].toLowerCase();
      const scheme = m[1].toLowerCase();
      if ((scheme === 'http' && host.endsWith(':80')) || (scheme === 'https' && host.endsWith(':443'))) host = host.replace(/:\d+$/, '');
      return `${scheme}://${host}${m[3].replace(/\/+/g, '/') || '/'}`;
    }));
    expect(canon.size).toBe(16_290);
    expect(indicators.length).toBe(canon.size);
  });

  it('STIX apt1: 4 ipv4 networks, 3 domains, 3 md5s with context; 2 x509 AND patterns refused', async () => {
    const { indicators, reports } = await collect('stix21-examples/apt1.json');
    expect(byType(indicators)).toEqual({ 'ipv4-cidr': 4, domain: 3, md5: 3 });
    expect(indicators.filter((i) => i.t === 'ipv4-cidr').map((i) => i.v).sort()).toEqual(['112.64.0.0/15', '139.226.0.0/15', '223.166.0.0/15', '58.246.0.0/15']);
    expect(indicators.filter((i) => i.t === 'domain').map((i) => i.v).sort()).toEqual(['arrowservice.net', 'hugesoft.org', 'msnhome.org']);
    const net = indicators.find((i) => i.v === '223.166.0.0/15')!;
    expect(net).toMatchObject({ fs: '2015-05-15T09:12:16.000Z', tags: ['malicious-activity'] });
    expect(net.ctx).toMatchObject({ name: 'HTRAN Hop Point Accessor', kill_chain: ['mandiant-attack-lifecycle-model:establish-foothold'], stix_id: 'indicator--031778a4-057f-48e6-9db9-c8d72b81ccd5' });
    const r = reports[0];
    expect(r.samples).toHaveLength(2);
    for (const s of r.samples) {
      expect(s.text).toMatch(/^\[x509-certificate:issuer = .* AND x509-certificate:serial_number/);
      expect(s.error).toMatch(/^unsupported STIX pattern: .*x509-certificate/);
    }
  });

  it('STIX: 2.1 file hash and url examples; ATT&CK bundle gives a note, not an error', async () => {
    expect((await collect('stix21-examples/malware-indicator-for-file-hash.json')).indicators).toEqual([
      expect.objectContaining({ t: 'sha256', v: 'ef537f25c895bfa782526529a9b63d97aa631564d5d789c2b765448c8635fb6c', ctx: expect.objectContaining({ name: 'File hash for Poison Ivy variant' }) }),
    ]);
    expect((await collect('stix21-examples/indicator-for-malicious-url.json')).indicators.map((i) => i.v)).toEqual(['http://x4z9arb.cn/4712/']);
    const ics = (await collect('mitre-cti/ics-attack.json')).reports[0];
    expect(ics.notes?.join(' ')).toMatch(/no indicator objects/);
  });

  it('STIX pattern parser: supported forms and refusals', () => {
    expect(parseStixPattern("[file:hashes.'SHA-256' = 'AB'] OR [file:hashes.MD5 = 'cd']")).toEqual([{ hint: 'sha256', value: 'AB' }, { hint: 'md5', value: 'cd' }]);
    expect(parseStixPattern("[domain-name:value = 'a.example' OR url:value = 'http://x/it\\'s']")).toEqual([{ hint: 'domain', value: 'a.example' }, { hint: 'url', value: "http://x/it's" }]);
    expect(parseStixPattern("[file:hashes.sha1 = 'x']")).toEqual([{ hint: 'sha1', value: 'x' }]);
    expect(parseStixPattern("[email-addr:value = 'a@b.example']")[0].hint).toBe('email');
    expect(() => parseStixPattern("[ipv4-addr:value = '1.2.3.4' AND domain-name:value = 'x.example']")).toThrow();
    expect(() => parseStixPattern("[url:value MATCHES '^http']")).toThrow(/operator/);
    expect(() => parseStixPattern("[ipv4-addr:value != '1.2.3.4']")).toThrow();
    expect(() => parseStixPattern("[ipv4-addr:value = '1.2.3.4'] WITHIN 60 SECONDS")).toThrow(/not supported/);
    expect(() => parseStixPattern("[file:hashes.'SHA-512' = 'x']")).toThrow(/not an indicator we store/);
    expect(() => parseStixPattern("[ipv4-addr:value = '1.2.3.4'")).toThrow();
  });

  it('MISP mozi: hashes, urls and C2 IPs with event context; the victim asset is skipped', async () => {
    const { indicators } = await collect('eset/mozi/mozi.misp-event.json');
    expect(byType(indicators)).toEqual({ md5: 21, sha1: 21, sha256: 21, url: 11, ipv4: 4 });
    const md5 = indicators.find((i) => i.v === 'b8a89ec3fffab735bb689532f1d2410f')!;
    expect(md5.fs).toBe('2023-10-10T08:09:18.000Z');
    expect(md5.conf).toBeUndefined(); // to_ids: true → feed default
    expect(md5.tags).toEqual(['eset']);
    expect(md5.ctx).toMatchObject({ event: expect.stringMatching(/Mozi/), object: 'file', comment: 'Kill switch for Mozi bot', detection: [expect.stringMatching(/Mozi/)] });
    const ip = indicators.find((i) => i.v === '157.119.75.16')!;
    expect(ip).toMatchObject({ t: 'ipv4', conf: 40, ctx: { to_ids: false, comment: 'Server hosting kill switch binaries' } });
    expect(indicators.find((i) => i.v === '188.167.251.165')).toBeUndefined();
    expect(indicators.find((i) => i.v === 'http://157.119.75.16/Mozi.6')).toMatchObject({ t: 'url', fs: '2023-09-29T11:42:22.000Z' });
  });

  it('MISP moustachedbouncer: emails, domains, filenames of file objects', async () => {
    const { indicators } = await collect('eset/moustachedbouncer/misp-moustachedbouncer.event.json');
    expect(byType(indicators)).toEqual({ md5: 29, sha1: 29, sha256: 29, url: 11, ipv4: 11, domain: 6, email: 4 });
    expect(indicators.find((i) => i.v === 'nvjfnvjfnjf@mail.ru')).toMatchObject({ t: 'email', conf: 40, ctx: { comment: 'Email address used by MoustachedBouncer operators.', misp_category: 'Network activity' } });
    expect(indicators.find((i) => i.v === '41898dae353a85c04282979c44448beb')?.ctx).toMatchObject({ filename: 'index.html', comment: 'Fake Windows update webpage.' });
  });

  it('MISP: bare {"Event"} wrapper, composite types, skipped and malformed attributes', async () => {
    const attr = (type: string, value: string, extra: Record<string, unknown> = {}) => ({ type, value, to_ids: true, category: 'Network activity', ...extra });
    const event = {
      Event: {
        info: 'hand-made', uuid: 'u-1', Tag: [{ name: 'tlp:green' }, { name: 'misp-galaxy:mitre-attack-pattern="X"' }],
        Galaxy: [{ type: 'malpedia', GalaxyCluster: [{ value: 'Mozi' }] }],
        Attribute: [
          attr('domain|ip', 'evil.example|198.51.100.7'),
          attr('ip-dst|port', '203.0.113.9|8443'),
          attr('filename|md5', 'a.exe|0889A7AD0AD0822E9BCE2CA316B57F4D'),
          attr('ip-dst|port', '203.0.113.9'), // composite without "|": malformed
          attr('ip-dst|port', '203.0.113.10|99999'), // bad port: malformed
          attr('text', 'just words'),
          attr('sha512', 'ab'.repeat(64)),
          attr('domain', 'gone.example', { deleted: true }),
          attr('hostname', 'not a host'), // normalize refuses: malformed
        ],
      },
    };
    const p = tmp('event.json', JSON.stringify(event));
    const { indicators, reports } = await collectIndicators([p], BLOCK);
    const r = reports[0];
    expect(r).toMatchObject({ format: 'misp-event', lines: 10, accepted: 4, malformed: 3, duplicates: 0, skipped: 3 });
    expect(indicators.map((i) => [i.t, i.v, i.ports, i.ctx?.filename])).toEqual([
      ['domain', 'evil.example', undefined, undefined],
      ['ipv4', '198.51.100.7', undefined, undefined],
      ['ipv4', '203.0.113.9', [8443], undefined],
      ['md5', '0889a7ad0ad0822e9bce2ca316b57f4d', undefined, 'a.exe'],
    ]);
    expect(indicators[0]).toMatchObject({ tags: ['tlp:green'], ctx: { event: 'hand-made', family: 'Mozi' } });
    expect(r.samples.map((s) => s.line)).toEqual([4, 5, 9]);
  });

  it('warninglists: hostname lists hint domain, cidr lists take any IP form, list name kept', async () => {
    const aws = await collect('known-benign/warninglists/amazon-aws.json');
    expect(byType(aws.indicators)).toEqual({ ipv4: 146, 'ipv4-cidr': 1604, ipv6: 11, 'ipv6-cidr': 2086 });
    const tr = await collect('known-benign/warninglists/tranco10k.json');
    expect(tr.indicators.every((i) => i.t === 'domain' && i.ctx?.list === 'Top 10K most-used sites from Tranco')).toBe(true);
    const p = tmp('wl.json', JSON.stringify({ name: 'subs', type: 'substring', list: ['.evil', 'x'] }));
    const r = await collectIndicators([p], { kind: 'allow' });
    expect(r.reports[0]).toMatchObject({ lines: 2, accepted: 0, skipped: 2 });
    expect(r.reports[0].notes?.[0]).toMatch(/substring/);
  });
});

describe('merging across files', () => {
  it('ipsum + levels/3: every level-3 IP is a duplicate; the higher confidence wins', async () => {
    const { indicators, reports } = await collectIndicators([path.join(DATA, 'ipsum/ipsum.txt'), path.join(DATA, 'ipsum/levels/3.txt')], BLOCK);
    expect(reports[1]).toMatchObject({ accepted: 0, duplicates: 14_217 });
    expect(indicators.length).toBe(120_430);
    // count 10 → 95 beats the feed default 80; count 3 → 70 loses to it (levels/3 lines carry no count).
    expect(indicators.find((i) => i.v === '77.90.185.20')?.conf).toBe(95);
    const three = textStats('ipsum/ipsum.txt').entries.find((l) => l.endsWith('\t3'))!.split('\t')[0];
    const merged = indicators.find((i) => i.v === three)!;
    expect(merged.conf).toBeUndefined();
    expect(merged.ctx?.blacklists).toBe(3);
  });

  it('threatfox + ipsum: overlaps counted once; sum of accepted = indicators', async () => {
    const files = ['threatfox/ips.txt', 'ipsum/ipsum.txt', 'firehol/firehol_level1.netset'].map((f) => path.join(DATA, f));
    const { indicators, reports } = await collectIndicators(files, BLOCK);
    const tf = new Set(textStats('threatfox/ips.txt').entries);
    const overlap = textStats('ipsum/ipsum.txt').entries.filter((l) => tf.has(l.split('\t')[0])).length;
    expect(reports[1].duplicates).toBe(overlap);
    expect(reports.reduce((a, r) => a + r.accepted, 0)).toBe(indicators.length);
  });

  it('ports, tags, dates and context merge; allow feeds drop source confidences', async () => {
    const a = tmp('a.txt', '# Campaign A\n198.51.100.1:80\nbad..value\n');
    const b = tmp('b.json', JSON.stringify({ type: 'bundle', objects: [
      { type: 'indicator', pattern: "[ipv4-addr:value = '198.51.100.1']", valid_from: '2020-01-02T00:00:00Z', labels: ['c2'], confidence: 90 },
      { type: 'indicator', pattern: "[ipv4-addr:value = '198.51.100.1']", valid_from: '2019-05-01T00:00:00.5Z', valid_until: '2030-01-01T00:00:00Z', indicator_types: ['malicious-activity'] },
    ] }));
    const { indicators, reports } = await collectIndicators([a, b], BLOCK);
    expect(reports.map((r) => [r.accepted, r.malformed, r.duplicates, r.skipped])).toEqual([[1, 1, 0, 1], [0, 0, 2, 0]]);
    expect(indicators).toEqual([{
      v: '198.51.100.1', t: 'ipv4', ports: [80], conf: 90, fs: '2019-05-01T00:00:00.000Z', tags: ['c2', 'malicious-activity'],
      ctx: { description: 'Campaign A', threat_types: ['c2'] }, // threat_types: sync/context.ts, from the c2 label
    }]);
    expect(indicators[0].exp).toBeUndefined(); // one occurrence never expires → the merged one does not either
    const allow = await collectIndicators([path.join(DATA, 'signature-base/c2-iocs.txt')], { kind: 'allow' });
    expect(allow.indicators.every((i) => i.conf === undefined)).toBe(true);
  });
});

describe('formats and refusals', () => {
  it('detectFormat: content first, then extension', () => {
    expect(detectFormat('x.txt', Buffer.from('{"type":"bundle","objects":[]}'))).toBe('stix');
    expect(detectFormat('x', Buffer.from('{"response":[{"Event":{"Attribute":[]}}]}'))).toBe('misp-event');
    expect(detectFormat('x', Buffer.from('{"name":"n","type":"cidr","list":["1.2.3.4"]}'))).toBe('misp-warninglist');
    expect(detectFormat('urls.csv', Buffer.from('tags,url,url_status\n'))).toBe('csv');
    expect(detectFormat('list.txt', Buffer.from('1.2.3.4\n'))).toBe('plain');
    // A truncated head is classified by its top-level markers.
    expect(detectFormat('big.json', Buffer.from('{"type": "bundle", "id": "bundle--1", "objects": [{"type":'))).toBe('stix');
    expect(() => detectFormat('g.json', Buffer.from('{"values":[]}'))).toThrow(/g\.json/);
  });

  const refused = async (p: string, code: string, re: RegExp) => {
    let err: unknown;
    try {
      await collectIndicators([p], BLOCK);
    } catch (e) {
      err = e;
    }
    expect(isOutpostError(err)).toBe(true);
    expect((err as { code: string }).code).toBe(code);
    expect(String((err as Error).message)).toMatch(re);
  };

  it('unknown JSON (MISP galaxy), invalid JSON, missing file → E_INPUT naming the file', async () => {
    await refused(path.join(DATA, 'misp-galaxy/threat-actor.json'), 'E_INPUT', /threat-actor\.json.*not a STIX bundle/);
    await refused(tmp('broken.json', '{"type":"bundle", "objects": ['), 'E_INPUT', /broken\.json: invalid JSON/);
    await refused(path.join(os.tmpdir(), 'outpost-no-such-file.txt'), 'E_INPUT', /outpost-no-such-file\.txt/);
    await refused(tmp('nocol.csv', 'a,b\n1,2\n'), 'E_INPUT', /nocol\.csv: CSV header/);
  });

  it('JSON over 256 MiB → E_TOO_LARGE before reading it', async () => {
    const p = tmp('huge.json', '{"type":"bundle","objects":[');
    fs.truncateSync(p, 256 * 1024 * 1024 + 1); // sparse: costs no disk
    await refused(p, 'E_TOO_LARGE', /huge\.json/);
  });

  it('CSV: quoted fields, escaped quotes, multi-line records, wrong field counts', async () => {
    expect(splitCsvRecord('"a,b",c,"d ""q"""')).toEqual(['a,b', 'c', 'd "q"']);
    expect(splitCsvRecord('a,,')).toEqual(['a', '', '']);
    expect(splitCsvRecord('"open')).toBeNull();
    expect(() => splitCsvRecord('"a"b,c')).toThrow();
    const p = tmp('u.csv', 'tags,url,url_status\r\n"x,\ny",hxxp://evil[.]example/a,online\r\nonly-two,fields\r\n\r\n,evil2.example/b,\r\n');
    const { indicators, reports } = await collectIndicators([p], BLOCK);
    expect(reports[0]).toMatchObject({ lines: 6, accepted: 2, malformed: 1, skipped: 3 });
    expect(reports[0].samples[0]).toMatchObject({ line: 4, error: expect.stringMatching(/2 fields, header has 3/) });
    expect(indicators).toEqual([
      { v: 'http://evil.example/a', t: 'url', tags: ['x', 'y'], ctx: { status: 'online' } },
      { v: 'http://evil2.example/b', t: 'url' },
    ]);
  });

  it('readSource streams plain files and counts lines as it goes', async () => {
    const report = newReport('x');
    const gen = readSource(path.join(DATA, 'ipsum/ipsum.txt'), report);
    const first = await gen.next();
    expect(first.value).toMatchObject({ raw: '77.90.185.20', line: 8, ctx: { blacklists: 10, confidence: 95 } });
    expect(report.lines).toBe(8); // only what was read so far
    await gen.return(undefined);
  });
});
