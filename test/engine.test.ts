// Lookup engine on a real SQLite store filled with rows from the real lists: each match kind, expiry,
// filter false positives never reaching the caller, allowlist conflicts, invalid input, reload.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb, type DB } from '../appliance/db.ts';
import type { IndicatorType, LookupResult } from '../appliance/types.ts';
import { LookupEngine, urlKeyEnds, urlKeyEndsInto } from '../lookup/engine.ts';
import { Metrics } from '../lookup/metrics.ts';
import { metricOf } from './helpers.ts';
import { normalize, urlHost, urlMatchKeys } from '../lookup/normalize.ts';
import { cidrIsCapped, decide } from '../lookup/verdict.ts';

const DATA = path.resolve(__dirname, '../../shared/data');
const NOW = Date.parse('2026-09-01T00:00:00Z') / 1000;
const CREATED = '2026-08-31T23:00:00Z';

function lines(file: string): string[] {
  return fs.readFileSync(path.join(DATA, file), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

function norm(raw: string): { type: IndicatorType; value: string } | null {
  const n = normalize(raw);
  return n.ok ? { type: n.type, value: n.value } : null;
}

interface Feed {
  name: string;
  kind: 'block' | 'allow';
  category: string | null;
  confidence: number | null;
  values: { type: IndicatorType; value: string }[];
}

function feed(name: string, kind: 'block' | 'allow', category: string | null, confidence: number | null, raws: string[]): Feed {
  const values = raws.map(norm).filter((x): x is { type: IndicatorType; value: string } => x !== null);
  return { name, kind, category, confidence, values };
}

let dir: string;
let db: DB;
let engine: LookupEngine;
let feeds: Record<string, Feed>;

function insertFeed(f: Feed, generation: number): void {
  db.prepare(
    `INSERT INTO feeds(name, kind, version, state, package_sha256, key_id, created, expires, applied_at, generation, count, category, confidence)
     VALUES (?, ?, 1, 'x', 'x', 'k', ?, '2027-01-01T00:00:00Z', ?, ?, ?, ?, ?)`,
  ).run(f.name, f.kind, CREATED, CREATED, generation, f.values.length, f.category, f.confidence);
  const ins = db.prepare(
    `INSERT OR IGNORE INTO indicators(type, value, feed, kind, category, confidence, first_seen, last_seen, expires_at, extra)
     VALUES (?, ?, ?, ?, NULL, NULL, ?, ?, ?, ?)`,
  );
  for (const v of f.values) ins.run(v.type, v.value, f.name, f.kind, NOW - 86400 * 20, NOW - 86400, NOW + 86400 * 30, JSON.stringify({ tags: [f.name] }));
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'outpost-engine-'));
  db = openDb(dir);
  feeds = {
    ipsum: feed('ipsum', 'block', 'scanner', 80, lines('ipsum/ipsum.txt').slice(0, 30_000).map((l) => l.split('\t')[0])),
    firehol: feed('firehol', 'block', 'attacks', 85, lines('firehol/firehol_level1.netset')),
    lummac2: feed('lummac2', 'block', 'malware', 90, lines('maltrail/malware/lummac2.txt')),
    emotet: feed('emotet', 'block', 'malware', 90, lines('maltrail/malware/emotet.txt')),
    lazarus: feed('lazarus', 'block', 'apt', 90, lines('maltrail/malware/apt_lazarus.txt')),
    c2: feed('c2', 'block', 'c2', null, lines('signature-base/c2-iocs.txt').map((l) => l.split(';')[0])),
    hashes: feed('hashes', 'block', 'malware', 75, lines('signature-base/hash-iocs.txt').map((l) => l.split(';')[0])),
    urlhaus: feed('urlhaus', 'block', 'malware', 85, lines('urlhaus/urls.csv').map((l) => /^(?:"[^"]*"|[^,]*),([^,]+),/.exec(l)?.[1] ?? '')),
    aws: feed('aws', 'allow', 'cloud', 90, (JSON.parse(fs.readFileSync(path.join(DATA, 'known-benign/warninglists/amazon-aws.json'), 'utf8')) as { list: string[] }).list),
    tranco: feed('tranco', 'allow', 'top-site', 95, (JSON.parse(fs.readFileSync(path.join(DATA, 'known-benign/warninglists/tranco10k.json'), 'utf8')) as { list: string[] }).list),
  };
  db.transaction(() => {
    for (const f of Object.values(feeds)) insertFeed(f, 1);
    db.prepare("UPDATE meta SET value = '1' WHERE key = 'generation'").run();
  })();
  engine = new LookupEngine(db, { fpRate: 0.001, now: () => NOW });
});

afterAll(() => {
  db.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const CONTRACT_KEYS = ['confidence', 'data_age_s', 'generation', 'matches', 'normalized', 'reasons', 'rule', 'type', 'value', 'verdict'];

function expectShape(r: LookupResult): void {
  expect(Object.keys(r).sort()).toEqual(r.type === 'invalid'
    ? ['confidence', 'data_age_s', 'error', 'generation', 'matches', 'type', 'value', 'verdict']
    : CONTRACT_KEYS);
  for (const m of r.matches) {
    for (const k of ['feed', 'indicator', 'kind', 'category', 'confidence', 'first_seen', 'last_seen', 'expires_at']) expect(m).toHaveProperty(k);
    expect(['exact', 'cidr', 'subdomain', 'url']).toContain(m.kind);
    expect(m.first_seen).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  }
}

describe('matching on real data', () => {
  it('loaded rows of every kind', () => {
    expect(feeds.ipsum.values.length).toBeGreaterThan(29_000);
    expect(feeds.firehol.values.filter((v) => v.type === 'ipv4-cidr').length).toBeGreaterThan(2000);
    expect(feeds.urlhaus.values.length).toBeGreaterThan(15_000);
    expect(engine.generation).toBe(1);
  });

  it('exact IP', () => {
    const ip = feeds.ipsum.values[123].value;
    const r = engine.lookup(ip);
    expectShape(r);
    expect(r.type).toBe('ipv4');
    const m = r.matches.find((x) => x.feed === 'ipsum')!;
    expect(m).toMatchObject({ indicator: ip, kind: 'exact', category: 'scanner', confidence: 80, feed_kind: 'block', tags: ['ipsum'] });
    expect(r.verdict).toBe('malicious');
    expect(r.generation).toBe(1);
    expect(r.data_age_s).toBe(3600);
  });

  it('an IP inside a listed public FireHOL network matches as cidr', () => {
    const net = feeds.firehol.values.find((v) => v.type === 'ipv4-cidr' && /\/(2[0-4])$/.test(v.value) && !cidrIsCapped(v.value))!;
    const [base] = net.value.split('/');
    const o = base.split('.').map(Number);
    const inside = `${o[0]}.${o[1]}.${o[2]}.${o[3] + 77}`;
    const r = engine.lookup(inside);
    expectShape(r);
    expect(r.matches.some((m) => m.kind === 'cidr' && m.indicator === net.value && m.feed === 'firehol')).toBe(true);
    expect(r.verdict).toBe('malicious');
  });

  it('/24 block index: every listed /16../32 network still matches at its first and last address; an address of the same /16 outside every listed block costs no network probe', () => {
    const v4 = (t: string) => t.split('.').reduce((a, o) => a * 256 + Number(o), 0);
    const text = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
    const nets = [...feeds.firehol.values, ...feeds.aws.values]
      .filter((v) => v.type === 'ipv4-cidr')
      .map((v) => ({ value: v.value, base: v4(v.value.split('/')[0]), prefix: Number(v.value.split('/')[1]) }));
    const size = (p: number) => 2 ** (32 - p);
    const contains = (n: { base: number; prefix: number }, ip: number) => ip >= n.base && ip < n.base + size(n.prefix);
    const mid = nets.filter((n) => n.prefix >= 16 && !cidrIsCapped(n.value));
    expect(mid.length).toBeGreaterThan(1000);
    for (const n of mid) {
      for (const ip of [n.base, n.base + size(n.prefix) - 1]) {
        const r = engine.lookup(text(ip));
        expect(r.matches.some((m) => m.kind === 'cidr' && m.indicator === n.value), `${text(ip)} in ${n.value}`).toBe(true);
      }
    }
    // A /16 holding a listed /24-or-longer network but no network shorter than /16, and an address in it
    // outside every listed network; and a /16 with no listed network at all.
    const probes = (ip: string) => {
      const before = engine.stats().filterProbes;
      engine.lookup(ip);
      return engine.stats().filterProbes - before;
    };
    const wide = nets.filter((n) => n.prefix < 16);
    const empty16 = [...Array(200).keys()].map((i) => (i + 11) * 2 ** 24 + 77 * 65536).find((b) => !nets.some((n) => contains(n, b) || (n.base >= b && n.base < b + 65536)))!;
    expect(empty16).toBeDefined();
    let outside: number | undefined;
    for (const n of mid.filter((m) => m.prefix >= 24)) {
      const b16 = n.base - (n.base % 65536);
      if (wide.some((w) => contains(w, b16))) continue;
      for (let c = 0; c < 256 && outside === undefined; c++) {
        const ip = b16 + c * 256 + 9;
        if (!nets.some((m) => m.prefix >= 16 && (m.base >>> 8 === ip >>> 8 || contains(m, ip)))) outside = ip;
      }
      if (outside !== undefined) break;
    }
    expect(outside).toBeDefined();
    expect(probes(text(outside!))).toBe(probes(text(empty16 + 9)));
  });

  it('/24 block index holds listed addresses too: every listed address matches; an unlisted address is probed only when its /24 holds a listed one', () => {
    const v4 = (t: string) => t.split('.').reduce((a, o) => a * 256 + Number(o), 0) >>> 0;
    const probes = (ip: string) => {
      const before = engine.stats().filterProbes;
      engine.lookup(ip);
      return engine.stats().filterProbes - before;
    };
    const exact = Object.values(feeds).flatMap((f) => f.values).filter((v) => v.type === 'ipv4').map((v) => v.value);
    expect(exact.length).toBeGreaterThan(29_000);
    for (const ip of exact) expect(engine.lookup(ip).matches.some((m) => m.kind === 'exact' && m.indicator === ip), ip).toBe(true);
    const listed = new Set(exact);
    const nets = Object.values(feeds).flatMap((f) => f.values).filter((v) => v.type === 'ipv4-cidr').map((v) => ({ base: v4(v.value.split('/')[0]), prefix: Number(v.value.split('/')[1]) }));
    const covered = (ip: number) => nets.some((n) => ip >= n.base && ip < n.base + 2 ** (32 - n.prefix));
    const blocks = new Set(exact.map((ip) => v4(ip) >>> 8));
    // An unlisted address beside a listed one in the same /24, outside every network: the exact filter is probed.
    const beside = exact.map((ip) => ((v4(ip) & ~255) | ((v4(ip) + 1) & 255)) >>> 0).find((n) => !listed.has([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')) && !covered(n) && !nets.some((m) => m.base >>> 16 === n >>> 16))!;
    expect(beside).toBeDefined();
    const besideText = [beside >>> 24, (beside >>> 16) & 255, (beside >>> 8) & 255, beside & 255].join('.');
    expect(probes(besideText)).toBeGreaterThanOrEqual(1);
    expect(engine.lookup(besideText).verdict).toBe('unknown');
    // An address whose /24 holds no listed address and whose /16 no listed network: no probe at all.
    let quiet: string | undefined;
    for (let a = 11; a < 200 && quiet === undefined; a++) {
      const n = (a * 2 ** 24 + 77 * 65536 + 9) >>> 0;
      if (!blocks.has(n >>> 8) && !nets.some((m) => m.base >>> 16 === n >>> 16 || (n >= m.base && n < m.base + 2 ** (32 - m.prefix)))) quiet = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
    }
    expect(quiet).toBeDefined();
    expect(probes(quiet!)).toBe(0);
    expect(engine.mayMatch('ipv4', quiet!)).toBe(false);
  });

  it('URL authority index: a URL on an authority no listed URL has probes no URL key; on a listed authority it does', () => {
    const probes = (v: string) => {
      const before = engine.stats().filterProbes;
      engine.lookup(v);
      return engine.stats().filterProbes - before;
    };
    const urls = feeds.urlhaus.values.filter((v) => v.type === 'url').map((v) => v.value);
    const authority = (u: string) => u.slice(u.indexOf('://') + 3).split(/[/?#]/)[0];
    const listedAuthorities = new Set(urls.map(authority));
    const host = (u: string) => authority(u).replace(/:\d+$/, '');
    // A listed URL's authority with another path: the authority index passes, the URL keys are probed.
    const listed = urls.find((u) => /^https?:\/\/[a-z][a-z0-9.-]*\.[a-z]{2,}\/[^?]*$/.test(u))!;
    const sibling = `${listed.slice(0, listed.indexOf('://') + 3)}${authority(listed)}/outpost-${'q'.repeat(5)}/x/y`;
    expect(probes(sibling) - probes(host(sibling))).toBeGreaterThanOrEqual(3); // index + URL keys
    // An authority no listed URL has: one probe of the index, then only the host's domain probes.
    let n = 0;
    let other = '';
    do other = `http://outpost-unlisted-${n++}.example.org/a/b/c/d?q=1`;
    while ((listedAuthorities.has(authority(other)) || engine.filters.urlHosts.filter.has(authority(other))) && n < 1000);
    expect(listedAuthorities.has(authority(other))).toBe(false);
    expect(probes(other) - probes(host(other))).toBe(1);
  });

  it('mayMatch() probes every key lookup() matches under: a value with a confirmed match always passes it', () => {
    const net6 = feeds.aws.values.find((v) => v.type === 'ipv6-cidr' && /\/(4[0-9]|5[0-6])$/.test(v.value))!;
    const domain = Object.values(feeds).flatMap((f) => f.values).find((v) => v.type === 'domain' && v.value.split('.').length === 2)!;
    const url = feeds.urlhaus.values.find((v) => v.type === 'url')!.value;
    const cases: [IndicatorType, string][] = [
      ['ipv4', '10.20.30.40'], // inside a listed network only
      ['ipv6', net6.value.split('/')[0].replace(/::$/, '::abcd:1')],
      ['domain', `deep.sub.${domain.value}`], // a parent is listed
      ['url', `http://${domain.value}/outpost-unlisted/path?x=1`], // only the host is listed
      ['url', `http://10.20.30.40/outpost-unlisted`], // only the host's network is listed
      ['url', url], // the URL itself
    ];
    for (const [type, value] of cases) {
      expect(engine.lookup(value).matches.length, value).toBeGreaterThan(0);
      expect(engine.mayMatch(type, value), value).toBe(true);
    }
    // And a value nothing covers passes no filter (a false positive here is possible but not for these).
    expect(engine.mayMatch('url', 'http://outpost-unlisted-zz-q9.net/a')).toBe(false);
    expect(engine.lookup('http://outpost-unlisted-zz-q9.net/a').matches).toEqual([]);
  });

  it('an IPv6 address inside a listed IPv6 network (AWS allowlist) matches as cidr and is benign', () => {
    const net = feeds.aws.values.find((v) => v.type === 'ipv6-cidr' && /\/(4[0-9]|5[0-6])$/.test(v.value))!;
    expect(net).toBeDefined();
    const inside = net.value.split('/')[0].replace(/::$/, '::abcd:1');
    const r = engine.lookup(inside.toUpperCase());
    expectShape(r);
    expect(r.type).toBe('ipv6');
    expect(r.matches).toContainEqual(expect.objectContaining({ feed: 'aws', feed_kind: 'allow', indicator: net.value, kind: 'cidr' }));
    expect(r.verdict).toBe('benign');
  });

  it('an internal address inside FireHOL 10.0.0.0/8 is only suspicious', () => {
    const r = engine.lookup('10.20.30.40');
    expect(r.matches.map((m) => [m.indicator, m.kind])).toContainEqual(['10.0.0.0/8', 'cidr']);
    expect(r.verdict).toBe('suspicious');
    expect(r.rule).toBe('cidr:broad-or-reserved');
    expect(r.confidence).toBeLessThan(70);
  });

  it('a subdomain of a listed domain matches as subdomain; the domain itself as exact', () => {
    const d = feeds.lummac2.values.find((v) => v.type === 'domain' && v.value.split('.').length === 2)!.value;
    const sub = engine.lookup(`Deep.Sub.${d}.`);
    expectShape(sub);
    expect(sub.type).toBe('domain');
    expect(sub.normalized).toBe(`deep.sub.${d}`);
    expect(sub.matches).toEqual([expect.objectContaining({ feed: 'lummac2', indicator: d, kind: 'subdomain' })]);
    expect(engine.lookup(d).matches[0]).toMatchObject({ indicator: d, kind: 'exact' });
    // A name of many labels (the engine keeps the first 31 keys' answers in a bit mask, the rest in a list):
    // the listed parent is found whatever the depth, as a domain and as a URL's host.
    for (const depth of [29, 30, 31, 32, 40, 100]) {
      const deep = `${'x.'.repeat(depth)}${d}`; // ≤ 253 characters, a valid name
      for (const r of [engine.lookup(deep), engine.lookup(`http://${deep}/x`)]) {
        expect(r.matches.map((m) => [m.indicator, m.kind]), `${depth} labels`).toEqual([[d, 'subdomain']]);
      }
    }
  });

  it('a URL matches exactly, and under a listed path prefix as url', () => {
    const listed = feeds.urlhaus.values.find((v) => v.type === 'url' && /^http:\/\/[a-z]/.test(v.value) && v.value.split('/').length > 4)!.value;
    const exact = engine.lookup(listed);
    expectShape(exact);
    expect(exact.matches.find((m) => m.feed === 'urlhaus')).toMatchObject({ indicator: listed, kind: 'exact' });

    // Maltrail's Lazarus trail lists `jkmusic.co.kr/shop/data/theme/` — a prefix: anything under it matches as `url`.
    const prefix = normalize('jkmusic.co.kr/shop/data/theme/');
    expect(prefix.ok && feeds.lazarus.values.some((v) => v.value === prefix.value)).toBe(true);
    const under = engine.lookup('hxxp://JKMUSIC.co[.]kr/shop/data/theme/x.php?id=1#frag');
    expectShape(under);
    expect(under.matches).toContainEqual(expect.objectContaining({ feed: 'lazarus', indicator: 'http://jkmusic.co.kr/shop/data/theme/', kind: 'url' }));
    expect(under.verdict).toBe('malicious');
  });

  it("a URL on a listed domain matches that domain as subdomain (the contract's example)", () => {
    const d = feeds.lummac2.values.find((v) => v.type === 'domain')!.value;
    const r = engine.lookup(`hxxps://${d.replace(/\./g, '[.]')}/some/path`);
    expect(r.type).toBe('url');
    expect(r.matches).toContainEqual(expect.objectContaining({ indicator: d, kind: 'subdomain', feed: 'lummac2' }));
  });

  it('a hash matches exactly; feed defaults fill a null category/confidence', () => {
    const h = feeds.hashes.values.find((v) => v.type === 'sha256')!.value;
    const r = engine.lookup(h.toUpperCase());
    expect(r.type).toBe('sha256');
    expect(r.matches).toEqual([expect.objectContaining({ indicator: h, kind: 'exact', confidence: 75, category: 'malware' })]);
    const c2 = feeds.c2.values.find((v) => v.type === 'domain')!.value;
    const rc = engine.lookup(c2);
    expect(rc.matches.find((m) => m.feed === 'c2')).toMatchObject({ category: 'c2', confidence: 50 });
    expect(rc.verdict).toBe('suspicious'); // default confidence 50 < 70
  });

  it('an allow-kind match turns the verdict benign and both matches are shown', () => {
    // repocket.com is on signature-base's C2 list and on Tranco's top 10k.
    const r = engine.lookup('repocket.com');
    expectShape(r);
    expect(r.matches.map((m) => [m.feed, m.feed_kind]).sort()).toEqual([['c2', 'block'], ['tranco', 'allow']]);
    expect(r.verdict).toBe('benign');
    expect(r.rule).toBe('allowlist');
  });

  it('a value that is not listed is unknown', () => {
    expect(engine.lookup('8.8.4.4')).toMatchObject({ type: 'ipv4', verdict: 'unknown', confidence: 0, matches: [], rule: 'none' });
    expect(engine.lookup('never-listed.example')).toMatchObject({ type: 'domain', verdict: 'unknown', matches: [] });
    // FireHOL level1 lists TEST-NET-2 as a bogon: an address there matches, capped at suspicious.
    expect(engine.lookup('198.51.100.7')).toMatchObject({ verdict: 'suspicious', rule: 'cidr:broad-or-reserved' });
  });

  it('invalid input gets type invalid and a reason', () => {
    for (const raw of ['1.2.3', 'not a value', '', '/izuku.sh', '10.0.0.0/8', 'x'.repeat(70_000)]) {
      const r = engine.lookup(raw);
      expectShape(r);
      expect(r.type).toBe('invalid');
      expect(r.verdict).toBe('unknown');
      expect(typeof r.error).toBe('string');
      expect(r.error!.length).toBeGreaterThan(3);
    }
    expect(engine.lookup('10.0.0.0/8').error).toMatch(/network/);
  });

  it('lookupMany keeps the order', () => {
    const vals = [feeds.ipsum.values[5].value, 'bad value', 'repocket.com'];
    expect(engine.lookupMany(vals).map((r) => [r.value, r.verdict])).toEqual([[vals[0], 'malicious'], ['bad value', 'unknown'], ['repocket.com', 'benign']]);
  });
});

describe('key derivation agrees with normalize.ts', () => {
  it('URL keys probed as ranges are exactly urlMatchKeys() on every real URL', () => {
    const urls = [...feeds.urlhaus.values, ...feeds.emotet.values, ...feeds.lazarus.values].filter((v) => v.type === 'url').map((v) => v.value);
    urls.push('http://a.example/x/y/z/w/v/u?q=1/2', 'http://a.example/', 'http://a.example/?q', 'http://a.example/x/?q', 'http://a.example//x');
    expect(urls.length).toBeGreaterThan(15_000);
    const scratch = [7, 7, 7, 7, 7, 7, 7]; // the engine's reused array
    for (const u of urls) {
      expect(urlKeyEnds(u).map((e) => u.slice(0, e))).toEqual(urlMatchKeys(u));
      expect(scratch.slice(0, urlKeyEndsInto(u, scratch))).toEqual(urlKeyEnds(u));
    }
  });

  it("a URL's host matches (probed inside the URL) are exactly the host's own matches, on every real URL", () => {
    const urls = [...feeds.urlhaus.values, ...feeds.emotet.values, ...feeds.lazarus.values].filter((v) => v.type === 'url').map((v) => v.value);
    // URLs on listed domains, their subdomains and listed IPs, with ports, queries and an IPv6 host.
    const domains = [...feeds.lummac2.values, ...feeds.emotet.values, ...feeds.tranco.values].filter((v) => v.type === 'domain').slice(0, 3000).map((v) => v.value);
    for (const d of domains) urls.push(`http://${d}/x`, `https://www.${d}:8443/a/b?c=d`);
    for (const ip of feeds.ipsum.values.slice(0, 2000)) urls.push(`http://${ip.value}:8080/bins/x.sh`);
    const v6 = feeds.aws.values.find((v) => v.type === 'ipv6-cidr')!.value.split('/')[0].replace(/::$/, '::abcd:1');
    urls.push(`http://[${v6}]/x`, `http://[${v6}]:8080/y?z`);
    let hostMatches = 0;
    for (const u of urls) {
      const host = urlHost(u);
      const r = engine.lookup(u);
      expect(r.type).toBe('url');
      const fromUrl = r.matches.filter((m) => !m.indicator.includes('://')).map((m) => `${m.feed} ${m.indicator}`);
      const own = engine.lookup(host).matches.map((m) => `${m.feed} ${m.indicator}`);
      expect(fromUrl, u).toEqual(own);
      hostMatches += own.length;
    }
    expect(hostMatches).toBeGreaterThan(5000);
  });
});

describe('batches', () => {
  it('lookupMany answers a real mixed set exactly as lookup() does value by value', () => {
    const raws: string[] = [];
    for (const f of Object.values(feeds)) {
      for (const [i, v] of f.values.entries()) {
        if (i % 7 !== 0) continue;
        raws.push(v.value);
        // Raw forms that take the general normalize path, and values that are not listed.
        if (i % 5 === 0) raws.push(v.value.toUpperCase(), ` ${v.value.replace(/\./g, '[.]')} `, `"${v.value}"`);
        if (v.type === 'domain' && i % 3 === 0) raws.push(`sub.${v.value}`, `http://${v.value}/p?q=1`, `not-listed-${i}.${v.value.split('.').pop()}`);
        if (v.type === 'ipv4' && i % 3 === 0) raws.push(`${v.value.split('.').slice(0, 3).join('.')}.${(Number(v.value.split('.')[3]) + 1) % 256}`);
      }
    }
    raws.push('', 'not a value', '10.0.0.0/8', '1.2.3', 'repocket.com', 'repocket.com', '8.8.4.4', 'x'.repeat(70_000), '2001:db8::1', '198.51.100.7');
    expect(raws.length).toBeGreaterThan(10_000);
    const many = engine.lookupMany(raws);
    expect(many).toHaveLength(raws.length);
    const single = raws.map((r) => engine.lookup(r));
    expect(many).toEqual(single);
    // Same bytes too (key order included), and a real share of hits and of every verdict.
    expect(many.map((r) => JSON.stringify(r))).toEqual(single.map((r) => JSON.stringify(r)));
    const verdicts = new Set(many.map((r) => r.verdict));
    expect([...verdicts].sort()).toEqual(['benign', 'malicious', 'suspicious', 'unknown']);
    expect(many.filter((r) => r.matches.length > 0).length).toBeGreaterThan(3000);
    expect(many.filter((r) => r.type === 'invalid').length).toBeGreaterThan(3);
    // Misses never share arrays with each other.
    const misses = many.filter((r) => r.matches.length === 0 && r.type !== 'invalid');
    expect(misses[0].reasons).not.toBe(misses[1].reasons);
    expect(misses[0].matches).not.toBe(misses[1].matches);
    expect(engine.lookupMany([])).toEqual([]);
  });
});

describe('confirmation', () => {
  it('an expired row never matches', () => {
    db.prepare("INSERT INTO indicators(type, value, feed, kind, confidence, expires_at) VALUES ('domain', 'expired-c2.example', 'lummac2', 'block', 90, ?)").run(NOW - 10);
    db.prepare("INSERT INTO indicators(type, value, feed, kind, confidence, expires_at) VALUES ('domain', 'expired-c2.example', 'c2', 'block', 90, ?)").run(NOW + 10);
    const e = new LookupEngine(db, { fpRate: 0.001, now: () => NOW, filterDir: null });
    const r = e.lookup('expired-c2.example');
    expect(r.matches.map((m) => m.feed)).toEqual(['c2']); // the live row only
    const later = new LookupEngine(db, { fpRate: 0.001, now: () => NOW + 3600, filterDir: null });
    const before = later.stats();
    expect(later.lookup('expired-c2.example')).toMatchObject({ verdict: 'unknown', matches: [] });
    expect(later.stats().expiredSkipped - before.expiredSkipped).toBe(2);
    db.prepare("DELETE FROM indicators WHERE value = 'expired-c2.example'").run();
  });

  it('a filter collision for an absent value never reaches the caller, and is counted', () => {
    // A deliberately terrible filter (p = 0.5) collides often; every hit must be confirmed in SQLite.
    const loose = new LookupEngine(db, { fpRate: 0.5, now: () => NOW, filterDir: null });
    const listed = new Set(feeds.hashes.values.map((v) => v.value));
    let collided = 0;
    for (let i = 0; i < 2000 && collided < 20; i++) {
      const h = (i.toString(16) + 'f'.repeat(64)).slice(0, 64);
      if (listed.has(h) || !loose.mayMatch('sha256', h)) continue;
      collided++;
      const before = loose.stats().filterFalsePositives;
      const r = loose.lookup(h);
      expect(r).toMatchObject({ type: 'sha256', verdict: 'unknown', matches: [] });
      expect(loose.stats().filterFalsePositives).toBe(before + 1);
    }
    expect(collided).toBe(20);
  });

  it('/metrics reports the false-positive rate the filters make at confirm time, near the rate they were sized for', () => {
    const loose = new LookupEngine(db, { fpRate: 0.2, now: () => NOW, filterDir: null });
    const listed = new Set(feeds.hashes.values.map((v) => v.value));
    let absent = 0;
    for (let i = 0; absent < 5000; i++) {
      const h = createHash('sha256').update(`absent ${i}`).digest('hex');
      if (listed.has(h)) continue;
      absent++;
      expect(loose.lookup(h).matches).toEqual([]);
    }
    const text = new Metrics().render(loose, db);
    expect(metricOf(text, 'outpost_engine_filter_fp_rate_target')).toBe(0.2);
    // 5000 reads of absent values at p = 0.2: about 1000 false positives (σ ≈ 28), each confirmed absent.
    expect(metricOf(text, 'outpost_engine_filter_false_positives')).toBeGreaterThan(700);
    expect(metricOf(text, 'outpost_engine_filter_fp_rate_observed')).toBeGreaterThan(0.14);
    expect(metricOf(text, 'outpost_engine_filter_fp_rate_observed')).toBeLessThan(0.26);
  });
});

describe('verdict rule', () => {
  const base = { feed: 'f', category: null, first_seen: null, last_seen: null, expires_at: null };
  it('caps broad or reserved networks at suspicious, lets narrow public ones be malicious', () => {
    expect(cidrIsCapped('10.0.0.0/8')).toBe(true);
    expect(cidrIsCapped('1.19.0.0/16')).toBe(false);
    expect(cidrIsCapped('1.10.16.0/20')).toBe(false);
    expect(cidrIsCapped('1.0.0.0/15')).toBe(true);
    expect(cidrIsCapped('192.168.1.0/24')).toBe(true);
    expect(cidrIsCapped('2001:db8::/48')).toBe(true);
    expect(cidrIsCapped('2a00:1450::/32')).toBe(false);
    expect(cidrIsCapped('2a00::/16')).toBe(true);
    expect(decide([{ ...base, indicator: '1.10.16.0/20', kind: 'cidr', confidence: 90 }]).verdict).toBe('malicious');
    // Rules and weights: lookup/verdict.ts, docs/verdicts.md (test/verdicts.test.ts covers them in depth).
    expect(decide([{ ...base, indicator: '1.0.0.0/8', kind: 'cidr', confidence: 90 }])).toMatchObject({ verdict: 'suspicious', rule: 'cidr:broad-or-reserved' });
    expect(decide([{ ...base, indicator: 'x.example', kind: 'exact', confidence: 40 }])).toMatchObject({ verdict: 'suspicious', confidence: 40, rule: 'block:low-confidence' });
    expect(decide([])).toMatchObject({ verdict: 'unknown', confidence: 0, rule: 'none' });
  });
});

describe('reload', () => {
  it('swaps to a new generation after rows change, built in a worker and persisted', async () => {
    const fresh = 'brand-new-c2.example';
    expect(engine.lookup(fresh).verdict).toBe('unknown');
    db.transaction(() => {
      db.prepare("INSERT INTO indicators(type, value, feed, kind, confidence) VALUES ('domain', ?, 'lummac2', 'block', 95)").run(fresh);
      db.prepare("UPDATE meta SET value = '2' WHERE key = 'generation'").run();
    })();
    expect(engine.generation).toBe(1); // still serving the old filters until reload
    await engine.reload();
    expect(engine.generation).toBe(2);
    const r = engine.lookup(fresh);
    expect(r).toMatchObject({ verdict: 'malicious', generation: 2 });
    expect(r.matches[0]).toMatchObject({ indicator: fresh, kind: 'exact', confidence: 95 });
    expect(engine.stats().reloads).toBe(1);
    expect(fs.readdirSync(path.join(dir, 'filters'))).toEqual(['filters-2.bin']);

    // Same generation again: nothing to do.
    await engine.reload();
    expect(engine.stats().reloads).toBe(1);

    // A second engine on the same store starts from the persisted file and answers the same.
    const again = new LookupEngine(db, { fpRate: 0.001, now: () => NOW });
    expect(again.generation).toBe(2);
    expect(again.filters.builtAt).toBe(engine.filters.builtAt);
    expect(again.lookup(fresh).verdict).toBe('malicious');
  });

  it('a file of an older filter format (left by the build before an upgrade) is rebuilt and replaced', () => {
    const file = path.join(dir, 'filters', `filters-${engine.generation}.bin`);
    const before = fs.readFileSync(file);
    const at = before.indexOf('"outpost-filters/4"');
    expect(at).toBeGreaterThan(0);
    const old = Buffer.from(before);
    old.write('"outpost-filters/3"', at, 'latin1'); // same length: only the format differs
    fs.writeFileSync(file, old);
    const e = new LookupEngine(db, { fpRate: 0.001, now: () => NOW });
    expect(e.filters.builtAt).not.toBe(engine.filters.builtAt); // built from the store, not loaded
    expect(e.lookup('brand-new-c2.example').verdict).toBe('malicious');
    const after = fs.readFileSync(file);
    expect(after.includes('"outpost-filters/4"')).toBe(true);
    expect(after.includes('"outpost-filters/3"')).toBe(false);
  });

  it('does not reuse a persisted file whose content no longer matches the store', () => {
    db.prepare("INSERT INTO indicators(type, value, feed, kind, confidence) VALUES ('domain', 'sneaky.example', 'lummac2', 'block', 95)").run();
    const e = new LookupEngine(db, { fpRate: 0.001, now: () => NOW }); // generation unchanged, row count differs
    expect(e.filters.builtAt).not.toBe(engine.filters.builtAt);
    expect(e.lookup('sneaky.example').verdict).toBe('malicious');
  });
});
