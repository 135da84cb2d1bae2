// Hand cases for every rule of lookup/normalize.ts (real-data and property tests live in test/).
import { describe, expect, it } from 'vitest';
import ipaddr from 'ipaddr.js';
import type { IndicatorType } from '../appliance/types.ts';
import { cidrKey, defang, normalize, parentDomains, refang, urlHost, urlMatchKeys } from './normalize.ts';

type Ok = [raw: string, type: IndicatorType, value: string, extra?: { port?: number; prefix?: number }];

function expectOk(raw: string, type: IndicatorType, value: string, extra: { port?: number; prefix?: number } = {}, hint?: IndicatorType) {
  const r = normalize(raw, hint);
  expect(r, JSON.stringify(raw)).toEqual({ ok: true, type, value, ...extra });
}

function expectError(raw: string, reason: RegExp | string, hint?: IndicatorType) {
  const r = normalize(raw, hint);
  expect(r.ok, `${JSON.stringify(raw)} → ${JSON.stringify(r)}`).toBe(false);
  if (!r.ok) {
    if (typeof reason === 'string') expect(r.error).toBe(reason);
    else expect(r.error).toMatch(reason);
  }
}

const table = (cases: Ok[]) => () => {
  for (const [raw, type, value, extra] of cases) expectOk(raw, type, value, extra);
};

describe('refang', () => {
  it.each([
    ['hxxp://evil[.]com/a', 'http://evil.com/a'],
    ['hxxps://evil[.]com', 'https://evil.com'],
    ['hXXp://evil(.)com', 'http://evil.com'],
    ['HXXPS[:]//evil{.}com', 'https://evil.com'],
    ['http[:]//1[.]2[.]3[.]4[:]80/x', 'http://1.2.3.4:80/x'],
    ['evil[dot]com', 'evil.com'],
    ['evil(DOT)com', 'evil.com'],
    ['user[@]evil[.]com', 'user@evil.com'],
    ['user[at]evil[.]com', 'user@evil.com'],
    ['hxxp[://]evil[.]com[/]x', 'http://evil.com/x'],
    ['fxp://files[.]evil[.]com/', 'ftp://files.evil.com/'],
    ['[[.]]', '.'], // nested defanging is undone completely: that is what makes refang idempotent
    ['hxxpbin.org', 'hxxpbin.org'], // hxxp only in scheme position
    ['evil.com', 'evil.com'],
    ['[::1]:80', '[::1]:80'], // bracketed IPv6 is not a defang token
  ])('%s → %s', (a, b) => {
    expect(refang(a)).toBe(b);
    expect(refang(refang(a))).toBe(refang(a));
  });
});

describe('defang', () => {
  it('defangs scheme and dots, and refang undoes it', () => {
    expect(defang('http://evil.com/a.php')).toBe('hxxp://evil[.]com/a[.]php');
    expect(defang('https://evil.com/')).toBe('hxxps://evil[.]com/');
    expect(defang('httpbin.org')).toBe('httpbin[.]org');
    for (const v of ['http://evil.com/a.php?x=1.2', 'sub.evil.co.uk', '1.2.3.4', 'https://[2001:db8::1]/x']) {
      expect(refang(defang(v))).toBe(v);
    }
  });
});

describe('normalize: wrapping, whitespace, junk', () => {
  it('trims and strips quotes, backticks and <>', table([
    ['  1.2.3.4\t', 'ipv4', '1.2.3.4'],
    ['"evil.com"', 'domain', 'evil.com'],
    ["'evil.com'", 'domain', 'evil.com'],
    ['`evil.com`', 'domain', 'evil.com'],
    ['<http://evil.com/a>', 'url', 'http://evil.com/a'],
    ['"<evil.com>"', 'domain', 'evil.com'],
  ]));
  it('refuses internal whitespace instead of merging columns', () => {
    expectError('1.2.3.0/24 # shodan', /whitespace/);
    expectError('1.2.3.4\t5', /whitespace/);
    expectError('evil .com', /whitespace/);
    expectError('http://evil.com/a b', /whitespace/);
    expectError('evil\u00a0.com', /whitespace/);
    expectError('evil.com\r\nx', /whitespace/);
  });
  it('refuses control characters, empty and oversized values; never throws', () => {
    expectError('evil\u0000.com', /control character/);
    expectError('evil\u0007.com', /control character/);
    expectError('', 'empty value');
    expectError('   ', 'empty value');
    expectError('""', 'empty value');
    expectError('a'.repeat(10_000) + '.com', /longer than/);
    expectError('a'.repeat(1_000_000), /longer than/);
    expect(normalize(undefined as unknown as string).ok).toBe(false);
    expect(normalize(42 as unknown as string).ok).toBe(false);
    expect(normalize('\ud800\udfff\ud800.com').ok).toBe(false);
  });
});

describe('normalize: hashes', () => {
  it('detects md5/sha1/sha256 by length and lowercases', table([
    ['D41D8CD98F00B204E9800998ECF8427E', 'md5', 'd41d8cd98f00b204e9800998ecf8427e'],
    ['da39a3ee5e6b4b0d3255bfef95601890afd80709', 'sha1', 'da39a3ee5e6b4b0d3255bfef95601890afd80709'],
    ['E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855', 'sha256', 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'],
  ]));
  it('does not take other hex lengths or non-hex as hashes', () => {
    expectError('d41d8cd98f00b204e9800998ecf8427', /./); // 31 chars
    expectError('g41d8cd98f00b204e9800998ecf8427e', /./);
  });
  it('follows a hash hint strictly', () => {
    expectOk('D41D8CD98F00B204E9800998ECF8427E', 'md5', 'd41d8cd98f00b204e9800998ecf8427e', {}, 'md5');
    expectError('d41d8cd98f00b204e9800998ecf8427e', 'expected sha1, got md5', 'sha1');
  });
});

describe('normalize: IPv4', () => {
  it('accepts strict dotted quads, with a port', table([
    ['1.2.3.4', 'ipv4', '1.2.3.4'],
    ['0.0.0.0', 'ipv4', '0.0.0.0'],
    ['255.255.255.255', 'ipv4', '255.255.255.255'],
    ['1.2.3.4:80', 'ipv4', '1.2.3.4', { port: 80 }],
    ['1.2.3.4:0080', 'ipv4', '1.2.3.4', { port: 80 }],
    ['1.2.3.4:65535', 'ipv4', '1.2.3.4', { port: 65535 }],
    ['1[.]2[.]3[.]4[:]443', 'ipv4', '1.2.3.4', { port: 443 }],
  ]));
  it('refuses ambiguous and malformed forms with a reason', () => {
    expectError('010.1.1.1', /ambiguous leading zero \(octal\?\)/);
    expectError('1.2.3.04', /ambiguous leading zero/);
    expectError('1.1', /4 dotted decimal parts/);
    expectError('1.2.3', /4 dotted decimal parts/);
    expectError('1.2.3.4.5', /4 dotted decimal parts/);
    expectError('3232235777', /4 dotted decimal parts/);
    expectError('256.1.1.1', /out of range/);
    expectError('1.2.3.999', /out of range/);
    expectError('1..3.4', /empty IPv4 octet/);
    expectError('1.2.3.4.', /4 dotted decimal parts/);
    expectError('0x7f.0.0.1', /not a canonical IPv4/);
    expectError('0x7f000001', /not a canonical IPv4/);
    expectError('1.2.3.4:0', /port must be 1-65535/);
    expectError('1.2.3.4:65536', /port must be 1-65535/);
    expectError('1.2.3.4:', /port must be 1-65535/);
    expectError('1.2.3.4:8o', /port must be 1-65535/);
    expectError('139.9.234.13:33:1099', /malformed ip:port/);
  });
});

describe('normalize: IPv6', () => {
  it('canonicalizes to compressed lowercase; brackets and ports; mapped → IPv4', table([
    ['2001:DB8:0:0:0:0:0:1', 'ipv6', '2001:db8::1'],
    ['2001:0db8::0001', 'ipv6', '2001:db8::1'],
    ['::', 'ipv6', '::'],
    ['::1', 'ipv6', '::1'],
    ['[2001:db8::1]', 'ipv6', '2001:db8::1'],
    ['[2001:db8::1]:8443', 'ipv6', '2001:db8::1', { port: 8443 }],
    ['::ffff:1.2.3.4', 'ipv4', '1.2.3.4'],
    ['::FFFF:102:304', 'ipv4', '1.2.3.4'],
    ['[::ffff:1.2.3.4]:80', 'ipv4', '1.2.3.4', { port: 80 }],
    ['64:ff9b::1.2.3.4', 'ipv6', '64:ff9b::102:304'],
  ]));
  it('refuses malformed IPv6', () => {
    expectError('2001:db8::1::2', /not a valid IPv6/);
    expectError('2001:db8:::1', /not a valid IPv6/);
    expectError('1:2:3:4:5:6:7:8:9', /not a valid IPv6/);
    expectError('fe80::1%eth0', /zone id/);
    expectError('::ffff:010.1.1.1', /leading zero/);
    expectError('[2001:db8::1', /unclosed/);
    expectError('[2001:db8::1]x', /junk/);
    expectError('[2001:db8::1]:99999', /port/);
    expectError('gggg::1', /not a valid IPv6/);
  });
});

describe('normalize: CIDR', () => {
  it('masks host bits and collapses host-sized prefixes', table([
    ['10.0.0.0/8', 'ipv4-cidr', '10.0.0.0/8', { prefix: 8 }],
    ['10.1.2.3/8', 'ipv4-cidr', '10.0.0.0/8', { prefix: 8 }],
    ['192.168.1.255/23', 'ipv4-cidr', '192.168.0.0/23', { prefix: 23 }],
    ['0.0.0.0/0', 'ipv4-cidr', '0.0.0.0/0', { prefix: 0 }],
    ['1.2.3.4/31', 'ipv4-cidr', '1.2.3.4/31', { prefix: 31 }],
    ['1.2.3.4/32', 'ipv4', '1.2.3.4'],
    ['2001:DB8::1/32', 'ipv6-cidr', '2001:db8::/32', { prefix: 32 }],
    ['2001:db8:ffff::/33', 'ipv6-cidr', '2001:db8:8000::/33', { prefix: 33 }],
    ['2001:db8::1/128', 'ipv6', '2001:db8::1'],
    ['::ffff:1.2.3.0/120', 'ipv4-cidr', '1.2.3.0/24', { prefix: 24 }],
  ]));
  it('refuses bad prefixes and bad networks', () => {
    expectError('10.0.0.0/33', /prefix length must be 0-32/);
    expectError('10.0.0.0/08', /prefix length/);
    expectError('2001:db8::/129', /prefix length must be 0-128/);
    expectError('010.0.0.0/8', /CIDR: ambiguous leading zero/);
    expectError('10.0.0/8', /CIDR: IPv4 address must be 4/);
    expectError('::ffff:1.2.3.0/64', /IPv4-mapped/);
  });
});

describe('normalize: domains', () => {
  it('lowercases, strips trailing dot and wildcard, converts IDN to punycode', table([
    ['evil.com', 'domain', 'evil.com'],
    ['Evil.COM.', 'domain', 'evil.com'],
    ['*.evil.com', 'domain', 'evil.com'],
    ['.evil.com', 'domain', 'evil.com'],
    ['evil[.]co[.]uk', 'domain', 'evil.co.uk'],
    ['a.b.evil.co.uk', 'domain', 'a.b.evil.co.uk'],
    ['Bücher.de', 'domain', 'xn--bcher-kva.de'],
    ['ｅｖｉｌ。com', 'domain', 'evil.com'],
    ['1c26.dyndns.org', 'domain', '1c26.dyndns.org'],
    ['_dmarc.evil.com', 'domain', '_dmarc.evil.com'],
    ['foo-.evil.com', 'domain', 'foo-.evil.com'],
    ['x.github.io', 'domain', 'x.github.io'],
    ['github.io', 'domain', 'github.io'],
    ['evil.example', 'domain', 'evil.example'],
    ['evil.test', 'domain', 'evil.test'],
    ['printer.local', 'domain', 'printer.local'],
    ['abcdefghijklmnop.onion', 'domain', 'abcdefghijklmnop.onion'],
    ['amazonservers.bit', 'domain', 'amazonservers.bit'],
    ['evil.com:8080', 'domain', 'evil.com', { port: 8080 }],
    [`${'a'.repeat(63)}.com`, 'domain', `${'a'.repeat(63)}.com`],
  ]));
  it('refuses invalid names with a reason', () => {
    expectError('-container.supertms.com', 'domain label starts with a hyphen');
    expectError('com', /bare top-level domain/);
    expectError('co.uk', /public suffix/);
    expectError('*.co.uk', /public suffix/);
    expectError('example', /bare top-level domain/);
    expectError('localhost', /./);
    expectError('evil..com', /empty domain label/);
    expectError(`${'a'.repeat(64)}.com`, /longer than 63/);
    expectError(`${'abcdefghi.'.repeat(26)}com`, /longer than 253/);
    expectError('evil.eza', /unknown top-level domain "\.eza"/);
    expectError('evil.c0m1', /unknown top-level domain/);
    expectError('evil.123', /numeric top-level label/);
    expectError('176.123.5.126;65', /invalid character ";"/);
    expectError('evil!.com', /invalid character/);
    expectError('evil.com:99999', /port must be/);
    expectError('xn--\u0000.com', /control/);
    expectError('xn--0.evil.com', /invalid punycode/);
    expectOk('XN--BCHER-KVA.de', 'domain', 'xn--bcher-kva.de');
  });
});

describe('normalize: URLs', () => {
  it('canonicalizes Safe Browsing style', table([
    ['http://evil.com/a', 'url', 'http://evil.com/a'],
    ['HTTP://EVIL.COM/A', 'url', 'http://evil.com/A'],
    ['hxxp://Evil[.]example/a', 'url', 'http://evil.example/a'],
    ['http[:]//1[.]2[.]3[.]4[:]80/x', 'url', 'http://1.2.3.4/x'],
    ['https://evil.com:443/', 'url', 'https://evil.com/'],
    ['https://evil.com:80/', 'url', 'https://evil.com:80/'],
    ['http://evil.com:8080', 'url', 'http://evil.com:8080/'],
    ['ftp://evil.com:21/a', 'url', 'ftp://evil.com/a'],
    ['tftp[:]//91[.]92[.]42[.]213:69/phantom[.]sh', 'url', 'tftp://91.92.42.213/phantom.sh'],
    ['SMB://24.9.51.94/EDGEUPDATE/', 'url', 'smb://24.9.51.94/EDGEUPDATE/'],
    ['http://evil.com', 'url', 'http://evil.com/'],
    ['http://evil.com/a#frag', 'url', 'http://evil.com/a'],
    ['http://evil.com/a?b=1#frag', 'url', 'http://evil.com/a?b=1'],
    ['http://evil.com/a?', 'url', 'http://evil.com/a'],
    ['http://user:pw@evil.com/', 'url', 'http://evil.com/'],
    ['http://evil.com./', 'url', 'http://evil.com/'],
    ['http://..evil..com../', 'url', 'http://evil.com/'],
    ['http://%65vil.com/', 'url', 'http://evil.com/'],
    ['http://ＥＶＩＬ.com/', 'url', 'http://evil.com/'],
    ['http://bücher.de/ü', 'url', 'http://xn--bcher-kva.de/%C3%BC'],
    // dot segments, // collapse
    ['http://evil.com/a/./b/../c', 'url', 'http://evil.com/a/c'],
    ['http://evil.com/a/b/..', 'url', 'http://evil.com/a/'],
    ['http://evil.com/../../a', 'url', 'http://evil.com/a'],
    ['http://evil.com//a///b/', 'url', 'http://evil.com/a/b/'],
    ['http://evil.com/%2E%2E/a', 'url', 'http://evil.com/a'],
    ['http://evil.com/.well-known/x', 'url', 'http://evil.com/.well-known/x'],
    // repeated unescape, then re-escape of ≤0x20, ≥0x7f, #, %
    ['http://evil.com/%41%42', 'url', 'http://evil.com/AB'],
    ['http://evil.com/%2541', 'url', 'http://evil.com/A'],
    ['http://evil.com/%252541', 'url', 'http://evil.com/A'],
    ['http://evil.com/%20x%09', 'url', 'http://evil.com/%20x%09'],
    ['http://evil.com/a%23b', 'url', 'http://evil.com/a%23b'],
    ['http://evil.com/100%', 'url', 'http://evil.com/100%25'],
    ['http://evil.com/%zz', 'url', 'http://evil.com/%25zz'],
    ['http://evil.com/%e2%82%ac', 'url', 'http://evil.com/%E2%82%AC'],
    ['http://evil.com/%7f', 'url', 'http://evil.com/%7F'],
    ['http://evil.com/a%3Fb', 'url', 'http://evil.com/a%3Fb'],
    ['http://evil.com/a?q=%2541&r=%20&s=?', 'url', 'http://evil.com/a?q=A&r=%20&s=?'],
    ['http://evil.com/a?q=../b//c', 'url', 'http://evil.com/a?q=../b//c'],
    // canonicalization that assembles a defang token is refanged again, so the result is a fixed point
    ['http://evil.com/[//]', 'url', 'http://evil.com/'],
    ['http://evil.com/a%5B.%5Db', 'url', 'http://evil.com/a.b'],
    ['http://evil.com/a?q[]=1', 'url', 'http://evil.com/a?q[]=1'],
    // URL hosts that end in a number are IPv4 the way browsers read them
    ['http://0x7f.1/', 'url', 'http://127.0.0.1/'],
    ['http://3232235777/', 'url', 'http://192.168.1.1/'],
    ['http://0300.0250.01.01/', 'url', 'http://192.168.1.1/'],
    ['http://010.1.1.1/', 'url', 'http://8.1.1.1/'],
    ['http://[2001:DB8::1]:8080/x', 'url', 'http://[2001:db8::1]:8080/x'],
    ['http://[::ffff:1.2.3.4]/', 'url', 'http://1.2.3.4/'],
    // no scheme: a host followed by a path, query or fragment
    ['evil.com/path', 'url', 'http://evil.com/path'],
    ['Evil.com/a/../b', 'url', 'http://evil.com/b'],
    ['1.2.3.4:8080/x', 'url', 'http://1.2.3.4:8080/x'],
    ['evil.com?x=1', 'url', 'http://evil.com/?x=1'],
    ['evil.com/x?u=http://y.com/', 'url', 'http://evil.com/x?u=http://y.com/'],
    ['evil.com/123', 'url', 'http://evil.com/123'],
  ]));
  it('refuses hostless paths, bad schemes, bad hosts and ports', () => {
    expectError('/izuku.sh', 'URL path without host');
    expectError('/a/b?c', 'URL path without host');
    expectError('http:///a', 'URL without host');
    expectError('http://', 'URL without host');
    expectError('gopher://evil.com/', /unsupported URL scheme "gopher"/);
    expectError('javascript://evil.com/', /unsupported URL scheme/);
    expectError('1http://evil.com/', /malformed URL scheme/);
    expectError('http://evil.eza/', /URL host: unknown top-level domain/);
    expectError('http://-evil.com/', /URL host: domain label starts with a hyphen/);
    expectError('http://1.2.3.256/', 'URL host: invalid IPv4 address');
    expectError('http://1.2.3.4.5/', 'URL host: invalid IPv4 address');
    expectError('http://09.1.1.1/', 'URL host: invalid IPv4 address');
    expectError('http://evil.com:0/', /URL port/);
    expectError('http://evil.com:99999/', /URL port/);
    expectError('http://2001:db8::1/', /more than one ":"/);
    expectError('http://[2001:db8::1/', /unclosed/);
    expectError('http://co.uk/', /URL host: public suffix/);
  });
  it('follows a url hint for host-only values', () => {
    expectOk('evil.com', 'url', 'http://evil.com/', {}, 'url');
    expectOk('Evil[.]com:8080', 'url', 'http://evil.com:8080/', {}, 'url');
    expectOk('1.2.3.4', 'url', 'http://1.2.3.4/', {}, 'url');
    expectOk('2001:db8::1', 'url', 'http://[2001:db8::1]/', {}, 'url');
    expectOk('[2001:db8::1]:80', 'url', 'http://[2001:db8::1]/', {}, 'url');
    expectOk('hxxps://evil[.]com/a', 'url', 'https://evil.com/a', {}, 'url');
    // a URL hint reads '/8' as a path, never as a CIDR
    expect(normalize('10.0.0.0/8', 'url')).toEqual({ ok: true, type: 'url', value: 'http://10.0.0.0/8' });
    expectError('d41d8cd98f00b204e9800998ecf8427e', /URL host|expected url/, 'url');
  });
});

describe('normalize: email', () => {
  it('lowercases local part, normalizes the domain', table([
    ['User@Evil.COM', 'email', 'user@evil.com'],
    ['first.last+tag@evil.co.uk', 'email', 'first.last+tag@evil.co.uk'],
    ['mailto:Admin@Evil.com', 'email', 'admin@evil.com'],
    ['user[@]evil[.]com', 'email', 'user@evil.com'],
    ['user[at]bücher.de', 'email', 'user@xn--bcher-kva.de'],
  ]));
  it('refuses malformed addresses', () => {
    expectError('@evil.com', /local part and a domain/);
    expectError('user@', /local part and a domain/);
    expectError('us..er@evil.com', /local part/);
    expectError('.user@evil.com', /local part/);
    expectError('u(ser@evil.com', /local part/);
    expectError(`${'a'.repeat(65)}@evil.com`, /longer than 64/);
    expectError('user@com', /email domain: bare top-level/);
    expectError('user@1.2.3.4', /email domain/);
  });
});

describe('normalize: hints', () => {
  it('IP hints accept any IP type, other hints must match', () => {
    expectOk('10.0.0.0/8', 'ipv4-cidr', '10.0.0.0/8', { prefix: 8 }, 'ipv4');
    expectOk('1.2.3.4', 'ipv4', '1.2.3.4', {}, 'ipv4-cidr');
    expectOk('2001:db8::1', 'ipv6', '2001:db8::1', {}, 'ipv4');
    expectOk('evil.com', 'domain', 'evil.com', {}, 'domain');
    expectError('evil.com/x', 'expected domain, got url', 'domain');
    expectError('1.2.3.4', 'expected domain, got ipv4', 'domain');
    expectError('evil.com', 'expected ipv4, got domain', 'ipv4');
    expectError('evil.com', /local part and a domain/, 'email');
    expectError('010.1.1.1', /leading zero/, 'ipv4');
  });
});

describe('normalize is idempotent on every hand case', () => {
  it('normalize(normalize(x).value) === normalize(x)', () => {
    const raws = [
      '1.2.3.4:80', '2001:DB8::1', '10.1.2.3/8', 'Evil.COM.', 'Bücher.de', 'hxxp://Evil[.]example/a/../b?c#d',
      'http://evil.com/%2541%zz/./x//y?q=%00#f', 'http://0x7f.1/', 'User@Evil.COM', 'D41D8CD98F00B204E9800998ECF8427E',
      'http://evil.com/a%3F/./b', 'http://evil.com/a%2Fb/../c', 'ftp://evil.com:21/a',
    ];
    for (const raw of raws) {
      const r = normalize(raw);
      expect(r.ok, raw).toBe(true);
      if (!r.ok) continue;
      const again = normalize(r.value, r.type);
      expect(again.ok && again.value, raw).toBe(r.value);
      const auto = normalize(r.value);
      expect(auto.ok && auto.value, raw).toBe(r.value);
    }
  });
});

describe('parentDomains', () => {
  it('walks down to the registrable domain, never to a public suffix', () => {
    expect(parentDomains('a.b.evil.co.uk')).toEqual(['a.b.evil.co.uk', 'b.evil.co.uk', 'evil.co.uk']);
    expect(parentDomains('evil.com')).toEqual(['evil.com']);
    expect(parentDomains('x.y.evil.example')).toEqual(['x.y.evil.example', 'y.evil.example', 'evil.example']);
    expect(parentDomains('com')).toEqual([]);
    expect(parentDomains('co.uk')).toEqual([]);
  });
  it('stops at private suffixes by default (an allowlisted github.io must not clear its users)', () => {
    expect(parentDomains('evil.github.io')).toEqual(['evil.github.io']);
    expect(parentDomains('a.evil.github.io')).toEqual(['a.evil.github.io', 'evil.github.io']);
    expect(parentDomains('github.io')).toEqual(['github.io']);
    expect(parentDomains('a.evil.github.io', { icannOnly: true })).toEqual(['a.evil.github.io', 'evil.github.io', 'github.io']);
  });
});

describe('urlMatchKeys / urlHost', () => {
  it('gives the URL, the URL without query, and up to 4 root path prefixes', () => {
    expect(urlMatchKeys('http://a.b.com/1/2.html?param=1')).toEqual([
      'http://a.b.com/1/2.html?param=1', 'http://a.b.com/1/2.html', 'http://a.b.com/', 'http://a.b.com/1/',
    ]);
    expect(urlMatchKeys('http://a.b.com/1/2/3/4/5/6/7.html')).toEqual([
      'http://a.b.com/1/2/3/4/5/6/7.html', 'http://a.b.com/', 'http://a.b.com/1/', 'http://a.b.com/1/2/', 'http://a.b.com/1/2/3/',
    ]);
    expect(urlMatchKeys('http://a.b.com/')).toEqual(['http://a.b.com/']);
    expect(urlMatchKeys('http://a.b.com/?x')).toEqual(['http://a.b.com/?x', 'http://a.b.com/']);
    expect(urlMatchKeys('http://a.b.com/1/')).toEqual(['http://a.b.com/1/', 'http://a.b.com/']);
    expect(urlMatchKeys('https://[2001:db8::1]:8443/a/b')).toEqual([
      'https://[2001:db8::1]:8443/a/b', 'https://[2001:db8::1]:8443/', 'https://[2001:db8::1]:8443/a/',
    ]);
  });
  it('every key is at most 6, distinct, and a fixed point of normalize()', () => {
    for (const raw of ['http://a.b.com/1/2/3/4/5/6/7.html?q=1', 'evil.com/a%20b/c%3Fd/e?x=%23', 'http://1.2.3.4:8080/a/b/']) {
      const r = normalize(raw);
      expect(r.ok).toBe(true);
      if (!r.ok) continue;
      const keys = urlMatchKeys(r.value);
      expect(keys.length).toBeLessThanOrEqual(6);
      expect(new Set(keys).size).toBe(keys.length);
      for (const k of keys) expect(normalize(k)).toEqual({ ok: true, type: 'url', value: k });
    }
  });
  it('urlHost returns the domain or IP literal without port or brackets', () => {
    expect(urlHost('http://evil.com/a')).toBe('evil.com');
    expect(urlHost('http://evil.com:8080/a')).toBe('evil.com');
    expect(urlHost('http://1.2.3.4:8080/')).toBe('1.2.3.4');
    expect(urlHost('https://[2001:db8::1]:8443/x')).toBe('2001:db8::1');
    expect(urlHost('http://[2001:db8::1]/x')).toBe('2001:db8::1');
    const r = normalize('http://[2001:DB8:0::1]/');
    const host = urlHost(r.ok ? r.value : '');
    expect(normalize(host)).toEqual({ ok: true, type: 'ipv6', value: '2001:db8::1' });
  });
});

describe('cidrKey', () => {
  it('gives the same key normalize() gives for the listed network', () => {
    expect(cidrKey('10.1.2.3', 4, 8)).toBe('10.0.0.0/8');
    expect(cidrKey('10.1.2.3', 4, 0)).toBe('0.0.0.0/0');
    expect(cidrKey('10.1.2.3', 4, 32)).toBe('10.1.2.3');
    expect(cidrKey('2001:db8::1', 6, 32)).toBe('2001:db8::/32');
    expect(cidrKey('2001:db8::1', 6, 128)).toBe('2001:db8::1');
    for (const ip of ['1.2.3.4', '255.255.255.255', '192.168.77.129']) {
      for (let p = 0; p <= 32; p++) {
        const r = normalize(`${ip}/${p}`);
        expect(r.ok && r.value).toBe(cidrKey(ip, 4, p));
        const [net] = ipaddr.IPv4.networkAddressFromCIDR(`${ip}/${p}`).toString().split('/');
        expect(cidrKey(ip, 4, p).split('/')[0]).toBe(net);
      }
    }
    for (let p = 0; p <= 128; p++) {
      const ip = 'ffff:eeee:dddd:cccc:bbbb:aaaa:9999:8888';
      const r = normalize(`${ip}/${p}`);
      const key = cidrKey(ip, 6, p);
      expect(r.ok && r.value, `/${p}`).toBe(key);
      expect(key.split('/')[0]).toBe(ipaddr.IPv6.networkAddressFromCIDR(`${ip}/${p}`).toString());
    }
  });
  it('throws RangeError on a value normalize() would not produce', () => {
    expect(() => cidrKey('010.1.1.1', 4, 8)).toThrow(RangeError);
    expect(() => cidrKey('1.2.3.4', 4, 33)).toThrow(RangeError);
    expect(() => cidrKey('zz::1', 6, 64)).toThrow(RangeError);
  });
});
