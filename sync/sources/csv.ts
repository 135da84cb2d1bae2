// CSV sources with a header row (URLhaus `tags,url,url_status`), streamed line by line.
// The value column is found by header name; URLhaus's quoted, comma-separated tags column becomes
// tags and url_status becomes ctx.status. A quoted field may span lines (RFC 4180); such a record's
// first line carries its outcome and each continuation line counts as skipped, so the invariant holds.
import fs from 'node:fs';
import readline from 'node:readline';
import { OutpostError } from '../../appliance/errors.ts';
import type { IndicatorType, SourceReport } from '../../appliance/types.ts';
import type { RawEntry } from './index.ts';
import { addMalformed, addSkipped } from './report.ts';

/** Header names that hold the indicator value, best first, with the hint they imply. */
const VALUE_COLUMNS: [string, IndicatorType | undefined][] = [
  ['url', 'url'], ['ioc', undefined], ['indicator', undefined], ['value', undefined],
  ['domain', 'domain'], ['hostname', 'domain'], ['ip', 'ipv4'], ['ip_address', 'ipv4'],
  ['sha256', 'sha256'], ['sha1', 'sha1'], ['md5', 'md5'],
];
/** A record longer than this is not a CSV record but runaway quoting. */
const MAX_RECORD = 1 << 20;

/**
 * Splits one CSV record into fields (RFC 4180: `"` quotes a field, `""` inside quotes is a quote).
 * Returns null when the text ends inside an open quote (the record continues on the next line).
 * Throws on text after a closing quote, which no writer produces.
 */
export function splitCsvRecord(text: string): string[] | null {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    if (text[i] === '"') {
      let field = '';
      i++;
      for (;;) {
        const q = text.indexOf('"', i);
        if (q < 0) return null;
        field += text.slice(i, q);
        if (text[q + 1] === '"') {
          field += '"';
          i = q + 2;
          continue;
        }
        i = q + 1;
        break;
      }
      fields.push(field);
      if (i === text.length) return fields;
      if (text[i] !== ',') throw new Error(`unexpected character after closing quote at column ${i + 1}`);
      i++;
    } else {
      const c = text.indexOf(',', i);
      if (c < 0) {
        fields.push(text.slice(i));
        return fields;
      }
      fields.push(text.slice(i, c));
      i = c + 1;
    }
  }
}

export async function* readCsv(file: string, report: SourceReport): AsyncGenerator<RawEntry> {
  const rl = readline.createInterface({ input: fs.createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  let header: string[] | undefined;
  let valueCol = -1;
  let hint: IndicatorType | undefined;
  let tagsCol = -1;
  let statusCol = -1;
  let lineNo = 0;
  let pending = '';
  let pendingStart = 0;
  for await (const rawLine of rl) {
    lineNo++;
    report.lines++;
    const physical = lineNo === 1 ? rawLine.replace(/^\uFEFF/, '') : rawLine;
    const text = pending ? `${pending}\n${physical}` : physical;
    const start = pending ? pendingStart : lineNo;
    if (pending) addSkipped(report); // continuation line of a multi-line record
    pending = '';
    if (!text.trim() || (!header && text.trimStart().startsWith('#'))) {
      addSkipped(report);
      continue;
    }
    let fields: string[] | null;
    try {
      fields = splitCsvRecord(text);
    } catch (e) {
      addMalformed(report, start, text, `CSV: ${(e as Error).message}`);
      continue;
    }
    if (fields === null) {
      if (text.length > MAX_RECORD) {
        addMalformed(report, start, text, 'CSV: unterminated quoted field');
        continue;
      }
      // The record's first line carries its outcome; each continuation line is counted as skipped above.
      pending = text;
      pendingStart = start;
      continue;
    }
    if (!header) {
      header = fields.map((f) => f.trim().toLowerCase());
      for (const [name, h] of VALUE_COLUMNS) {
        const idx = header.indexOf(name);
        if (idx >= 0) {
          valueCol = idx;
          hint = h;
          break;
        }
      }
      if (valueCol < 0) {
        throw new OutpostError('E_INPUT', `${file}: CSV header has no indicator column (expected one of ${VALUE_COLUMNS.map((c) => c[0]).join(', ')}); got "${fields.join(',').slice(0, 200)}"`);
      }
      tagsCol = header.indexOf('tags');
      statusCol = header.findIndex((h) => h === 'url_status' || h === 'status');
      addSkipped(report);
      continue;
    }
    if (fields.length !== header.length) {
      addMalformed(report, start, text, `CSV: ${fields.length} fields, header has ${header.length}`);
      continue;
    }
    const ctx: NonNullable<RawEntry['ctx']> = {};
    if (tagsCol >= 0) {
      const tags = fields[tagsCol].split(',').map((t) => t.trim()).filter(Boolean);
      if (tags.length) ctx.tags = tags;
    }
    if (statusCol >= 0 && fields[statusCol].trim()) ctx.status = fields[statusCol].trim();
    yield { raw: fields[valueCol], hint, line: start, ctx };
  }
  if (pending) addMalformed(report, pendingStart, pending, 'CSV: unterminated quoted field at end of file');
}
