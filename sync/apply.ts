// Applying a verified package: one SQLite transaction in a worker thread. Version floor, delta base and
// state hash are checked inside the transaction; any mismatch rolls everything back. The COMMIT is the
// only commit point, so a crash leaves the old data or the new, never a mix.
import type { Worker } from 'node:worker_threads';
import type { DB } from '../appliance/db.ts';
import { startWorker } from '../appliance/worker.ts';
import { audit, currentGeneration, setMeta } from '../appliance/db.ts';
import { ERRORS, OutpostError, type ErrorCode } from '../appliance/errors.ts';
import { verifyPackage, type TrustedKey } from './verify.ts';
import type { Indicator, Manifest, IndicatorType } from '../appliance/types.ts';
import { INDICATOR_TYPES } from '../appliance/types.ts';
import { normalize } from '../lookup/normalize.ts';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { addIndicator, announceFilterFile, extendIndicator, extendPersisted, finishBuild, newBuilder, storeFingerprint, withdrawFilterFile, withinFpBound, writeFilterFile, type FilterBuilder, type FilterSet } from '../lookup/filters.ts';
import { parseIndicatorLine, readIndicators, readLines, stagePackage, type Limits, type StagedPackage } from './package-reader.ts';
import { StateHasher, canonicalLine } from './package-writer.ts';
import { compareIndicators, indicatorToRow, plainJsonText, rowToIndicator } from './records.ts';
import { dropExpired, restoreExpired } from './expiry.ts';
import type { ApplyJob } from './import.ts';

export interface FeedRow {
  name: string;
  kind: 'block' | 'allow';
  version: number;
  state: string;
  package_sha256: string;
  key_id: string;
  created: string;
  expires: string;
  applied_at: string;
  generation: number;
  count: number;
  category: string | null;
  confidence: number | null;
  prev_version: number | null;
  prev_package: string | null;
  package_path: string | null;
  settings: string;
  /** Set by a rollback: versions at or below it stay refused (sync/rollback.ts). */
  floor_version?: number | null;
}

export interface ApplyResult {
  feed: string;
  version: number;
  type: 'full' | 'delta';
  generation: number;
  added: number;
  removed: number;
  total: number;
  state: string;
}

/** Build the new generation's lookup filters while applying (a full package: from its lines and the other
 *  feeds' rows; a delta: extending the previous generation's persisted set), persisted in `dir`. */
export interface ApplyFilterOptions {
  fpRate: number;
  dir: string;
}

export interface ApplyProgress {
  done: number;
  total: number;
}

export function getFeed(db: DB, name: string): FeedRow | undefined {
  return db.prepare('SELECT * FROM feeds WHERE name = ?').get(name) as FeedRow | undefined;
}

/**
 * Refuses a package that is not the next step for its feed: older or equal version (E_ROLLBACK), the
 * same version with other content (E_EQUIVOCATION), a delta on another base (E_BASE), a kind change.
 * `opts.allowOlder` is the rollback command's explicit override.
 */
export function checkSequence(feed: FeedRow | undefined, m: Manifest, packageSha256: string, opts: { allowOlder?: boolean } = {}): void {
  if (feed && feed.kind !== m.kind) {
    throw new OutpostError('E_CONFLICT', `feed "${m.feed}" is a ${feed.kind} feed here; package says ${m.kind}`);
  }
  if (m.type === 'delta') {
    if (!feed) throw new OutpostError('E_BASE', `delta for feed "${m.feed}" needs base version ${m.base_version}; this appliance has no data for the feed`);
    if (feed.version !== m.base_version || feed.state !== m.base_state) {
      throw new OutpostError('E_BASE', `delta for feed "${m.feed}" applies to version ${m.base_version}; this appliance has version ${feed.version}`);
    }
  }
  if (!feed || opts.allowOlder) return;
  // After `outpost rollback` the rolled-back-from version (and anything older) stays refused.
  if (feed.floor_version != null && m.version <= feed.floor_version) {
    throw new OutpostError('E_ROLLBACK', `feed "${m.feed}" version ${m.version} is at or below version ${feed.floor_version}, which was rolled back on this appliance; a newer version is needed`);
  }
  if (m.version === feed.version) {
    if (packageSha256 === feed.package_sha256 || m.state === feed.state) {
      throw new OutpostError('E_ROLLBACK', `feed "${m.feed}" version ${m.version} is already applied (replay refused)`);
    }
    throw new OutpostError('E_EQUIVOCATION', `feed "${m.feed}" version ${m.version} was already applied with different content (state ${feed.state.slice(0, 12)}…, package ${m.state.slice(0, 12)}…)`);
  }
  if (m.version < feed.version) {
    throw new OutpostError('E_ROLLBACK', `feed "${m.feed}" version ${m.version} is older than the applied version ${feed.version}`);
  }
}

const TYPES = new Set<string>(INDICATOR_TYPES);

/** A signed line must already be canonical: a provider bug or a hostile signer must not smuggle odd keys in. */
function checkLine(ind: Indicator, file: string, line: number): void {
  if (!ind || typeof ind !== 'object' || typeof ind.v !== 'string' || typeof ind.t !== 'string' || !TYPES.has(ind.t)) {
    throw new OutpostError('E_FORMAT', `${file} line ${line}: not an indicator object`);
  }
  const n = normalize(ind.v, ind.t as IndicatorType);
  if (!n.ok || n.value !== ind.v || n.type !== ind.t) {
    throw new OutpostError('E_FORMAT', `${file} line ${line}: value "${ind.v.slice(0, 80)}" is not a canonical ${ind.t}${n.ok ? '' : ` (${n.error})`}`);
  }
  if (ind.conf !== undefined && (typeof ind.conf !== 'number' || !(ind.conf >= 0 && ind.conf <= 100))) {
    throw new OutpostError('E_FORMAT', `${file} line ${line}: confidence must be 0-100`);
  }
}

/**
 * A line of exactly the form `{"t":"<type>","v":"<value>"}` whose value needs no JSON escape: its
 * [type, value] without JSON.parse, else null (the general path parses it). JSON.stringify escapes only
 * '"', '\\', characters below U+0020 and lone surrogates (impossible after strict UTF-8 decoding), so such
 * a line is exactly canonicalLine({ t, v }) — the bytes hashed are the canonical form of the row applied.
 */
export function plainLine(s: string): [string, string] | null {
  // '{"t":"' is 6 chars, '","v":"' 7, '"}' 2.
  if (s.charCodeAt(0) !== 123 || !s.startsWith('{"t":"')) return null;
  const q = s.indexOf('"', 6);
  if (q < 0 || !s.startsWith('","v":"', q)) return null;
  const end = s.length - 2;
  if (end < q + 7 || s.charCodeAt(end) !== 34 || s.charCodeAt(end + 1) !== 125) return null;
  if (!plainJsonText(s, q + 7, end)) return null;
  const t = s.slice(6, q);
  for (let i = 0; i < t.length; i++) if (t.charCodeAt(i) === 92) return null;
  return [t, s.slice(q + 7, end)];
}

/** Rows per multi-row INSERT on the plain path: one call into SQLite per batch instead of per row. */
const INSERT_BATCH = 100;
/** The same for rows with more fields (10 values each). */
const FULL_BATCH = 50;

/**
 * Applies the indicators files of a full package (the feed's old rows are already deleted): every line is
 * checked (canonical value of a known type, sorted, no duplicates) and inserted; the state is the sha256
 * of the decompressed bytes when every line was in canonical form (then the bytes are the canonical
 * lines of the rows inserted), else recomputed from the rows — so the state checked always covers
 * exactly what was applied. With `build`, every value also goes into the new filters.
 */
async function applyFull(
  db: DB,
  staged: StagedPackage,
  limits: Limits,
  build: FilterBuilder | null,
  byType: Map<string, number>,
  tick: (n: number) => void,
): Promise<{ added: number; state: string }> {
  const m = staged.manifest;
  const feed = m.feed;
  const COLS = 'type, value, feed, kind, category, confidence, first_seen, last_seen, expires_at, extra';
  const one = db.prepare(`INSERT INTO indicators(${COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
  const oneBatch = db.prepare(`INSERT INTO indicators(${COLS}) VALUES ${Array(FULL_BATCH).fill('(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`);
  const full: unknown[] = []; // rows with more than type and value, 10 values each
  const many = db.prepare(
    `INSERT INTO indicators(type, value, feed, kind) SELECT column1, column2, ?, ? FROM (VALUES ${Array(INSERT_BATCH).fill('(?, ?)').join(', ')})`,
  );
  const plain = db.prepare('INSERT INTO indicators(type, value, feed, kind) VALUES (?, ?, ?, ?)');
  const args: string[] = [feed, m.kind];
  const flushPlain = () => {
    if (args.length === 2 + 2 * INSERT_BATCH) many.run(args);
    else for (let i = 2; i < args.length; i += 2) plain.run(args[i], args[i + 1], feed, m.kind);
    args.length = 2;
  };
  const flushFull = () => {
    if (full.length === 10 * FULL_BATCH) oneBatch.run(full);
    else for (let i = 0; i < full.length; i += 10) one.run(full.slice(i, i + 10));
    full.length = 0;
  };
  const bytes = crypto.createHash('sha256');
  let exact = true;
  let added = 0;
  let prev: { t: string; v: string } | undefined;
  for (const file of m.files) {
    if (file.role !== 'indicators') throw new OutpostError('E_FORMAT', `full package has a ${file.role} file`);
    for await (const { lines, first } of readLines(staged, file, limits, { onBytes: (c) => bytes.update(c) })) {
      for (let i = 0; i < lines.length; i++) {
        const text = lines[i];
        const line = first + i;
        const p = plainLine(text);
        let ind: Indicator;
        if (p) {
          ind = { t: p[0] as IndicatorType, v: p[1] };
          checkLine(ind, file.name, line);
        } else {
          ind = parseIndicatorLine(text, file.name, line);
          checkLine(ind, file.name, line);
        }
        if (prev && compareIndicators(prev, ind) >= 0) {
          throw new OutpostError('E_FORMAT', `${file.name} line ${line}: lines not sorted by type and value, or duplicated`);
        }
        prev = ind;
        if (p) {
          args.push(ind.t, ind.v);
          if (args.length === 2 + 2 * INSERT_BATCH) flushPlain();
        } else {
          const row = indicatorToRow(ind, feed, m.kind);
          full.push(row.type, row.value, feed, m.kind, row.category, row.confidence, row.first_seen, row.last_seen, row.expires_at, row.extra);
          if (full.length === 10 * FULL_BATCH) flushFull();
          // A line in another form than its row's canonical line: hash the rows instead of the bytes.
          if (exact && canonicalLine(rowToIndicator(row)) !== text) exact = false;
        }
        byType.set(ind.t, (byType.get(ind.t) ?? 0) + 1);
        if (build) addIndicator(build, ind.t, ind.v);
      }
      added += lines.length;
      tick(lines.length);
    }
  }
  flushPlain();
  flushFull();
  return { added, state: exact ? bytes.digest('hex') : stateFromDb(db, feed) };
}

export async function applyStaged(
  db: DB,
  staged: StagedPackage,
  limits: Limits,
  meta: { source: string; actor: string; packagePath?: string | null },
  onProgress?: (p: ApplyProgress) => void,
  filters?: ApplyFilterOptions,
): Promise<ApplyResult> {
  const m = staged.manifest;
  const totalLines = m.files.reduce((a, f) => a + f.count, 0);
  let done = 0;
  let lastReport = 0;
  const tick = (n = 1) => {
    done += n;
    if (onProgress && done - lastReport >= 50_000) {
      lastReport = done;
      onProgress({ done, total: totalLines });
    }
  };

  db.pragma('synchronous = FULL');
  db.exec('BEGIN IMMEDIATE');
  try {
    const feed = getFeed(db, m.feed);
    const rollback = meta.actor.startsWith('rollback');
    checkSequence(feed, m, staged.sha256, { allowOlder: rollback });
    // A delta's filters: the previous generation's persisted set plus what this delta adds (and the
    // purged rows it brings back), when that set fits the store and stays near its rate; else null and
    // the serving processes build from the store after COMMIT.
    const extend = m.type === 'delta' && filters ? extendPersisted(db, filters.dir, filters.fpRate) : null;
    // Purged (expired) rows are still part of the feed's signed state: a delta needs them back, a full
    // package replaces them (sync/expiry.ts).
    if (m.type === 'delta') {
      if (extend) {
        const back = db.prepare('SELECT type, value FROM indicators_expired WHERE feed = ?').raw(true).iterate(m.feed) as IterableIterator<[string, string]>;
        for (const [type, value] of back) extendIndicator(extend, type, value);
      }
      restoreExpired(db, m.feed);
    } else dropExpired(db, m.feed);
    const upsert = db.prepare(
      'INSERT OR REPLACE INTO indicators(type, value, feed, kind, category, confidence, first_seen, last_seen, expires_at, extra) VALUES (@type, @value, @feed, @kind, @category, @confidence, @first_seen, @last_seen, @expires_at, @extra)',
    );
    const remove = db.prepare('DELETE FROM indicators WHERE type = ? AND value = ? AND feed = ?');
    let added = 0;
    let removed = 0;
    let state: string;

    let build: FilterBuilder | null = null;
    let others = 0;
    const byType = new Map<string, number>();
    if (m.type === 'full') {
      removed = db.prepare('DELETE FROM indicators WHERE feed = ?').run(m.feed).changes;
      if (filters) {
        // The new generation's filters: the other feeds' rows (all that is left) plus this package's lines,
        // sized from the signed per-type counts (checked against the lines before the set is persisted).
        const counts = new Map<string, number>(Object.entries(m.counts.by_type));
        for (const r of db.prepare('SELECT type, count(*) AS n FROM indicators GROUP BY type').all() as { type: string; n: number }[]) {
          counts.set(r.type, (counts.get(r.type) ?? 0) + r.n);
          others += r.n;
        }
        build = newBuilder(counts, filters.fpRate);
        for (const [type, value] of db.prepare('SELECT type, value FROM indicators').raw(true).iterate() as IterableIterator<[string, string]>) {
          addIndicator(build, type, value);
        }
      }
      ({ added, state } = await applyFull(db, staged, limits, build, byType, tick));
    } else {
      for (const file of m.files) {
        if (file.role === 'indicators') throw new OutpostError('E_FORMAT', 'delta package has a full indicators file');
      }
      // One pass over both roles in key order: each B-tree page that removals and additions share is read
      // (and, once the page cache has spilled, written) once instead of once per role. Equal keys: the
      // removal first, as if every removal came before every addition.
      const removes = deltaLines(staged, m, 'remove', limits)[Symbol.asyncIterator]();
      const adds = deltaLines(staged, m, 'add', limits)[Symbol.asyncIterator]();
      let r = await removes.next();
      let a = await adds.next();
      while (!r.done || !a.done) {
        if (!r.done && (a.done || compareIndicators(r.value.ind, a.value.ind) <= 0)) {
          const { ind, file, line } = r.value;
          if (remove.run(ind.t, ind.v, m.feed).changes !== 1) {
            throw new OutpostError('E_STATE', `${file} line ${line}: removes ${ind.t} "${ind.v.slice(0, 80)}" which the base does not hold`);
          }
          removed++;
          r = await removes.next();
        } else if (!a.done) {
          const { ind } = a.value;
          upsert.run(indicatorToRow(ind, m.feed, m.kind));
          if (extend) extendIndicator(extend, ind.t, ind.v);
          added++;
          a = await adds.next();
        }
        tick();
      }
      state = stateFromDb(db, m.feed);
    }

    if (state !== m.state) {
      throw new OutpostError('E_STATE', `content state after applying is ${state.slice(0, 16)}…, package says ${m.state.slice(0, 16)}…`);
    }

    // A full package leaves exactly its lines in the feed; a delta's result is counted.
    const total = m.type === 'full' ? added : (db.prepare('SELECT count(*) AS n FROM indicators WHERE feed = ?').get(m.feed) as { n: number }).n;
    const generation = currentGeneration(db) + 1;
    const now = new Date().toISOString();
    setMeta(db, 'generation', String(generation));
    db.prepare(
      `INSERT INTO feeds(name, kind, version, state, package_sha256, key_id, created, expires, applied_at, generation, count, category, confidence, prev_version, prev_package, package_path)
       VALUES (@name, @kind, @version, @state, @sha, @key_id, @created, @expires, @now, @generation, @total, @category, @confidence, NULL, NULL, @path)
       ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, version = excluded.version, state = excluded.state,
         package_sha256 = excluded.package_sha256, key_id = excluded.key_id, created = excluded.created, expires = excluded.expires,
         applied_at = excluded.applied_at, generation = excluded.generation, count = excluded.count, category = excluded.category,
         confidence = excluded.confidence, prev_version = feeds.version, prev_package = feeds.package_path, package_path = excluded.package_path,
         floor_version = CASE WHEN @rollback = 1 THEN max(coalesce(feeds.floor_version, 0), feeds.version) ELSE feeds.floor_version END`,
    ).run({
      name: m.feed, kind: m.kind, version: m.version, state, sha: staged.sha256, key_id: m.key_id, created: m.created,
      expires: m.expires, now, generation, total, category: m.defaults.category ?? null, confidence: m.defaults.confidence ?? null,
      path: meta.packagePath ?? null, rollback: rollback ? 1 : 0,
    });
    db.prepare('INSERT INTO generations(created_at, feed, version, action, added, removed, total) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
      now, m.feed, m.version, rollback ? 'rollback' : m.type === 'full' ? 'apply-full' : 'apply-delta', added, removed, total,
    );
    db.prepare('INSERT INTO packages(received_at, source, feed, version, type, sha256, status, code, message, summary) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)').run(
      now, meta.source, m.feed, m.version, m.type, staged.sha256, 'accepted', `applied as generation ${generation}`,
      JSON.stringify({ added, removed, total, sources: m.sources ?? [] }),
    );
    let set: FilterSet | null = null;
    if (build && sameCounts(m.counts.by_type, byType)) {
      set = finishBuild(build, generation, storeFingerprint(db, others + added).fingerprint);
    } else if (extend && withinFpBound(extend.set)) {
      set = finishBuild(extend, generation, storeFingerprint(db).fingerprint);
    }
    // Serving processes that see this generation before the file wait for it instead of building.
    if (set && filters) announceFilterFile(db, generation);
    audit(db, meta.actor, 'package.apply', { subject: `${m.feed}@${m.version}`, detail: { type: m.type, added, removed, total, generation, sha256: staged.sha256, key_id: m.key_id, source: meta.source } });
    db.exec('COMMIT');
    if (set && filters) {
      try {
        writeFilterFile(set, filters.dir);
      } catch {
        // Best effort: without the file the engine builds the filters from the store; say so at once.
        try {
          withdrawFilterFile(db, generation);
        } catch {
          /* followers stop waiting after their bounded wait */
        }
      }
    }
    onProgress?.({ done: totalLines, total: totalLines });
    return { feed: m.feed, version: m.version, type: m.type, generation, added, removed, total, state };
  } catch (e) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw e;
  } finally {
    db.pragma('synchronous = NORMAL');
  }
}

/**
 * A delta's lines of one role, across its files in manifest order, each checked (checkLine) and required
 * to sort strictly after the one before (docs/package-format.md: canonical order, no pair twice in a
 * role), which the merged pass in applyStaged relies on. Out of order: E_FORMAT, and the transaction
 * rolls back.
 */
async function* deltaLines(staged: StagedPackage, m: Manifest, role: 'remove' | 'add', limits: Limits): AsyncGenerator<{ ind: Indicator; file: string; line: number }> {
  let prev: Indicator | null = null;
  for (const file of m.files.filter((f) => f.role === role)) {
    let line = 0;
    for await (const ind of readIndicators(staged, file, limits)) {
      line++;
      checkLine(ind, file.name, line);
      if (prev && compareIndicators(prev, ind) >= 0) {
        throw new OutpostError('E_FORMAT', `${file.name} line ${line}: ${ind.t} "${ind.v.slice(0, 80)}" is not after ${prev.t} "${prev.v.slice(0, 80)}" (a delta's ${role} lines must be sorted by type, then value, without duplicates)`);
      }
      prev = ind;
      yield { ind, file: file.name, line };
    }
  }
}

/** The signed per-type counts against the lines applied (a lying manifest only loses the prebuilt filters). */
function sameCounts(declared: Record<string, number>, actual: Map<string, number>): boolean {
  for (const [t, n] of Object.entries(declared)) if ((actual.get(t) ?? 0) !== n) return false;
  for (const [t, n] of actual) if (declared[t] !== n) return false;
  return true;
}

/**
 * One string per row of a feed, built by SQLite in the state's order: for a row with nothing but its type
 * and value, and a value JSON writes as it is (json_quote escapes exactly what JSON.stringify does for
 * well-formed text: '"', '\\' and U+0000–U+001F), its canonical line itself; else the row as a JSON array
 * (a canonical line starts with '{', the array with '['), which stateFromDb turns into its line in JS.
 * Handing JS one string per row instead of an 8-column row, hashed a batch of lines at a time (StateHasher), is what
 * makes the state check after a delta cost ~0.4 instead of ~1.5 µs per row of the feed (docs/performance.md).
 */
const STATE_LINE = `CASE WHEN category IS NULL AND confidence IS NULL AND first_seen IS NULL AND last_seen IS NULL AND expires_at IS NULL AND extra IS NULL AND json_quote(value) = '"' || value || '"'
  THEN '{"t":"' || type || '","v":"' || value || '"}'
  ELSE json_array(type, value, category, confidence, first_seen, last_seen, expires_at, extra) END`;

/** Recomputes a feed's content state from the store, in the canonical order and form. */
export function stateFromDb(db: DB, feed: string): string {
  const hasher = new StateHasher();
  // A feed holding most of the store is read in primary-key order, (type, value, feed), which is the
  // state's order: one pass over the table. A smaller one through its index (feed, type, value), whose
  // entries each cost a primary-key lookup for the other columns.
  const counts = db.prepare('SELECT sum(count) AS all_rows, sum(CASE WHEN name = ? THEN count ELSE 0 END) AS feed_rows FROM feeds').get(feed) as { all_rows: number | null; feed_rows: number | null };
  const whole = (counts.feed_rows ?? 0) * 4 >= (counts.all_rows ?? 0);
  const rows = db.prepare(`SELECT ${STATE_LINE} FROM indicators WHERE ${whole ? '+feed' : 'feed'} = ? ORDER BY type, value`).pluck().iterate(feed) as IterableIterator<string>;
  for (const line of rows) {
    if (line.charCodeAt(0) === 123 /* { */) hasher.updateLine(line);
    else {
      const [type, value, category, confidence, first_seen, last_seen, expires_at, extra] = JSON.parse(line) as [IndicatorType, string, string | null, number | null, number | null, number | null, number | null, string | null];
      hasher.updateLine(canonicalLine(rowToIndicator({ type, value, category, confidence, first_seen, last_seen, expires_at, extra })));
    }
  }
  return hasher.digest();
}

/** What the apply worker needs to stage and verify a package (PendingApply.stage). */
export interface StageRequest {
  tarPath: string;
  stagingRoot: string;
  limits: Limits;
  keys: TrustedKey[];
  /** Verification time (expiry), ms since the epoch. */
  now: number;
}

/**
 * Stages the package and verifies it (stagePackage + verifyPackage); a refused package leaves no staging
 * directory behind. The caller must call staged.cleanup(). Run by the apply worker (PendingApply.stage)
 * and, without a worker (a dry run; the mirror through stageAndVerify), in import.ts.
 */
export async function stageVerified(req: StageRequest): Promise<StagedPackage> {
  const staged = await stagePackage(req.tarPath, req.stagingRoot, req.limits);
  try {
    verifyPackage(staged, req.keys, new Date(req.now));
    return staged;
  } catch (e) {
    staged.cleanup();
    throw e;
  }
}

/** A StagedPackage as it crosses threads: everything but cleanup (Buffers arrive as Uint8Arrays). */
export type StagedTransfer = Omit<StagedPackage, 'cleanup'>;

/** An apply worker thread started ahead of its job: `run` hands it the job once the package is verified. */
export interface PendingApply {
  /**
   * Stages and verifies the package in the worker (stagePackage + verifyPackage: tar parsing, hashing,
   * signature), at its lower priority, off the thread that answers lookups. Rejects with their errors.
   */
  stage(req: StageRequest): Promise<StagedPackage>;
  run(job: ApplyJob, onProgress?: (p: ApplyProgress) => void): Promise<ApplyResult>;
  /** Stops the worker if it never got a job (refused package, dry run); harmless afterwards. */
  cancel(): void;
}

/**
 * Starts sync/apply-worker.ts before the package is staged and verified, so loading the worker (a thread
 * that compiles its TypeScript modules, ~0.3–0.8 s) overlaps with staging instead of following it. The
 * worker opens nothing until it receives its job; nothing is applied unless `run` is called.
 */
export function startApply(): PendingApply {
  let worker: Worker | null = startWorker(new URL('./apply-worker.ts', import.meta.url), { workerData: { waitForJob: true } });
  let early: unknown = null;
  let exited = false;
  const onEarlyError = (e: unknown) => {
    early ??= e;
  };
  const onEarlyExit = () => {
    exited = true;
  };
  worker.on('error', onEarlyError);
  worker.on('exit', onEarlyExit);
  return {
    stage(req) {
      const w = worker;
      if (!w) return Promise.reject(new OutpostError('E_INTERNAL', 'apply worker already used'));
      return new Promise<StagedPackage>((resolve, reject) => {
        if (early || exited) {
          reject(early ?? new Error('apply worker exited before staging'));
          return;
        }
        const done = () => {
          w.off('message', onMessage);
          w.off('error', onError);
          w.off('exit', onExit);
        };
        const onMessage = (msg: { type: string; staged?: StagedTransfer; error?: { code: string; message: string } }) => {
          if (msg.type !== 'staged' && msg.type !== 'stage-error') return;
          done();
          if (msg.type === 'stage-error') {
            const { code, message } = msg.error!;
            reject(code in ERRORS ? new OutpostError(code as ErrorCode, message) : new OutpostError('E_INTERNAL', message));
            return;
          }
          const t = msg.staged!;
          const dir = t.dir;
          resolve({
            ...t,
            manifestBytes: Buffer.from(t.manifestBytes.buffer, t.manifestBytes.byteOffset, t.manifestBytes.byteLength),
            signature: Buffer.from(t.signature.buffer, t.signature.byteOffset, t.signature.byteLength),
            cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
          });
        };
        const onError = (e: unknown) => {
          done();
          reject(e);
        };
        const onExit = (code: number) => {
          done();
          reject(new Error(`apply worker exited with code ${code} while staging`));
        };
        w.on('message', onMessage);
        w.on('error', onError);
        w.on('exit', onExit);
        w.postMessage({ type: 'stage', req });
      });
    },
    run(job, onProgress) {
      const w = worker;
      worker = null;
      if (!w) return Promise.reject(new OutpostError('E_INTERNAL', 'apply worker already used'));
      return new Promise<ApplyResult>((resolve, reject) => {
        let settled = false;
        const settle = (f: () => void) => {
          if (!settled) {
            settled = true;
            f();
          }
        };
        if (early || exited) {
          settle(() => reject(early ?? new Error('apply worker exited before its job')));
          return;
        }
        w.off('error', onEarlyError);
        w.off('exit', onEarlyExit);
        w.on('message', (msg: { type: string; [k: string]: unknown }) => {
          if (msg.type === 'progress') onProgress?.(msg as unknown as ApplyProgress);
          else if (msg.type === 'done') settle(() => resolve(msg.result as ApplyResult));
          else if (msg.type === 'error') settle(() => reject(msg.error));
        });
        w.on('error', (e) => settle(() => reject(e)));
        w.on('exit', (code) => settle(() => reject(new Error(`worker exited with code ${code} before finishing`))));
        w.postMessage({ type: 'job', job });
      });
    },
    cancel() {
      if (worker) void worker.terminate();
      worker = null;
    },
  };
}
