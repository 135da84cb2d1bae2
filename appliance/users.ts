// Console users: scrypt password hashes, server-side sessions with idle and absolute timeouts,
// and the failed-login record behind the rate limit and lockout. Used by `outpost user` and ui/.
import crypto from 'node:crypto';
import { promisify } from 'node:util';
import type { DB } from './db.ts';
import { audit } from './db.ts';
import { OutpostError } from './errors.ts';

export type Role = 'admin' | 'viewer';
export const ROLES: readonly Role[] = ['admin', 'viewer'];

export interface UserRow {
  id: number;
  name: string;
  role: Role;
  created_at: string;
  updated_at: string;
  last_login_at: string | null;
}

export const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
export const MIN_PASSWORD = 12;
const MAX_PASSWORD = 1024;

// ---- password hashing ---------------------------------------------------------------------------

/** scrypt cost: N=2^15, r=8 (32 MiB per hash). Parameters are stored with each hash so they can be raised later. */
const SCRYPT = { N: 1 << 15, r: 8, p: 1, keylen: 32 };
const scryptAsync = promisify(crypto.scrypt) as (pw: string, salt: Buffer, keylen: number, opts: crypto.ScryptOptions) => Promise<Buffer>;

export async function hashPassword(password: string): Promise<string> {
  const salt = crypto.randomBytes(16);
  const { N, r, p, keylen } = SCRYPT;
  const key = await scryptAsync(password, salt, keylen, { N, r, p, maxmem: 256 * N * r });
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number);
  const salt = Buffer.from(parts[4], 'base64');
  const want = Buffer.from(parts[5], 'base64');
  if (!(N > 1 && N <= 1 << 20 && r > 0 && r <= 32 && p > 0 && p <= 16) || want.length < 16) return false;
  const got = await scryptAsync(password, salt, want.length, { N, r, p, maxmem: 256 * N * r });
  return crypto.timingSafeEqual(got, want);
}

/** Verified against when the user name is unknown, so a miss costs the same time as a wrong password. */
let dummyHash: Promise<string> | undefined;

export function checkPasswordPolicy(password: string): void {
  if (password.length < MIN_PASSWORD) throw new OutpostError('E_INPUT', `password must be at least ${MIN_PASSWORD} characters`);
  if (password.length > MAX_PASSWORD) throw new OutpostError('E_INPUT', `password must be at most ${MAX_PASSWORD} characters`);
}

// ---- users --------------------------------------------------------------------------------------

const USER_COLS = 'id, name, role, created_at, updated_at, last_login_at';

export function countUsers(db: DB): number {
  return (db.prepare('SELECT count(*) AS n FROM users').get() as { n: number }).n;
}

export function listUsers(db: DB): UserRow[] {
  return db.prepare(`SELECT ${USER_COLS} FROM users ORDER BY name`).all() as UserRow[];
}

export function getUser(db: DB, id: number): UserRow | null {
  return (db.prepare(`SELECT ${USER_COLS} FROM users WHERE id = ?`).get(id) as UserRow | undefined) ?? null;
}

function checkRole(role: string): asserts role is Role {
  if (!ROLES.includes(role as Role)) throw new OutpostError('E_USAGE', `role must be one of ${ROLES.join(', ')}`);
}

export async function addUser(db: DB, name: string, role: string, password: string, actor = 'cli'): Promise<UserRow> {
  if (!USER_NAME.test(name)) throw new OutpostError('E_USAGE', 'user name must be 1-64 characters: letters, digits, . _ @ - (starting with a letter or digit)');
  checkRole(role);
  checkPasswordPolicy(password);
  if (db.prepare('SELECT 1 FROM users WHERE name = ?').get(name)) throw new OutpostError('E_CONFLICT', `user "${name}" already exists`);
  const hash = await hashPassword(password);
  const now = new Date().toISOString();
  const info = db.prepare('INSERT INTO users(name, role, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?)').run(name, role, hash, now, now);
  audit(db, actor, 'user.add', { subject: name, detail: { role } });
  return getUser(db, Number(info.lastInsertRowid))!;
}

/** Sets a new password and ends the user's sessions (a reset must lock out whoever knew the old one). */
export async function setPassword(db: DB, name: string, password: string, actor = 'cli'): Promise<void> {
  checkPasswordPolicy(password);
  const row = db.prepare('SELECT id FROM users WHERE name = ?').get(name) as { id: number } | undefined;
  if (!row) throw new OutpostError('E_NOT_FOUND', `no user "${name}"`);
  const hash = await hashPassword(password);
  db.transaction(() => {
    db.prepare('UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?').run(hash, new Date().toISOString(), row.id);
    db.prepare('DELETE FROM sessions WHERE user_id = ?').run(row.id);
    db.prepare('DELETE FROM login_attempts WHERE username = ? AND ok = 0').run(name);
  })();
  audit(db, actor, 'user.password', { subject: name });
}

function adminCount(db: DB): number {
  return (db.prepare("SELECT count(*) AS n FROM users WHERE role = 'admin'").get() as { n: number }).n;
}

export function setRole(db: DB, id: number, role: string, actor = 'cli'): UserRow {
  checkRole(role);
  const user = getUser(db, id);
  if (!user) throw new OutpostError('E_NOT_FOUND', `no user with id ${id}`);
  if (user.role === role) return user;
  if (user.role === 'admin' && adminCount(db) <= 1) throw new OutpostError('E_CONFLICT', 'this is the last admin; add another admin first');
  db.transaction(() => {
    db.prepare('UPDATE users SET role = ?, updated_at = ? WHERE id = ?').run(role, new Date().toISOString(), id);
    // Sessions carry no role (it is read per request), but a demotion should take effect everywhere at once.
    db.prepare('DELETE FROM sessions WHERE user_id = ?').run(id);
  })();
  audit(db, actor, 'user.role', { subject: user.name, detail: { from: user.role, to: role } });
  return getUser(db, id)!;
}

export function deleteUser(db: DB, id: number, actor = 'cli'): void {
  const user = getUser(db, id);
  if (!user) throw new OutpostError('E_NOT_FOUND', `no user with id ${id}`);
  if (user.role === 'admin' && adminCount(db) <= 1) throw new OutpostError('E_CONFLICT', 'this is the last admin; add another admin first');
  db.prepare('DELETE FROM users WHERE id = ?').run(id); // sessions go with it (ON DELETE CASCADE)
  audit(db, actor, 'user.delete', { subject: user.name });
}

// ---- login attempts: rate limit and lockout -----------------------------------------------------

export interface LoginPolicy {
  /** Failed logins of one user name within the window that lock it. */
  maxUserFailures: number;
  /** Failed logins from one address within the window that block the address. */
  maxIpFailures: number;
  windowMs: number;
}

export const DEFAULT_LOGIN_POLICY: LoginPolicy = { maxUserFailures: 5, maxIpFailures: 20, windowMs: 15 * 60_000 };

/** Milliseconds until this user name / address may try again; 0 when not locked. */
export function lockedFor(db: DB, name: string, ip: string, policy = DEFAULT_LOGIN_POLICY, now = Date.now()): number {
  const since = now - policy.windowMs;
  const check = (col: 'username' | 'ip', key: string, max: number): number => {
    const rows = db.prepare(`SELECT ts FROM login_attempts WHERE ${col} = ? AND ok = 0 AND ts > ? ORDER BY ts DESC LIMIT ?`).all(key, since, max) as { ts: number }[];
    if (rows.length < max) return 0;
    // Locked until the oldest of the last `max` failures leaves the window.
    return Math.max(0, rows[rows.length - 1].ts + policy.windowMs - now);
  };
  return Math.max(check('username', name, policy.maxUserFailures), check('ip', ip, policy.maxIpFailures));
}

export type LoginOutcome =
  | { ok: true; user: UserRow }
  | { ok: false; code: 'E_AUTH' | 'E_RATE'; message: string; retryAfterS?: number };

/**
 * Checks a login: refuses while locked (without looking at the password), records every attempt.
 * A success clears the user name's failures.
 */
export async function attemptLogin(db: DB, name: string, password: string, ip: string, policy = DEFAULT_LOGIN_POLICY, now = Date.now()): Promise<LoginOutcome> {
  const key = name.slice(0, 64);
  const wait = lockedFor(db, key, ip, policy, now);
  if (wait > 0) {
    const retryAfterS = Math.ceil(wait / 1000);
    audit(db, 'anonymous', 'user.login', { code: 'E_RATE', subject: key, detail: { ip } });
    return { ok: false, code: 'E_RATE', message: `too many failed logins; try again in ${Math.ceil(retryAfterS / 60)} minute(s)`, retryAfterS };
  }
  const row = db.prepare(`SELECT ${USER_COLS}, password_hash FROM users WHERE name = ?`).get(key) as (UserRow & { password_hash: string }) | undefined;
  dummyHash ??= hashPassword(crypto.randomBytes(16).toString('hex'));
  const good = await verifyPassword(password.slice(0, MAX_PASSWORD), row?.password_hash ?? (await dummyHash));
  const ok = Boolean(row) && good;
  db.prepare('INSERT INTO login_attempts(ts, username, ip, ok) VALUES (?, ?, ?, ?)').run(now, key, ip, ok ? 1 : 0);
  // Keep the table small: attempts older than a day serve no limit.
  db.prepare('DELETE FROM login_attempts WHERE ts < ?').run(now - 86_400_000);
  if (!ok) {
    audit(db, 'anonymous', 'user.login', { code: 'E_AUTH', subject: key, detail: { ip } });
    return { ok: false, code: 'E_AUTH', message: 'wrong user name or password' };
  }
  db.prepare('DELETE FROM login_attempts WHERE username = ? AND ok = 0').run(key);
  db.prepare('UPDATE users SET last_login_at = ? WHERE id = ?').run(new Date(now).toISOString(), row!.id);
  audit(db, row!.name, 'user.login', { subject: row!.name, detail: { ip } });
  const { password_hash: _, ...user } = row!;
  return { ok: true, user };
}

// ---- sessions -----------------------------------------------------------------------------------

export interface SessionPolicy {
  /** A session unused for this long ends. */
  idleMs: number;
  /** A session ends this long after login, however active. */
  absoluteMs: number;
}

export const DEFAULT_SESSION_POLICY: SessionPolicy = { idleMs: 30 * 60_000, absoluteMs: 12 * 3600_000 };

export interface Session {
  id: string;
  csrf: string;
  created_at: number;
  last_seen_at: number;
  user: UserRow;
}

const sha256 = (s: string) => crypto.createHash('sha256').update(s, 'utf8').digest('hex');

/** Starts a session; returns the cookie value (only its hash is stored) and the session's CSRF token. */
export function createSession(db: DB, userId: number, meta: { ip?: string; userAgent?: string } = {}, now = Date.now()): { cookie: string; csrf: string } {
  const cookie = crypto.randomBytes(32).toString('base64url');
  const csrf = crypto.randomBytes(32).toString('base64url');
  db.prepare('INSERT INTO sessions(id, user_id, csrf, created_at, last_seen_at, ip, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
    sha256(cookie), userId, csrf, now, now, meta.ip ?? null, meta.userAgent?.slice(0, 200) ?? null,
  );
  return { cookie, csrf };
}

/** The live session for a cookie value, or null; expired sessions are deleted on sight. */
export function getSession(db: DB, cookie: string | undefined, policy = DEFAULT_SESSION_POLICY, now = Date.now()): Session | null {
  if (!cookie || cookie.length > 100) return null;
  const id = sha256(cookie);
  const row = db
    .prepare(
      `SELECT s.id, s.csrf, s.created_at, s.last_seen_at, u.id AS uid, u.name, u.role, u.created_at AS u_created, u.updated_at, u.last_login_at
         FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?`,
    )
    .get(id) as
    | { id: string; csrf: string; created_at: number; last_seen_at: number; uid: number; name: string; role: Role; u_created: string; updated_at: string; last_login_at: string | null }
    | undefined;
  if (!row) return null;
  if (now - row.last_seen_at > policy.idleMs || now - row.created_at > policy.absoluteMs) {
    db.prepare('DELETE FROM sessions WHERE id = ?').run(id);
    return null;
  }
  // Written at most every 15 s: enough precision for an idle timeout of minutes, little write load.
  if (now - row.last_seen_at > 15_000) db.prepare('UPDATE sessions SET last_seen_at = ? WHERE id = ?').run(now, id);
  return {
    id,
    csrf: row.csrf,
    created_at: row.created_at,
    last_seen_at: now,
    user: { id: row.uid, name: row.name, role: row.role, created_at: row.u_created, updated_at: row.updated_at, last_login_at: row.last_login_at },
  };
}

export function endSession(db: DB, sessionId: string): void {
  db.prepare('DELETE FROM sessions WHERE id = ?').run(sessionId);
}

export function pruneSessions(db: DB, policy = DEFAULT_SESSION_POLICY, now = Date.now()): number {
  return db.prepare('DELETE FROM sessions WHERE last_seen_at < ? OR created_at < ?').run(now - policy.idleMs, now - policy.absoluteMs).changes;
}

export function csrfMatches(expected: string, given: unknown): boolean {
  if (typeof given !== 'string' || given.length !== expected.length) return false;
  return crypto.timingSafeEqual(Buffer.from(given), Buffer.from(expected));
}

// ---- CLI helper ---------------------------------------------------------------------------------

/**
 * Reads a password from stdin: the first line of piped input, or typed at a terminal without echo.
 * Never from argv, which other local users can read in the process list.
 */
export async function readPassword(prompt = 'password: '): Promise<string> {
  const stdin = process.stdin;
  if (!stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const c of stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0];
  }
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.resume();
  return new Promise((resolve, reject) => {
    let buf = '';
    const done = (err?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(buf);
    };
    const onData = (d: Buffer) => {
      for (const ch of d.toString('utf8')) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return done();
        if (ch === '\u0003') return done(new OutpostError('E_USAGE', 'cancelled'));
        if (ch === '\u007f' || ch === '\b') buf = buf.slice(0, -1);
        else buf += ch;
      }
    };
    stdin.on('data', onData);
  });
}
