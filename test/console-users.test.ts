// Console users on a real SQLite file: scrypt hashes, lockout and rate limit, session idle/absolute
// timeouts, last-admin protection, and `outpost user add` reading the password from stdin.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDb, type DB } from '../appliance/db.ts';
import {
  addUser,
  attemptLogin,
  countUsers,
  createSession,
  deleteUser,
  getSession,
  hashPassword,
  listUsers,
  lockedFor,
  pruneSessions,
  setPassword,
  setRole,
  verifyPassword,
} from '../appliance/users.ts';
import { cli, tmpDir } from './helpers.ts';

const work = tmpDir('outpost-users-');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

function freshDb(name: string): DB {
  return openDb(path.join(work, name));
}

describe('password hashing', () => {
  it('stores scrypt with its parameters and a random salt; verifies only the right password', async () => {
    const a = await hashPassword('correct horse battery');
    const b = await hashPassword('correct horse battery');
    expect(a).toMatch(/^scrypt\$32768\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    expect(a).not.toBe(b);
    expect(await verifyPassword('correct horse battery', a)).toBe(true);
    expect(await verifyPassword('correct horse batterY', a)).toBe(false);
    expect(await verifyPassword('correct horse battery', 'plain$text')).toBe(false);
  });
});

describe('users, lockout and sessions', () => {
  const db = freshDb('a');
  const pw = 'a long enough passphrase';

  it('adds users with valid names, roles and passwords only', async () => {
    const u = await addUser(db, 'alice', 'admin', pw);
    expect(u).toMatchObject({ name: 'alice', role: 'admin' });
    expect(JSON.stringify(db.prepare('SELECT * FROM users').all())).not.toContain(pw);
    await expect(addUser(db, 'ALICE', 'viewer', pw)).rejects.toMatchObject({ code: 'E_CONFLICT' });
    await expect(addUser(db, 'bob', 'root', pw)).rejects.toMatchObject({ code: 'E_USAGE' });
    await expect(addUser(db, '<script>', 'viewer', pw)).rejects.toMatchObject({ code: 'E_USAGE' });
    await expect(addUser(db, 'bob', 'viewer', 'short')).rejects.toMatchObject({ code: 'E_INPUT' });
    expect(countUsers(db)).toBe(1);
  });

  it('locks a user name after 5 failures in 15 minutes, even for the right password, then lets it in again', async () => {
    const t0 = Date.UTC(2026, 0, 1);
    for (let i = 0; i < 5; i++) {
      const r = await attemptLogin(db, 'alice', 'wrong password!!', '10.0.0.1', undefined, t0 + i * 1000);
      expect(r).toMatchObject({ ok: false, code: 'E_AUTH' });
    }
    const locked = await attemptLogin(db, 'alice', pw, '10.0.0.2', undefined, t0 + 10_000);
    expect(locked).toMatchObject({ ok: false, code: 'E_RATE' });
    expect(lockedFor(db, 'alice', '10.0.0.9', undefined, t0 + 10_000)).toBeGreaterThan(14 * 60_000);
    const later = await attemptLogin(db, 'alice', pw, '10.0.0.2', undefined, t0 + 16 * 60_000);
    expect(later.ok).toBe(true);
    const audit = db.prepare("SELECT code FROM audit WHERE action = 'user.login' ORDER BY id").all() as { code: string | null }[];
    expect(audit.map((a) => a.code)).toEqual(['E_AUTH', 'E_AUTH', 'E_AUTH', 'E_AUTH', 'E_AUTH', 'E_RATE', null]);
  });

  it('blocks an address after 20 failures across many user names (password spraying)', async () => {
    const t0 = Date.UTC(2026, 0, 2);
    for (let i = 0; i < 20; i++) await attemptLogin(db, `nobody${i}`, 'x', '192.0.2.7', undefined, t0 + i);
    expect((await attemptLogin(db, 'alice', pw, '192.0.2.7', undefined, t0 + 100)).ok).toBe(false);
    expect((await attemptLogin(db, 'alice', pw, '192.0.2.8', undefined, t0 + 100)).ok).toBe(true);
  });

  it('ends sessions after the idle timeout and after the absolute timeout', () => {
    const policy = { idleMs: 30 * 60_000, absoluteMs: 12 * 3600_000 };
    const user = listUsers(db)[0];
    const t0 = Date.UTC(2026, 0, 3);
    const idle = createSession(db, user.id, {}, t0);
    expect(getSession(db, idle.cookie, policy, t0 + 29 * 60_000)?.user.name).toBe('alice');
    expect(getSession(db, idle.cookie, policy, t0 + 29 * 60_000 + 31 * 60_000)).toBeNull();
    expect(getSession(db, idle.cookie, policy, t0)).toBeNull(); // deleted, not just hidden

    const busy = createSession(db, user.id, {}, t0);
    let t = t0;
    while (t < t0 + 12 * 3600_000 - 20 * 60_000) {
      t += 20 * 60_000;
      expect(getSession(db, busy.cookie, policy, t)).not.toBeNull();
    }
    expect(getSession(db, busy.cookie, policy, t0 + 12 * 3600_000 + 1)).toBeNull();
    expect(getSession(db, 'not-a-session', policy, t0)).toBeNull();
    // Only a hash of the cookie is stored.
    const s = createSession(db, user.id, {}, t0);
    expect(JSON.stringify(db.prepare('SELECT * FROM sessions').all())).not.toContain(s.cookie);
    expect(pruneSessions(db, policy, t0 + 13 * 3600_000)).toBeGreaterThan(0);
  });

  it('a password reset or role change ends the user\'s sessions; the last admin stays', async () => {
    const bob = await addUser(db, 'bob', 'admin', pw);
    const s = createSession(db, bob.id);
    await setPassword(db, 'bob', 'another long passphrase');
    expect(getSession(db, s.cookie)).toBeNull();
    const s2 = createSession(db, bob.id);
    setRole(db, bob.id, 'viewer');
    expect(getSession(db, s2.cookie)).toBeNull();
    const alice = listUsers(db).find((u) => u.name === 'alice')!;
    expect(() => setRole(db, alice.id, 'viewer')).toThrow(expect.objectContaining({ code: 'E_CONFLICT' }));
    expect(() => deleteUser(db, alice.id)).toThrow(expect.objectContaining({ code: 'E_CONFLICT' }));
    deleteUser(db, bob.id);
    expect(listUsers(db).map((u) => u.name)).toEqual(['alice']);
  });
});

describe('outpost user add (real CLI)', () => {
  const dataDir = path.join(work, 'cli');

  it('reads the password from stdin, never argv; refuses bad input with stable codes', () => {
    const ok = cli(['user', 'add', 'admin', '--role', 'admin'], { dataDir, input: 'a long enough passphrase\n' });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/added admin user admin/);
    expect(ok.stdout + ok.stderr).not.toContain('a long enough passphrase');

    const dup = cli(['user', 'add', 'admin'], { dataDir, input: 'a long enough passphrase\n' });
    expect(dup.code).toBe(1);
    expect(dup.stderr).toMatch(/^E_CONFLICT:/);
    const short = cli(['user', 'add', 'viewer1'], { dataDir, input: 'short\n' });
    expect(short.code).toBe(1);
    expect(short.stderr).toMatch(/^E_INPUT:/);
    const badRole = cli(['user', 'add', 'viewer1', '--role', 'root'], { dataDir, input: 'a long enough passphrase\n' });
    expect(badRole.code).toBe(2);

    const viewer = cli(['user', 'add', 'viewer1'], { dataDir, input: 'viewer passphrase 1\n' });
    expect(viewer.code, viewer.stderr).toBe(0);
    const list = cli(['user', 'list', '--json'], { dataDir });
    expect(list.stdout.trim().split('\n').map((l) => JSON.parse(l))).toMatchObject([
      { name: 'admin', role: 'admin' },
      { name: 'viewer1', role: 'viewer' },
    ]);
    const db = openDb(dataDir);
    const audit = db.prepare("SELECT action, subject FROM audit WHERE action = 'user.add' ORDER BY id").all();
    db.close();
    expect(audit).toEqual([
      { action: 'user.add', subject: 'admin' },
      { action: 'user.add', subject: 'viewer1' },
    ]);
  });
});
