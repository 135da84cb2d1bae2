// Provider root of trust (TUF-lite) and the signed-document envelope shared by root.json, index.json and
// latest.json. A root lists root keys with a threshold and the package-signing keys it authorizes; a new
// root version counts only when a threshold of the PREVIOUS root's keys and of its own keys signed it, so
// signing keys rotate and get revoked without anyone touching the appliances.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { OutpostError } from '../appliance/errors.ts';
import { keyIdOf, loadPublicKey } from './keys.ts';
import type { TrustedKey } from './verify.ts';

export const ROOT_TYPE = 'outpost-root/1';
/** Root, index and latest documents are small; anything bigger is refused before parsing. */
export const MAX_DOC_BYTES = 1024 * 1024;
const KEY_ID = /^[0-9a-f]{16}$/;
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/;

/**
 * The envelope: `signed` is the exact text of the signed JSON document (a string, so its bytes survive any
 * re-serialization of the envelope); each signature is Ed25519 over the UTF-8 bytes of that string.
 */
export interface Envelope {
  signed: string;
  signatures: { key_id: string; sig: string }[];
}

export interface PublicKeyEntry {
  key_id: string;
  public_pem: string;
}

export interface SigningKeyEntry extends PublicKeyEntry {
  label?: string;
  /** Packages and documents are accepted from this key only while now < not_after (if given). */
  not_after?: string;
}

export interface RootDoc {
  type: typeof ROOT_TYPE;
  version: number;
  created: string;
  expires: string;
  threshold: number;
  root_keys: PublicKeyEntry[];
  signing_keys: SigningKeyEntry[];
  /** Signing keys taken back: their packages are refused with E_REVOKED_KEY, not merely unknown. */
  revoked_keys: { key_id: string; revoked_at: string }[];
}

// ---------- envelope ----------

export function signEnvelope(doc: unknown, keys: crypto.KeyObject[]): string {
  const signed = JSON.stringify(doc, null, 1);
  return serializeEnvelope({ signed, signatures: keys.map((k) => signatureOf(signed, k)) });
}

function signatureOf(signed: string, key: crypto.KeyObject): { key_id: string; sig: string } {
  return { key_id: keyIdOf(key), sig: crypto.sign(null, Buffer.from(signed, 'utf8'), key).toString('base64') };
}

export function serializeEnvelope(env: Envelope): string {
  return `{"signed":${JSON.stringify(env.signed)},\n"signatures":[\n${env.signatures.map((s) => JSON.stringify(s)).join(',\n')}\n]}\n`;
}

/** Adds a signature by `key` (replacing an older one by the same key). */
export function addSignature(envText: string, key: crypto.KeyObject): string {
  const env = parseEnvelope(envText, 'document');
  const sig = signatureOf(env.signed, key);
  return serializeEnvelope({ signed: env.signed, signatures: [...env.signatures.filter((s) => s.key_id !== sig.key_id), sig] });
}

export function parseEnvelope(text: string | Buffer, what: string): Envelope {
  const bytes = typeof text === 'string' ? Buffer.byteLength(text) : text.length;
  if (bytes > MAX_DOC_BYTES) throw new OutpostError('E_SIZE', `${what}: ${bytes} bytes, more than ${MAX_DOC_BYTES}`);
  let env: unknown;
  try {
    env = JSON.parse(typeof text === 'string' ? text : new TextDecoder('utf-8', { fatal: true }).decode(text));
  } catch {
    throw new OutpostError('E_FORMAT', `${what}: not valid UTF-8 JSON`);
  }
  const e = env as Envelope;
  if (!e || typeof e !== 'object' || typeof e.signed !== 'string' || !Array.isArray(e.signatures)
    || !e.signatures.every((s) => s && typeof s.key_id === 'string' && typeof s.sig === 'string')) {
    throw new OutpostError('E_FORMAT', `${what}: expected {"signed": "<document text>", "signatures": [{"key_id", "sig"}]}`);
  }
  return e;
}

/** Key ids among `keys` whose signature over env.signed verifies; each key counts once. */
export function validSigners(env: Envelope, keys: PublicKeyEntry[]): Set<string> {
  const ok = new Set<string>();
  const data = Buffer.from(env.signed, 'utf8');
  for (const s of env.signatures) {
    if (ok.has(s.key_id)) continue;
    const k = keys.find((x) => x.key_id === s.key_id);
    if (!k || !k.public_pem) continue;
    try {
      const pub = crypto.createPublicKey(k.public_pem);
      if (keyIdOf(pub) !== k.key_id) continue;
      if (crypto.verify(null, data, pub, Buffer.from(s.sig, 'base64'))) ok.add(s.key_id);
    } catch {
      /* an unreadable key or signature simply does not count */
    }
  }
  return ok;
}

function parseSigned(env: Envelope, what: string): Record<string, unknown> {
  try {
    const doc = JSON.parse(env.signed);
    if (doc && typeof doc === 'object' && !Array.isArray(doc)) return doc;
  } catch {
    /* fall through */
  }
  throw new OutpostError('E_FORMAT', `${what}: signed text is not a JSON object`);
}

/**
 * Verifies a document signed by one package-signing key (index.json, latest.json): some signature must
 * verify with a trusted, unrevoked key; then the type and the expiry (freeze attack → E_EXPIRED).
 * Codes in order: E_FORMAT, E_UNKNOWN_KEY / E_REVOKED_KEY / E_SIG, E_EXPIRED.
 */
export function verifySignedDoc(text: string | Buffer, trusted: TrustedKey[], type: string, what: string, now = new Date()): Record<string, unknown> {
  const env = parseEnvelope(text, what);
  const active = trusted.filter((k) => !k.revoked_at);
  const signers = validSigners(env, active);
  if (signers.size === 0) {
    const ids = env.signatures.map((s) => s.key_id);
    const revoked = trusted.find((k) => k.revoked_at && ids.includes(k.key_id));
    if (revoked) throw new OutpostError('E_REVOKED_KEY', `${what} signed by key ${revoked.key_id}, revoked at ${revoked.revoked_at}`);
    if (!ids.some((id) => active.some((k) => k.key_id === id))) {
      throw new OutpostError('E_UNKNOWN_KEY', `${what} signed by ${ids.join(', ') || 'no key'}; none is trusted here (root of trust or outpost trust add)`);
    }
    throw new OutpostError('E_SIG', `${what}: signature does not verify`);
  }
  const doc = parseSigned(env, what);
  if (doc.type !== type) throw new OutpostError('E_FORMAT', `${what}: type is ${JSON.stringify(doc.type)}, expected ${type}`);
  const expires = typeof doc.expires === 'string' && ISO.test(doc.expires) ? Date.parse(doc.expires) : NaN;
  if (!Number.isFinite(expires)) throw new OutpostError('E_FORMAT', `${what}: expires is not an ISO 8601 UTC time`);
  if (expires <= now.getTime()) throw new OutpostError('E_EXPIRED', `${what} expired at ${doc.expires as string} (an old document replayed, or the provider stopped publishing)`);
  return doc;
}

// ---------- root documents ----------

function checkRootShape(doc: Record<string, unknown>, what: string): RootDoc {
  const bad = (m: string): never => {
    throw new OutpostError('E_FORMAT', `${what}: ${m}`);
  };
  if (doc.type !== ROOT_TYPE) bad(`type must be ${ROOT_TYPE}`);
  if (!Number.isSafeInteger(doc.version) || (doc.version as number) < 1) bad('version must be a positive integer');
  for (const k of ['created', 'expires']) if (typeof doc[k] !== 'string' || !ISO.test(doc[k] as string)) bad(`${k} must be an ISO 8601 UTC time`);
  const keyList = (x: unknown, name: string) => {
    if (!Array.isArray(x)) bad(`${name} must be an array`);
    for (const k of x as PublicKeyEntry[]) {
      if (!k || typeof k.key_id !== 'string' || !KEY_ID.test(k.key_id) || typeof k.public_pem !== 'string') bad(`${name}: each key needs key_id and public_pem`);
      let id: string;
      try {
        id = keyIdOf(k.public_pem);
      } catch {
        return bad(`${name}: key ${k.key_id} is not an Ed25519 public key`);
      }
      if (id !== k.key_id) bad(`${name}: key_id ${k.key_id} does not match its public key (${id})`);
    }
  };
  keyList(doc.root_keys, 'root_keys');
  keyList(doc.signing_keys, 'signing_keys');
  if (!Array.isArray(doc.revoked_keys)) bad('revoked_keys must be an array');
  const roots = (doc.root_keys as PublicKeyEntry[]).length;
  if (!Number.isSafeInteger(doc.threshold) || (doc.threshold as number) < 1 || (doc.threshold as number) > roots) bad(`threshold must be 1..${roots} (the number of root keys)`);
  return doc as unknown as RootDoc;
}

/** Parses a root envelope and checks it is signed by a threshold of its own root keys (else E_ROOT). */
export function verifyRootSelf(text: string | Buffer, what = 'root'): { root: RootDoc; text: string } {
  const env = parseEnvelope(text, what);
  const root = checkRootShape(parseSigned(env, what), what);
  const n = validSigners(env, root.root_keys).size;
  if (n < root.threshold) throw new OutpostError('E_ROOT', `${what} version ${root.version}: ${n} valid signature(s) by its own root keys, threshold is ${root.threshold}`);
  return { root, text: typeof text === 'string' ? text : text.toString('utf8') };
}

/**
 * Accepts root version prev.version+1 only when signed by a threshold of the previous root's keys AND a
 * threshold of its own (TUF's rule), so a stolen signing key cannot mint a root and a single old root key
 * cannot hand trust to new keys alone.
 */
export function verifyRootUpdate(prev: RootDoc, text: string | Buffer): { root: RootDoc; text: string } {
  const what = `root version ${prev.version + 1}`;
  const env = parseEnvelope(text, what);
  const next = checkRootShape(parseSigned(env, what), what);
  if (next.version !== prev.version + 1) throw new OutpostError('E_ROOT', `${what}: document says version ${next.version}`);
  const byOld = validSigners(env, prev.root_keys).size;
  if (byOld < prev.threshold) {
    throw new OutpostError('E_ROOT', `${what}: signed by ${byOld} of the previous root's keys, threshold is ${prev.threshold}`);
  }
  const byNew = validSigners(env, next.root_keys).size;
  if (byNew < next.threshold) throw new OutpostError('E_ROOT', `${what}: signed by ${byNew} of its own root keys, threshold is ${next.threshold}`);
  return { root: next, text: typeof text === 'string' ? text : text.toString('utf8') };
}

/** The current root must not be past its expiry: an attacker could otherwise freeze an appliance on it. */
export function checkRootFresh(root: RootDoc, now = new Date()): void {
  if (Date.parse(root.expires) <= now.getTime()) {
    throw new OutpostError('E_EXPIRED', `root version ${root.version} expired at ${root.expires}; the provider must publish a new root`);
  }
}

/** The signing keys a root authorizes, in the shape verifyPackage takes; revoked and lapsed keys carry revoked_at. */
export function authorizedKeys(root: RootDoc, now = new Date()): TrustedKey[] {
  const out: TrustedKey[] = [];
  for (const k of root.signing_keys) {
    const revoked = root.revoked_keys.find((r) => r.key_id === k.key_id)?.revoked_at
      ?? (k.not_after && Date.parse(k.not_after) <= now.getTime() ? k.not_after : null);
    out.push({ key_id: k.key_id, public_pem: k.public_pem, revoked_at: revoked });
  }
  for (const r of root.revoked_keys) {
    if (!out.some((k) => k.key_id === r.key_id)) out.push({ key_id: r.key_id, public_pem: '', revoked_at: r.revoked_at });
  }
  return out;
}

/** Merges key lists; a key revoked in any list is revoked (revocation always wins). */
export function mergeKeys(...lists: TrustedKey[][]): TrustedKey[] {
  const by = new Map<string, TrustedKey>();
  for (const list of lists) {
    for (const k of list) {
      const have = by.get(k.key_id);
      if (!have) by.set(k.key_id, { ...k });
      else {
        if (!have.public_pem && k.public_pem) have.public_pem = k.public_pem;
        if (k.revoked_at && !have.revoked_at) have.revoked_at = k.revoked_at;
      }
    }
  }
  return [...by.values()];
}

// ---------- provider ceremony: new root versions in a published tree ----------

export interface RotateOptions {
  /** The published tree (root.json and root/<n>.json live there). */
  tree: string;
  /** Private root keys present at this ceremony; each signs if it is an old or a new root key. */
  rootKeys: crypto.KeyObject[];
  addRootKeys?: string[];
  removeRootKeys?: string[];
  threshold?: number;
  /** Public key files, or key objects (a private key object stands for its public half). */
  addSigningKeys?: (string | crypto.KeyObject)[];
  revokeSigningKeys?: string[];
  /** Days until a signing key added now lapses (default: no lapse). */
  signingValidDays?: number;
  expiresDays?: number;
  /** When the signatures present do not reach the thresholds, write the partly signed root here. */
  draft?: string;
  /** Continue a draft: add the signatures of rootKeys to it. */
  fromDraft?: string;
  now?: Date;
}

export interface RotateResult {
  version: number;
  path: string | null;
  draft: string | null;
  root: RootDoc;
  /** Signatures still missing: by old root keys, by new root keys. */
  missing: { old: number; own: number };
}

export function readCurrentRoot(tree: string): { root: RootDoc; text: string } | null {
  const p = path.join(tree, 'root.json');
  if (!fs.existsSync(p)) return null;
  return verifyRootSelf(fs.readFileSync(p), p);
}

function pubEntry(pubPathOrKey: string | crypto.KeyObject): PublicKeyEntry {
  const key = typeof pubPathOrKey === 'string' ? loadPublicKey(pubPathOrKey) : crypto.createPublicKey(pubPathOrKey);
  return { key_id: keyIdOf(key), public_pem: key.export({ type: 'spki', format: 'pem' }).toString() };
}

export function writeAtomic(file: string, data: string | Buffer): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  fs.writeFileSync(tmp, data, { mode: 0o644 });
  fs.renameSync(tmp, file);
}

/**
 * Makes the next root version (version 1 when the tree has none): applies the key changes, signs with the
 * root keys given, and publishes `root/<n>.json` + `root.json` when both thresholds are met; otherwise
 * writes a draft for the other key holders (E_ROOT without a draft path).
 */
export function rotateRoot(o: RotateOptions): RotateResult {
  const now = o.now ?? new Date();
  const current = readCurrentRoot(o.tree);
  let text: string;
  let next: RootDoc;
  if (o.fromDraft) {
    text = fs.readFileSync(o.fromDraft, 'utf8');
    next = checkRootShape(parseSigned(parseEnvelope(text, o.fromDraft), o.fromDraft), o.fromDraft);
    if (next.version !== (current?.root.version ?? 0) + 1) throw new OutpostError('E_ROOT', `draft is root version ${next.version}; the tree is at version ${current?.root.version ?? 0}`);
  } else {
    const prev = current?.root;
    const rootKeys = new Map((prev?.root_keys ?? []).map((k) => [k.key_id, k]));
    for (const p of o.addRootKeys ?? []) { const e = pubEntry(p); rootKeys.set(e.key_id, e); }
    if (!prev && !(o.addRootKeys ?? []).length) for (const k of o.rootKeys) { const e = pubEntry(k); rootKeys.set(e.key_id, e); }
    for (const id of o.removeRootKeys ?? []) if (!rootKeys.delete(id)) throw new OutpostError('E_NOT_FOUND', `no root key ${id} in root version ${prev?.version ?? 0}`);
    const signing = new Map((prev?.signing_keys ?? []).map((k) => [k.key_id, k]));
    const revoked = [...(prev?.revoked_keys ?? [])];
    for (const p of o.addSigningKeys ?? []) {
      const e: SigningKeyEntry = pubEntry(p);
      if (revoked.some((r) => r.key_id === e.key_id)) throw new OutpostError('E_CONFLICT', `signing key ${e.key_id} was revoked; generate a new key instead of reviving it`);
      if (o.signingValidDays) e.not_after = new Date(now.getTime() + o.signingValidDays * 86400_000).toISOString();
      signing.set(e.key_id, e);
    }
    for (const id of o.revokeSigningKeys ?? []) {
      if (!signing.delete(id)) throw new OutpostError('E_NOT_FOUND', `no signing key ${id} in root version ${prev?.version ?? 0}`);
      revoked.push({ key_id: id, revoked_at: now.toISOString() });
    }
    const created = new Date(Math.floor(now.getTime() / 1000) * 1000);
    next = {
      type: ROOT_TYPE,
      version: (prev?.version ?? 0) + 1,
      created: created.toISOString(),
      expires: new Date(created.getTime() + (o.expiresDays ?? 365) * 86400_000).toISOString(),
      threshold: o.threshold ?? prev?.threshold ?? 1,
      root_keys: [...rootKeys.values()],
      signing_keys: [...signing.values()],
      revoked_keys: revoked,
    };
    if (!next.root_keys.length) throw new OutpostError('E_USAGE', 'a root needs at least one root key');
    checkRootShape(JSON.parse(JSON.stringify(next)), 'new root');
    text = signEnvelope(next, []);
  }
  // Sign with every given key that is an old or new root key; others would only add noise.
  const relevant = new Set([...(current?.root.root_keys ?? []), ...next.root_keys].map((k) => k.key_id));
  for (const k of o.rootKeys) {
    const id = keyIdOf(k);
    if (!relevant.has(id)) throw new OutpostError('E_KEY', `key ${id} is not a root key of version ${current?.root.version ?? 0} or ${next.version}`);
    text = addSignature(text, k);
  }
  const env = parseEnvelope(text, 'new root');
  const missing = {
    old: current ? Math.max(0, current.root.threshold - validSigners(env, current.root.root_keys).size) : 0,
    own: Math.max(0, next.threshold - validSigners(env, next.root_keys).size),
  };
  if (missing.old || missing.own) {
    const draft = o.draft ?? o.fromDraft;
    if (!draft) throw new OutpostError('E_ROOT', `root version ${next.version} needs ${missing.old} more signature(s) by previous root keys and ${missing.own} by its own; give --draft <file> to collect them`);
    writeAtomic(draft, text);
    return { version: next.version, path: null, draft, root: next, missing };
  }
  // Double-check with the appliance's own rules before publishing.
  if (current) verifyRootUpdate(current.root, text);
  else verifyRootSelf(text);
  const p = path.join(o.tree, 'root', `${next.version}.json`);
  if (fs.existsSync(p)) throw new OutpostError('E_CONFLICT', `${p} already exists`);
  writeAtomic(p, text);
  writeAtomic(path.join(o.tree, 'root.json'), text);
  if (o.fromDraft) fs.rmSync(o.fromDraft, { force: true });
  return { version: next.version, path: p, draft: null, root: next, missing };
}
