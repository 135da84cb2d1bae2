// The canonical-form fast paths of normalize() (lookup/normalize.ts canonicalFast) must give exactly the
// general pipeline's answer: checked on every value of the real lists in ../shared/data, raw and
// normalized, with and without hints, on case/port/path variants and on fast-check generated inputs.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { IndicatorType } from '../appliance/types.ts';
import { CANONICAL_V4, canonicalFast, canonicalType, normalize, normalizeGeneral, normalizeNonCanonical } from '../lookup/normalize.ts';
import { parseV4 } from '../lookup/filters.ts';

const DATA = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared/data');
const lines = (rel: string) => readFileSync(path.join(DATA, rel), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));

function realRaw(): string[] {
  const out: string[] = [];
  for (const f of ['ipsum/ipsum.txt', 'threatfox/ips.txt', 'firehol/firehol_level1.netset', 'maltrail/mass_scanner_cidr.txt']) out.push(...lines(f).map((l) => l.split(/[\t#]/)[0].trim()));
  for (const f of ['signature-base/hash-iocs.txt', 'signature-base/c2-iocs.txt']) out.push(...lines(f).map((l) => l.split(';')[0]));
  for (const f of ['eset/nukesped_lazarus/samples.sha256', 'eset/nukesped_lazarus/samples.sha1', 'eset/nukesped_lazarus/samples.md5']) out.push(...lines(f));
  for (const f of ['apt_lazarus', 'emotet', 'asyncrat', 'remcos', 'lummac2', 'cobaltstrike']) out.push(...lines(`maltrail/malware/${f}.txt`));
  for (const l of readFileSync(path.join(DATA, 'urlhaus/urls.csv'), 'utf8').split('\n').slice(1)) {
    const m = /^(?:"[^"]*"|[^,]*),([^,]+),/.exec(l);
    if (m) out.push(m[1]);
  }
  for (const w of ['tranco10k', 'cisco_top10k', 'url-shortener', 'sinkholes', 'public-dns-v4']) {
    out.push(...(JSON.parse(readFileSync(path.join(DATA, `known-benign/warninglists/${w}.json`), 'utf8')).list as string[]));
  }
  return out;
}

const HINTS: (IndicatorType | undefined)[] = [undefined, 'ipv4', 'domain', 'url', 'sha256', 'md5', 'email'];

function variants(v: string): string[] {
  return [v, v.toUpperCase(), `${v}.`, `http://${v}/`, `https://${v}:443/a/../b?`, `http://${v}:080/x`, `http://${v}//x`, `${v}/./x`, `xn--${v}`];
}

describe('normalize fast paths', () => {
  const raw = realRaw();
  const normalized = raw.map((r) => normalize(r)).filter((n) => n.ok).map((n) => (n as { value: string }).value);

  it('agree with the general pipeline on every real value, raw and normalized, with every hint', () => {
    let compared = 0;
    const differ: string[] = [];
    const all = [...raw, ...normalized];
    for (let i = 0; i < all.length; i++) {
      const v = all[i];
      // Every value without a hint; every 4th with each hint too.
      for (const h of i % 4 === 0 ? HINTS : HINTS.slice(0, 1)) {
        if (JSON.stringify(normalize(v, h)) !== JSON.stringify(normalizeGeneral(v, h))) differ.push(`${v} (hint ${h})`);
        compared++;
      }
    }
    expect(differ.slice(0, 10)).toEqual([]);
    expect(compared).toBeGreaterThan(50_000);
  });

  it('leave the address of every canonical IPv4 in CANONICAL_V4 (the lookup then does not parse it again)', () => {
    let checked = 0;
    const differ: string[] = [];
    for (const v of normalized) {
      CANONICAL_V4[0] = 0xdeadbeef;
      if (canonicalType(v) !== 'ipv4') continue;
      if (CANONICAL_V4[0] !== parseV4(v)) differ.push(v);
      checked++;
    }
    expect(differ.slice(0, 10)).toEqual([]);
    expect(checked).toBeGreaterThan(10_000);
  });

  it('agree on case, port, path and punycode variants of real values', () => {
    const differ: string[] = [];
    for (const v of normalized.filter((_, i) => i % 13 === 0)) {
      for (const x of variants(v)) if (JSON.stringify(normalize(x)) !== JSON.stringify(normalizeGeneral(x))) differ.push(x);
    }
    expect(differ.slice(0, 10)).toEqual([]);
  });

  it('agree on every real hash in upper and mixed case, with every hint (the uppercase-hash fast path)', () => {
    const hashes = normalized.filter((v) => /^[0-9a-f]+$/.test(v) && [32, 40, 64].includes(v.length));
    expect(hashes.length).toBeGreaterThan(4000);
    const differ: string[] = [];
    for (const [i, v] of hashes.entries()) {
      const mixed = [...v].map((c, j) => ((i + j) % 3 === 0 ? c.toUpperCase() : c)).join('');
      for (const x of [v.toUpperCase(), mixed, ` ${v.toUpperCase()}`, `"${mixed}"`, `${v.toUpperCase()}0`]) {
        for (const h of HINTS) if (JSON.stringify(normalize(x, h)) !== JSON.stringify(normalizeGeneral(x, h))) differ.push(`${x} (hint ${h})`);
      }
    }
    expect(differ.slice(0, 10)).toEqual([]);
    expect(normalizeNonCanonical(hashes[0].toUpperCase())).toEqual({ ok: true, type: normalizeGeneral(hashes[0]).ok ? (normalizeGeneral(hashes[0]) as { type: string }).type : '', value: hashes[0] });
  });

  it('take most canonical IPs, hashes, domains and URLs of the real lists', () => {
    const byType = new Map<string, [number, number]>();
    for (const v of normalized) {
      const n = normalizeGeneral(v);
      if (!n.ok) continue;
      const e = byType.get(n.type) ?? [0, 0];
      e[0]++;
      if (canonicalFast(v) !== null) e[1]++;
      byType.set(n.type, e);
    }
    for (const t of ['ipv4', 'sha256', 'md5', 'domain', 'url']) {
      const [all, fast] = byType.get(t)!;
      expect(fast / all, t).toBeGreaterThan(t === 'url' || t === 'domain' ? 0.5 : 0.99);
    }
  });

  it('agree on generated URL-ish, domain-ish and IP-ish strings', () => {
    const chars = fc.constantFrom(...'abcxyz019-_.:/?%#@[](){}AZ\\'.split(''));
    const word = fc.string({ unit: chars, maxLength: 12 });
    const tld = fc.constantFrom('com', 'ru', 'uk', 'co.uk', 'sch.uk', 'ck', 'www.ck', 'jp', 'kawasaki.jp', 'test', 'eza', 'xn--p1ai', 'io');
    const value = fc.oneof(
      fc.tuple(word, tld).map(([w, t]) => `${w}.${t}`),
      fc.tuple(fc.constantFrom('http://', 'https://', 'HTTP://', ''), word, tld, word).map(([s, w, t, p]) => `${s}${w}.${t}/${p}`),
      fc.tuple(fc.nat(300), fc.nat(300), fc.nat(300), fc.nat(300), word).map(([a, b, c, d, w]) => `${a}.${b}.${c}.${d}${w}`),
      fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF.'.split('')), minLength: 30, maxLength: 66 }),
    );
    fc.assert(fc.property(value, fc.constantFrom(...HINTS), (v, h) => {
      expect(normalize(v, h)).toEqual(normalizeGeneral(v, h));
    }), { numRuns: 20_000 });
  });
});
