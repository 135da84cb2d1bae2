// Applying a verified package: one SQLite transaction in a worker thread. Version floor, delta base and
// state hash are checked inside the transaction; any mismatch rolls everything back. The COMMIT is the
// only commit point, so a crash leaves the old data or the new, never a mix.
import type { DB } from '../appliance/db.ts';
import { audit, currentGeneration, setMeta } from '../appliance/db.ts';
import { OutpostError } from '../appliance/errors.ts';
import type { Indicator, Manifest, IndicatorType } from '../appliance/types.ts';
import { INDICATOR_TYPES } from '../appliance/types.ts';
import { normalize } from '../lookup/normalize.ts';
import { readIndicators, type Limits, type StagedPackage } from './package-reader.ts';
import { StateHasher } from './package-writer.ts';
import { canonicalIndicator, compareIndicators, indicatorToRow, rowToIndicator } from './records.ts';
import { dropExpired, restoreExpired } from './expiry.ts';

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

export async function applyStaged(
  db: DB,
  staged: StagedPackage,
  limits: Limits,
  meta: { source: string; actor: string; packagePath?: string | null },
  onProgress?: (p: ApplyProgress) => void,
): Promise<ApplyResult> {
  const m = staged.manifest;
  const totalLines = m.files.reduce((a, f) => a + f.count, 0);
  let done = 0;
  let lastReport = 0;
  const tick = () => {
    done++;
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
    // Purged (expired) rows are still part of the feed's signed state: a delta needs them back, a full
    // package replaces them (sync/expiry.ts).
    if (m.type === 'delta') restoreExpired(db, m.feed);
    else dropExpired(db, m.feed);
    const insert = db.prepare(
      'INSERT INTO indicators(type, value, feed, kind, category, confidence, first_seen, last_seen, expires_at, extra) VALUES (@type, @value, @feed, @kind, @category, @confidence, @first_seen, @last_seen, @expires_at, @extra)',
    );
    const upsert = db.prepare(
      'INSERT OR REPLACE INTO indicators(type, value, feed, kind, category, confidence, first_seen, last_seen, expires_at, extra) VALUES (@type, @value, @feed, @kind, @category, @confidence, @first_seen, @last_seen, @expires_at, @extra)',
    );
    const remove = db.prepare('DELETE FROM indicators WHERE type = ? AND value = ? AND feed = ?');
    let added = 0;
    let removed = 0;
    let state: string;

    if (m.type === 'full') {
      removed = db.prepare('DELETE FROM indicators WHERE feed = ?').run(m.feed).changes;
      const hasher = new StateHasher();
      let prev: Indicator | undefined;
      for (const file of m.files) {
        if (file.role !== 'indicators') throw new OutpostError('E_FORMAT', `full package has a ${file.role} file`);
        let line = 0;
        for await (const ind of readIndicators(staged, file, limits)) {
          line++;
          checkLine(ind, file.name, line);
          if (prev && compareIndicators(prev, ind) >= 0) {
            throw new OutpostError('E_FORMAT', `${file.name} line ${line}: lines not sorted by type and value, or duplicated`);
          }
          prev = ind;
          const row = indicatorToRow(ind, m.feed, m.kind);
          insert.run(row);
          hasher.update(canonicalIndicator(ind));
          added++;
          tick();
        }
      }
      state = hasher.digest();
    } else {
      for (const file of m.files) {
        if (file.role === 'indicators') throw new OutpostError('E_FORMAT', 'delta package has a full indicators file');
      }
      for (const role of ['remove', 'add'] as const) {
        for (const file of m.files.filter((f) => f.role === role)) {
          let line = 0;
          for await (const ind of readIndicators(staged, file, limits)) {
            line++;
            checkLine(ind, file.name, line);
            if (role === 'remove') {
              if (remove.run(ind.t, ind.v, m.feed).changes !== 1) {
                throw new OutpostError('E_STATE', `${file.name} line ${line}: removes ${ind.t} "${ind.v.slice(0, 80)}" which the base does not hold`);
              }
              removed++;
            } else {
              upsert.run(indicatorToRow(ind, m.feed, m.kind));
              added++;
            }
            tick();
          }
        }
      }
      state = stateFromDb(db, m.feed);
    }

    if (state !== m.state) {
      throw new OutpostError('E_STATE', `content state after applying is ${state.slice(0, 16)}…, package says ${m.state.slice(0, 16)}…`);
    }

    const total = (db.prepare('SELECT count(*) AS n FROM indicators WHERE feed = ?').get(m.feed) as { n: number }).n;
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
    audit(db, meta.actor, 'package.apply', { subject: `${m.feed}@${m.version}`, detail: { type: m.type, added, removed, total, generation, sha256: staged.sha256, key_id: m.key_id, source: meta.source } });
    db.exec('COMMIT');
    onProgress?.({ done: totalLines, total: totalLines });
    return { feed: m.feed, version: m.version, type: m.type, generation, added, removed, total, state };
  } catch (e) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw e;
  } finally {
    db.pragma('synchronous = NORMAL');
  }
}

/** Recomputes a feed's content state from the store, in the canonical order and form. */
export function stateFromDb(db: DB, feed: string): string {
  const hasher = new StateHasher();
  const rows = db
    .prepare('SELECT type, value, category, confidence, first_seen, last_seen, expires_at, extra FROM indicators WHERE feed = ? ORDER BY type, value')
    .iterate(feed) as IterableIterator<Parameters<typeof rowToIndicator>[0]>;
  for (const row of rows) hasher.update(rowToIndicator(row));
  return hasher.digest();
}
