// Property tests for lookup/normalize.ts (fast-check, fixed seeds, ~2000 runs each): never throws,
// idempotent, defang/refang round trip, and agreement with ipaddr.js and the WHATWG URL parser.
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { describe, expect, it } from 'vitest';
import { INDICATOR_TYPES, type IndicatorType, type NormalizeResult } from '../appliance/types.ts';
import { cidrKey, defang, normalize, refang, urlHost, urlMatchKeys } from '../lookup/normalize.ts';

// FC_SEED / FC_RUNS let a developer hunt with other seeds; CI uses the fixed ones.
const RUNS = { seed: Number(process.env.FC_SEED ?? 20261122), numRuns: Number(process.env.FC_RUNS ?? 2000) };

const v4 = (n: number) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;

// --- generators ---------------------------------------------------------------------------------

const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?$/);
const unicodeLabel = fc.string({ unit: fc.constantFrom('a', 'b', 'x', '1', 'ü', 'é', 'ß', 'д', 'ж', '中', 'ı'), minLength: 1, maxLength: 8 });
const suffix = fc.constantFrom('com', 'co.uk', 'org', 'ru', 'de', 'io', 'example', 'test', 'xn--p1ai', 'com.br', 'github.io');
const domain = fc
  .tuple(fc.array(fc.oneof(label, label, unicodeLabel), { minLength: 1, maxLength: 4 }), suffix, fc.boolean(), fc.boolean())
  .map(([labels, sfx, upper, dot]) => {
    const d = `${labels.join('.')}.${sfx}${dot ? '.' : ''}`;
    return upper ? d.toUpperCase() : d;
  });
const host = fc.oneof(
  { weight: 4, arbitrary: domain },
  { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }).map(v4) },
  { weight: 1, arbitrary: fc.ipV4Extended() },
  { weight: 1, arbitrary: fc.ipV6().map((a) => `[${a}]`) },
);
const pathChar = fc.constantFrom('a', 'Z', '0', '%', '2', '5', 'F', 'e', '.', '.', '/', '/', '?', '#', '~', '+', '=', '&', ':', '@', 'é', '€', '[', ']', ';', '!');
const url = fc
  .tuple(
    fc.constantFrom('http://', 'https://', 'HTTP://', 'hxxp://', 'hxxps[:]//', 'ftp://', ''),
    host,
    fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
    fc.string({ unit: pathChar, maxLength: 40 }),
  )
  .map(([scheme, h, port, rest]) => `${scheme}${h}${port ? ':' + port : ''}/${rest}`);
const defangSoup = fc
  .array(fc.constantFrom('[.]', '(.)', '[dot]', 'hxxp', 'hXXps', '[:]', '[://]', '[@]', '[at]', '[/]', '[', ']', '(', ')', '{', '}', '.', ':', '/', '//', '%', '%25', '%2e', '0x', '1', '255', '.0', 'a', 'com', '@', '*', '::', 'ffff', '\t', ' ', '\u0000'), { maxLength: 30 })
  .map((parts) => parts.join(''));
const anything = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 80 }),
  fc.string({ unit: 'binary-ascii', maxLength: 80 }),
  fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b).toString('latin1')),
  defangSoup,
  url,
  domain,
  fc.ipV6(),
  fc.ipV4Extended(),
);

// --- helpers ------------------------------------------------------------------------------------

function wellFormed(r: NormalizeResult): boolean {
  if (!r.ok) return typeof r.error === 'string' && r.error.length > 0;
  return INDICATOR_TYPES.includes(r.type) && typeof r.value === 'string' && r.value.length > 0;
}

function idempotent(raw: string, hint?: IndicatorType): boolean {
  const r = normalize(raw, hint);
  if (!r.ok) return true;
  const a = normalize(r.value);
  const b = normalize(r.value, r.type);
  return a.ok && b.ok && a.value === r.value && a.type === r.type && b.value === r.value;
}

// --- properties -----------------------------------------------------------------------------------

describe('normalize never throws', () => {
  it('on arbitrary strings, unicode, binary, defang soup, URLs, with and without hints', () => {
    fc.assert(
      fc.property(anything, fc.option(fc.constantFrom(...INDICATOR_TYPES), { nil: undefined }), (raw, hint) => {
        const r = normalize(raw, hint);
        return wellFormed(r);
      }),
      RUNS,
    );
  });
  it('on huge inputs', () => {
    fc.assert(
      fc.property(fc.constantFrom('a', '.', '%', '/', '[.]', '1.', ':'), fc.integer({ min: 1_000, max: 200_000 }), (unit, n) => {
        const r = normalize(unit.repeat(n));
        const u = normalize('http://evil.com/' + unit.repeat(n));
        return wellFormed(r) && wellFormed(u);
      }),
      { seed: RUNS.seed, numRuns: 50 },
    );
  });
});

describe('normalize is idempotent', () => {
  it('on anything it accepts', () => {
    fc.assert(fc.property(anything, (raw) => idempotent(raw)), RUNS);
  });
  it('on generated URLs (most are accepted)', () => {
    let accepted = 0;
    fc.assert(
      fc.property(url, (raw) => {
        if (normalize(raw).ok) accepted++;
        return idempotent(raw) && idempotent(raw, 'url');
      }),
      RUNS,
    );
    expect(accepted).toBeGreaterThan(RUNS.numRuns / 2);
  });
  it('on URL match keys: each is its own normalized form on the same host', () => {
    fc.assert(
      fc.property(url, (raw) => {
        const r = normalize(raw);
        if (!r.ok || r.type !== 'url') return true;
        const keys = urlMatchKeys(r.value);
        if (keys[0] !== r.value || keys.length > 6 || new Set(keys).size !== keys.length) return false;
        return keys.every((k) => {
          const n = normalize(k);
          return n.ok && n.value === k && urlHost(k) === urlHost(r.value);
        });
      }),
      RUNS,
    );
  });
});

describe('defang / refang round trip', () => {
  it('refang(defang(x)) === x and normalize(defang(x)) === x for valid domains', () => {
    fc.assert(
      fc.property(domain, (raw) => {
        const r = normalize(raw);
        if (!r.ok) return true;
        return refang(defang(r.value)) === r.value && (normalize(defang(r.value)) as { value?: string }).value === r.value;
      }),
      RUNS,
    );
  });
  it('refang(defang(x)) === x and normalize(defang(x)) === x for valid URLs', () => {
    fc.assert(
      fc.property(url, (raw) => {
        const r = normalize(raw);
        if (!r.ok) return true;
        return refang(defang(r.value)) === r.value && (normalize(defang(r.value)) as { value?: string }).value === r.value;
      }),
      RUNS,
    );
  });
  it('refang is idempotent on anything', () => {
    fc.assert(fc.property(anything, (s) => refang(refang(s)) === refang(s)), RUNS);
  });
});

describe('IP addresses', () => {
  it('IPv4 dotted quads round-trip, with port, and defanged', () => {
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), fc.integer({ min: 1, max: 65535 }), (n, port) => {
        const s = v4(n);
        const plain = normalize(s);
        const withPort = normalize(`${s}:${port}`);
        const defanged = normalize(`${s.split('.').join('[.]')}[:]${port}`);
        return (
          plain.ok && plain.type === 'ipv4' && plain.value === s &&
          withPort.ok && withPort.value === s && withPort.port === port &&
          defanged.ok && defanged.value === s && defanged.port === port
        );
      }),
      RUNS,
    );
  });
  it('IPv4 with a leading zero in any octet is refused as ambiguous', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }), fc.integer({ min: 0, max: 3 }), (o, i) => {
        const parts = o.map(String);
        parts[i] = '0' + parts[i];
        const r = normalize(parts.join('.'));
        return !r.ok && r.error.includes('leading zero');
      }),
      RUNS,
    );
  });
  it('IPv4 CIDR masks like ipaddr.js, matches cidrKey, and /32 collapses', () => {
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), fc.integer({ min: 0, max: 32 }), (n, p) => {
        const s = v4(n);
        const r = normalize(`${s}/${p}`);
        const net = ipaddr.IPv4.networkAddressFromCIDR(`${s}/${p}`).toString();
        const want = p === 32 ? net : `${net}/${p}`;
        return r.ok && r.value === want && r.type === (p === 32 ? 'ipv4' : 'ipv4-cidr') && cidrKey(s, 4, p) === want;
      }),
      RUNS,
    );
  });
  it('IPv6 canonical form agrees with the WHATWG URL serializer and ipaddr.js; mapped → IPv4', () => {
    // Reference: WHATWG. ipaddr.js alone reads any dotted tail as IPv4-mapped (`::1.2.3.4` →
    // `::ffff:102:304`), which is why normalize() converts dotted tails itself.
    fc.assert(
      fc.property(fc.ipV6(), (s) => {
        const r = normalize(s);
        if (!r.ok) return false;
        const ref = new URL(`http://[${s}]/`).hostname.slice(1, -1);
        const a = ipaddr.IPv6.parse(ref);
        if (a.isIPv4MappedAddress()) return r.type === 'ipv4' && r.value === a.toIPv4Address().toString();
        return r.type === 'ipv6' && r.value === ref && a.toString() === ref;
      }),
      RUNS,
    );
  });
  it('IPv6 CIDR masks like ipaddr.js and matches cidrKey', () => {
    fc.assert(
      fc.property(fc.ipV6(), fc.integer({ min: 0, max: 128 }), (s, p) => {
        const ref = new URL(`http://[${s}]/`).hostname.slice(1, -1);
        const a = ipaddr.IPv6.parse(ref);
        if (a.isIPv4MappedAddress()) return true;
        const r = normalize(`${s}/${p}`);
        const net = ipaddr.IPv6.networkAddressFromCIDR(`${ref}/${p}`).toString();
        const want = p === 128 ? net : `${net}/${p}`;
        return r.ok && r.value === want && cidrKey(a.toString(), 6, p) === want;
      }),
      RUNS,
    );
  });
  it('URL hosts in octal/hex/short IPv4 forms parse as a browser (WHATWG URL) reads them', () => {
    fc.assert(
      fc.property(fc.ipV4Extended(), (h) => {
        const r = normalize(`http://${h}/`);
        return r.ok && r.value === `http://${new URL(`http://${h}/`).hostname}/`;
      }),
      RUNS,
    );
  });
});

describe('domains', () => {
  it('accepted domains are what the WHATWG URL parser makes of the host (lowercase, punycode)', () => {
    let accepted = 0;
    fc.assert(
      fc.property(domain, (raw) => {
        const r = normalize(raw);
        if (!r.ok) return true;
        accepted++;
        return r.type === 'domain' && new URL(`http://${raw}/`).hostname.replace(/\.$/, '') === r.value;
      }),
      RUNS,
    );
    expect(accepted).toBeGreaterThan(RUNS.numRuns / 2);
  });
});
