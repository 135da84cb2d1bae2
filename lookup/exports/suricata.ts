// Suricata 7 export: dataset lists (domains base64, hashes hex, addresses plain), a rules file that
// loads them, per-URL HTTP rules, and IP reputation (categories + scored list, networks included).
// The file set is consumed from one directory: datasets `load` paths resolve next to the rules file.
import type { IndicatorType } from '../../appliance/types.ts';
import { skip } from './source.ts';
import type { RowFile } from './pass.ts';

/** Signature ids of the fixed rules; URL rules take ids from URL_SID_BASE upwards (see urlSid). */
export const SID = {
  dnsQuery: 9_700_001,
  tlsSni: 9_700_002,
  httpHost: 9_700_003,
  ipv4Dst: 9_700_004,
  ipv6Dst: 9_700_005,
  fileMd5: 9_700_010,
  fileSha1: 9_700_011,
  fileSha256: 9_700_012,
  iprepDstBase: 9_701_000,
  iprepSrcBase: 9_702_000,
} as const;
export const URL_SID_BASE = 3_000_000_000;
const URL_SID_SPAN = 1_000_000_000;

/** IP reputation categories (Suricata caps ids at 60). Feed categories map onto them by keyword. */
export const IPREP_CATEGORIES: ReadonlyArray<{ id: number; name: string; description: string; match: RegExp }> = [
  { id: 1, name: 'Malware', description: 'Malware hosting or distribution', match: /malware|payload|trojan|ransom|stealer|loader|\brat\b|dropper/ },
  { id: 2, name: 'CnC', description: 'Command and control', match: /\bc2\b|cnc|c&c|command|botnet_cc/ },
  { id: 3, name: 'Botnet', description: 'Botnet member', match: /botnet|\bbot\b|mirai|mozi/ },
  { id: 4, name: 'Scanner', description: 'Scanning and probing', match: /scan/ },
  { id: 5, name: 'BruteForce', description: 'Brute-force and credential attacks', match: /brute|credential/ },
  { id: 6, name: 'Phishing', description: 'Phishing', match: /phish/ },
  { id: 7, name: 'Spam', description: 'Spam sources', match: /spam/ },
  { id: 8, name: 'Proxy', description: 'Anonymising proxies and Tor', match: /proxy|\btor\b|anonym|vpn/ },
  { id: 9, name: 'Exploit', description: 'Exploitation attempts', match: /exploit/ },
  { id: 10, name: 'Other', description: 'Listed by an Outpost feed, other category', match: /$^/ },
];

export function iprepCategory(category: string | null): { id: number; name: string } {
  const c = (category ?? '').toLowerCase();
  return IPREP_CATEGORIES.find((k) => k.match.test(c)) ?? IPREP_CATEGORIES[IPREP_CATEGORIES.length - 1];
}

/** iprep scores are 1–127 (0 means no data); confidence is 0–100. */
export function iprepScore(confidence: number): number {
  return Math.max(1, Math.min(127, Math.round((confidence * 127) / 100)));
}

/** Dataset `type string` entries are base64 of the exact buffer content (here the lowercase name). */
const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

/** A dataset list: one entry per line, nothing else (no comments). */
function dataset(name: string, type: IndicatorType, entry: (value: string) => string): RowFile {
  return { name, types: [type], line: (r) => entry(r.value) + '\n' };
}

/** The iprep list: `ip-or-cidr,category-id,score`, addresses and networks of both families. */
export const iprepFile: RowFile = {
  name: 'outpost.list',
  types: ['ipv4', 'ipv6', 'ipv4-cidr', 'ipv6-cidr'],
  line: (r) => `${r.value},${iprepCategory(r.category).id},${iprepScore(r.confidence)}\n`,
};

function iprepRulesText(): string {
  let out = '# Outpost IP reputation rules: need reputation-categories-file and reputation-files in suricata.yaml\n';
  for (const c of IPREP_CATEGORIES) {
    out += `alert ip any any -> any any (msg:"OUTPOST IP reputation: destination listed as ${c.name}"; iprep:dst,${c.name},>,0; sid:${SID.iprepDstBase + c.id}; rev:1;)\n`;
    out += `alert ip any any -> any any (msg:"OUTPOST IP reputation: source listed as ${c.name}"; iprep:src,${c.name},>,0; sid:${SID.iprepSrcBase + c.id}; rev:1;)\n`;
  }
  return out;
}

const DATASET_RULES = [
  `alert dns any any -> any any (msg:"OUTPOST listed domain in DNS query"; dns.query; to_lowercase; dataset:isset,outpost-domains,type string,load domains.lst; sid:${SID.dnsQuery}; rev:1;)`,
  `alert tls any any -> any any (msg:"OUTPOST listed domain in TLS SNI"; tls.sni; to_lowercase; dataset:isset,outpost-domains,type string,load domains.lst; sid:${SID.tlsSni}; rev:1;)`,
  `alert http any any -> any any (msg:"OUTPOST listed domain in HTTP Host"; http.host; dataset:isset,outpost-domains,type string,load domains.lst; sid:${SID.httpHost}; rev:1;)`,
  `alert ip any any -> any any (msg:"OUTPOST listed IPv4 destination"; ip.dst; dataset:isset,outpost-ipv4,type ipv4,load ipv4.lst; threshold:type limit,track by_dst,count 1,seconds 3600; sid:${SID.ipv4Dst}; rev:1;)`,
  `alert ip any any -> any any (msg:"OUTPOST listed IPv6 destination"; ip.dst; dataset:isset,outpost-ipv6,type ip,load ipv6.lst; threshold:type limit,track by_dst,count 1,seconds 3600; sid:${SID.ipv6Dst}; rev:1;)`,
  `alert http any any -> any any (msg:"OUTPOST listed file MD5"; filemd5:md5.lst; sid:${SID.fileMd5}; rev:1;)`,
  `alert http any any -> any any (msg:"OUTPOST listed file SHA-1"; filesha1:sha1.lst; sid:${SID.fileSha1}; rev:1;)`,
  `alert http any any -> any any (msg:"OUTPOST listed file SHA-256"; filesha256:sha256.lst; sid:${SID.fileSha256}; rev:1;)`,
];

/** Content bytes other than plain printable ASCII, and the rule language's own `"`, `;`, `\`, `|`, go as |hex|. */
export function ruleContent(s: string): string {
  let out = '';
  let hex: string[] = [];
  const flush = () => {
    if (hex.length) out += `|${hex.join(' ')}|`;
    hex = [];
  };
  for (const byte of Buffer.from(s, 'utf8')) {
    if (byte >= 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x3b && byte !== 0x5c && byte !== 0x7c) {
      flush();
      out += String.fromCharCode(byte);
    } else hex.push(byte.toString(16).toUpperCase().padStart(2, '0'));
  }
  flush();
  return out;
}

/** msg text: ASCII only, with the characters the rule parser treats specially replaced. */
function ruleMsg(s: string): string {
  return s.replace(/[^\x20-\x7e]|[";\\|]/g, '_').slice(0, 200);
}

/** FNV-1a; with linear probing on collision this keeps a URL's sid stable across exports. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export function splitHttpUrl(url: string): { host: string; path: string } | null {
  const m = /^http:\/\/([^/?#]+)([^#]*)$/.exec(url);
  if (!m) return null;
  let host = m[1];
  if (host.startsWith('[')) host = host.slice(0, host.indexOf(']') + 1);
  else if (host.includes(':')) host = host.slice(0, host.lastIndexOf(':'));
  const path = m[2] || '/';
  return { host, path: path.startsWith('/') ? path : '/' + path };
}

/**
 * One rule per http:// URL: an exact Host plus an exact normalized URI (path and query). Suricata
 * has no buffer holding host and path together, and two datasets (hosts, paths) would match every
 * listed path on every listed host, so URLs are rules, not a dataset. https:// URLs are skipped
 * (the path is encrypted; their hosts are not necessarily malicious) and counted.
 */
function rulesFile(): RowFile {
  const used = new Set<number>();
  return {
    name: 'outpost.rules',
    types: ['url'],
    head: '# Outpost rules for Suricata 7. Datasets load from this directory; see docs/integrations.md\n' +
      DATASET_RULES.join('\n') + '\n# One rule per listed http:// URL (exact host and normalized URI)\n',
    line(r, stats) {
      if (!r.value.startsWith('http://')) {
        skip(stats, r.value.startsWith('https://') ? 'suricata-https-url' : 'suricata-non-http-url');
        return null;
      }
      const parts = splitHttpUrl(r.value);
      if (!parts) {
        skip(stats, 'suricata-unparsable-url');
        return null;
      }
      let sid = URL_SID_BASE + (fnv1a(r.value) % URL_SID_SPAN);
      while (used.has(sid)) sid = URL_SID_BASE + ((sid - URL_SID_BASE + 1) % URL_SID_SPAN);
      used.add(sid);
      return `alert http any any -> any any (msg:"OUTPOST listed URL ${ruleMsg(r.value.slice(7))}"; flow:established,to_server; ` +
        `http.host; content:"${ruleContent(parts.host)}"; startswith; endswith; ` +
        `http.uri; content:"${ruleContent(parts.path)}"; startswith; endswith; sid:${sid}; rev:1;)\n`;
    },
    tail: (stats) => {
      const s = stats.skipped;
      return [`# skipped URLs: https ${s['suricata-https-url'] ?? 0}, other schemes ${s['suricata-non-http-url'] ?? 0}, unparsable ${s['suricata-unparsable-url'] ?? 0}\n`];
    },
  };
}

/** Every file of the Suricata set (a new one per export: URL sids are unique within it); the rules file comes last so lists are in place when it appears. */
export function suricataFiles(): RowFile[] {
  return [
    dataset('domains.lst', 'domain', b64),
    dataset('ipv4.lst', 'ipv4', (v) => v),
    dataset('ipv6.lst', 'ipv6', (v) => v),
    dataset('md5.lst', 'md5', (v) => v.toLowerCase()),
    dataset('sha1.lst', 'sha1', (v) => v.toLowerCase()),
    dataset('sha256.lst', 'sha256', (v) => v.toLowerCase()),
    { name: 'categories.txt', types: [], head: IPREP_CATEGORIES.map((c) => `${c.id},${c.name},${c.description}\n`).join('') },
    iprepFile,
    { name: 'outpost-iprep.rules', types: [], head: iprepRulesText() },
    rulesFile(),
  ];
}
