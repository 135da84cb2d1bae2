// Verdict rules (docs/verdicts.md) on real packages built from ../shared/data: zero malicious verdicts
// for warninglist values, every value on both an allow and a block feed benign with both matches shown,
// cloud-range conflicts contested, URL-level evidence surviving a host-level allowlist, variants of
// sampled listed values found, broad/reserved networks capped, decay turning stale IPs suspicious.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb, type DB } from '../appliance/db.ts';
import type { Match } from '../appliance/types.ts';
import { LookupEngine } from '../lookup/engine.ts';
import { normalize } from '../lookup/normalize.ts';
import { networkEnds, variantsOf } from '../lookup/selftest.ts';
import { cidrIsCapped, decayFactor, decide, DEFAULT_POLICY, kindWeight, policyFrom } from '../lookup/verdict.ts';
import { every } from './helpers.ts';
import { prepare, realFeeds, WARNINGLISTS, warninglistValues, type Prepared } from './verdicts-fixture.ts';

const DAY = 86_400;
const NOW = Date.parse('2026-09-01T00:00:00Z') / 1000;
const at = (daysAgo: number) => new Date((NOW - daysAgo * DAY) * 1000).toISOString().replace('.000Z', 'Z');
const m = (over: Partial<Match>): Match => ({
  feed: 'f', feed_kind: 'block', indicator: 'x.example', kind: 'exact', category: null, confidence: 80,
  first_seen: null, last_seen: null, expires_at: null, ...over,
});

describe('decide(): rules on constructed matches', () => {
  it('no match → unknown "none"', () => {
    expect(decide([])).toMatchObject({ verdict: 'unknown', confidence: 0, rule: 'none' });
  });

  it('match kind weighs: exact > url prefix > subdomain > cidr, and a /8 weighs little', () => {
    const w = (x: Partial<Match>) => kindWeight(m(x));
    expect(w({ kind: 'exact' })).toBeGreaterThan(w({ kind: 'url', indicator: 'http://x.example/a/' }));
    expect(w({ kind: 'url', indicator: 'http://x.example/a/' })).toBeGreaterThan(w({ kind: 'subdomain' }));
    expect(w({ kind: 'subdomain' })).toBeGreaterThan(w({ kind: 'cidr', indicator: '1.2.3.0/24' }));
    expect(w({ kind: 'cidr', indicator: '1.2.3.0/24' })).toBeGreaterThan(w({ kind: 'cidr', indicator: '1.2.0.0/16' }));
    expect(w({ kind: 'cidr', indicator: '1.0.0.0/8' })).toBeLessThan(0.1);
    expect(decide([m({ confidence: 80 })])).toMatchObject({ verdict: 'malicious', confidence: 80, rule: 'block:exact' });
    expect(decide([m({ kind: 'subdomain', confidence: 80 })])).toMatchObject({ verdict: 'malicious', confidence: 74, rule: 'block:subdomain' });
    expect(decide([m({ kind: 'cidr', indicator: '1.10.16.0/20', confidence: 80 })])).toMatchObject({ verdict: 'suspicious', rule: 'block:low-confidence' });
    expect(decide([m({ kind: 'cidr', indicator: '1.10.16.0/20', confidence: 90 })])).toMatchObject({ verdict: 'malicious', rule: 'block:cidr' });
  });

  it('networks wider than the configured prefix or overlapping reserved space never decide alone', () => {
    expect(cidrIsCapped('1.0.0.0/15')).toBe(true);
    expect(cidrIsCapped('1.19.0.0/16')).toBe(false);
    expect(cidrIsCapped('192.168.1.0/24')).toBe(true);
    expect(cidrIsCapped('2a00::/16')).toBe(true);
    expect(cidrIsCapped('2a00:1450::/32')).toBe(false);
    const d = decide([m({ kind: 'cidr', indicator: '1.0.0.0/8', confidence: 100 })]);
    expect(d).toMatchObject({ verdict: 'suspicious', rule: 'cidr:broad-or-reserved' });
    expect(d.confidence).toBeLessThan(10);
    expect(d.reasons.join(' ')).toMatch(/wider than \/16/);
    expect(decide([m({ kind: 'cidr', indicator: '192.168.1.0/24', confidence: 100 })])).toMatchObject({ verdict: 'suspicious', rule: 'cidr:broad-or-reserved' });
    // Configurable: with OUTPOST_MAX_BLOCK_PREFIX_V4=12 a public /14 may decide.
    const wide = m({ kind: 'cidr', indicator: '1.0.0.0/14', confidence: 100 });
    expect(decide([wide]).verdict).toBe('suspicious');
    expect(decide([wide], { policy: policyFrom({ maxBlockPrefixV4: 12 }) }).verdict).toBe('malicious');
    // Several capped networks together still are not enough.
    expect(decide([wide, m({ feed: 'g', kind: 'cidr', indicator: '1.0.0.0/8', confidence: 100 })]).verdict).toBe('suspicious');
  });

  it('independent feeds corroborate: two at 60 make malicious, one does not', () => {
    expect(decide([m({ confidence: 60 })])).toMatchObject({ verdict: 'suspicious', rule: 'block:low-confidence', confidence: 60 });
    const two = decide([m({ confidence: 60 }), m({ feed: 'g', confidence: 60 })]);
    expect(two).toMatchObject({ verdict: 'malicious', rule: 'block:corroborated', confidence: 72 });
    // The same feed twice (two matching rows) is one source.
    expect(decide([m({ confidence: 60 }), m({ kind: 'subdomain', indicator: 'example', confidence: 60 })]).verdict).toBe('suspicious');
  });

  it('age decays per type: IPs fastest, hashes slowest; a stale IP turns suspicious before it expires', () => {
    const ctx = { now: NOW };
    const aged = (indicator: string, days: number) => decayFactor(m({ indicator, last_seen: at(days) }), ctx).factor;
    const ip = aged('198.51.100.7', 30), url = aged('http://x.example/a', 30), dom = aged('x.example', 30), hash = aged('a'.repeat(64), 30);
    expect(ip).toBeLessThan(url);
    expect(url).toBeLessThan(dom);
    expect(dom).toBeLessThan(hash);
    expect(hash).toBe(1);
    // An IP listed at 80, last seen 10 days ago, expiring after the peers' 21 days: suspicious, not gone.
    const stale = m({ indicator: '198.51.100.7', confidence: 80, last_seen: at(10), expires_at: at(-11) });
    expect(decide([stale], ctx)).toMatchObject({ verdict: 'suspicious', rule: 'block:decayed' });
    expect(decide([{ ...stale, last_seen: at(1) }], ctx)).toMatchObject({ verdict: 'malicious', rule: 'block:exact' });
    // Without dates, the feed package's creation time is the age.
    expect(decide([m({ indicator: '198.51.100.7' })], { now: NOW, feedCreated: () => NOW - 40 * DAY }).rule).toBe('block:decayed');
    // Floor: very old evidence stays listed (suspicious), it never drops to unknown.
    const ancient = decide([m({ indicator: '198.51.100.7', confidence: 80, first_seen: '2014-01-01T00:00:00Z' })], ctx);
    expect(ancient.verdict).toBe('suspicious');
    expect(ancient.confidence).toBe(Math.round(80 * DEFAULT_POLICY.decay.ip.floor));
    expect(decide([m({ indicator: 'a'.repeat(64), last_seen: '2016-01-01T00:00:00Z' })], ctx).verdict).toBe('malicious');
  });

  it('allow vs block by specificity', () => {
    const allow = (x: Partial<Match>) => m({ feed: 'tranco', feed_kind: 'allow', confidence: 100, ...x });
    // Bare domain listed by both → benign, both matches stay in the result.
    expect(decide([m({ indicator: 'github.com' }), allow({ indicator: 'github.com' })])).toMatchObject({ verdict: 'benign', rule: 'allowlist', confidence: 100 });
    // A listed URL on an allowlisted host: URL-level evidence is judged on its own.
    const url = 'https://github.com/evil/x/releases/download/a.exe';
    const ctxUrl = { type: 'url' as const, normalized: url };
    const d = decide([m({ indicator: url, confidence: 85 }), allow({ indicator: 'github.com', kind: 'subdomain' })], ctxUrl);
    expect(d).toMatchObject({ verdict: 'malicious', rule: 'conflict:url-beats-host-allow', confidence: 85 });
    // …but a host-level block on that host is cleared by the host-level allow.
    expect(decide([m({ indicator: 'github.com', kind: 'subdomain' }), allow({ indicator: 'github.com', kind: 'subdomain' })], ctxUrl).verdict).toBe('benign');
    // An exact allow of the URL clears it.
    expect(decide([m({ indicator: url }), allow({ indicator: url })], ctxUrl).verdict).toBe('benign');
    // A listed subdomain under an allowlisted domain, an address inside an allowlisted network: contested.
    expect(decide([m({ indicator: 'evil.example.com' }), allow({ indicator: 'example.com', kind: 'subdomain' })])).toMatchObject({ verdict: 'suspicious', rule: 'conflict:narrower-block' });
    const ip = decide([m({ indicator: '3.130.168.2', confidence: 95 }), allow({ indicator: '3.128.0.0/12', kind: 'cidr' })]);
    expect(ip).toMatchObject({ verdict: 'suspicious', rule: 'conflict:narrower-block', confidence: 69 });
    // A broad block network around an allowed address: the allow is more specific → benign.
    expect(decide([m({ indicator: '8.8.0.0/16', kind: 'cidr' }), allow({ indicator: '8.8.8.8' })]).verdict).toBe('benign');
  });

  it('local overrides decide over feeds, the most specific override first', () => {
    const ov = (action: 'allow' | 'block', x: Partial<Match>) => m({ feed: 'local-override', feed_kind: action, confidence: 100, context: { reason: 'tested' }, ...x });
    expect(decide([m({ indicator: 'x.example' }), ov('allow', { indicator: 'x.example' })])).toMatchObject({ verdict: 'benign', rule: 'override:allow' });
    expect(decide([m({ feed: 'tranco', feed_kind: 'allow', indicator: 'x.example' }), ov('block', { indicator: 'x.example' })])).toMatchObject({ verdict: 'malicious', rule: 'override:block', confidence: 100 });
    const both = decide([ov('allow', { indicator: 'example.com', kind: 'subdomain' }), ov('block', { indicator: 'bad.example.com' })]);
    expect(both.rule).toBe('override:block');
    expect(both.reasons[0]).toMatch(/tested/);
  });
});

describe('real data: packages from ../shared/data', () => {
  let p: Prepared;
  let db: DB;
  let engine: LookupEngine;

  beforeAll(async () => {
    p = await prepare(realFeeds());
    db = openDb(p.dataDir);
    engine = new LookupEngine(db, { fpRate: 0.001 });
  }, 240_000);

  afterAll(() => {
    db?.close();
    if (p) fs.rmSync(p.work, { recursive: true, force: true });
  });

  it('zero malicious verdicts for every warninglist value (networks by their first and last address)', () => {
    let looked = 0;
    const malicious: string[] = [];
    for (const file of WARNINGLISTS) {
      for (const raw of warninglistValues(file)) {
        const n = normalize(raw);
        if (!n.ok) continue;
        const probes = n.type.endsWith('-cidr') ? networkEnds(n.value) : [n.value];
        for (const v of probes) {
          looked++;
          const r = engine.lookup(v);
          if (r.verdict === 'malicious') malicious.push(`${v} ${r.rule}`);
        }
      }
    }
    expect(looked).toBeGreaterThan(85_000);
    expect(malicious).toEqual([]);
  });

  it('every value on both an allow and a block feed is benign with both matches shown', () => {
    const conflicts = db
      .prepare("SELECT DISTINCT b.type, b.value FROM indicators b JOIN indicators a ON a.type = b.type AND a.value = b.value WHERE a.kind = 'allow' AND b.kind = 'block' AND b.type NOT LIKE '%cidr'")
      .all() as { type: string; value: string }[];
    // IPsum IPs that are public resolvers or sinkholes, repocket.com on Tranco and signature-base, …
    expect(conflicts.length).toBeGreaterThan(40);
    for (const c of conflicts) {
      const r = engine.lookup(c.value);
      expect(r.verdict, c.value).toBe('benign');
      expect(r.rule).toBe('allowlist');
      expect(r.matches.some((x) => x.feed_kind === 'allow' && x.indicator === c.value)).toBe(true);
      expect(r.matches.some((x) => x.feed_kind === 'block' && x.indicator === c.value)).toBe(true);
      expect(r.reasons!.join(' ')).toMatch(/allowlisted by warninglists/);
    }
  });

  it('IPsum addresses inside allowlisted cloud ranges are contested: suspicious, both matches shown', () => {
    const inCloud = db
      .prepare("SELECT value FROM indicators WHERE feed = 'ipsum' AND value LIKE '3.%' ORDER BY value LIMIT 400")
      .all() as { value: string }[];
    let contested = 0;
    for (const { value } of inCloud) {
      const r = engine.lookup(value);
      if (r.matches.some((x) => x.feed_kind === 'allow' && x.kind === 'cidr') && !r.matches.some((x) => x.feed_kind === 'allow' && x.kind === 'exact')) {
        contested++;
        expect(r).toMatchObject({ verdict: 'suspicious', rule: 'conflict:narrower-block' });
        expect(r.matches.some((x) => x.feed === 'ipsum' && x.indicator === value)).toBe(true);
      }
    }
    expect(contested).toBeGreaterThan(20);
  });

  it('URLhaus URLs on allowlisted hosts stay malicious; the bare host is benign', () => {
    const onAllowed = db
      .prepare("SELECT value FROM indicators WHERE feed = 'urlhaus' AND (value LIKE 'https://github.com/%' OR value LIKE 'https://raw.githubusercontent.com/%' OR value LIKE 'https://drive.google.com/%')")
      .all() as { value: string }[];
    expect(onAllowed.length).toBeGreaterThan(3);
    for (const { value } of onAllowed) {
      const r = engine.lookup(value);
      expect(r.verdict, value).toBe('malicious');
      expect(r.rule).toBe('conflict:url-beats-host-allow');
      expect(r.matches.some((x) => x.feed === 'warninglists' && x.kind === 'subdomain')).toBe(true);
      expect(r.matches.some((x) => x.feed === 'urlhaus' && x.indicator === value && x.kind === 'exact')).toBe(true);
      const host = new URL(value).hostname;
      expect(engine.lookup(host)).toMatchObject({ verdict: 'benign', rule: 'allowlist' });
      // An unlisted URL on the same host is benign.
      expect(engine.lookup(`https://${host}/outpost/some-project`).verdict).toBe('benign');
    }
  });

  it('variants of sampled listed values are found: defanged, uppercase, trailing dot, subdomain, inside a network, with a port', () => {
    const sample = (feed: string, type: string, n: number) =>
      every(db.prepare('SELECT value FROM indicators WHERE feed = ? AND type = ? ORDER BY value').all(feed, type) as { value: string }[], n).map((r) => r.value);
    const cases: [string, string, string[]][] = [
      ['ipsum', 'ipv4', sample('ipsum', 'ipv4', 600)],
      ['maltrail', 'domain', sample('maltrail', 'domain', 100)],
      ['maltrail', 'url', sample('maltrail', 'url', 20)],
      ['urlhaus', 'url', sample('urlhaus', 'url', 80)],
      ['firehol', 'ipv4-cidr', sample('firehol', 'ipv4-cidr', 10)],
      ['sigbase', 'domain', sample('sigbase', 'domain', 10)],
      ['sigbase', 'md5', sample('sigbase', 'md5', 10)],
      ['sigbase', 'sha256', sample('sigbase', 'sha256', 10)],
    ];
    const seen = new Set<string>();
    const missed: string[] = [];
    for (const [feed, type, values] of cases) {
      expect(values.length, `${feed} ${type}`).toBeGreaterThan(5);
      for (const v of values) {
        for (const [name, probe] of variantsOf(type, v)) {
          seen.add(name);
          const r = engine.lookup(probe);
          if (!r.matches.some((x) => x.feed === feed && x.indicator === v)) missed.push(`${feed} ${v} ${name} ${probe}`);
        }
      }
    }
    expect(missed).toEqual([]);
    for (const name of ['exact', 'defanged', 'uppercase', 'trailing-dot', 'subdomain', 'inside-network', 'with-port', 'url-on-domain']) expect(seen).toContain(name);
  });

  it('FireHOL reserved and broad networks never make internal traffic malicious', () => {
    for (const ip of ['10.20.30.40', '192.168.1.10', '172.16.5.5', '127.0.0.2', '100.64.1.1']) {
      const r = engine.lookup(ip);
      expect(r.matches.some((x) => x.feed === 'firehol' && x.kind === 'cidr'), ip).toBe(true);
      expect(r.verdict, ip).toBe('suspicious');
      expect(r.rule).toBe('cidr:broad-or-reserved');
    }
  });

  it('decay: a listed IP fades to suspicious before its row expires; a listed hash stays malicious', () => {
    const row = db.prepare("SELECT value, expires_at FROM indicators WHERE feed = 'ipsum' AND confidence = 80 LIMIT 1").get() as { value: string; expires_at: number | null };
    const hash = (db.prepare("SELECT value FROM indicators WHERE feed = 'sigbase' AND type = 'sha256' LIMIT 1").get() as { value: string }).value;
    const ip = row.value;
    expect(engine.lookup(ip)).toMatchObject({ verdict: 'malicious', rule: 'block:exact' });
    const t = Date.now() / 1000 + 12 * DAY;
    if (row.expires_at !== null) expect(row.expires_at).toBeGreaterThan(t);
    const later = new LookupEngine(db, { fpRate: 0.001, now: () => t });
    const r = later.lookup(ip);
    expect(r).toMatchObject({ verdict: 'suspicious', rule: 'block:decayed' });
    expect(r.reasons!.join(' ')).toMatch(/aged evidence/);
    expect(later.lookup(hash).verdict).toBe('malicious');
  });
});
