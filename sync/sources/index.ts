// Source files for `provider build`: detects the format of a file and streams its raw entries
// (value + type hint + context) for collect.ts to normalize. Parsers never normalize; they count every
// line/record they read into the SourceReport (lines, skipped, structural malformed with samples).
// Format: by content first (JSON shape), then by extension (.csv), else a plain list.
import fs from 'node:fs';
import { OutpostError } from '../../appliance/errors.ts';
import type { IndicatorType, SourceReport } from '../../appliance/types.ts';
import { readCsv } from './csv.ts';
import { mispEvents, readMispEvents } from './misp-event.ts';
import { readPlain } from './plain.ts';
import { readStix } from './stix.ts';
import { isWarninglist, readWarninglist } from './warninglist.ts';

export { splitCsvRecord } from './csv.ts';
export { parseStixPattern } from './stix.ts';
export { newReport, MAX_SAMPLES } from './report.ts';

export interface RawEntry {
  raw: string;
  hint?: IndicatorType;
  /** Line number (text) or 1-based record position (JSON) for reports. */
  line?: number;
  /** Known keys are lifted onto the Indicator (port → ports, confidence → conf, first_seen → fs,
   *  last_seen → ls, expires → exp, tags, category → cat); the rest is carried as Indicator.ctx. */
  ctx?: {
    port?: number;
    category?: string;
    confidence?: number;
    first_seen?: string;
    last_seen?: string;
    expires?: string;
    tags?: string[];
    [k: string]: unknown;
  };
}

export type SourceFormat = 'plain' | 'stix' | 'misp-event' | 'misp-warninglist' | 'csv';

/** JSON sources are parsed whole; beyond this a file is refused rather than exhausting memory. */
export const MAX_JSON_BYTES = 256 * 1024 * 1024;
/** Bytes read to sniff a file's format. */
export const HEAD_BYTES = 64 * 1024;

function looksLikeJson(head: Buffer): boolean {
  const text = head.toString('utf8').replace(/^\uFEFF/, '').trimStart();
  return text.startsWith('{') || /^\[\s*(\{|\])/.test(text);
}

/** The format of a parsed JSON document, or an E_INPUT error naming the file. */
export function classifyJson(file: string, doc: unknown): Exclude<SourceFormat, 'plain' | 'csv'> {
  if (doc && typeof doc === 'object' && !Array.isArray(doc) && (doc as Record<string, unknown>).type === 'bundle') return 'stix';
  if (mispEvents(doc)) return 'misp-event';
  if (isWarninglist(doc)) return 'misp-warninglist';
  const keys = doc && typeof doc === 'object' && !Array.isArray(doc) ? Object.keys(doc).slice(0, 8).join(', ') : Array.isArray(doc) ? 'an array' : typeof doc;
  throw new OutpostError('E_INPUT', `${file}: JSON is not a STIX bundle, MISP event or MISP warninglist (top level: ${keys || 'empty object'})`);
}

/**
 * Detects a source's format from its first bytes (`head`) and its name. For JSON the shape decides; when
 * `head` is the whole file it is parsed, otherwise top-level markers are looked for.
 */
export function detectFormat(path: string, head: Buffer): SourceFormat {
  if (looksLikeJson(head)) {
    const text = head.toString('utf8').replace(/^\uFEFF/, '');
    try {
      return classifyJson(path, JSON.parse(text));
    } catch (e) {
      if (e instanceof OutpostError) throw e;
    }
    if (/"type"\s*:\s*"bundle"/.test(text)) return 'stix';
    if (/"Event"\s*:\s*\{/.test(text)) return 'misp-event';
    if (/"list"\s*:\s*\[/.test(text)) return 'misp-warninglist';
    throw new OutpostError('E_INPUT', `${path}: JSON is not a STIX bundle, MISP event or MISP warninglist`);
  }
  if (/\.csv$/i.test(path)) return 'csv';
  return 'plain';
}

function statFile(file: string): fs.Stats {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw new OutpostError('E_INPUT', `cannot read source file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!st.isFile()) throw new OutpostError('E_INPUT', `source ${file} is not a regular file`);
  return st;
}

function readHead(file: string): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(HEAD_BYTES);
    const n = fs.readSync(fd, buf, 0, HEAD_BYTES, 0);
    return buf.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Streams the raw entries of one source file. Sets report.format; counts every line/record into
 * report.lines and skipped/structural-malformed ones into the report. Throws OutpostError E_INPUT
 * (unreadable, invalid or unrecognised JSON) or E_TOO_LARGE (JSON over 256 MiB) before yielding anything.
 */
export async function* readSource(path: string, report: SourceReport): AsyncGenerator<RawEntry> {
  const st = statFile(path);
  const head = readHead(path);
  if (!looksLikeJson(head)) {
    const format = detectFormat(path, head);
    report.format = format;
    yield* format === 'csv' ? readCsv(path, report) : readPlain(path, report);
    return;
  }
  if (st.size > MAX_JSON_BYTES) {
    throw new OutpostError('E_TOO_LARGE', `${path}: JSON source is ${st.size} bytes; the limit is ${MAX_JSON_BYTES} (split it or convert it to a plain list)`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(fs.readFileSync(path, 'utf8').replace(/^\uFEFF/, ''));
  } catch (e) {
    throw new OutpostError('E_INPUT', `${path}: invalid JSON: ${(e as Error).message}`);
  }
  const format = classifyJson(path, doc);
  report.format = format;
  if (format === 'stix') yield* readStix(doc as Record<string, unknown>, report);
  else if (format === 'misp-event') yield* readMispEvents(mispEvents(doc)!, report);
  else yield* readWarninglist(doc as { name: string; type?: string; list: unknown[] }, report);
}
