// MISP warninglists `{name, type, list:[…]}`: each list entry is one value (typically an allowlist feed).
// `hostname` lists hint domain and `cidr` lists hint IP (any IP type: public-dns-v4 is typed cidr but
// holds bare addresses); `string` lists are typed per value. `substring` and `regex` entries are
// patterns, not values: skipped with a note. Records: one per list entry; line = 1-based list index.
import type { IndicatorType, SourceReport } from '../../appliance/types.ts';
import type { RawEntry } from './index.ts';
import { addMalformed, addNote, addSkipped } from './report.ts';

const TYPE_HINTS: Record<string, IndicatorType | undefined> = { hostname: 'domain', cidr: 'ipv4', string: undefined };

export function isWarninglist(doc: unknown): doc is { name: string; type?: string; list: unknown[] } {
  return !!doc && typeof doc === 'object' && Array.isArray((doc as Record<string, unknown>).list) && typeof (doc as Record<string, unknown>).name === 'string';
}

export function* readWarninglist(doc: { name: string; type?: string; list: unknown[] }, report: SourceReport): Generator<RawEntry> {
  const type = String(doc.type ?? 'string');
  if (!(type in TYPE_HINTS)) {
    report.lines += doc.list.length;
    addSkipped(report, doc.list.length);
    addNote(report, `warninglist type "${type}" holds patterns, not values: ${doc.list.length} entries skipped`);
    return;
  }
  const hint = TYPE_HINTS[type];
  for (let i = 0; i < doc.list.length; i++) {
    report.lines++;
    const v = doc.list[i];
    if (typeof v !== 'string') {
      addMalformed(report, i + 1, JSON.stringify(v) ?? String(v), 'warninglist entry is not a string');
      continue;
    }
    yield { raw: v, hint, line: i + 1, ctx: { list: doc.name } };
  }
}
