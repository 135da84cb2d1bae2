// Zeek Intel framework file: one tab-separated line per indicator under a `#fields` header.
// URLs lose their scheme (Zeek's Intel::URL seen values have none); `-` marks an empty field.
import type { IndicatorType } from '../../appliance/types.ts';
import { skip, type ExportRow, type ExportStats } from './source.ts';
import type { RowFile } from './pass.ts';

export const ZEEK_HEADER = '#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url\n';

const ZEEK_TYPES: Partial<Record<IndicatorType, string>> = {
  ipv4: 'Intel::ADDR',
  ipv6: 'Intel::ADDR',
  'ipv4-cidr': 'Intel::SUBNET',
  'ipv6-cidr': 'Intel::SUBNET',
  domain: 'Intel::DOMAIN',
  url: 'Intel::URL',
  md5: 'Intel::FILE_HASH',
  sha1: 'Intel::FILE_HASH',
  sha256: 'Intel::FILE_HASH',
  email: 'Intel::EMAIL',
};

/** Tabs and newlines would split a record; Zeek reads `-` as unset and an empty string as "(empty)". */
function field(s: string | null | undefined): string {
  const v = (s ?? '').replace(/[\t\r\n]+/g, ' ').trim();
  return v === '' ? '-' : v;
}

export function zeekLine(r: ExportRow): string | null {
  const t = ZEEK_TYPES[r.type];
  if (!t) return null;
  let indicator = r.value;
  if (r.type === 'url') indicator = indicator.replace(/^[a-z][a-z0-9+.-]*:\/\//, '');
  const desc = [r.category ?? 'listed', `confidence ${r.confidence}`, ...r.tags.map((x) => `tag ${x}`), ...(r.reason ? [`local block override: ${r.reason}`] : [])].join('; ');
  return [field(indicator), t, field(`outpost:${r.feeds.join(',')}`), field(desc), '-'].join('\t') + '\n';
}

export const zeekFile: RowFile = {
  name: 'outpost.intel',
  types: Object.keys(ZEEK_TYPES) as IndicatorType[],
  head: ZEEK_HEADER,
  line: (r, stats) => zeekLine(r) ?? skipped(stats, 'zeek-unsupported-type'),
};

function skipped(stats: ExportStats, reason: string): null {
  skip(stats, reason);
  return null;
}
