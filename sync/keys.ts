// Provider signing keys: Ed25519 with Node's built-in crypto only. A key is named by its key_id, the first
// 16 hex chars of sha256 over the raw 32-byte public key, so `openssl` can recompute it by hand.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { OutpostError } from '../appliance/errors.ts';

const KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Creates `<name>.key` (PKCS8 PEM, mode 0600) and `<name>.pub` (SPKI PEM); never overwrites a key. */
export function generateKeyPair(outDir: string, name = 'provider'): { privatePath: string; publicPath: string; keyId: string } {
  if (!KEY_NAME.test(name)) throw new OutpostError('E_USAGE', `key name "${name}" must match ${KEY_NAME}`);
  const privatePath = path.join(outDir, `${name}.key`);
  const publicPath = path.join(outDir, `${name}.pub`);
  for (const p of [privatePath, publicPath]) {
    if (fs.existsSync(p)) throw new OutpostError('E_CONFLICT', `${p} already exists; refusing to overwrite a key (move it away first)`);
  }
  fs.mkdirSync(outDir, { recursive: true, mode: 0o700 });
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519');
  const privPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const pubPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  // 'wx' fails if a file appeared meanwhile; chmod because the mode argument is filtered by the umask.
  fs.writeFileSync(privatePath, privPem, { flag: 'wx', mode: 0o600 });
  fs.chmodSync(privatePath, 0o600);
  try {
    fs.writeFileSync(publicPath, pubPem, { flag: 'wx', mode: 0o644 });
  } catch (e) {
    fs.rmSync(privatePath, { force: true });
    throw new OutpostError('E_CONFLICT', `cannot write ${publicPath}: ${(e as Error).message}`);
  }
  return { privatePath, publicPath, keyId: keyIdOf(publicKey) };
}

/** The raw 32-byte Ed25519 public key (the last 32 bytes of the SPKI DER form). */
export function rawPublicKey(key: crypto.KeyObject): Buffer {
  const pub = key.type === 'private' ? crypto.createPublicKey(key) : key;
  if (pub.asymmetricKeyType !== 'ed25519') throw new OutpostError('E_KEY', `not an Ed25519 key (found ${pub.asymmetricKeyType ?? pub.type})`);
  const jwk = pub.export({ format: 'jwk' });
  return Buffer.from(jwk.x as string, 'base64url');
}

/** key_id = first 16 hex chars of sha256(raw 32-byte public key). Accepts a KeyObject or a public PEM. */
export function keyIdOf(publicKey: crypto.KeyObject | string): string {
  const key = typeof publicKey === 'string' ? parsePublicPem(publicKey, 'the given PEM') : publicKey;
  return crypto.createHash('sha256').update(rawPublicKey(key)).digest('hex').slice(0, 16);
}

function readKeyFile(p: string): string {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch (e) {
    throw new OutpostError('E_KEY', `cannot read key file ${p}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

export function loadPrivateKey(p: string): crypto.KeyObject {
  const text = readKeyFile(p);
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(text);
  } catch {
    throw new OutpostError('E_KEY', `${p} is not a private key in PEM form (expected the <name>.key written by "outpost provider keygen")`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new OutpostError('E_KEY', `${p} holds a ${key.asymmetricKeyType} private key; packages are signed with Ed25519 only`);
  }
  return key;
}

function parsePublicPem(pem: string, where: string): crypto.KeyObject {
  // createPublicKey would happily derive a public key from a private PEM; a private key must never be
  // handed to an appliance, so say so instead of accepting it.
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw new OutpostError('E_KEY', `${where} is a private key; give the public key (<name>.pub) instead and keep the private key with the provider`);
  }
  let key: crypto.KeyObject;
  try {
    key = crypto.createPublicKey(pem);
  } catch {
    throw new OutpostError('E_KEY', `${where} is not a public key in PEM form (expected the <name>.pub written by "outpost provider keygen")`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new OutpostError('E_KEY', `${where} holds a ${key.asymmetricKeyType} public key; packages are signed with Ed25519 only`);
  }
  return key;
}

/** Loads a public key from a PEM string (anything containing "-----BEGIN") or from a file path. */
export function loadPublicKey(pathOrPem: string): crypto.KeyObject {
  if (pathOrPem.includes('-----BEGIN')) return parsePublicPem(pathOrPem, 'the given PEM');
  return parsePublicPem(readKeyFile(pathOrPem), pathOrPem);
}
