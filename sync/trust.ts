// Provider keys this appliance accepts: add, list, remove (revoke). Stored in SQLite, audited.
import fs from 'node:fs';
import type { DB } from '../appliance/db.ts';
import { audit } from '../appliance/db.ts';
import { OutpostError } from '../appliance/errors.ts';
import { keyIdOf, loadPublicKey } from './keys.ts';

export interface TrustedKeyRow {
  key_id: string;
  public_pem: string;
  label: string | null;
  added_at: string;
  revoked_at: string | null;
}

export function trustAdd(db: DB, publicKeyFile: string, opts: { label?: string; actor?: string } = {}): TrustedKeyRow {
  if (!fs.existsSync(publicKeyFile)) throw new OutpostError('E_NOT_FOUND', `no key file at ${publicKeyFile}`);
  const st = fs.statSync(publicKeyFile);
  if (st.mode & 0o002) throw new OutpostError('E_KEY', `${publicKeyFile} is world-writable; refusing to trust it (chmod o-w)`);
  const key = loadPublicKey(publicKeyFile);
  const pem = key.export({ type: 'spki', format: 'pem' }).toString();
  const keyId = keyIdOf(key);
  const now = new Date().toISOString();
  const existing = db.prepare('SELECT * FROM trusted_keys WHERE key_id = ?').get(keyId) as TrustedKeyRow | undefined;
  if (existing && !existing.revoked_at) return existing;
  db.prepare(
    'INSERT INTO trusted_keys(key_id, public_pem, label, added_at, revoked_at) VALUES (?, ?, ?, ?, NULL) ON CONFLICT(key_id) DO UPDATE SET revoked_at = NULL, added_at = excluded.added_at, label = excluded.label',
  ).run(keyId, pem, opts.label ?? null, now);
  audit(db, opts.actor ?? 'cli', 'trust.add', { subject: keyId, detail: { label: opts.label ?? null } });
  return db.prepare('SELECT * FROM trusted_keys WHERE key_id = ?').get(keyId) as TrustedKeyRow;
}

export function trustList(db: DB): TrustedKeyRow[] {
  return db.prepare('SELECT * FROM trusted_keys ORDER BY added_at').all() as TrustedKeyRow[];
}

/** Removing a key revokes it: packages it signed are refused from now on (E_REVOKED_KEY). */
export function trustRemove(db: DB, keyId: string, actor = 'cli'): void {
  const res = db.prepare('UPDATE trusted_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL').run(new Date().toISOString(), keyId);
  if (res.changes === 0) throw new OutpostError('E_NOT_FOUND', `no trusted key with id ${keyId}`);
  audit(db, actor, 'trust.remove', { subject: keyId });
}
