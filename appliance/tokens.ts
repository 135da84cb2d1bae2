// API tokens: random secrets shown once, stored only as sha256 hashes, with scope, expiry and revocation.
import crypto from 'node:crypto';
import type Database from 'better-sqlite3';
import type { DB } from './db.ts';
import { audit } from './db.ts';
import { OutpostError } from './errors.ts';

export type Scope = 'lookup' | 'export' | 'admin';
export const SCOPES: readonly Scope[] = ['lookup', 'export', 'admin'];

/** What each scope may do: admin ⊃ export ⊃ lookup. The one scope table every route checks against. */
const SCOPE_RANK: Record<Scope, number> = { lookup: 1, export: 2, admin: 3 };

export function scopeAllows(have: Scope, need: Scope): boolean {
  return SCOPE_RANK[have] >= SCOPE_RANK[need];
}

export interface TokenRow {
  id: number;
  name: string;
  scope: Scope;
  created_at: string;
  last_used_at: string | null;
  expires_at: string | null;
  revoked_at: string | null;
}

export function hashToken(token: string): string {
  return crypto.createHash('sha256').update(token, 'utf8').digest('hex');
}

export function createToken(db: DB, name: string, scope: Scope = 'lookup', opts: { expiresAt?: string; actor?: string } = {}): { token: string; row: TokenRow } {
  if (!name || name.length > 100) throw new OutpostError('E_USAGE', 'token name must be 1-100 characters');
  if (!SCOPES.includes(scope)) throw new OutpostError('E_USAGE', `scope must be one of ${SCOPES.join(', ')}`);
  const token = `op_${crypto.randomBytes(32).toString('base64url')}`;
  const now = new Date().toISOString();
  const info = db
    .prepare('INSERT INTO tokens(name, scope, hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)')
    .run(name, scope, hashToken(token), now, opts.expiresAt ?? null);
  audit(db, opts.actor ?? 'cli', 'token.create', { subject: name, detail: { scope, id: Number(info.lastInsertRowid) } });
  const row = db.prepare('SELECT id, name, scope, created_at, last_used_at, expires_at, revoked_at FROM tokens WHERE id = ?').get(info.lastInsertRowid) as TokenRow;
  return { token, row };
}

export function listTokens(db: DB): TokenRow[] {
  return db.prepare('SELECT id, name, scope, created_at, last_used_at, expires_at, revoked_at FROM tokens ORDER BY id').all() as TokenRow[];
}

export function revokeToken(db: DB, id: number, actor = 'cli'): void {
  const res = db.prepare('UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(new Date().toISOString(), id);
  if (res.changes === 0) throw new OutpostError('E_NOT_FOUND', `no active token with id ${id}`);
  audit(db, actor, 'token.revoke', { subject: String(id) });
}

/**
 * Verifies bearer tokens with a short in-memory cache so the lookup path does not hit SQLite (or hash the
 * token) per request: entries are keyed by the presented token and re-read by its sha256 hash at most every
 * `ttlMs`, so a revocation or a changed expiry in the store takes effect within that time (revoke and
 * expiry are checked on every call against the cached row). last_used_at is written at most once a minute
 * per token.
 */
export class TokenVerifier {
  private cache = new Map<string, { row: TokenRow | null; at: number; expiresMs: number }>();
  private lastUsedWrite = new Map<number, number>();
  private readonly ttlMs: number;
  private readonly get: Database.Statement<[string]>;
  private readonly touch: Database.Statement<[string, number]>;

  private readonly db: DB;

  constructor(db: DB, ttlMs = 5000) {
    this.db = db;
    this.ttlMs = ttlMs;
    this.get = db.prepare('SELECT id, name, scope, created_at, last_used_at, expires_at, revoked_at FROM tokens WHERE hash = ?');
    this.touch = db.prepare('UPDATE tokens SET last_used_at = ? WHERE id = ?');
  }

  verify(token: string | undefined | null): TokenRow | null {
    if (!token || token.length > 200) return null;
    const now = Date.now();
    let hit = this.cache.get(token);
    if (!hit || now - hit.at > this.ttlMs) {
      const row = (this.get.get(hashToken(token)) as TokenRow | undefined) ?? null;
      hit = { row, at: now, expiresMs: row?.expires_at ? Date.parse(row.expires_at) : Infinity };
      if (this.cache.size > 10_000) this.cache.clear();
      this.cache.set(token, hit);
    }
    const row = hit.row;
    if (!row || row.revoked_at) return null;
    // An unparseable expires_at (NaN) counts as expired, as Date.parse(...) <= now did.
    if (!(hit.expiresMs > now)) return null;
    const last = this.lastUsedWrite.get(row.id) ?? 0;
    if (now - last > 60_000) {
      this.lastUsedWrite.set(row.id, now);
      this.touchNow(row.id, now);
    }
    return row;
  }

  /**
   * Writes last_used_at without waiting for the write lock: while an apply holds it (seconds for a large
   * delta) the connection's busy timeout would otherwise stall the request, and with it the event loop.
   * Best effort: a busy store skips this minute's write.
   */
  private touchNow(id: number, now: number): void {
    const wait = this.db.pragma('busy_timeout', { simple: true }) as number;
    try {
      if (wait !== 0) this.db.pragma('busy_timeout = 0');
      this.touch.run(new Date(now).toISOString(), id);
    } catch {
      /* busy (or read-only) store: last_used_at is best effort */
    } finally {
      if (wait !== 0) this.db.pragma(`busy_timeout = ${Number(wait)}`);
    }
  }

  invalidate(): void {
    this.cache.clear();
  }
}
