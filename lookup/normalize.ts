// The one normalization engine: turns a raw indicator value (list line, API value, STIX/MISP
// attribute) into its canonical type and key. Provider build, import and lookup all call it, so a
// value listed in a feed and the same value looked up meet under the same key.
//
// Pipeline: trim → strip surrounding quotes/backticks and <> → refang → reject internal whitespace
// and control characters → detect type (or follow `hint`) → canonicalize. normalize() never throws.
//
// Rules (each is proved in lookup/normalize.test.ts; test/normalize-real-data.test.ts and
// test/normalize-property.test.ts run them over the shared data and fast-check inputs):
// - Refang: hxxp/hxxps/hXXp/fxp (scheme position) → http/https/ftp; [.] (.) {.} [dot] (dot) {dot} → .;
//   [:] → :; [://] → ://; [@] [at] (at) → @; [/] → /. Applied until nothing changes, so it is idempotent.
// - Whitespace inside a value is refused, not removed: Safe Browsing drops tab/CR/LF inside URLs,
//   but on list data that would merge columns (`1.2.3.4\t5` → `1.2.3.45`). Comments are the source
//   parsers' job, so `1.2.3.0/24 # shodan` is refused here.
// - Hashes: 32/40/64 hex → md5/sha1/sha256, lowercased.
// - IPv4 (bare, as listed or looked up): strict dotted quad only. Leading zeros are refused as
//   ambiguous (octal in inet_aton, decimal elsewhere), as are short (`1.1`), integer and hex forms.
//   `ip:port` → address + port (1–65535); `ip:port:port` is malformed.
// - IPv6: ipaddr.js, canonical compressed lowercase (RFC 5952); `[v6]` and `[v6]:port` accepted;
//   zone ids refused; an embedded dotted IPv4 tail must itself be a strict dotted quad;
//   IPv4-mapped `::ffff:a.b.c.d` becomes ipv4. (Dotted tails are converted here, not by ipaddr.js,
//   which would read `::1.2.3.4` as mapped.)
// - CIDR: `ipv4-cidr`/`ipv6-cidr`, value `network/prefix` with host bits zeroed (masked silently);
//   /32 (/128) collapses to the plain address. /0 is syntactically valid: refusing over-broad
//   networks is the importer's policy, not syntax. A mapped v6 network with prefix ≥ 96 becomes v4.
// - Domain: lowercase, one trailing dot dropped, leading `*.` or `.` dropped (wildcard = the domain
//   and its subdomains), IDN → punycode (node:url domainToASCII). Labels 1–63 chars of
//   [a-z0-9-_] (underscore tolerated: real DNS names use it), no label may start with a hyphen
//   (a trailing hyphen is tolerated, it occurs in real subdomains), total ≤ 253. The suffix must be
//   an ICANN public suffix known to tldts, or one of the reserved/special TLDs in RESERVED_TLDS
//   (example, test, local, onion, bit, …: lab and internal names, Namecoin C2). A bare TLD or a
//   public suffix alone (`com`, `co.uk`) is not a domain. `host:port` → domain + port. ASCII xn--
//   labels must decode. Unknown TLDs (`.eza`, `.loc` in real trails) are refused with the TLD named.
// - URL: with a scheme, or without one when a host is followed by `/`, `?` or `#` (`evil.com/x`).
//   A path with no host (`/izuku.sh`) is refused: "URL path without host". Schemes: http, https, ftp,
//   and tftp/smb because real feeds list them (URLhaus tftp droppers, ESET smb shares); anything else
//   (javascript:, data:, gopher://…) is refused. Canonical form after Google Safe Browsing: drop the
//   fragment and any userinfo, lowercase scheme and host, default scheme http, drop the scheme's
//   default port (80/443/21/69/445), host percent-unescaped, leading/trailing dots stripped
//   and runs of dots collapsed, then normalized like a domain or IP; URL hosts that end in a number
//   are parsed as IPv4 the way browsers do (inet_aton: decimal/octal/hex, 1–4 parts) because that is
//   what a browser would connect to — unlike bare IPv4 values. Path: repeatedly percent-unescaped,
//   `.`/`..` resolved, `//` collapsed, then bytes ≤ 0x20, ≥ 0x7f, `#`, `%` and (our addition, so
//   the result parses back to the same path) `?` re-escaped as %XX uppercase; empty path → `/`.
//   The query is kept, unescaped/re-escaped the same way (without touching `?`); an empty query is
//   dropped. IPv6 hosts stay bracketed. If canonicalization assembles a defang token (`/%5B.%5D`)
//   the result is refanged and canonicalized again, so every output is a fixed point of normalize().
// - Values longer than 8,192 characters are refused.
// - Email: `local@domain` (optionally `mailto:`), local part lowercased and RFC 5322 atext,
//   domain normalized as above.
// - hint: 'url' turns a host-only value into a URL (`evil.com` → `http://evil.com/`); any IP hint
//   accepts any of the four IP types; other hints must match the detected type exactly.
import ipaddr from 'ipaddr.js';
import { parse as parseTld } from 'tldts';
import { domainToASCII } from 'node:url';
import { createRequire } from 'node:module';
import type { IndicatorType, NormalizeResult } from '../appliance/types.ts';

/** Longer raw input is refused before any work is done on it. */
const MAX_RAW_LENGTH = 65_536;
/** Longest accepted value after trimming (long URLs exist; megabyte "URLs" are abuse). */
const MAX_VALUE_LENGTH = 8_192;

/** TLDs that are not ICANN public suffixes but are real in lab, internal or threat data. */
const RESERVED_TLDS = new Set([
  'example', 'test', 'invalid', 'localhost', 'local', 'internal', 'lan', 'home', 'corp', 'intranet',
  'private', 'bit',
]);

const ICANN_OPTS = {
  allowPrivateDomains: false,
  extractHostname: false,
  validateHostname: false,
  detectIp: false,
  mixedInputs: false,
} as const;
const PRIVATE_OPTS = { ...ICANN_OPTS, allowPrivateDomains: true } as const;

type Fail = { ok: false; error: string };
const fail = (error: string): Fail => ({ ok: false, error });

// ---------------------------------------------------------------------------------------------
// refang / defang

const DEFANG_TOKENS = /\[\.\]|\(\.\)|\{\.\}|\[dot\]|\(dot\)|\{dot\}|\[:\/\/\]|\[:\]|\[@\]|\[at\]|\(at\)|\[\/\]/gi;
const DEFANG_SCHEME = /^(hxxp|fxp)(s?)(?=:|\[:)/i;

function refangToken(t: string): string {
  switch (t.length) {
    case 3:
      if (t[1] === '.') return '.';
      if (t[1] === ':') return ':';
      if (t[1] === '@') return '@';
      return '/';
    case 4:
      return '@'; // [at] (at)
    case 5:
      return t[1] === ':' ? '://' : '.'; // [://] or [dot]
    default:
      return t;
  }
}

/** Undo common defanging. Idempotent: applied until the string stops changing (each pass shortens it). */
export function refang(s: string): string {
  for (;;) {
    const c0 = s.charCodeAt(0) | 0x20;
    const c1 = s.charCodeAt(1) | 0x20;
    const schemeDefanged = (c0 === 0x68 && c1 === 0x78) || (c0 === 0x66 && c1 === 0x78); // hx… / fx…
    if (!schemeDefanged && s.indexOf('[') < 0 && s.indexOf('(') < 0 && s.indexOf('{') < 0) return s;
    let out = s.replace(DEFANG_TOKENS, refangToken);
    if (schemeDefanged) {
      out = out.replace(DEFANG_SCHEME, (_m, p: string, sec: string) => ((p[0] === 'f' || p[0] === 'F') ? 'ftp' : 'http') + sec.toLowerCase());
    }
    if (out === s) return s;
    s = out;
  }
}

/** Display form (and round-trip tests): scheme http→hxxp, every `.` → `[.]`. refang() undoes it. */
export function defang(value: string): string {
  let s = value;
  if (/^http(?=s?:)/i.test(s)) s = 'hxxp' + s.slice(4);
  return s.split('.').join('[.]');
}

// ---------------------------------------------------------------------------------------------
// IPv4

const V4_BAD_CHAR = -1;
const V4_LEADING_ZERO = -2;
const V4_RANGE = -3;
const V4_PARTS = -4;
const V4_EMPTY = -5;

/** Strict dotted quad on s[start, end) without allocating: uint32 value, or a negative V4_* code. */
export function parseV4(s: string, start = 0, end = s.length): number {
  let parts = 0;
  let acc = 0;
  let digits = 0;
  let result = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0) return V4_EMPTY;
      if (parts === 3) return V4_PARTS;
      result = result * 256 + acc;
      parts++;
      acc = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 1 && acc === 0) return V4_LEADING_ZERO;
      acc = acc * 10 + (c - 48);
      digits++;
      if (acc > 255) return V4_RANGE;
    } else {
      return V4_BAD_CHAR;
    }
  }
  if (digits === 0) return V4_EMPTY;
  if (parts !== 3) return V4_PARTS;
  return result * 256 + acc;
}

function v4Error(code: number): string {
  switch (code) {
    case V4_LEADING_ZERO: return 'ambiguous leading zero (octal?) in IPv4 address';
    case V4_RANGE: return 'IPv4 octet out of range (0-255)';
    case V4_PARTS: return 'IPv4 address must be 4 dotted decimal parts (short, integer and hex forms are ambiguous)';
    case V4_EMPTY: return 'empty IPv4 octet';
    default: return 'not a dotted-quad IPv4 address';
  }
}

function v4ToString(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

function v4Mask(n: number, prefix: number): number {
  if (prefix === 0) return 0;
  return (n & (0xffffffff << (32 - prefix))) >>> 0;
}

/** h[start, end) is `0x` followed by hex digits. */
function isHexLabel(h: string, start: number, end: number): boolean {
  if (end - start < 2 || h.charCodeAt(start) !== 48 || h.charCodeAt(start + 1) !== 120) return false;
  for (let i = start + 2; i < end; i++) {
    const c = h.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

function isDigitsDots(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c !== 46 && (c < 48 || c > 57)) return false;
  }
  return true;
}

/** Browser/inet_aton IPv4 host parse for URLs (1–4 parts, decimal/0-octal/0x-hex). -1 on failure. */
function parseUrlV4(host: string): number {
  const parts = host.split('.');
  if (parts.length > 4) return -1;
  const nums: number[] = [];
  for (const p of parts) {
    if (p === '') return -1;
    let radix = 10;
    let digits = p;
    if (p.length >= 2 && p[0] === '0' && (p[1] === 'x' || p[1] === 'X')) {
      radix = 16;
      digits = p.slice(2);
    } else if (p.length >= 2 && p[0] === '0') {
      radix = 8;
      digits = p.slice(1);
    }
    let n = 0;
    let significant = 0;
    for (let i = 0; i < digits.length; i++) {
      const c = digits.charCodeAt(i) | (radix === 16 ? 0x20 : 0);
      let d: number;
      if (c >= 48 && c <= 57) d = c - 48;
      else if (radix === 16 && c >= 97 && c <= 102) d = c - 87;
      else return -1;
      if (d >= radix) return -1;
      if (n > 0 || d > 0) significant++;
      if (significant > 11) return -1; // beyond any 32-bit value in any radix
      n = n * radix + d;
    }
    nums.push(n);
  }
  let result = 0;
  for (let i = 0; i < nums.length - 1; i++) {
    if (nums[i] > 255) return -1;
    result = result * 256 + nums[i];
  }
  const last = nums[nums.length - 1];
  const room = 4 - (nums.length - 1);
  if (last >= 256 ** room) return -1;
  return result * 256 ** room + last;
}

/** WHATWG "ends in a number": the last label is all digits or 0x-hex, so the host must be IPv4. */
function endsInNumber(host: string): boolean {
  const last = host.slice(host.lastIndexOf('.') + 1);
  if (last === '') return false;
  if (/^[0-9]+$/.test(last)) return true;
  return /^0x[0-9a-f]*$/i.test(last);
}

// ---------------------------------------------------------------------------------------------
// IPv6

type V6 = { v4: number } | { v6: ipaddr.IPv6 } | { error: string };

function parseV6(s: string): V6 {
  if (s.indexOf('%') >= 0) return { error: 'IPv6 zone id not allowed' };
  let text = s;
  const dot = s.indexOf('.');
  if (dot >= 0) {
    // ipaddr.js reads embedded dotted tails leniently; hold them to the same strict rule as IPv4.
    const lastColon = s.lastIndexOf(':');
    if (lastColon < 0 || lastColon > dot) return { error: 'not a valid IPv6 address' };
    const n = parseV4(s, lastColon + 1, s.length);
    if (n < 0) return { error: `embedded ${v4Error(n)}` };
    text = `${s.slice(0, lastColon + 1)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i) | 0x20;
    if (!((c >= 48 && c <= 58) || (c >= 97 && c <= 102))) return { error: 'not a valid IPv6 address' };
  }
  let addr: ipaddr.IPv6;
  try {
    addr = ipaddr.IPv6.parse(text); // parse alone: isValid() would parse twice
  } catch {
    return { error: 'not a valid IPv6 address' };
  }
  if (addr.isIPv4MappedAddress()) {
    const b = addr.toIPv4Address().octets;
    return { v4: ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0 };
  }
  return { v6: addr };
}

function v6Mask(addr: ipaddr.IPv6, prefix: number): ipaddr.IPv6 {
  const parts = addr.parts.slice();
  for (let i = 0; i < 8; i++) {
    const keep = prefix - i * 16;
    if (keep >= 16) continue;
    parts[i] = keep <= 0 ? 0 : parts[i] & ((0xffff << (16 - keep)) & 0xffff);
  }
  return new ipaddr.IPv6(parts);
}

// ---------------------------------------------------------------------------------------------
// ports, prefixes, hashes

/** Decimal 1–65535; -1 if malformed. */
function parsePort(s: string, start: number, end: number): number {
  if (end - start < 1 || end - start > 5) return -1;
  let n = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
    n = n * 10 + (c - 48);
  }
  return n >= 1 && n <= 65535 ? n : -1;
}

/** Prefix length without leading zeros, 0..max; -1 if malformed. */
function parsePrefix(s: string, max: number): number {
  if (s.length < 1 || s.length > 3 || (s.length > 1 && s[0] === '0')) return -1;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
    n = n * 10 + (c - 48);
  }
  return n <= max ? n : -1;
}

/** Character classes of hexKind: 0-9 a-f, A-F, anything else. */
const HEX_LOWER = 1;
const HEX_UPPER = 2;
const HEX_BAD = 4;
const HEX_CLASS = new Uint8Array(128).fill(HEX_BAD);
for (let c = 48; c <= 57; c++) HEX_CLASS[c] = HEX_LOWER;
for (let c = 97; c <= 102; c++) HEX_CLASS[c] = HEX_LOWER;
for (let c = 65; c <= 70; c++) HEX_CLASS[c] = HEX_UPPER;

/** 0 = not hex; else 1 = all lowercase hex, 2 = hex with some uppercase. */
function hexKind(s: string): number {
  // Branch-free over the characters: random hex digits make a digit-or-letter test mispredict about every
  // third character (~5 ns each); or-ing table classes costs one load per character (2× faster at 64).
  let m = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    m |= c < 128 ? HEX_CLASS[c] : HEX_BAD;
  }
  return m & HEX_BAD ? 0 : m & HEX_UPPER ? 2 : 1;
}

const HASH_BY_LENGTH: Record<number, IndicatorType> = { 32: 'md5', 40: 'sha1', 64: 'sha256' };

// ---------------------------------------------------------------------------------------------
// domains

/**
 * Canonical domain or an error message. `h` has no whitespace/control characters. Fast path:
 * an already-lowercase LDH name skips lowercasing and IDN conversion.
 */
function canonDomain(h: string): string | Fail {
  let nonAscii = false;
  let upper = false;
  for (let i = 0; i < h.length; i++) {
    const c = h.charCodeAt(i);
    if (c >= 0x80) nonAscii = true;
    else if (c >= 65 && c <= 90) upper = true;
  }
  if (nonAscii) {
    const a = domainToASCII(h);
    if (a === '') return fail('invalid internationalized domain name');
    h = a;
  } else {
    if (upper) h = h.toLowerCase();
    // ASCII punycode labels must decode, or the same name would have two spellings
    if (h.indexOf('xn--') >= 0) {
      const a = domainToASCII(h);
      if (a === '') return fail('invalid punycode (xn--) label');
      h = a;
    }
  }
  if (h.charCodeAt(h.length - 1) === 46) h = h.slice(0, -1);
  if (h === '') return fail('empty domain');
  if (h.length > 253) return fail('domain longer than 253 characters');

  let labelStart = 0;
  let allNumericish = true; // every label so far is decimal or 0x-hex: an inet_aton-style IPv4
  let labelDigitsOnly = true;
  for (let i = 0; i <= h.length; i++) {
    const c = i < h.length ? h.charCodeAt(i) : 46;
    if (c === 46) {
      const len = i - labelStart;
      if (len === 0) return fail('empty domain label (consecutive dots)');
      if (len > 63) return fail('domain label longer than 63 characters');
      if (h.charCodeAt(labelStart) === 45) return fail('domain label starts with a hyphen');
      if (allNumericish && !labelDigitsOnly) allNumericish = isHexLabel(h, labelStart, i);
      if (i === h.length && labelDigitsOnly && !allNumericish) return fail('numeric top-level label');
      labelStart = i + 1;
      labelDigitsOnly = true;
    } else if ((c >= 97 && c <= 122) || c === 45 || c === 95) {
      labelDigitsOnly = false;
    } else if (!(c >= 48 && c <= 57)) {
      return fail(`invalid character ${JSON.stringify(String.fromCharCode(c))} in domain`);
    }
  }
  if (allNumericish) return fail('not a canonical IPv4 address (octal, hex, short or integer form)');
  const tldStart = h.lastIndexOf('.') + 1;

  const p = parseTld(h, ICANN_OPTS);
  if (!p.isIcann && !RESERVED_TLDS.has(h.slice(tldStart))) {
    return fail(`unknown top-level domain ".${h.slice(tldStart)}"`);
  }
  if (p.domain === null) {
    return fail(tldStart === 0 ? 'bare top-level domain, not a domain' : 'public suffix, not a registrable domain');
  }
  return h;
}

// ---------------------------------------------------------------------------------------------
// URL

/** Accepted URL schemes and their default ports. tftp and smb occur in real feeds (URLhaus, ESET MISP). */
const SCHEMES: Record<string, number> = { http: 80, https: 443, ftp: 21, tftp: 69, smb: 445 };

const HEX = '0123456789ABCDEF';
const ESCAPED: string[] = [];
for (let c = 0; c < 256; c++) ESCAPED.push('%' + HEX[c >> 4] + HEX[c & 15]);

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  c |= 0x20;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/** Percent-unescape until no %XX is left (each pass shortens the buffer, so it ends). */
function fullyUnescape(buf: Buffer): Buffer {
  for (;;) {
    if (buf.indexOf(0x25) < 0) return buf;
    const out = Buffer.allocUnsafe(buf.length);
    let j = 0;
    let changed = false;
    for (let i = 0; i < buf.length; i++) {
      const c = buf[i];
      if (c === 0x25 && i + 2 < buf.length) {
        const hi = hexVal(buf[i + 1]);
        const lo = hexVal(buf[i + 2]);
        if (hi >= 0 && lo >= 0) {
          out[j++] = hi * 16 + lo;
          i += 2;
          changed = true;
          continue;
        }
      }
      out[j++] = c;
    }
    if (!changed) return buf;
    buf = out.subarray(0, j);
  }
}

function escapeBytes(buf: Buffer, escapeQuestion: boolean): string {
  let s = '';
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i];
    if (c <= 0x20 || c >= 0x7f || c === 0x23 || c === 0x25 || (escapeQuestion && c === 0x3f)) s += ESCAPED[c];
    else s += String.fromCharCode(c);
  }
  return s;
}

/** Path already canonical: no escapes, non-ASCII, `//` or dot segments. */
function pathIsCanonical(p: string): boolean {
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i);
    if (c >= 0x7f || c === 0x25 || c === 0x23) return false;
    if (c === 47 && i + 1 < p.length) {
      const n = p.charCodeAt(i + 1);
      if (n === 47 || n === 46) return false;
    }
  }
  return true;
}

function canonPath(p: string): string {
  if (p === '' || p === '/') return '/';
  if (pathIsCanonical(p)) return p;
  const raw = fullyUnescape(Buffer.from(p, 'utf8')).toString('latin1');
  // Resolve on the unescaped bytes (latin1 keeps one char per byte), as Safe Browsing does.
  const segs = raw.split('/');
  const out: string[] = [];
  let trailingSlash = false;
  for (let i = 1; i < segs.length; i++) {
    const seg = segs[i];
    const last = i === segs.length - 1;
    if (seg === '' || seg === '.') {
      trailingSlash = last;
    } else if (seg === '..') {
      out.pop();
      trailingSlash = last;
    } else {
      out.push(seg);
      trailingSlash = false;
    }
  }
  const joined = out.length === 0 ? '/' : '/' + out.join('/') + (trailingSlash ? '/' : '');
  return escapeBytes(Buffer.from(joined, 'latin1'), true);
}

function canonQuery(q: string): string {
  let plain = true;
  for (let i = 0; i < q.length; i++) {
    const c = q.charCodeAt(i);
    if (c >= 0x7f || c === 0x25 || c === 0x23) { plain = false; break; }
  }
  if (plain) return q;
  return escapeBytes(fullyUnescape(Buffer.from(q, 'utf8')), false);
}

type Host = { host: string; v4?: boolean; v6?: boolean };

function canonUrlHost(raw: string): Host | Fail {
  if (raw.charCodeAt(0) === 91) {
    const v = parseV6(raw.slice(1, -1));
    if ('error' in v) return fail(`URL host: ${v.error}`);
    if ('v4' in v) return { host: v4ToString(v.v4), v4: true };
    return { host: `[${v.v6.toString()}]`, v6: true };
  }
  let h = raw;
  if (h.indexOf('%') >= 0) h = fullyUnescape(Buffer.from(h, 'utf8')).toString('utf8');
  if (/[A-Z]/.test(h)) h = h.toLowerCase();
  if (h.charCodeAt(0) === 46 || h.charCodeAt(h.length - 1) === 46 || h.indexOf('..') >= 0) {
    h = h.split('.').filter((x) => x !== '').join('.');
  }
  if (h === '') return fail('URL without host');
  if (endsInNumber(h)) {
    const n = parseUrlV4(h);
    if (n < 0) return fail('URL host: invalid IPv4 address');
    return { host: v4ToString(n), v4: true };
  }
  const d = canonDomain(h);
  if (typeof d !== 'string') return fail(`URL host: ${d.error}`);
  return { host: d };
}

/** Index of the scheme's '://', or -1 when there is none before the path/query/fragment. */
function schemeSep(s: string): number {
  const sep = s.indexOf('://');
  if (sep < 0) return -1;
  for (let i = 0; i < sep; i++) {
    const c = s.charCodeAt(i);
    if (c === 47 || c === 63 || c === 35) return -1; // '://' inside the path or query
  }
  return sep;
}

function normalizeUrl(s: string): NormalizeResult {
  // Unescaping and collapsing can assemble a defang token (`/%5B.%5D`, `/[//]` → `/[/]`). The output
  // is refanged and canonicalized again until stable so that it is a fixed point of normalize().
  // Terminates: canonical output never escapes brackets, so each further round only removes tokens.
  for (let round = 0; round < 32; round++) {
    const r = canonUrl(s);
    if (!r.ok) return r;
    const again = refang(r.value);
    if (again === r.value) return r;
    s = again;
  }
  return fail('URL does not settle under refang and canonicalization');
}

function canonUrl(s: string): NormalizeResult {
  let scheme = 'http';
  let rest = s;
  const sep = schemeSep(s);
  if (sep >= 0) {
    scheme = s.slice(0, sep).toLowerCase();
    if (!/^[a-z][a-z0-9+.-]*$/.test(scheme)) return fail('malformed URL scheme');
    if (SCHEMES[scheme] === undefined) return fail(`unsupported URL scheme "${scheme}" (http, https, ftp, tftp, smb only)`);
    rest = s.slice(sep + 3);
  }
  const hash = rest.indexOf('#');
  if (hash >= 0) rest = rest.slice(0, hash);

  let end = rest.length;
  for (let i = 0; i < rest.length; i++) {
    const c = rest.charCodeAt(i);
    if (c === 47 || c === 63) { end = i; break; }
  }
  let authority = rest.slice(0, end);
  const at = authority.lastIndexOf('@');
  if (at >= 0) authority = authority.slice(at + 1); // userinfo is not part of what is fetched

  let hostPart = authority;
  let port = -1;
  if (authority.charCodeAt(0) === 91) {
    const close = authority.indexOf(']');
    if (close < 0) return fail('URL host: unclosed IPv6 bracket');
    hostPart = authority.slice(0, close + 1);
    const after = authority.slice(close + 1);
    if (after !== '' && after !== ':') {
      if (after[0] !== ':') return fail('URL host: junk after IPv6 address');
      port = parsePort(after, 1, after.length);
      if (port < 0) return fail('URL port must be 1-65535');
    }
  } else {
    const colon = authority.indexOf(':');
    if (colon >= 0) {
      if (authority.indexOf(':', colon + 1) >= 0) return fail('URL host: more than one ":" (unbracketed IPv6 or malformed port)');
      hostPart = authority.slice(0, colon);
      if (colon + 1 < authority.length) {
        port = parsePort(authority, colon + 1, authority.length);
        if (port < 0) return fail('URL port must be 1-65535');
      }
    }
  }
  if (hostPart === '') return fail(sep >= 0 ? 'URL without host' : 'URL path without host');
  const host = canonUrlHost(hostPart);
  if ('ok' in host) return host;

  const pathAndQuery = rest.slice(end);
  const q = pathAndQuery.indexOf('?');
  const path = canonPath(q >= 0 ? pathAndQuery.slice(0, q) : pathAndQuery);
  const query = q >= 0 ? canonQuery(pathAndQuery.slice(q + 1)) : '';

  let value = scheme + '://' + host.host;
  if (port >= 0 && port !== SCHEMES[scheme]) value += ':' + port;
  value += path;
  if (query !== '') value += '?' + query;
  return { ok: true, type: 'url', value };
}

// ---------------------------------------------------------------------------------------------
// email

const ATEXT = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;

function normalizeEmail(s: string): NormalizeResult {
  if (s.length > 7 && s.slice(0, 7).toLowerCase() === 'mailto:') s = s.slice(7);
  const at = s.lastIndexOf('@');
  if (at <= 0 || at === s.length - 1) return fail('email needs a local part and a domain');
  const local = s.slice(0, at).toLowerCase();
  if (local.length > 64) return fail('email local part longer than 64 characters');
  if (!ATEXT.test(local)) return fail('invalid email local part');
  const d = canonDomain(s.slice(at + 1));
  if (typeof d !== 'string') return fail(`email domain: ${d.error}`);
  return { ok: true, type: 'email', value: local + '@' + d };
}

// ---------------------------------------------------------------------------------------------
// detection

function ipv4Result(n: number, port: number): NormalizeResult {
  return port > 0 ? { ok: true, type: 'ipv4', value: v4ToString(n), port } : { ok: true, type: 'ipv4', value: v4ToString(n) };
}

function v6Result(v: V6, port: number): NormalizeResult {
  if ('error' in v) return fail(v.error);
  if ('v4' in v) return ipv4Result(v.v4, port);
  const value = v.v6.toString();
  return port > 0 ? { ok: true, type: 'ipv6', value, port } : { ok: true, type: 'ipv6', value };
}

function normalizeCidr(head: string, tail: string): NormalizeResult {
  if (head.indexOf(':') < 0) {
    const n = parseV4(head, 0, head.length);
    if (n < 0) return fail(`CIDR: ${v4Error(n)}`);
    const prefix = parsePrefix(tail, 32);
    if (prefix < 0) return fail('CIDR prefix length must be 0-32');
    const net = v4Mask(n, prefix);
    if (prefix === 32) return { ok: true, type: 'ipv4', value: v4ToString(net) };
    return { ok: true, type: 'ipv4-cidr', value: `${v4ToString(net)}/${prefix}`, prefix };
  }
  const v = parseV6(head);
  if ('error' in v) return fail(`CIDR: ${v.error}`);
  const prefix = parsePrefix(tail, 128);
  if (prefix < 0) return fail('CIDR prefix length must be 0-128');
  if ('v4' in v) {
    if (prefix < 96) return fail('CIDR: IPv4-mapped network shorter than /96');
    return normalizeCidr(v4ToString(v.v4), String(prefix - 96));
  }
  const net = v6Mask(v.v6, prefix).toString();
  if (prefix === 128) return { ok: true, type: 'ipv6', value: net };
  return { ok: true, type: 'ipv6-cidr', value: `${net}/${prefix}`, prefix };
}

/** host or host:port where host is IPv4, IPv6 (bracketed when a port follows) or a domain. */
function normalizeHostValue(s: string): NormalizeResult {
  if (s.charCodeAt(0) === 91) {
    const close = s.indexOf(']');
    if (close < 0) return fail('unclosed IPv6 bracket');
    let port = 0;
    if (close + 1 < s.length) {
      if (s[close + 1] !== ':') return fail('junk after bracketed IPv6 address');
      port = parsePort(s, close + 2, s.length);
      if (port < 0) return fail('port must be 1-65535');
    }
    return v6Result(parseV6(s.slice(1, close)), port);
  }
  const colon = s.indexOf(':');
  if (colon >= 0 && s.indexOf(':', colon + 1) >= 0) {
    // Two or more colons: IPv6, unless it starts like IPv4 (`139.9.234.13:33:1099`).
    if (isDigitsDots(s.slice(0, colon)) && s.slice(0, colon).indexOf('.') >= 0) {
      return fail('malformed ip:port (more than one ":")');
    }
    return v6Result(parseV6(s), 0);
  }
  let host = s;
  let port = 0;
  if (colon >= 0) {
    host = s.slice(0, colon);
    port = parsePort(s, colon + 1, s.length);
    if (port < 0) return fail('port must be 1-65535');
    if (host === '') return fail('port without host');
  }
  if (isDigitsDots(host) && host !== '' && host.replaceAll('.', '') !== '') {
    const n = host.indexOf('.') < 0 ? V4_PARTS : parseV4(host, 0, host.length); // an integer is a short form
    if (n < 0) return fail(v4Error(n));
    return ipv4Result(n, port);
  }
  if (host.charCodeAt(0) === 42 && host.charCodeAt(1) === 46) host = host.slice(2); // *.evil.com
  else if (host.charCodeAt(0) === 46) host = host.slice(1); // .evil.com
  const d = canonDomain(host);
  if (typeof d !== 'string') return d;
  return port > 0 ? { ok: true, type: 'domain', value: d, port } : { ok: true, type: 'domain', value: d };
}

/** Type detection on a trimmed, refanged, whitespace-free, non-empty value. */
function detect(s: string): NormalizeResult {
  const len = s.length;
  if (len === 32 || len === 40 || len === 64) {
    const k = hexKind(s);
    if (k !== 0) return { ok: true, type: HASH_BY_LENGTH[len], value: k === 1 ? s : s.toLowerCase() };
  }
  const c0 = s.charCodeAt(0);
  if (c0 >= 48 && c0 <= 57) {
    const n = parseV4(s, 0, len);
    if (n >= 0) return { ok: true, type: 'ipv4', value: s }; // strict form is already canonical
    if (n === V4_BAD_CHAR) {
      // ip:port fast path (maltrail lists tens of thousands of them)
      const colon = s.indexOf(':');
      if (colon > 0 && parseV4(s, 0, colon) >= 0) {
        const port = parsePort(s, colon + 1, len);
        if (port > 0) return { ok: true, type: 'ipv4', value: s.slice(0, colon), port };
      }
    }
  }
  if (schemeSep(s) >= 0) return normalizeUrl(s);
  if (c0 === 47) return fail('URL path without host');
  const slash = s.indexOf('/');
  if (slash > 0) {
    const head = s.slice(0, slash);
    const tail = s.slice(slash + 1);
    if (/^[0-9]+$/.test(tail) && ((isDigitsDots(head) && head.indexOf('.') >= 0) || head.indexOf(':') !== head.lastIndexOf(':'))) {
      return normalizeCidr(head, tail);
    }
    return normalizeUrl(s);
  }
  if (s.indexOf('@') >= 0) return normalizeEmail(s);
  if (s.indexOf('?') >= 0 || s.indexOf('#') >= 0) return normalizeUrl(s);
  return normalizeHostValue(s);
}

const IP_TYPES = new Set<IndicatorType>(['ipv4', 'ipv6', 'ipv4-cidr', 'ipv6-cidr']);

function withHint(s: string, hint: IndicatorType): NormalizeResult {
  if (hint === 'url') {
    if (s.indexOf('/') >= 0 || s.indexOf('?') >= 0 || s.indexOf('#') >= 0) return normalizeUrl(s);
    const r = normalizeHostValue(s);
    if (!r.ok) return fail(`URL host: ${r.error}`);
    if (r.type === 'domain' || r.type === 'ipv4' || r.type === 'ipv6') {
      const host = r.type === 'ipv6' ? `[${r.value}]` : r.value;
      return normalizeUrl(`http://${host}${r.port ? ':' + r.port : ''}/`);
    }
    return fail(`expected url, got ${r.type}`);
  }
  if (hint === 'email') return normalizeEmail(s);
  const r = detect(s);
  if (!r.ok) return r;
  if (r.type === hint || (IP_TYPES.has(hint) && IP_TYPES.has(r.type))) return r;
  return fail(`expected ${hint}, got ${r.type}`);
}

function isWrapper(a: number, b: number): boolean {
  return (a === 34 && b === 34) || (a === 39 && b === 39) || (a === 96 && b === 96) || (a === 60 && b === 62);
}

/** Whitespace in the middle of a value (ASCII and Unicode spaces) or a control character; '' if none. */
function badCharReason(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x20 && c < 0x7f) continue;
    if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d || c === 0x0b || c === 0x0c) {
      return 'contains whitespace (one value per field; comments must be stripped first)';
    }
    if (c < 0x20 || c === 0x7f || (c >= 0x80 && c < 0xa0)) return 'contains a control character';
    if (c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 ||
        c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff) {
      return 'contains whitespace (one value per field; comments must be stripped first)';
    }
  }
  return '';
}

// ---------------------------------------------------------------------------------------------
// fast paths for values already in canonical form
//
// Lookups mostly receive values that are already canonical (a sensor's dotted quad, a lowercase hash,
// a DNS name, a plain URL). For those the general pipeline (trim, unwrap, refang, character checks,
// detection, tldts) returns the input unchanged; canonicalFast() proves that in one scan and returns the
// same result, or null to take the general path. Every accepted shape is checked against the rules the
// general path applies (comments below say which); the normalize tests run both paths on real data.

/**
 * Public-suffix decision per top-level label, from tldts' own trie (the data parseTld walks): a TLD is
 * "simple" when it is an ICANN rule and no ICANN rule or exception lies below it. Then every name
 * `label(.label)*.tld` has public suffix `tld` and a registrable domain, so tldts need not run.
 * Anything else (co.uk-style, wildcards, exceptions, reserved or unknown TLDs) takes the general path.
 */
type Trie = {
  nodeFlags: Uint8Array; edgeStart: Uint32Array; edgeLength: Uint8Array; edgeChild: Uint32Array;
  labelText: string; rulesRoot: number; exceptionsRoot: number;
};
let trie: (Trie & { edgeOffset: Uint32Array }) | null | undefined;
const simpleTlds = new Map<string, boolean>();

function loadTrie(): (Trie & { edgeOffset: Uint32Array }) | null {
  try {
    // Not a public export of tldts (package pinned in package-lock); if its layout changes this returns
    // null and every domain simply takes the general path.
    const t = createRequire(import.meta.url)('tldts/dist/cjs/src/data/trie.js') as Trie;
    if (!(t.nodeFlags instanceof Uint8Array) || typeof t.labelText !== 'string' || typeof t.rulesRoot !== 'number') return null;
    const edgeOffset = new Uint32Array(t.edgeLength.length);
    for (let e = 0, o = 0; e < t.edgeLength.length; e++) {
      edgeOffset[e] = o;
      o += t.edgeLength[e];
    }
    return { ...t, edgeOffset };
  } catch {
    return null;
  }
}

function childEdge(t: Trie & { edgeOffset: Uint32Array }, node: number, label: string): number {
  for (let e = t.edgeStart[node]; e < t.edgeStart[node + 1]; e++) {
    if (t.edgeLength[e] === label.length && t.labelText.startsWith(label, t.edgeOffset[e])) return e;
  }
  return -1;
}

function subtreeHasIcann(t: Trie, node: number): boolean {
  for (let e = t.edgeStart[node]; e < t.edgeStart[node + 1]; e++) {
    const child = t.edgeChild[e];
    if ((t.nodeFlags[child] & 1) !== 0 || subtreeHasIcann(t, child)) return true;
  }
  return false;
}

function isSimpleTld(tld: string): boolean {
  let v = simpleTlds.get(tld);
  if (v !== undefined) return v;
  if (trie === undefined) trie = loadTrie();
  v = false;
  if (trie) {
    const rule = childEdge(trie, trie.rulesRoot, tld);
    v = rule >= 0 && (trie.nodeFlags[trie.edgeChild[rule]] & 1) !== 0 && !subtreeHasIcann(trie, trie.edgeChild[rule]) &&
      childEdge(trie, trie.exceptionsRoot, tld) < 0;
  }
  if (simpleTlds.size > 4096) simpleTlds.clear(); // arbitrary input strings must not grow it
  simpleTlds.set(tld, v);
  return v;
}

/**
 * s[start, end) is a lowercase LDH(+_) name of ≥ 2 labels, each 1–63 chars not starting with '-', total
 * ≤ 253, no `xn--`, with an all-letter TLD under a simple public suffix: exactly the names canonDomain
 * returns unchanged without reaching tldts' "unknown TLD / public suffix" refusals. (An all-letter TLD
 * also rules out canonDomain's numeric-label and inet_aton refusals.)
 */
function isCanonicalDomain(s: string, start: number, end: number): boolean {
  if (end - start > 253 || end - start < 3) return false;
  let labelStart = start;
  let tldLetters = true;
  let dots = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      const len = i - labelStart;
      if (len === 0 || len > 63 || s.charCodeAt(labelStart) === 45) return false;
      labelStart = i + 1;
      tldLetters = true;
      dots++;
    } else if (c >= 97 && c <= 122) {
      continue;
    } else if ((c >= 48 && c <= 57) || c === 45 || c === 95) {
      tldLetters = false;
    } else return false;
  }
  const tldLen = end - labelStart;
  if (dots === 0 || tldLen === 0 || tldLen > 63 || !tldLetters) return false;
  const xn = s.indexOf('xn--', start);
  if (xn >= 0 && xn < end) return false;
  return isSimpleTldAt(s, labelStart, end);
}

// The last TLDs isSimpleTldAt() answered, by a small hash of length and end characters: a lookup of a TLD
// seen before compares characters in place instead of slicing the TLD out (an allocation and a string hash
// per call on the batch path, where a handful of TLDs recur).
const TLD_SLOTS = 256;
const tldSeen: (string | undefined)[] = new Array(TLD_SLOTS).fill(undefined);
const tldSimple = new Uint8Array(TLD_SLOTS);

/** isSimpleTld(s.slice(start, end)) without the slice when the TLD was asked about recently. */
function isSimpleTldAt(s: string, start: number, end: number): boolean {
  const len = end - start;
  const slot = (len * 31 + s.charCodeAt(start) * 7 + s.charCodeAt(end - 1)) & (TLD_SLOTS - 1);
  const seen = tldSeen[slot];
  if (seen !== undefined && seen.length === len && s.startsWith(seen, start)) return tldSimple[slot] === 1;
  const tld = s.slice(start, end);
  const v = isSimpleTld(tld);
  tldSeen[slot] = tld;
  tldSimple[slot] = v ? 1 : 0;
  return v;
}

/** Chars the general path leaves alone in a URL: printable ASCII without `%`, `#`, brackets/parens/braces (refang) or `\`. */
function plainUrlChar(c: number): boolean {
  return c > 0x20 && c < 0x7f && c !== 0x25 && c !== 0x23 && c !== 0x5b && c !== 0x28 && c !== 0x7b && c !== 0x5c;
}

/** isCanonicalUrl's path classes, one table load per character: plain, `/` or `?` (checked further), refused. */
const URL_BAD = 0;
const URL_PLAIN = 1;
const URL_MARK = 2;
const URL_CHAR = new Uint8Array(128);
for (let c = 0; c < 128; c++) URL_CHAR[c] = !plainUrlChar(c) ? URL_BAD : c === 47 || c === 63 ? URL_MARK : URL_PLAIN;

/**
 * `http(s)://host[:port]/path[?query]` already in canonical form: host a canonical domain (above) or a
 * strict dotted quad (inet_aton reads it as the same address), port without leading zero and not the
 * scheme's default, no userinfo, path with no escapes, `//` or dot segments (pathIsCanonical), a
 * non-empty plain query, and nothing refang would touch (so normalizeUrl's settle loop stops at once).
 */
function isCanonicalUrl(s: string): boolean {
  let p: number;
  let defaultPort: number;
  if (s.startsWith('http://')) {
    p = 7;
    defaultPort = 80;
  } else if (s.startsWith('https://')) {
    p = 8;
    defaultPort = 443;
  } else return false;
  const len = s.length;
  let hostEnd = p;
  while (hostEnd < len) {
    const c = s.charCodeAt(hostEnd);
    if (c === 47 || c === 58) break;
    hostEnd++;
  }
  if (hostEnd === p || hostEnd === len) return false;
  let slash = hostEnd;
  if (s.charCodeAt(hostEnd) === 58) {
    slash = s.indexOf('/', hostEnd);
    if (slash < 0 || s.charCodeAt(hostEnd + 1) === 48) return false;
    const port = parsePort(s, hostEnd + 1, slash);
    if (port < 0 || port === defaultPort) return false;
  }
  const c0 = s.charCodeAt(p);
  if (c0 >= 48 && c0 <= 57 && parseV4(s, p, hostEnd) >= 0) {
    // strict dotted quad
  } else if (!isCanonicalDomain(s, p, hostEnd)) return false;
  let q = -1;
  for (let i = slash; i < len; i++) {
    const c = s.charCodeAt(i);
    const k = c < 128 ? URL_CHAR[c] : URL_BAD;
    if (k === URL_PLAIN) continue; // the common case: one load, one predictable branch
    if (k === URL_BAD) return false;
    if (c === 63) {
      if (q < 0) q = i;
    } else if (q < 0 && i + 1 < len) {
      const n = s.charCodeAt(i + 1); // c is '/'
      if (n === 47 || n === 46) return false; // `//` or a dot segment (pathIsCanonical)
    }
  }
  return q !== len - 1; // an empty query is dropped by the general path
}

/**
 * The address canonicalType() parsed when it last answered 'ipv4' (unsigned 32-bit), so the lookup that
 * follows does not parse it again. Read right after the call (single-threaded, like HASH_OUT in hash.ts).
 */
export const CANONICAL_V4 = new Uint32Array(1);

/**
 * The type of `s` when it is already canonical (see above): the general path would return `s` itself with
 * this type. null to take the general path. Allocates nothing (the batch lookup path calls it per value).
 * An 'ipv4' answer leaves the address in CANONICAL_V4.
 */
export function canonicalType(s: string): IndicatorType | null {
  const len = s.length;
  if (len === 0 || len > MAX_VALUE_LENGTH) return null;
  const c0 = s.charCodeAt(0);
  if ((len === 32 || len === 40 || len === 64) && hexKind(s) === 1) return HASH_BY_LENGTH[len];
  if (c0 >= 48 && c0 <= 57) {
    if (len <= 15) {
      const n = parseV4(s, 0, len);
      if (n >= 0) {
        CANONICAL_V4[0] = n;
        return 'ipv4';
      }
    }
  } else if (c0 < 97 || c0 > 122) return null;
  if (c0 === 104 && (s.startsWith('http://') || s.startsWith('https://'))) return isCanonicalUrl(s) ? 'url' : null;
  return isCanonicalDomain(s, 0, len) ? 'domain' : null;
}

/** The general path's result when `s` is already canonical (see above); null to take the general path. */
export function canonicalFast(s: string): NormalizeResult | null {
  const type = canonicalType(s);
  return type === null ? null : { ok: true, type, value: s };
}

/** Normalize one raw value. Never throws; see the header for the rules. */
export function normalize(raw: string, hint?: IndicatorType): NormalizeResult {
  if (typeof raw === 'string') {
    // With a hint, the general path detects and then checks the type (a URL hint on a URL re-runs the
    // same URL canonicalization), so a fast result of the hinted type is its answer too.
    const fast = canonicalFast(raw);
    if (fast !== null && fast.ok && (hint === undefined || fast.type === hint)) return fast;
  }
  return normalizeNonCanonical(raw, hint);
}

/**
 * normalize() of a value that is not already canonical: a hash in upper or mixed case is lowercased at once
 * (the general path finds nothing to trim, unwrap, refang or refuse in 32/40/64 hex characters, detects the
 * hash and lowercases it), anything else takes the general path.
 */
export function normalizeNonCanonical(raw: string, hint?: IndicatorType): NormalizeResult {
  if (typeof raw === 'string') {
    const len = raw.length;
    if ((len === 32 || len === 40 || len === 64) && hexKind(raw) === 2) {
      const type = HASH_BY_LENGTH[len];
      if (hint === undefined || hint === type) return { ok: true, type, value: raw.toLowerCase() };
    }
  }
  return normalizeGeneral(raw, hint);
}

/** The general pipeline alone, without the canonical-form fast paths (tests compare the two). */
export function normalizeGeneral(raw: string, hint?: IndicatorType): NormalizeResult {
  try {
    if (typeof raw !== 'string') return fail('value is not a string');
    if (raw.length > MAX_RAW_LENGTH) return fail(`value longer than ${MAX_VALUE_LENGTH} characters`);
    let s = raw.trim();
    while (s.length >= 2 && isWrapper(s.charCodeAt(0), s.charCodeAt(s.length - 1))) s = s.slice(1, -1).trim();
    if (s === '') return fail('empty value');
    if (s.length > MAX_VALUE_LENGTH) return fail(`value longer than ${MAX_VALUE_LENGTH} characters`);
    s = refang(s);
    const bad = badCharReason(s);
    if (bad !== '') return fail(bad);
    return hint === undefined ? detect(s) : withHint(s, hint);
  } catch (e) {
    return fail(`internal error while normalizing: ${e instanceof Error ? e.message : String(e)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// keys for lookups

/**
 * The domain itself, then each parent down to and including its registrable domain; never a public
 * suffix. By default private suffixes (github.io, blogspot.com, duckdns.org) count as suffixes, so
 * `x.github.io` yields only itself: an allowlisted `github.io` must not clear every customer site.
 * `{ icannOnly: true }` walks down to the ICANN registrable domain instead. [] for a public suffix.
 */
export function parentDomains(domain: string, opts?: { icannOnly?: boolean }): string[] {
  const icann = parseTld(domain, ICANN_OPTS);
  if (icann.domain === null) return [];
  const reg = opts?.icannOnly ? icann.domain : parseTld(domain, PRIVATE_OPTS).domain;
  if (reg === null || reg === domain) return [domain];
  const out = [domain];
  let d = domain;
  while (d.length > reg.length) {
    const dot = d.indexOf('.');
    if (dot < 0) break;
    d = d.slice(dot + 1);
    out.push(d);
  }
  return out;
}

/**
 * Keys a listed URL or URL prefix could be stored under for this (normalized) URL, Safe Browsing
 * style on the same scheme and host: the URL, the URL without its query, and up to 4 path prefixes
 * ending in '/' starting at the root. At most 6, each a fixed point of normalize().
 */
export function urlMatchKeys(normalizedUrl: string): string[] {
  const sep = normalizedUrl.indexOf('://');
  const pathStart = normalizedUrl.indexOf('/', sep + 3);
  if (sep < 0 || pathStart < 0) return [normalizedUrl];
  const base = normalizedUrl.slice(0, pathStart);
  const q = normalizedUrl.indexOf('?', pathStart);
  const path = q >= 0 ? normalizedUrl.slice(pathStart, q) : normalizedUrl.slice(pathStart);
  const keys = [normalizedUrl];
  if (q >= 0) keys.push(base + path);
  let prefixes = 0;
  for (let i = 0; i < path.length && prefixes < 4; i++) {
    if (path.charCodeAt(i) !== 47) continue;
    prefixes++;
    const key = base + path.slice(0, i + 1);
    if (!keys.includes(key)) keys.push(key);
  }
  return keys;
}

/** Host of a normalized URL: the domain or IP literal (IPv6 without brackets), no port. */
export function urlHost(normalizedUrl: string): string {
  const sep = normalizedUrl.indexOf('://');
  const start = sep < 0 ? 0 : sep + 3;
  let end = normalizedUrl.indexOf('/', start);
  if (end < 0) end = normalizedUrl.length;
  if (normalizedUrl.charCodeAt(start) === 91) {
    const close = normalizedUrl.indexOf(']', start);
    return normalizedUrl.slice(start + 1, close < 0 ? end : close);
  }
  const colon = normalizedUrl.indexOf(':', start);
  return normalizedUrl.slice(start, colon >= 0 && colon < end ? colon : end);
}

/**
 * Network key of the /prefix network containing the normalized address `ip`, exactly as normalize()
 * writes a listed CIDR (`net/prefix`; the plain address for /32 and /128). Throws RangeError on an
 * address or prefix that is not valid (callers pass values normalize() produced).
 */
export function cidrKey(ip: string, family: 4 | 6, prefix: number): string {
  if (family === 4) {
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32) throw new RangeError(`bad IPv4 prefix ${prefix}`);
    const n = parseV4(ip, 0, ip.length);
    if (n < 0) throw new RangeError(`not a normalized IPv4 address: ${ip.slice(0, 64)}`);
    const net = v4ToString(v4Mask(n, prefix));
    return prefix === 32 ? net : `${net}/${prefix}`;
  }
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 128) throw new RangeError(`bad IPv6 prefix ${prefix}`);
  const v = parseV6(ip);
  if (!('v6' in v)) throw new RangeError(`not a normalized IPv6 address: ${ip.slice(0, 64)}`);
  const net = v6Mask(v.v6, prefix).toString();
  return prefix === 128 ? net : `${net}/${prefix}`;
}
