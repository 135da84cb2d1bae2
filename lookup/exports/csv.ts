// CSV export for SIEMs and spreadsheets: RFC 4180 quoting, CRLF record ends, and a guard against
// formula injection (a cell starting with = + - @ TAB CR gets a leading apostrophe).
import { INDICATOR_TYPES } from '../../appliance/types.ts';
import { isoTime, type ExportRow } from './source.ts';
import type { RowFile } from './pass.ts';

export const CSV_HEADER = 'value,type,feed,category,confidence,first_seen,last_seen,expires_at';

/**
 * Spreadsheet apps evaluate a cell that starts with = + - @ (and TAB/CR, OWASP) as a formula, so a
 * hostile value like `=HYPERLINK(...)` or the real `-container.supertms.com` is prefixed with `'`.
 * The apostrophe is the documented, visible marker; strip one leading `'` to get the raw value.
 */
export function neutralise(cell: string): string {
  return /^[=+\-@\t\r]/.test(cell) ? `'${cell}` : cell;
}

/** RFC 4180: quote when the cell holds a comma, quote, CR or LF; double inner quotes. */
export function csvCell(raw: string | number | null): string {
  if (raw == null) return '';
  const cell = typeof raw === 'number' ? String(raw) : neutralise(raw);
  return /[",\r\n]/.test(cell) ? `"${cell.replace(/"/g, '""')}"` : cell;
}

export function csvLine(r: ExportRow): string {
  return [
    r.value, r.type, r.feeds.join(';'), r.category, r.confidence,
    isoTime(r.first_seen), isoTime(r.last_seen), isoTime(r.expires_at),
  ].map(csvCell).join(',') + '\r\n';
}

export const csvFile: RowFile = {
  name: 'outpost.csv',
  types: INDICATOR_TYPES,
  head: CSV_HEADER + '\r\n',
  line: csvLine,
};
