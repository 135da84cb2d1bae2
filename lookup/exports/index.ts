// Export registry: every consumer format by name, its media type, streaming, and the file set
// written into the data dir after each apply. Each format lives in its own module beside this one.
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { DB } from '../../appliance/db.ts';
import { EXPORT_FILE_SETS, type ExportFileSet } from '../../appliance/types.ts';
import { OutpostError } from '../../appliance/errors.ts';
import { FeedPolicy } from '../../appliance/freshness.ts';
import { csvExport } from './csv.ts';
import { policyTarget, rpzZone, type RpzPolicy } from './rpz.ts';
import { newStats, sourceContext, type ExportStats, type SourceOptions } from './source.ts';
import { overridesState } from '../overrides.ts';
import { stixBundle } from './stix.ts';
import { iprepList, suricataFiles } from './suricata.ts';
import { tarStream } from './tar.ts';
import { zeekIntel } from './zeek.ts';
import { writeMispFeed } from './misp-feed.ts';

export type { ExportStats } from './source.ts';

export type ExportFormat = 'suricata-dataset' | 'suricata-iprep' | 'zeek-intel' | 'rpz' | 'csv' | 'stix';
export const EXPORT_FORMATS: ExportFormat[] = ['suricata-dataset', 'suricata-iprep', 'zeek-intel', 'rpz', 'csv', 'stix'];

export interface ExportOptions extends SourceOptions {
  /** Unix seconds; indicators expiring at or before it are left out. Default: now. */
  now?: number;
  /** RPZ action for listed names. Default 'nxdomain'. */
  rpzPolicy?: RpzPolicy;
  /** Also publish listed addresses/networks as RPZ response-IP triggers (`rpz-ip`). Default false. */
  rpzIpTriggers?: boolean;
  /** Filled while the export streams: rows written and rows left out, by reason. */
  stats?: ExportStats;
  /** writeExportFiles: the file sets to write (default all); the others' files are removed. */
  files?: readonly ExportFileSet[];
}

const CONTENT_TYPES: Record<ExportFormat, string> = {
  'suricata-dataset': 'application/x-tar',
  'suricata-iprep': 'text/plain; charset=utf-8',
  'zeek-intel': 'text/plain; charset=utf-8',
  rpz: 'text/dns; charset=utf-8',
  csv: 'text/csv; charset=utf-8; header=present',
  stix: 'application/stix+json;version=2.1',
};

/** File names used by writeExportFiles and suggested for `--out` / Content-Disposition. */
export const EXPORT_FILE_NAMES: Record<ExportFormat, string> = {
  'suricata-dataset': 'outpost-suricata.tar',
  'suricata-iprep': 'outpost.list',
  'zeek-intel': 'outpost.intel',
  rpz: 'outpost.rpz',
  csv: 'outpost.csv',
  stix: 'outpost.stix.json',
};

/** Where each export file set lives in the exports dir (a directory for suricata and misp-feed). */
const EXPORT_SET_PATHS: Record<ExportFileSet, string> = {
  suricata: 'suricata',
  'zeek-intel': EXPORT_FILE_NAMES['zeek-intel'],
  rpz: EXPORT_FILE_NAMES.rpz,
  csv: EXPORT_FILE_NAMES.csv,
  stix: EXPORT_FILE_NAMES.stix,
  'misp-feed': 'misp-feed',
};

function checkFormat(format: string): ExportFormat {
  if (!(EXPORT_FORMATS as string[]).includes(format)) {
    throw new OutpostError('E_INPUT', `unknown export format "${format}"; expected one of: ${EXPORT_FORMATS.join(', ')}`);
  }
  return format as ExportFormat;
}

export function contentType(format: ExportFormat | string): string {
  return CONTENT_TYPES[checkFormat(format)];
}

/**
 * Streams one export as string chunks (~64 KiB). Bad format or options throw OutpostError('E_INPUT')
 * here, before anything is produced, so an HTTP handler can still answer 400.
 * `suricata-dataset` is a tar of the whole Suricata set (lists, rules, iprep files).
 */
export function exportFormat(db: DB, format: ExportFormat | string, opts: ExportOptions = {}): Iterable<string> {
  const f = checkFormat(format);
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  if (!Number.isFinite(now)) throw new OutpostError('E_INPUT', 'export time must be a number of unix seconds');
  if (f === 'rpz') policyTarget(opts.rpzPolicy); // throws E_INPUT on a bad walled-garden name
  const stats = opts.stats ?? newStats();
  const ctx = () => sourceContext(db, now, stats, opts);
  switch (f) {
    case 'suricata-dataset':
      return { [Symbol.iterator]: () => tarStream(suricataFiles(ctx()), now) };
    case 'suricata-iprep':
      return { [Symbol.iterator]: () => iprepList(ctx()) };
    case 'zeek-intel':
      return { [Symbol.iterator]: () => zeekIntel(ctx()) };
    case 'rpz':
      return { [Symbol.iterator]: () => rpzZone(ctx(), { now, policy: opts.rpzPolicy, ipTriggers: opts.rpzIpTriggers }) };
    case 'csv':
      return { [Symbol.iterator]: () => csvExport(ctx()) };
    case 'stix':
      return { [Symbol.iterator]: () => stixBundle(ctx()) };
  }
}

/** Removes writeAtomic's temp files below `dir` (runs never overlap, so any found belong to a stopped run). */
async function removeStaleTemps(dir: string): Promise<void> {
  for (const e of await fs.promises.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && /\.tmp-\d+-[0-9a-f]{8}$/.test(e.name)) await fs.promises.rm(path.join(e.parentPath, e.name), { force: true });
  }
}

/**
 * A file written through a temp file in the same dir and renamed into place by `commit`, so readers never
 * see half a file; `write` buffers to ~64 KiB per system call. `abort` removes the temp file.
 */
export class AtomicFile {
  private buf = '';
  private constructor(readonly file: string, private readonly tmp: string, private readonly fh: fs.promises.FileHandle) {}

  static async open(file: string): Promise<AtomicFile> {
    const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    return new AtomicFile(file, tmp, await fs.promises.open(tmp, 'w', 0o644));
  }

  /** Appends; resolves at once unless a full buffer went to the file. */
  async write(s: string): Promise<void> {
    this.buf += s;
    if (this.buf.length >= 65_536) await this.flush();
  }

  private async flush(): Promise<void> {
    const b = this.buf;
    this.buf = '';
    if (b) await this.fh.write(b);
  }

  async commit(): Promise<void> {
    await this.flush();
    await this.fh.sync();
    await this.fh.close();
    await fs.promises.rename(this.tmp, this.file);
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => {});
    await fs.promises.rm(this.tmp, { force: true });
  }
}

/** Writes chunks to `file` via a temp file in the same dir and a rename, so readers never see half a file. */
export async function writeAtomic(file: string, chunks: Iterable<string> | AsyncIterable<string>): Promise<void> {
  const out = await AtomicFile.open(file);
  try {
    for await (const chunk of chunks) await out.write(chunk);
    await out.commit();
  } catch (e) {
    await out.abort();
    throw e;
  }
}

/**
 * Regenerates every export in `dir` (called after each apply and, debounced, after override changes):
 *   dir/suricata/  domains.lst ipv4.lst ipv6.lst md5.lst sha1.lst sha256.lst outpost.rules
 *                  categories.txt outpost.list outpost-iprep.rules
 *   dir/outpost.intel  dir/outpost.rpz  dir/outpost.csv  dir/outpost.stix.json
 *   dir/misp-feed/     manifest.json <uuid>.json (one event per block feed) hashes.csv
 *   dir/exports.json   what was written and skipped, per file; the overrides state and the withheld
 *                      (fail-closed, stale) feeds it reflects; the sets not written (`not_written`)
 * Each file is replaced atomically; within the Suricata set the rules file is replaced last. `opts.files`
 * (config OUTPOST_EXPORT_FILES) limits the sets written; the files of the others are removed.
 * Returns the paths written.
 */
export async function writeExportFiles(db: DB, dir: string, opts: ExportOptions = {}): Promise<string[]> {
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const suricataDir = path.join(dir, EXPORT_SET_PATHS.suricata);
  await fs.promises.mkdir(dir, { recursive: true, mode: 0o755 });
  await removeStaleTemps(dir); // left by a run that was stopped (serve shutting down) before its rename
  const written: string[] = [];
  const report: Record<string, ExportStats> = {};
  const overrides = overridesState(db, new Date(now * 1000));
  const withheld = withheldState(db, now, opts);

  const sets = new Set<ExportFileSet>(opts.files ?? EXPORT_FILE_SETS);
  // A set switched off loses its files: a consumer must not go on reading data that no longer follows the store.
  const off = EXPORT_FILE_SETS.filter((f) => !sets.has(f));
  for (const f of off) await fs.promises.rm(path.join(dir, EXPORT_SET_PATHS[f]), { recursive: true, force: true });

  if (sets.has('suricata')) {
    await fs.promises.mkdir(suricataDir, { recursive: true, mode: 0o755 });
    const surStats = newStats();
    for (const f of suricataFiles(sourceContext(db, now, surStats, opts))) {
      const file = path.join(suricataDir, f.name);
      await writeAtomic(file, f.chunks());
      written.push(file);
    }
    report['suricata/'] = surStats;
  }

  for (const format of ['zeek-intel', 'rpz', 'csv', 'stix'] as const) {
    if (!sets.has(format)) continue;
    const stats = newStats();
    const file = path.join(dir, EXPORT_FILE_NAMES[format]);
    await writeAtomic(file, exportFormat(db, format, { ...opts, now, stats }));
    written.push(file);
    report[EXPORT_FILE_NAMES[format]] = stats;
  }

  // ---- MISP feed (lookup/exports/misp-feed.ts): a directory, not one stream ----
  if (sets.has('misp-feed')) {
    const misp = await writeMispFeed(db, path.join(dir, 'misp-feed'), { now, expiryDays: opts.expiryDays, staleAfterS: opts.staleAfterS });
    written.push(...misp.files);
    report['misp-feed/'] = misp.stats;
  }
  // ---- end MISP feed ----

  const summary = path.join(dir, 'exports.json');
  await writeAtomic(summary, [JSON.stringify({ generated_at: new Date(now * 1000).toISOString(), overrides, withheld_feeds: withheld, files: report, not_written: off }, null, 2) + '\n']);
  written.push(summary);
  return written;
}

/** The feeds left out at `now` because they are fail-closed and stale (sorted names; lookups withhold the same). */
export function withheldState(db: DB, now: number, opts: Pick<ExportOptions, 'staleAfterS'> = {}): string[] {
  return [...new FeedPolicy(db, { staleAfterS: opts.staleAfterS }).withheld(now)].sort();
}

/**
 * What the files in `dir` were written for: the overrides state (lookup/overrides.ts overridesState) and
 * the withheld feeds (withheldState, joined by ","); each null if unknown.
 */
export function exportedState(dir: string): { overrides: string | null; withheld: string | null } {
  try {
    const j = JSON.parse(fs.readFileSync(path.join(dir, 'exports.json'), 'utf8')) as { overrides?: unknown; withheld_feeds?: unknown };
    return {
      overrides: typeof j.overrides === 'string' ? j.overrides : null,
      withheld: Array.isArray(j.withheld_feeds) ? j.withheld_feeds.join(',') : null,
    };
  } catch {
    return { overrides: null, withheld: null };
  }
}
