// STIX 2.1 bundle: an identity for this appliance and one indicator per value with a STIX pattern.
// Indicator ids are UUIDv5 of type+value so a re-export names the same value with the same id
// (STIX 2.1 recommends v4 for SDOs; stable ids matter more to a consumer that dedupes by id).
import { createHash, randomUUID } from 'node:crypto';
import type { IndicatorType } from '../../appliance/types.ts';
import { INDICATOR_TYPES } from '../../appliance/types.ts';
import { chunked, effectiveIndicators, type ExportRow, type SourceContext } from './source.ts';

/** Namespace for Outpost's deterministic ids (fixed forever: changing it renames every indicator). */
export const OUTPOST_NAMESPACE = '6f1c8e2a-3d4b-5c6e-8f70-81a2b3c4d5e6';

export function uuidv5(name: string, namespace = OUTPOST_NAMESPACE): string {
  const ns = Buffer.from(namespace.replace(/-/g, ''), 'hex');
  const h = createHash('sha1').update(ns).update(name, 'utf8').digest().subarray(0, 16);
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
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

const iso = (unix: number) => new Date(unix * 1000).toISOString();

export function stixIndicator(r: ExportRow, now: number): Record<string, unknown> {
  const created = r.first_seen ?? r.last_seen ?? now;
  const modified = Math.max(created, r.last_seen ?? created);
  const labels = [...new Set([r.category, ...r.tags].filter((x): x is string => !!x && x.trim() !== ''))];
  const ind: Record<string, unknown> = {
    type: 'indicator',
    spec_version: '2.1',
    id: `indicator--${uuidv5(`${r.type}:${r.value}`)}`,
    created_by_ref: IDENTITY_ID,
    created: iso(created),
    modified: iso(modified),
    name: r.value,
    indicator_types: [/scan|brute/i.test(r.category ?? '') ? 'anomalous-activity' : 'malicious-activity'],
    pattern: stixPattern(r.type, r.value),
    pattern_type: 'stix',
    pattern_version: '2.1',
    valid_from: iso(created),
    confidence: r.confidence,
    x_outpost_feeds: r.feeds,
  };
  if (r.reason) ind.description = `Local block override: ${r.reason}`;
  if (r.expires_at != null && r.expires_at > created) ind.valid_until = iso(r.expires_at);
  if (labels.length) ind.labels = labels;
  return ind;
}

export function* stixBundle(ctx: SourceContext): Generator<string> {
  yield `{"type":"bundle","id":"bundle--${randomUUID()}","objects":[\n${JSON.stringify(IDENTITY)}`;
  function* body() {
    for (const r of effectiveIndicators(ctx, INDICATOR_TYPES)) {
      ctx.stats.written++;
      yield `,\n${JSON.stringify(stixIndicator(r, ctx.now))}`;
    }
  }
  yield* chunked(body());
  yield '\n]}\n';
}
