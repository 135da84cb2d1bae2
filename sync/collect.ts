// Provider side, step 1: read every source file, normalize each raw entry, merge duplicates and count
// what happened per file. The result is the feed's indicator set in package order.
// Accounting per file: lines = accepted + malformed + duplicates + skipped. A duplicate (same type and
// canonical value, in this file or an earlier one) is merged into the first occurrence: ports and tags
// unioned, highest confidence, earliest first-seen, latest last-seen, latest expiry (none if any
// occurrence has none), context keys added and context arrays unioned.
// Confidence: only a source-given confidence (IPsum counts, LOKI scores, STIX confidence, MISP
// to_ids:false) is written per indicator; otherwise the feed default in the manifest applies. Allow
// feeds ignore source confidences, which grade maliciousness, not benignness.
import { OutpostError } from '../appliance/errors.ts';
import type { FeedKind, Indicator, SourceReport } from '../appliance/types.ts';
import { normalize } from '../lookup/normalize.ts';
import { canonicalDate, compareIndicators } from './records.ts';
import { newReport, readSource, type RawEntry } from './sources/index.ts';
import { addMalformed } from './sources/report.ts';
import { contextualize, parseTlp, stricterTlp } from './context.ts';
import path from 'node:path';

export interface CollectOptions {
  category?: string;
  confidence?: number;
  kind: FeedKind;
}

export interface CollectResult {
  /** Sorted by type then value (package order), one per type+value. */
  indicators: Indicator[];
  reports: SourceReport[];
}

const LIFTED = new Set(['port', 'category', 'confidence', 'first_seen', 'last_seen', 'expires', 'tags']);

export async function collectIndicators(files: string[], opts: CollectOptions): Promise<CollectResult> {
  const byKey = new Map<string, Indicator>();
  const reports: SourceReport[] = [];
  for (const file of files) {
    // The report travels in the signed manifest: name the file, not the provider's directory layout.
    const report = newReport(path.basename(file));
    // contextualize (sync/context.ts): structured context fields and md5/sha1/sha256 sample linking.
    for await (const entry of contextualize(readSource(file, report))) {
      const n = normalize(entry.raw, entry.hint);
      if (!n.ok) {
        addMalformed(report, entry.line ?? report.lines, entry.raw, n.error);
        continue;
      }
      const ind = toIndicator(n.value, n.type, n.port, entry, opts);
      const key = `${ind.t}\u0000${ind.v}`;
      const seen = byKey.get(key);
      if (seen) {
        merge(seen, ind, opts);
        report.duplicates++;
      } else {
        byKey.set(key, ind);
        report.accepted++;
      }
    }
    const counted = report.accepted + report.malformed + report.duplicates + (report.skipped ?? 0);
    if (counted !== report.lines) {
      throw new OutpostError('E_INTERNAL', `${file}: counted ${counted} outcomes for ${report.lines} lines (parser accounting bug)`);
    }
    reports.push(report);
  }
  const indicators = [...byKey.values()].sort(compareIndicators);
  return { indicators, reports };
}

function toIndicator(value: string, type: Indicator['t'], port: number | undefined, entry: RawEntry, opts: CollectOptions): Indicator {
  const ind: Indicator = { v: value, t: type };
  const c = entry.ctx ?? {};
  const ports = new Set<number>();
  if (port) ports.add(port);
  if (typeof c.port === 'number' && Number.isInteger(c.port) && c.port >= 1 && c.port <= 65535) ports.add(c.port);
  if (ports.size) ind.ports = [...ports].sort((a, b) => a - b);
  if (typeof c.category === 'string' && c.category && c.category !== opts.category) ind.cat = c.category;
  if (opts.kind !== 'allow' && typeof c.confidence === 'number' && c.confidence >= 0 && c.confidence <= 100) {
    ind.conf = Math.round(c.confidence);
  }
  const extra: Record<string, unknown> = {};
  const date = (key: 'first_seen' | 'last_seen' | 'expires'): string | undefined => {
    const raw = c[key];
    if (typeof raw !== 'string') return undefined;
    const iso = canonicalDate(raw);
    if (!iso) extra[`${key}_text`] = raw; // unparseable: keep what the source said, as context
    return iso;
  };
  const fs = date('first_seen');
  const ls = date('last_seen');
  const exp = date('expires');
  if (fs) ind.fs = fs;
  if (ls) ind.ls = ls;
  if (exp) ind.exp = exp;
  if (Array.isArray(c.tags)) {
    const tags = [...new Set(c.tags.filter((t) => typeof t === 'string').map((t) => t.trim().toLowerCase()).filter(Boolean))];
    if (tags.length) ind.tags = tags;
  }
  for (const [k, v] of Object.entries(c)) {
    if (LIFTED.has(k) || v === undefined || v === null || v === '') continue;
    extra[k] = v;
  }
  if (Object.keys(extra).length) ind.ctx = extra;
  return ind;
}

function union<T>(a: T[] | undefined, b: T[] | undefined): T[] | undefined {
  if (!a?.length) return b?.length ? [...b] : undefined;
  if (!b?.length) return a;
  const out = [...a];
  for (const x of b) if (!out.includes(x)) out.push(x);
  return out;
}

function merge(into: Indicator, from: Indicator, opts: CollectOptions): void {
  const ports = union(into.ports, from.ports);
  if (ports) into.ports = ports.sort((x, y) => x - y);
  const tags = union(into.tags, from.tags);
  if (tags) into.tags = tags;
  // A missing confidence means "feed default": compare against it when known; keep the winner's form.
  const a = into.conf ?? opts.confidence;
  const b = from.conf ?? opts.confidence;
  const conf = a === undefined ? from.conf : b === undefined ? into.conf : b > a ? from.conf : into.conf;
  if (conf === undefined) delete into.conf;
  else into.conf = conf;
  if (from.fs && (!into.fs || from.fs < into.fs)) into.fs = from.fs;
  if (from.ls && (!into.ls || from.ls > into.ls)) into.ls = from.ls;
  if (!into.exp || !from.exp) delete into.exp;
  else if (from.exp > into.exp) into.exp = from.exp;
  if (!into.cat && from.cat) into.cat = from.cat;
  if (from.ctx) {
    const ctx = { ...(into.ctx ?? {}) };
    for (const [k, v] of Object.entries(from.ctx)) {
      const cur = ctx[k];
      if (cur === undefined) ctx[k] = v;
      else if (k === 'tlp') ctx[k] = stricterTlp(parseTlp(cur), parseTlp(v)) ?? cur; // the stricter marking holds
      else if (Array.isArray(cur) && Array.isArray(v)) ctx[k] = union(cur as unknown[], v as unknown[]);
    }
    into.ctx = ctx;
  }
}
