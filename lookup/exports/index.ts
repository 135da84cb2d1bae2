// Export registry: every consumer format by name, its media type, streaming, and the file set
// written into the data dir after each apply. Each format lives in its own module beside this one.
import fs from 'node:fs';
import path from 'node:path';
import { currentGeneration, type DB } from '../../appliance/db.ts';
import { EXPORT_FILE_SETS, type ExportFileSet, type IndicatorType } from '../../appliance/types.ts';
import { OutpostError } from '../../appliance/errors.ts';
import { FeedPolicy } from '../../appliance/freshness.ts';
import { csvFile } from './csv.ts';
import { policyTarget, rpzFile, type RpzPolicy } from './rpz.ts';
import { newStats, sourceContext, type ExportStats, type SourceContext, type SourceOptions } from './source.ts';
import { overridesState } from '../overrides.ts';
import { stixFile } from './stix.ts';
import { iprepFile, suricataFiles } from './suricata.ts';
import { tarStream } from './tar.ts';
import { zeekFile } from './zeek.ts';
import { MispFeedSink } from './misp-feed.ts';
import { FileSink, runPass, setStats, streamRowFile, type RowFile, type RowSink } from './pass.ts';
import { isTempFile, writeAtomic } from './atomic-file.ts';

export { AtomicFile, writeAtomic } from './atomic-file.ts';

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
  if (f === 'suricata-dataset') {
    return {
      [Symbol.iterator]: () => {
        const c = ctx();
        return tarStream(suricataFiles().map((file) => ({ name: file.name, chunks: () => streamRowFile(c, file) })), now);
      },
    };
  }
  return {
    [Symbol.iterator]: () => {
      const c = ctx();
      return streamRowFile(c, rowFile(c, f, { ...opts, now }));
    },
  };
}

/** The one-file formats as RowFiles (pass.ts). */
function rowFile(ctx: SourceContext, format: Exclude<ExportFormat, 'suricata-dataset'>, opts: ExportOptions & { now: number }): RowFile {
  switch (format) {
    case 'suricata-iprep':
      return iprepFile;
    case 'zeek-intel':
      return zeekFile;
    case 'rpz':
      return rpzFile(ctx, { now: opts.now, policy: opts.rpzPolicy, ipTriggers: opts.rpzIpTriggers });
    case 'csv':
      return csvFile;
    case 'stix':
      return stixFile(opts.now);
  }
}

/** Removes writeAtomic's temp files below `dir` (runs never overlap, so any found belong to a stopped run). */
async function removeStaleTemps(dir: string): Promise<void> {
  for (const e of await fs.promises.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && isTempFile(e.name)) await fs.promises.rm(path.join(e.parentPath, e.name), { force: true });
  }
}

/**
 * Regenerates every export in `dir` (called after each apply and, debounced, after override changes):
 *   dir/suricata/  domains.lst ipv4.lst ipv6.lst md5.lst sha1.lst sha256.lst outpost.rules
 *                  categories.txt outpost.list outpost-iprep.rules
 *   dir/outpost.intel  dir/outpost.rpz  dir/outpost.csv  dir/outpost.stix.json
 *   dir/misp-feed/     manifest.json <uuid>.json (one event per block feed) hashes.csv
 *   dir/exports.json   when, for which generation and in how long the files were written; what was
 *                      written and skipped, per set; the overrides state and the withheld (fail-closed,
 *                      stale) feeds it reflects; the sets not written (`not_written`)
 * One pass over the store writes every file at once (pass.ts runPass); each is replaced atomically once
 * the pass is through, in the order above (within the Suricata set the rules file last; within the MISP
 * feed manifest.json last). `opts.files` (config OUTPOST_EXPORT_FILES) limits the sets written; the files
 * of the others are removed. Returns the paths written.
 */
export async function writeExportFiles(db: DB, dir: string, opts: ExportOptions = {}): Promise<string[]> {
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const started = Date.now();
  const generation = currentGeneration(db); // the files reflect it or a later one (the pass reads type by type)
  await fs.promises.mkdir(dir, { recursive: true, mode: 0o755 });
  await removeStaleTemps(dir); // left by a run that was stopped (serve shutting down) before its rename
  const overrides = overridesState(db, new Date(now * 1000));
  const withheld = withheldState(db, now, opts);

  const sets = new Set<ExportFileSet>(opts.files ?? EXPORT_FILE_SETS);
  // A set switched off loses its files: a consumer must not go on reading data that no longer follows the store.
  const off = EXPORT_FILE_SETS.filter((f) => !sets.has(f));
  for (const f of off) await fs.promises.rm(path.join(dir, EXPORT_SET_PATHS[f]), { recursive: true, force: true });

  const ctx = sourceContext(db, now, newStats(), opts);
  const sinks: RowSink[] = [];
  // Per set: its name in the report, its own counts, the types its files take, and its files' paths.
  const parts: Array<{ name: string; own: ExportStats; types: IndicatorType[]; paths: () => string[] }> = [];
  const add = (name: string, files: RowFile[], base: string) => {
    const own = newStats();
    const paths = files.map((f) => path.join(base, f.name));
    files.forEach((f, i) => sinks.push(new FileSink(paths[i], f, own)));
    parts.push({ name, own, types: files.flatMap((f) => [...f.types]), paths: () => paths });
  };
  if (sets.has('suricata')) {
    const suricataDir = path.join(dir, EXPORT_SET_PATHS.suricata);
    await fs.promises.mkdir(suricataDir, { recursive: true, mode: 0o755 });
    add('suricata/', suricataFiles(), suricataDir);
  }
  for (const format of ['zeek-intel', 'rpz', 'csv', 'stix'] as const) {
    if (sets.has(format)) add(EXPORT_FILE_NAMES[format], [rowFile(ctx, format, { ...opts, now })], dir);
  }
  if (sets.has('misp-feed')) {
    const misp = new MispFeedSink(ctx, path.join(dir, EXPORT_SET_PATHS['misp-feed']));
    sinks.push(misp);
    parts.push({ name: 'misp-feed/', own: misp.own, types: [...misp.types], paths: () => misp.result?.files ?? [] });
  }
  const byType = runPass(ctx, sinks);

  const written: string[] = [];
  const report: Record<string, ExportStats> = {};
  for (const p of parts) {
    written.push(...p.paths());
    report[p.name] = setStats(p.own, byType, p.types);
  }
  const summary = path.join(dir, SUMMARY);
  const head = { generated_at: new Date(now * 1000).toISOString(), generation, took_ms: Date.now() - started };
  await writeAtomic(summary, [JSON.stringify({ ...head, overrides, withheld_feeds: withheld, files: report, not_written: off }, null, 2) + '\n']);
  written.push(summary);
  return written;
}

/** The feeds left out at `now` because they are fail-closed and stale (sorted names; lookups withhold the same). */
export function withheldState(db: DB, now: number, opts: Pick<ExportOptions, 'staleAfterS'> = {}): string[] {
  return [...new FeedPolicy(db, { staleAfterS: opts.staleAfterS }).withheld(now)].sort();
}

/** The summary each run writes last (writeExportFiles), read back by exportsStatus and exportedState. */
const SUMMARY = 'exports.json';

/** The last run's summary in `dir` as parsed JSON; null when there is none or it does not parse. */
function readSummary(dir: string): Record<string, unknown> | null {
  try {
    const j: unknown = JSON.parse(fs.readFileSync(path.join(dir, SUMMARY), 'utf8'));
    return j && typeof j === 'object' ? (j as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** The export files as an admin sees them (`outpost status`, the console's dashboard). */
export interface ExportsStatus {
  /** When the last finished run started (its `now`), the generation it started from, and how long it took; null for files written before these were recorded. */
  generated_at: string | null;
  generation: number | null;
  took_ms: number | null;
  /** The sets written (`suricata/`, `outpost.csv`, …) and those switched off (OUTPOST_EXPORT_FILES). */
  sets: string[];
  not_written: string[];
  /** A run is writing new files now (its temp files are in the dir; a run stopped by a shutdown leaves them until the next run). */
  running: boolean;
}

/** What `dir` holds; null when no run has finished there yet and none is under way. */
export function exportsStatus(dir: string): ExportsStatus | null {
  let running = false;
  try {
    running = fs.readdirSync(dir, { recursive: true }).some((f) => isTempFile(String(f)));
  } catch {
    return null; // no exports dir yet
  }
  const summary = readSummary(dir);
  if (!summary && !running) return null;
  const j = summary ?? {};
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  return {
    generated_at: typeof j.generated_at === 'string' ? j.generated_at : null,
    generation: num(j.generation),
    took_ms: num(j.took_ms),
    sets: j.files && typeof j.files === 'object' ? Object.keys(j.files) : [],
    not_written: Array.isArray(j.not_written) ? j.not_written.filter((x): x is string => typeof x === 'string') : [],
    running,
  };
}

/**
 * What the files in `dir` were written for: the overrides state (lookup/overrides.ts overridesState) and
 * the withheld feeds (withheldState, joined by ","); each null if unknown.
 */
export function exportedState(dir: string): { overrides: string | null; withheld: string | null } {
  const j = readSummary(dir);
  return {
    overrides: typeof j?.overrides === 'string' ? j.overrides : null,
    withheld: Array.isArray(j?.withheld_feeds) ? j.withheld_feeds.join(',') : null,
  };
}
