// Backup and restore of the one SQLite store: SQLite's online backup while the appliance serves, a
// verified restore that replaces nothing until the copy passes every check, and the start-up integrity
// check that names the newest backup when the store is damaged.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { acquireServeLock, audit, ensureDataDir, layout, openDb, SCHEMA_VERSION, setMeta, type DB } from './db.ts';
import { OutpostError, isOutpostError } from './errors.ts';
import { isMainThread, workerData } from 'node:worker_threads';
import { runWorker, workOnOwnConnection } from './worker.ts';

/** Tables every Outpost database since schema 1 has; a backup without them is not ours. */
export const REQUIRED_TABLES = ['meta', 'feeds', 'indicators', 'generations', 'packages', 'trusted_keys', 'tokens', 'audit'] as const;

export interface BackupRecord {
  path: string;
  at: string;
  bytes: number;
  schema: number;
  generation: number;
}

export interface DatabaseCheck {
  schema: number;
  generation: number;
  feeds: number;
  indicators: number;
}

export interface RestoreInfo extends DatabaseCheck {
  from: string;
  /** Where the replaced database was kept, or null when there was none. */
  previous: string | null;
}

/** The sidecar record survives a database that can no longer be read, which is when it is needed. */
function recordFile(dataDir: string): string {
  return path.join(layout(dataDir).root, 'last-backup.json');
}

/** The newest backup recorded for this data dir, or null. */
export function lastBackup(dataDir: string): BackupRecord | null {
  try {
    return JSON.parse(fs.readFileSync(recordFile(dataDir), 'utf8')) as BackupRecord;
  } catch {
    return null;
  }
}

/** An E_DB error for a damaged store that says where the newest backup is and how to restore it. */
export function databaseError(dataDir: string, detail: string): OutpostError {
  const dbPath = layout(dataDir).db;
  const last = lastBackup(dataDir);
  let hint: string;
  if (!last) hint = 'no backup of this data dir is recorded; restore one with `outpost restore <file>` or move the file away to start empty';
  else if (!fs.existsSync(last.path)) hint = `the newest recorded backup ${last.path} (${last.at}) no longer exists`;
  else hint = `newest backup: ${last.path} (${last.at}, generation ${last.generation}); restore it with: outpost restore ${last.path}`;
  return new OutpostError('E_DB', `database ${dbPath} failed its integrity check: ${detail}; ${hint}`, { path: dbPath, backup: last?.path ?? null });
}

/** Start-up check (quick_check by default: O(size) without the index cross-checks of integrity_check). */
export function checkIntegrity(db: DB, dataDir: string, mode: string = 'quick'): void {
  if (mode === 'off') return;
  let rows: string[];
  try {
    rows = (db.pragma(mode === 'full' ? 'integrity_check(20)' : 'quick_check(20)') as Record<string, string>[]).map((r) => Object.values(r)[0]);
  } catch (e) {
    throw databaseError(dataDir, (e as Error).message);
  }
  if (rows.length !== 1 || rows[0] !== 'ok') throw databaseError(dataDir, rows.slice(0, 5).join('; '));
}

/**
 * Whether serve checks the store before it starts (true) or in a background thread once it serves (false):
 * the check reads the whole file, ~30 s for a 1 GB store of 10M indicators, and "start with 10M already
 * imported" should be seconds. `inlineMb`: config startCheckInlineMb.
 */
export function startCheckInline(dataDir: string, mode: string, inlineMb: number): boolean {
  if (mode === 'off') return true;
  try {
    return fs.statSync(layout(dataDir).db).size <= inlineMb * 1024 * 1024;
  } catch {
    return true; // no file yet: nothing to read
  }
}

const CHECK_TAG = 'outpost:start-check';

/**
 * The start check in a worker thread on a read-only connection of its own (the lookup thread never waits
 * for it). Resolves when the store passes; rejects with the same E_DB as an inline check when it does not.
 */
export async function checkIntegrityInBackground(dataDir: string, mode: string): Promise<void> {
  await runWorker<null>(new URL(import.meta.url), { tag: CHECK_TAG, dataDir, mode, dbPath: layout(dataDir).db });
}

if (!isMainThread && (workerData as { tag?: string } | null)?.tag === CHECK_TAG) {
  const { dataDir, mode, dbPath } = workerData as { dataDir: string; mode: string; dbPath: string };
  void workOnOwnConnection(dbPath, { readonly: true }, (db) => {
    checkIntegrity(db, dataDir, mode);
    return null;
  });
}

/** Opens the data dir's store, turning SQLite's "not a database"/"malformed" into the E_DB error above. */
export function openCheckedDb(dataDir: string, mode: string = 'quick'): DB {
  let db: DB;
  try {
    db = openDb(dataDir);
  } catch (e) {
    if (isOutpostError(e)) throw e;
    throw databaseError(dataDir, (e as Error).message);
  }
  try {
    checkIntegrity(db, dataDir, mode);
  } catch (e) {
    db.close();
    throw e;
  }
  return db;
}

/**
 * Checks a database file the way restore needs it: full integrity_check, a schema version this build
 * can migrate (1..SCHEMA_VERSION) and every required table. Opens the file read-write (it may switch the
 * journal mode), so call it on a copy, never on a live store.
 */
export function verifyDatabaseFile(file: string): DatabaseCheck {
  if (!fs.existsSync(file) || !fs.statSync(file).isFile()) throw new OutpostError('E_NOT_FOUND', `no backup file at ${file}`);
  let db: DB | undefined;
  try {
    db = new Database(file, { fileMustExist: true });
    const rows = (db.pragma('integrity_check(20)') as Record<string, string>[]).map((r) => Object.values(r)[0]);
    if (rows.length !== 1 || rows[0] !== 'ok') throw new OutpostError('E_DB', `${file} fails PRAGMA integrity_check: ${rows.slice(0, 5).join('; ')}`);
    const schema = db.pragma('user_version', { simple: true }) as number;
    if (schema < 1) throw new OutpostError('E_DB', `${file} is not an Outpost database (schema version ${schema})`);
    if (schema > SCHEMA_VERSION) throw new OutpostError('E_DB', `${file} has schema version ${schema}, newer than this build supports (${SCHEMA_VERSION}); restore it with a newer Outpost`);
    const tables = new Set((db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((r) => r.name));
    const missing = REQUIRED_TABLES.filter((t) => !tables.has(t));
    if (missing.length) throw new OutpostError('E_DB', `${file} lacks required tables: ${missing.join(', ')}`);
    const generation = Number((db.prepare("SELECT value FROM meta WHERE key = 'generation'").get() as { value: string } | undefined)?.value ?? 0);
    const feeds = (db.prepare('SELECT count(*) AS n FROM feeds').get() as { n: number }).n;
    const indicators = (db.prepare('SELECT count(*) AS n FROM indicators').get() as { n: number }).n;
    return { schema, generation, feeds, indicators };
  } catch (e) {
    if (isOutpostError(e)) throw e;
    throw new OutpostError('E_DB', `${file} is not a readable SQLite database: ${(e as Error).message}`);
  } finally {
    db?.close();
  }
}

function fsyncPath(p: string): void {
  const fd = fs.openSync(p, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * `outpost backup <file>`: SQLite's online backup API from a separate connection, so `serve` keeps
 * answering (WAL: readers and writers are not blocked). All pages are copied in one step, which reads one
 * consistent snapshot and cannot be restarted by a concurrent writer. The copy is written beside the target,
 * switched to a single-file journal mode, checked with integrity_check, made 0600 and renamed into place.
 */
export async function backupDatabase(dataDir: string, file: string, opts: { actor?: string } = {}): Promise<BackupRecord> {
  const target = path.resolve(file);
  if (fs.existsSync(target)) throw new OutpostError('E_CONFLICT', `${target} already exists; refusing to overwrite a backup`);
  // A missing directory is made (0700: a backup holds token and password hashes), as `backups/x.db` in the README.
  fs.mkdirSync(path.dirname(target), { recursive: true, mode: 0o700 });
  const l = layout(dataDir);
  if (!fs.existsSync(l.db)) throw new OutpostError('E_EMPTY', `no database at ${l.db}`);
  const tmp = `${target}.partial-${process.pid}`;
  const db = openDb(dataDir);
  try {
    // Created 0600 before SQLite writes a page: a backup holds token and password hashes.
    fs.writeFileSync(tmp, '', { mode: 0o600, flag: 'wx' });
    fs.chmodSync(tmp, 0o600);
    await db.backup(tmp, { progress: () => 0x7fffffff });
    const copy = new Database(tmp);
    try {
      copy.pragma('journal_mode = DELETE');
    } finally {
      copy.close();
    }
    const check = verifyDatabaseFile(tmp);
    fsyncPath(tmp);
    fs.renameSync(tmp, target);
    fsyncPath(path.dirname(target));
    const record: BackupRecord = { path: target, at: new Date().toISOString(), bytes: fs.statSync(target).size, schema: check.schema, generation: check.generation };
    setMeta(db, 'last_backup', JSON.stringify(record));
    fs.writeFileSync(recordFile(dataDir), JSON.stringify(record) + '\n', { mode: 0o600 });
    audit(db, opts.actor ?? 'cli', 'backup', { subject: target, detail: { bytes: record.bytes, generation: record.generation } });
    return record;
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    fs.rmSync(`${tmp}-journal`, { force: true });
    throw e;
  } finally {
    db.close();
  }
}

/**
 * `outpost restore <file>`: refuses while `serve` holds the data dir (E_LOCKED), verifies a private copy
 * of the backup, keeps the current database as pre-restore-<time>.db, then renames the copy into place
 * (atomic on one file system). Filters are rebuilt at the next start.
 */
export function restoreDatabase(dataDir: string, file: string, opts: { actor?: string } = {}): RestoreInfo {
  const source = path.resolve(file);
  if (!fs.existsSync(source)) throw new OutpostError('E_NOT_FOUND', `no backup file at ${source}`);
  const release = acquireServeLock(dataDir);
  try {
    const l = ensureDataDir(dataDir);
    const tmp = path.join(l.root, `outpost.db.restore-${process.pid}`);
    fs.rmSync(tmp, { force: true });
    fs.copyFileSync(source, tmp);
    fs.chmodSync(tmp, 0o600);
    let check: DatabaseCheck;
    try {
      check = verifyDatabaseFile(tmp);
      fsyncPath(tmp);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      fs.rmSync(`${tmp}-journal`, { force: true });
      throw e;
    }

    let previous: string | null = null;
    if (fs.existsSync(l.db)) {
      // Fold the WAL into the main file when the old store still opens, so the kept copy is one file.
      try {
        const old = new Database(l.db);
        old.pragma('wal_checkpoint(TRUNCATE)');
        old.close();
      } catch {
        /* a damaged store: keep its files as they are */
      }
      previous = path.join(l.root, `pre-restore-${new Date().toISOString().replace(/[:.]/g, '-')}.db`);
      fs.copyFileSync(l.db, previous);
      fs.chmodSync(previous, 0o600);
      for (const suffix of ['-wal', '-shm']) {
        if (!fs.existsSync(l.db + suffix)) continue;
        if (suffix === '-wal') fs.copyFileSync(l.db + suffix, previous + suffix);
        // A stale WAL next to the new file would be replayed into it.
        fs.rmSync(l.db + suffix, { force: true });
      }
    }
    fs.renameSync(tmp, l.db);
    fsyncPath(l.root);
    fs.rmSync(path.join(l.root, 'filters'), { recursive: true, force: true });

    const db = openDb(dataDir);
    try {
      audit(db, opts.actor ?? 'cli', 'restore', { subject: source, detail: { previous, generation: check.generation, schema: check.schema } });
    } finally {
      db.close();
    }
    return { ...check, from: source, previous };
  } finally {
    release();
  }
}
