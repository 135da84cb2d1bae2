// SQLite store: opening with the right pragmas, schema migrations kept in code, data-dir layout and lock.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { OutpostError } from './errors.ts';

export type DB = Database.Database;

/** Each entry migrates from version i to i+1; never edit a shipped entry, append a new one. */
const MIGRATIONS: string[] = [
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
  INSERT INTO meta(key, value) VALUES ('generation', '0');

  CREATE TABLE feeds (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('block','allow')),
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    package_sha256 TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    generation INTEGER NOT NULL,
    count INTEGER NOT NULL,
    category TEXT,
    confidence INTEGER,
    prev_version INTEGER,
    prev_package TEXT,
    package_path TEXT,
    settings TEXT NOT NULL DEFAULT '{}'
  );

  -- One row per (value, feed). Times are unix seconds. The primary key is the lookup path (covering).
  CREATE TABLE indicators (
    type TEXT NOT NULL,
    value TEXT NOT NULL,
    feed TEXT NOT NULL,
    kind TEXT NOT NULL,
    category TEXT,
    confidence INTEGER,
    first_seen INTEGER,
    last_seen INTEGER,
    expires_at INTEGER,
    extra TEXT,
    PRIMARY KEY (type, value, feed)
  ) WITHOUT ROWID;
  CREATE INDEX indicators_feed ON indicators(feed, type);

  CREATE TABLE generations (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    feed TEXT,
    version INTEGER,
    action TEXT NOT NULL,
    added INTEGER NOT NULL DEFAULT 0,
    removed INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0
  );

  CREATE TABLE packages (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    feed TEXT,
    version INTEGER,
    type TEXT,
    sha256 TEXT,
    status TEXT NOT NULL CHECK (status IN ('accepted','rejected','dry-run')),
    code TEXT,
    message TEXT,
    summary TEXT
  );

  CREATE TABLE trusted_keys (
    key_id TEXT PRIMARY KEY,
    public_pem TEXT NOT NULL,
    label TEXT,
    added_at TEXT NOT NULL,
    revoked_at TEXT
  );

  CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    scope TEXT NOT NULL CHECK (scope IN ('lookup','export','admin')),
    hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    expires_at TEXT,
    revoked_at TEXT
  );

  CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    code TEXT,
    subject TEXT,
    detail TEXT
  );
  CREATE INDEX audit_ts ON audit(ts);
  `,
  // Console (ui/): users with scrypt hashes, server-side sessions (only a hash of the cookie is stored),
  // and login attempts for the rate limit and lockout. Times in sessions/login_attempts are unix ms.
  `
  CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role TEXT NOT NULL CHECK (role IN ('admin','viewer')),
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_login_at TEXT
  );

  CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    ip TEXT,
    user_agent TEXT
  ) WITHOUT ROWID;
  CREATE INDEX sessions_user ON sessions(user_id);

  CREATE TABLE login_attempts (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    username TEXT NOT NULL COLLATE NOCASE,
    ip TEXT NOT NULL,
    ok INTEGER NOT NULL
  );
  CREATE INDEX login_attempts_user ON login_attempts(username, ts);
  CREATE INDEX login_attempts_ip ON login_attempts(ip, ts);
  `,
  // Sync (sync/upstreams.ts, sync/pull.ts): upstreams with their schedule, last result and backoff state;
  // the root-of-trust versions accepted per upstream (documents kept exactly as fetched); the newest
  // verified latest.json per upstream feed (version floor against replays, cache for 304 answers).
  `
  CREATE TABLE upstreams (
    name TEXT PRIMARY KEY,
    base_url TEXT NOT NULL,
    schedule TEXT NOT NULL,
    added_at TEXT NOT NULL,
    root_version INTEGER,
    index_doc TEXT,
    index_etag TEXT,
    index_modified TEXT,
    last_attempt_at TEXT,
    last_success_at TEXT,
    last_code TEXT,
    last_message TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT
  );

  CREATE TABLE roots (
    upstream TEXT NOT NULL REFERENCES upstreams(name) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    document TEXT NOT NULL,
    accepted_at TEXT NOT NULL,
    PRIMARY KEY (upstream, version)
  );

  CREATE TABLE upstream_feeds (
    upstream TEXT NOT NULL REFERENCES upstreams(name) ON DELETE CASCADE,
    feed TEXT NOT NULL,
    version INTEGER NOT NULL,
    latest_doc TEXT NOT NULL,
    etag TEXT,
    last_modified TEXT,
    fetched_at TEXT NOT NULL,
    PRIMARY KEY (upstream, feed)
  );
  `,
  // Sync part B (sync/expiry.ts, sync/rollback.ts): expired indicators purged out of the lookup store but
  // still part of their feed's signed content state (so deltas keep applying); the version floor a
  // rollback leaves behind (packages at or below it are refused as E_ROLLBACK); explicit expiries indexed
  // for the purge.
  `
  CREATE TABLE indicators_expired (
    type TEXT NOT NULL,
    value TEXT NOT NULL,
    feed TEXT NOT NULL,
    kind TEXT NOT NULL,
    category TEXT,
    confidence INTEGER,
    first_seen INTEGER,
    last_seen INTEGER,
    expires_at INTEGER,
    extra TEXT,
    PRIMARY KEY (type, value, feed)
  ) WITHOUT ROWID;
  CREATE INDEX indicators_expired_feed ON indicators_expired(feed);
  CREATE INDEX indicators_expires ON indicators(feed, expires_at) WHERE expires_at IS NOT NULL;
  ALTER TABLE feeds ADD COLUMN floor_version INTEGER;
  `,
  // Verdicts (lookup/overrides.ts, lookup/sightings.ts): local overrides live apart from feed data so a
  // sync never erases them; sightings keep per-indicator counts and first/last local sighting, and a
  // log of (value, client, count) per flush window for --since queries. Sighting times are unix seconds.
  `
  CREATE TABLE overrides (
    id INTEGER PRIMARY KEY,
    action TEXT NOT NULL CHECK (action IN ('allow','block')),
    type TEXT NOT NULL,
    value TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    revoked_by TEXT
  );
  CREATE INDEX overrides_value ON overrides(type, value);

  CREATE TABLE sightings (
    type TEXT NOT NULL,
    value TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    last_client TEXT,
    last_verdict TEXT,
    feeds TEXT,
    false_positive_at TEXT,
    false_positive_override INTEGER,
    PRIMARY KEY (type, value)
  ) WITHOUT ROWID;
  CREATE INDEX sightings_last ON sightings(last_seen);

  CREATE TABLE sighting_log (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    type TEXT NOT NULL,
    value TEXT NOT NULL,
    client TEXT NOT NULL,
    verdict TEXT NOT NULL,
    feeds TEXT,
    count INTEGER NOT NULL
  );
  CREATE INDEX sighting_log_ts ON sighting_log(ts);
  `,
  // Reference data (sync/reference.ts, lookup/actors.ts): signed sets of actors, families and techniques,
  // their aliases by normalized key, and the indicator → entity links computed per data generation.
  `
  CREATE TABLE reference_sets (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    package_sha256 TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT NOT NULL,
    applied_at TEXT NOT NULL,
    count INTEGER NOT NULL
  );

  CREATE TABLE reference_entities (
    id TEXT PRIMARY KEY,
    set_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL
  ) WITHOUT ROWID;
  CREATE INDEX reference_entities_set ON reference_entities(set_name);

  CREATE TABLE reference_aliases (
    key TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    PRIMARY KEY (key, entity_id)
  ) WITHOUT ROWID;

  CREATE TABLE reference_links (
    entity_id TEXT NOT NULL,
    type TEXT NOT NULL,
    value TEXT NOT NULL,
    feed TEXT NOT NULL,
    via TEXT NOT NULL,
    PRIMARY KEY (entity_id, type, value, feed)
  ) WITHOUT ROWID;
  `,
  // Lookup volume (lookup/sightings.ts, dashboard chart): lookups answered and lookups that matched,
  // per UTC day, added up in memory by the sightings writer and flushed with its batches.
  `
  CREATE TABLE lookup_counts (
    day TEXT PRIMARY KEY,
    lookups INTEGER NOT NULL,
    matches INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
  // Platform push (lookup/webhook.ts): batches waiting for delivery survive restarts; next_at is epoch ms.
  `
  CREATE TABLE push_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL,
    created_at TEXT NOT NULL
  );
  CREATE INDEX push_queue_due ON push_queue(target, next_at);
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export interface DataDirLayout {
  root: string;
  db: string;
  staging: string;
  packages: string;
  inbox: string;
  exports: string;
  logs: string;
  lock: string;
  demo: string;
}

export function layout(dataDir: string): DataDirLayout {
  const root = path.resolve(dataDir);
  return {
    root,
    db: path.join(root, 'outpost.db'),
    staging: path.join(root, 'staging'),
    packages: path.join(root, 'packages'),
    inbox: path.join(root, 'inbox'),
    exports: path.join(root, 'exports'),
    logs: path.join(root, 'logs'),
    lock: path.join(root, 'serve.lock'),
    demo: path.join(root, 'demo'),
  };
}

/** Creates the data dir (0700) and its sub-folders; refuses a world-writable one. */
export function ensureDataDir(dataDir: string): DataDirLayout {
  const l = layout(dataDir);
  fs.mkdirSync(l.root, { recursive: true, mode: 0o700 });
  const st = fs.statSync(l.root);
  if (st.mode & 0o002) throw new OutpostError('E_CONFIG', `data directory ${l.root} is world-writable; run: chmod 700 ${l.root}`);
  for (const dir of [l.staging, l.packages, l.inbox, l.exports, l.logs]) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return l;
}

export function openDb(dataDir: string, opts: { readonly?: boolean } = {}): DB {
  const l = opts.readonly ? layout(dataDir) : ensureDataDir(dataDir);
  const existed = fs.existsSync(l.db);
  if (opts.readonly && !existed) throw new OutpostError('E_EMPTY', `no database at ${l.db}`);
  // The store holds token and password hashes: 0600 from its first byte (created here, not by SQLite under
  // the umask), and tightened if someone loosened it. SQLite gives -wal/-shm the main file's mode.
  if (!opts.readonly && !existed) fs.closeSync(fs.openSync(l.db, 'wx', 0o600));
  if (!opts.readonly && (fs.statSync(l.db).mode & 0o077) !== 0) fs.chmodSync(l.db, 0o600);
  const db = new Database(l.db, { readonly: opts.readonly ?? false });
  db.pragma('busy_timeout = 10000');
  if (!opts.readonly) {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    migrate(db);
  }
  return db;
}

export function migrate(db: DB): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > SCHEMA_VERSION) {
    throw new OutpostError('E_DB', `database schema version ${current} is newer than this build supports (${SCHEMA_VERSION})`);
  }
  for (let v = current; v < SCHEMA_VERSION; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]);
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
  }
}

const statements = new WeakMap<DB, Map<string, Database.Statement>>();

/** A prepared statement kept per connection: for small queries on hot paths (preparing costs microseconds). */
export function cachedStatement(db: DB, sql: string): Database.Statement {
  let m = statements.get(db);
  if (!m) statements.set(db, (m = new Map()));
  let st = m.get(sql);
  if (!st) m.set(sql, (st = db.prepare(sql)));
  return st;
}

export function getMeta(db: DB, key: string): string | undefined {
  const row = cachedStatement(db, 'SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined;
  return row?.value;
}

export function setMeta(db: DB, key: string, value: string): void {
  cachedStatement(db, 'INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
}

export function currentGeneration(db: DB): number {
  return Number(getMeta(db, 'generation') ?? 0);
}

/** One row of the audit table as stored (`detail` is JSON text). */
export interface AuditRow {
  id: number;
  ts: string;
  actor: string;
  action: string;
  code: string | null;
  subject: string | null;
  detail: string | null;
}

/** Writes one audit row. `code` is a stable E_* code for refusals, null for successes. */
export function audit(db: DB, actor: string, action: string, opts: { code?: string | null; subject?: string; detail?: unknown } = {}): void {
  cachedStatement(db, 'INSERT INTO audit(ts, actor, action, code, subject, detail) VALUES (?, ?, ?, ?, ?, ?)').run(
    new Date().toISOString(),
    actor,
    action,
    opts.code ?? null,
    opts.subject ?? null,
    opts.detail === undefined ? null : JSON.stringify(opts.detail),
  );
}

/**
 * Exclusive lock for `serve`: one data dir = one appliance. A lock left by a dead process is taken over.
 * Returns a release function.
 */
export function acquireServeLock(dataDir: string): () => void {
  const l = ensureDataDir(dataDir);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = fs.openSync(l.lock, 'wx', 0o600);
      fs.writeSync(fd, String(process.pid));
      fs.closeSync(fd);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        try { fs.unlinkSync(l.lock); } catch { /* already gone */ }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(fs.readFileSync(l.lock, 'utf8').trim());
      if (pid && pid !== process.pid && processAlive(pid)) {
        throw new OutpostError('E_LOCKED', `data directory ${l.root} is in use by process ${pid}; stop it or use another OUTPOST_DATA_DIR`);
      }
      fs.rmSync(l.lock, { force: true });
    }
  }
  throw new OutpostError('E_LOCKED', `could not lock ${l.lock}`);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
