// Trust decision over a staged package: the Ed25519 signature over the exact manifest bytes by a trusted,
// unrevoked key, then every staged file against the manifest's sha256 and size, then the file set,
// expiry and schema. Pure: no database, no writes. Version floor and rollback are the apply side's job.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { OutpostError } from '../appliance/errors.ts';
import type { Manifest } from '../appliance/types.ts';
import { keyIdOf } from './keys.ts';
import { SIGNATURE_BYTES, checkManifest, type StagedPackage } from './package-reader.ts';

export interface TrustedKey {
  key_id: string;
  public_pem: string;
  revoked_at: string | null;
}

function hashFile(p: string): { sha256: string; size: number } {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(p, 'r');
  const buf = Buffer.alloc(1024 * 1024);
  let size = 0;
  try {
    let n: number;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) {
      h.update(buf.subarray(0, n));
      size += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return { sha256: h.digest('hex'), size };
}

/**
 * Returns the manifest parsed from the signed bytes (never the staged object, which a caller could have
 * altered) once everything holds; otherwise throws E_UNKNOWN_KEY, E_REVOKED_KEY, E_SIG, E_HASH, E_FORMAT
 * or E_EXPIRED, in that order of checking.
 */
export function verifyPackage(staged: StagedPackage, trusted: TrustedKey[], now: Date = new Date()): Manifest {
  const bytes = Buffer.from(staged.manifestBytes);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new OutpostError('E_FORMAT', 'manifest: not valid UTF-8 JSON');
  }
  if (!raw || typeof raw !== 'object' || typeof raw.key_id !== 'string') throw new OutpostError('E_FORMAT', 'manifest: key_id missing');
  const keyId = raw.key_id;

  // 1. Signature by the key the manifest names. A lying key_id simply fails here: the named key did not sign.
  const key = trusted.find((k) => k.key_id === keyId);
  if (!key) throw new OutpostError('E_UNKNOWN_KEY', `signed by key ${keyId.slice(0, 16)}, which this appliance does not trust (outpost trust add <provider.pub>)`);
  if (key.revoked_at) throw new OutpostError('E_REVOKED_KEY', `signed by key ${keyId}, revoked at ${key.revoked_at}`);
  let pub: crypto.KeyObject;
  try {
    pub = crypto.createPublicKey(key.public_pem);
  } catch {
    throw new OutpostError('E_KEY', `trusted key ${keyId} has an unreadable public key`);
  }
  if (pub.asymmetricKeyType !== 'ed25519' || keyIdOf(pub) !== keyId) {
    throw new OutpostError('E_KEY', `trusted key ${keyId} does not match its stored public key; re-add it`);
  }
  const sig = Buffer.from(staged.signature);
  if (sig.length !== SIGNATURE_BYTES || !crypto.verify(null, bytes, pub, sig)) {
    throw new OutpostError('E_SIG', `manifest signature does not verify with key ${keyId}`);
  }

  // 2. Files: every listed file present with the signed sha256 and size; nothing unlisted.
  const files = raw.files;
  if (!Array.isArray(files) || !files.every((f) => f && typeof f === 'object' && typeof f.name === 'string')) {
    throw new OutpostError('E_FORMAT', 'manifest: files must be an array of objects with a name');
  }
  const listed = new Set<string>();
  for (const f of files as { name: string; sha256?: unknown; size?: unknown }[]) {
    listed.add(f.name);
    const p = staged.files.get(f.name);
    if (!p) throw new OutpostError('E_FORMAT', `${f.name} is listed in the manifest but absent from the package`);
    const got = staged.digests?.get(f.name) ?? hashFile(p);
    if (got.sha256 !== f.sha256 || got.size !== f.size) {
      throw new OutpostError('E_HASH', `${f.name}: sha256 ${got.sha256.slice(0, 16)}… (${got.size} bytes) does not match the manifest's ${String(f.sha256).slice(0, 16)}… (${String(f.size)} bytes)`);
    }
  }
  for (const name of staged.files.keys()) {
    if (!listed.has(name)) throw new OutpostError('E_FORMAT', `${name} is in the package but not listed in the manifest`);
  }

  // 3. Expiry: a package past its expiry is refused (freeze protection).
  const expires = typeof raw.expires === 'string' ? Date.parse(raw.expires) : NaN;
  if (!Number.isFinite(expires)) throw new OutpostError('E_FORMAT', 'manifest: expires is not a date');
  if (expires <= now.getTime()) throw new OutpostError('E_EXPIRED', `package expired at ${raw.expires as string}`);

  // 4. Schema of the whole manifest.
  return checkManifest(raw);
}
