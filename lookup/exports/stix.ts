// STIX 2.1 bundle: an identity for this appliance and one indicator per value with a STIX pattern.
// Indicator ids are UUIDv5 of type+value so a re-export names the same value with the same id
// (STIX 2.1 recommends v4 for SDOs; stable ids matter more to a consumer that dedupes by id).
import crypto, { createHash, randomUUID } from 'node:crypto';
import type { IndicatorType } from '../../appliance/types.ts';
import { INDICATOR_TYPES } from '../../appliance/types.ts';
import { timeText, type ExportRow } from './source.ts';
import type { RowFile } from './pass.ts';

/** Namespace for Outpost's deterministic ids (fixed forever: changing it renames every indicator). */
export const OUTPOST_NAMESPACE = '6f1c8e2a-3d4b-5c6e-8f70-81a2b3c4d5e6';

// One buffer for the namespace and the name: an export names millions of indicators, and the one-shot
// crypto.hash (Node ≥ 20.12) costs a third of createHash().update().update().digest() here.
const uuidBuf = Buffer.alloc(16 + 4096);
let uuidNs = '';
const sha1Hex: (data: Buffer) => string =
  typeof crypto.hash === 'function' ? (d) => crypto.hash('sha1', d, 'hex') : (d) => createHash('sha1').update(d).digest('hex');

export function uuidv5(name: string, namespace = OUTPOST_NAMESPACE): string {
  if (namespace !== uuidNs) {
    uuidBuf.write(namespace.replace(/-/g, ''), 0, 16, 'hex');
    uuidNs = namespace;
  }
  const x = Buffer.byteLength(name, 'utf8') <= uuidBuf.length - 16
    ? sha1Hex(uuidBuf.subarray(0, 16 + uuidBuf.write(name, 16, 'utf8')))
    : createHash('sha1').update(uuidBuf.subarray(0, 16)).update(name, 'utf8').digest('hex');
  // version 5 in the high nibble of byte 6, variant 10 in the top bits of byte 8
  const variant = ((parseInt(x[16], 16) & 0x3) | 0x8).toString(16);
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-5${x.slice(13, 16)}-${variant}${x.slice(17, 20)}-${x.slice(20, 32)}`;
}

export const IDENTITY_ID = `identity--${uuidv5('outpost-appliance')}`;
const IDENTITY_TIME = '2026-01-01T00:00:00.000Z';

export const IDENTITY = {
  type: 'identity',
  spec_version: '2.1',
  id: IDENTITY_ID,
  created: IDENTITY_TIME,
  modified: IDENTITY_TIME,
  name: 'Outpost',
  description: 'On-premises threat-intelligence appliance (exported indicators)',
  identity_class: 'system',
};

/** Inside a STIX pattern string literal only `\` and `'` need escaping. */
export function stixString(s: string): string {
  if (!s.includes('\\') && !s.includes("'")) return `'${s}'`;
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

const PATH: Record<IndicatorType, string> = {
  ipv4: 'ipv4-addr:value',
  'ipv4-cidr': 'ipv4-addr:value',
  ipv6: 'ipv6-addr:value',
  'ipv6-cidr': 'ipv6-addr:value',
  domain: 'domain-name:value',
  url: 'url:value',
  md5: 'file:hashes.MD5',
  sha1: "file:hashes.'SHA-1'",
  sha256: "file:hashes.'SHA-256'",
  email: 'email-addr:value',
};

export function stixPattern(type: IndicatorType, value: string): string {
  return `[${PATH[type]} = ${stixString(value)}]`;
}

const iso = timeText((d) => d.toISOString());

const indicatorTypes = new Map<string | null, string[]>();
function indicatorTypesOf(category: string | null): string[] {
  let t = indicatorTypes.get(category);
  if (!t) {
    if (indicatorTypes.size >= 256) indicatorTypes.clear();
    t = [/scan|brute/i.test(category ?? '') ? 'anomalous-activity' : 'malicious-activity'];
    indicatorTypes.set(category, t);
  }
  return [...t];
}

function labelsOf(r: ExportRow): string[] {
  if (!r.tags.length) return r.category && r.category.trim() !== '' ? [r.category] : [];
  return [...new Set([r.category, ...r.tags].filter((x): x is string => !!x && x.trim() !== ''))];
}

export function stixIndicator(r: ExportRow, now: number): Record<string, unknown> {
  const created = r.first_seen ?? r.last_seen ?? now;
  const modified = Math.max(created, r.last_seen ?? created);
  const labels = labelsOf(r);
  const createdIso = iso(created);
  const ind: Record<string, unknown> = {
    type: 'indicator',
    spec_version: '2.1',
    id: `indicator--${uuidv5(`${r.type}:${r.value}`)}`,
    created_by_ref: IDENTITY_ID,
    created: createdIso,
    modified: modified === created ? createdIso : iso(modified),
    name: r.value,
    indicator_types: indicatorTypesOf(r.category),
    pattern: stixPattern(r.type, r.value),
    pattern_type: 'stix',
    pattern_version: '2.1',
    valid_from: createdIso,
    confidence: r.confidence,
    x_outpost_feeds: r.feeds,
  };
  if (r.reason) ind.description = `Local block override: ${r.reason}`;
  if (r.expires_at != null && r.expires_at > created) ind.valid_until = iso(r.expires_at);
  if (labels.length) ind.labels = labels;
  return ind;
}

/** The bundle: this appliance's identity, then one indicator per value (a new bundle id each export). */
export function stixFile(now: number): RowFile {
  return {
    name: 'outpost.stix.json',
    types: INDICATOR_TYPES,
    head: `{"type":"bundle","id":"bundle--${randomUUID()}","objects":[\n${JSON.stringify(IDENTITY)}`,
    line: (r) => `,\n${JSON.stringify(stixIndicator(r, now))}`,
    tail: () => ['\n]}\n'],
  };
}
