// normalize() over the real, dirty public lists in ../shared/data: exact per-type counts per file
// (checked against the data README's table), every malformed line refused with a reason, no crash,
// and idempotence / key helpers on every accepted value.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { IndicatorType, NormalizeResult } from '../appliance/types.ts';
import { cidrKey, defang, normalize, parentDomains, refang, urlHost, urlMatchKeys } from '../lookup/normalize.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DATA = path.resolve(ROOT, '../shared/data');

const read = (rel: string) => readFileSync(path.join(DATA, rel), 'utf8');
/** Lines as a source parser hands them over: trimmed, without blanks and `#` comments. */
const listLines = (rel: string) => read(rel).split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));

/** Second column of URLhaus' CSV (`tags,url,url_status`; tags is a quoted, comma-separated field). */
function urlhausUrls(): string[] {
  const out: string[] = [];
  for (const line of read('urlhaus/urls.csv').split('\n').slice(1)) {
    if (line.trim() === '') continue;
    const fields: string[] = [];
    let cur = '';
    let quoted = false;
    for (let i = 0; i < line.length; i++) {
      const c = line[i];
      if (quoted) {
        if (c === '"' && line[i + 1] === '"') { cur += '"'; i++; } else if (c === '"') quoted = false; else cur += c;
      } else if (c === '"') quoted = true;
      else if (c === ',') { fields.push(cur); cur = ''; } else cur += c;
    }
    fields.push(cur);
    out.push(fields[1]);
  }
  return out;
}

const warninglist = (name: string) => JSON.parse(read(`known-benign/warninglists/${name}.json`)).list as string[];

type Counts = Partial<Record<IndicatorType, number>>;
interface Source {
  values: () => string[];
  accepted: Counts;
  /** Refusals by reason (substring of the error) — they must add up to every refused value. */
  refused: Record<string, number>;
}

// Expected counts. They match the data README's table: e.g. cobaltstrike = 8,053 ip:port + 1 IPv4 →
// 8,054 ipv4; 1,992 URLs with scheme + 16 host/path → 2,008 url; 4,520 domains − 1 `.loc` → 4,519;
// 116 bare paths and 3 ip:port:port refused. Networks ending /32 (/128) collapse into addresses.
const SOURCES: Record<string, Source> = {
  'maltrail/apt_lazarus': {
    values: () => listLines('maltrail/malware/apt_lazarus.txt'),
    accepted: { domain: 3903, ipv4: 875, url: 696 },
    refused: { 'URL path without host': 99 },
  },
  'maltrail/asyncrat': {
    values: () => listLines('maltrail/malware/asyncrat.txt'),
    accepted: { domain: 6260, ipv4: 18773, url: 324 },
    refused: { 'URL path without host': 28, 'port must be 1-65535': 4, 'unknown top-level domain ".or"': 1 },
  },
  'maltrail/cobaltstrike': {
    values: () => listLines('maltrail/malware/cobaltstrike.txt'),
    accepted: { domain: 4519, ipv4: 8054, url: 2008 },
    refused: { 'URL path without host': 116, 'malformed ip:port': 3, 'unknown top-level domain ".loc"': 1 },
  },
  'maltrail/emotet': {
    values: () => listLines('maltrail/malware/emotet.txt'),
    accepted: { domain: 232, ipv4: 4704, url: 5361 },
    refused: { 'URL path without host': 4737 },
  },
  'maltrail/lummac2': {
    values: () => listLines('maltrail/malware/lummac2.txt'),
    accepted: { domain: 16553, ipv4: 122, url: 183 },
    refused: { 'URL path without host': 22, 'unknown top-level domain': 11 },
  },
  'maltrail/remcos': {
    values: () => listLines('maltrail/malware/remcos.txt'),
    accepted: { domain: 6969, ipv4: 10332, url: 305 },
    refused: { 'URL path without host': 58, 'unknown top-level domain ".xzy"': 4 },
  },
  'maltrail/mass_scanner_cidr': {
    // "CIDR # comment" lines: stripping the comment is the source parser's job, done here by hand.
    values: () => listLines('maltrail/mass_scanner_cidr.txt').map((l) => l.split('#')[0].trim()),
    accepted: { 'ipv4-cidr': 1093, ipv4: 13 },
    refused: {},
  },
  'firehol/level1': {
    values: () => listLines('firehol/firehol_level1.netset'),
    accepted: { 'ipv4-cidr': 2490, ipv4: 402 },
    refused: {},
  },
  'ipsum/ipsum': {
    values: () => listLines('ipsum/ipsum.txt').map((l) => l.split('\t')[0]),
    accepted: { ipv4: 120430 },
    refused: {},
  },
  'ipsum/level3': { values: () => listLines('ipsum/levels/3.txt'), accepted: { ipv4: 14217 }, refused: {} },
  'threatfox/ips': { values: () => listLines('threatfox/ips.txt'), accepted: { ipv4: 19863 }, refused: {} },
  'urlhaus/urls': { values: urlhausUrls, accepted: { url: 16310 }, refused: {} },
  'signature-base/hash-iocs': {
    values: () => listLines('signature-base/hash-iocs.txt').map((l) => l.split(';')[0]),
    accepted: { sha256: 1259, md5: 1039, sha1: 926 },
    refused: {},
  },
  'signature-base/c2-iocs': {
    values: () => listLines('signature-base/c2-iocs.txt'),
    accepted: { domain: 1709, ipv4: 129 },
    refused: { 'invalid character ";" in domain': 6 },
  },
  'eset/samples.md5': { values: () => listLines('eset/nukesped_lazarus/samples.md5'), accepted: { md5: 555 }, refused: {} },
  'eset/samples.sha1': { values: () => listLines('eset/nukesped_lazarus/samples.sha1'), accepted: { sha1: 555 }, refused: {} },
  'eset/samples.sha256': { values: () => listLines('eset/nukesped_lazarus/samples.sha256'), accepted: { sha256: 555 }, refused: {} },
  'warninglist/amazon-aws': {
    values: () => warninglist('amazon-aws'),
    accepted: { 'ipv4-cidr': 1604, ipv4: 146, 'ipv6-cidr': 2086, ipv6: 11 },
    refused: {},
  },
  'warninglist/google-gcp': { values: () => warninglist('google-gcp'), accepted: { 'ipv4-cidr': 441, 'ipv6-cidr': 30 }, refused: {} },
  'warninglist/public-dns-v4': { values: () => warninglist('public-dns-v4'), accepted: { ipv4: 62745 }, refused: {} },
  'warninglist/sinkholes': { values: () => warninglist('sinkholes'), accepted: { ipv4: 97, 'ipv4-cidr': 10 }, refused: {} },
  'warninglist/cisco_top10k': {
    values: () => warninglist('cisco_top10k'),
    accepted: { domain: 9999 },
    refused: { 'domain label starts with a hyphen': 1 },
  },
  'warninglist/tranco10k': { values: () => warninglist('tranco10k'), accepted: { domain: 10000 }, refused: {} },
  'warninglist/url-shortener': { values: () => warninglist('url-shortener'), accepted: { domain: 255 }, refused: {} },
  'warninglist/common-ioc-false-positive': {
    values: () => warninglist('common-ioc-false-positive'),
    accepted: { md5: 23, sha1: 23, sha256: 23 },
    refused: {},
  },
};

interface Outcome {
  raw: string;
  r: NormalizeResult;
}

const results = new Map<string, Outcome[]>();
function outcomes(name: string): Outcome[] {
  let o = results.get(name);
  if (!o) {
    o = SOURCES[name].values().map((raw) => ({ raw, r: normalize(raw) }));
    results.set(name, o);
  }
  return o;
}
const accepted = (name: string) => outcomes(name).filter((o) => o.r.ok).map((o) => o.r as Extract<NormalizeResult, { ok: true }>);

describe('real data: counts per file', () => {
  for (const [name, src] of Object.entries(SOURCES)) {
    it(`${name}: accepted per type and every refusal explained`, () => {
      const counts: Counts = {};
      const refusals: Record<string, number> = {};
      const unexplained: string[] = [];
      for (const { raw, r } of outcomes(name)) {
        if (r.ok) {
          counts[r.type] = (counts[r.type] ?? 0) + 1;
          continue;
        }
        expect(r.error.length, raw).toBeGreaterThan(0);
        const reason = Object.keys(src.refused).find((k) => r.error.includes(k));
        if (reason) refusals[reason] = (refusals[reason] ?? 0) + 1;
        else unexplained.push(`${raw} → ${r.error}`);
      }
      expect(unexplained).toEqual([]);
      expect(counts).toEqual(src.accepted);
      expect(refusals).toEqual(src.refused);
    });
  }
});

describe('real data: known malformed entries are refused with a reason', () => {
  const errorOf = (name: string, raw: string) => {
    const o = outcomes(name).find((x) => x.raw === raw);
    expect(o, `${raw} present in ${name}`).toBeDefined();
    return o!.r.ok ? null : o!.r.error;
  };
  it('ip:port:port in cobaltstrike', () => {
    expect(errorOf('maltrail/cobaltstrike', '139.9.234.13:33:1099')).toMatch(/malformed ip:port/);
    const bad = outcomes('maltrail/cobaltstrike').filter((o) => /^[\d.]+:\d+:\d+$/.test(o.raw));
    expect(bad.map((o) => o.raw)).toEqual(['139.9.234.13:33:1099', '54.246.146.207:22:50050', '45.86.163.188:443:444']);
    for (const o of bad) expect(o.r.ok).toBe(false);
  });
  it('bare URL paths in every maltrail file', () => {
    expect(errorOf('maltrail/emotet', '/guids/xian/ringin/')).toBe('URL path without host');
    for (const name of Object.keys(SOURCES).filter((n) => n.startsWith('maltrail/'))) {
      for (const o of outcomes(name)) if (o.raw.startsWith('/')) expect(o.r).toEqual({ ok: false, error: 'URL path without host' });
    }
  });
  it('-container.supertms.com in cisco_top10k; IP;65 in c2-iocs; port 0 and > 65535 in asyncrat', () => {
    expect(errorOf('warninglist/cisco_top10k', '-container.supertms.com')).toBe('domain label starts with a hyphen');
    expect(errorOf('signature-base/c2-iocs', '176.123.5.126;65')).toMatch(/invalid character ";"/);
    expect(errorOf('maltrail/asyncrat', '74.119.194.180:0')).toBe('port must be 1-65535');
    expect(errorOf('maltrail/asyncrat', '18.197.239.109:66086')).toBe('port must be 1-65535');
  });
  it('ip:port entries keep their port', () => {
    const r = outcomes('maltrail/emotet').find((o) => o.raw === '66.210.228.178:80')!.r;
    expect(r).toEqual({ ok: true, type: 'ipv4', value: '66.210.228.178', port: 80 });
  });
});

describe('real data: URLhaus defanged URLs', () => {
  it('every defanged URL refangs to a URL with a scheme we accept, http(s) except 4 ftp and 5 tftp droppers', () => {
    const urls = urlhausUrls();
    expect(urls.length).toBe(16310);
    expect(urls.every((u) => u.includes('[.]') || u.includes('[:]'))).toBe(true);
    const schemes: Record<string, number> = {};
    for (const o of outcomes('urlhaus/urls')) {
      expect(o.r.ok, o.raw).toBe(true);
      if (!o.r.ok) continue;
      expect(o.r.value).not.toMatch(/\[[.:]\]/);
      const scheme = o.r.value.slice(0, o.r.value.indexOf('://'));
      schemes[scheme] = (schemes[scheme] ?? 0) + 1;
    }
    expect(schemes).toEqual({ http: 14809, https: 1492, ftp: 4, tftp: 5 });
  });
  it('defanged and plain spellings meet under one key', () => {
    const o = outcomes('urlhaus/urls').find((x) => x.raw === 'http[:]//123[.]189[.]148[.]227[:]50140/bin[.]sh')!;
    expect(o.r).toEqual({ ok: true, type: 'url', value: 'http://123.189.148.227:50140/bin.sh' });
    expect(normalize('hxxp://123.189.148[.]227:50140/bin.sh')).toEqual(o.r);
  });
});

describe('real data: MISP attributes with type hints', () => {
  const HINT: Record<string, IndicatorType> = {
    url: 'url', domain: 'domain', 'ip-dst': 'ipv4', 'ip-src': 'ipv4', md5: 'md5', sha1: 'sha1', sha256: 'sha256',
    'email-src': 'email', 'email-dst': 'email',
  };
  it('ESET events: every typed attribute normalizes to its type (smb:// shares included)', () => {
    const seen: Record<string, number> = {};
    for (const rel of ['eset/mozi/mozi.misp-event.json', 'eset/moustachedbouncer/misp-moustachedbouncer.event.json']) {
      const ev = JSON.parse(read(rel)).response[0].Event;
      const attrs = [...ev.Attribute, ...(ev.Object ?? []).flatMap((o: { Attribute: unknown[] }) => o.Attribute)];
      for (const a of attrs as { type: string; value: string }[]) {
        const hint = HINT[a.type];
        if (!hint) continue;
        const r = normalize(a.value, hint);
        expect(r.ok, `${a.type} ${a.value}: ${JSON.stringify(r)}`).toBe(true);
        if (r.ok) seen[r.type] = (seen[r.type] ?? 0) + 1;
      }
    }
    // README: md5/sha1/sha256 50 each, url 22, ip-dst 15 + ip-src 1, domain 6, email 2 + 2
    expect(seen).toEqual({ md5: 50, sha1: 50, sha256: 50, url: 22, ipv4: 16, domain: 6, email: 4 });
  });
});

describe('real data: every accepted value', () => {
  const all = () => Object.keys(SOURCES).flatMap(accepted);

  it('is a fixed point: normalize(normalize(x).value) gives the same value and type, with and without hint', () => {
    let n = 0;
    for (const r of all()) {
      const again = normalize(r.value);
      const hinted = normalize(r.value, r.type);
      if (!again.ok || again.value !== r.value || again.type !== r.type) expect.fail(`${r.value} → ${JSON.stringify(again)}`);
      if (!hinted.ok || hinted.value !== r.value) expect.fail(`${r.value} (hint ${r.type}) → ${JSON.stringify(hinted)}`);
      n++;
    }
    expect(n).toBeGreaterThan(330_000);
  });

  it('domains: parentDomains starts at the domain, ends at a registrable domain, never a public suffix', () => {
    let n = 0;
    for (const r of all()) {
      if (r.type !== 'domain') continue;
      const parents = parentDomains(r.value);
      expect(parents[0]).toBe(r.value);
      for (let i = 1; i < parents.length; i++) {
        expect(parents[i - 1].endsWith('.' + parents[i])).toBe(true);
        const p = normalize(parents[i]);
        if (!p.ok || p.value !== parents[i]) expect.fail(`${parents[i]} (parent of ${r.value}) is not a domain`);
      }
      n++;
    }
    expect(n).toBeGreaterThan(60_000);
  });

  it('urls: match keys are ≤ 6 canonical URLs on the same host; urlHost normalizes to the host type', () => {
    for (const r of all()) {
      if (r.type !== 'url') continue;
      const keys = urlMatchKeys(r.value);
      expect(keys[0]).toBe(r.value);
      expect(keys.length).toBeLessThanOrEqual(6);
      const host = urlHost(r.value);
      const h = normalize(host);
      if (!h.ok || h.value !== host || !['domain', 'ipv4', 'ipv6'].includes(h.type)) expect.fail(`host ${host} of ${r.value}`);
      for (const k of keys) {
        const nk = normalize(k);
        if (!nk.ok || nk.value !== k) expect.fail(`key ${k} of ${r.value} → ${JSON.stringify(nk)}`);
        if (urlHost(k) !== host) expect.fail(`key ${k} changes host of ${r.value}`);
      }
    }
  });

  it('networks: cidrKey(network, prefix) reproduces every listed network key', () => {
    let n = 0;
    for (const r of all()) {
      if (r.type !== 'ipv4-cidr' && r.type !== 'ipv6-cidr') continue;
      const [net] = r.value.split('/');
      expect(cidrKey(net, r.type === 'ipv4-cidr' ? 4 : 6, r.prefix!)).toBe(r.value);
      n++;
    }
    expect(n).toBeGreaterThan(7_000);
  });

  it('domains and URLs survive defang → refang', () => {
    for (const r of all()) {
      if (r.type !== 'domain' && r.type !== 'url') continue;
      const d = defang(r.value);
      if (refang(d) !== r.value) expect.fail(`${r.value} → ${d} → ${refang(d)}`);
      const back = normalize(d);
      if (!back.ok || back.value !== r.value) expect.fail(`normalize(${d}) → ${JSON.stringify(back)}`);
    }
  });
});

describe('real data: directory coverage', () => {
  it('covers every maltrail malware trail and ESET sample list in the data set', () => {
    for (const f of readdirSync(path.join(DATA, 'maltrail/malware'))) expect(SOURCES[`maltrail/${f.replace(/\.txt$/, '')}`], f).toBeDefined();
    for (const f of readdirSync(path.join(DATA, 'eset/nukesped_lazarus'))) expect(SOURCES[`eset/${f}`], f).toBeDefined();
  });
});
