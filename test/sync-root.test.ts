// Root of trust documents: the multi-party rotation ceremony through drafts, the old-threshold rule,
// tampering, and signed documents by unknown or revoked keys — each with its stable code.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateKeyPair, loadPrivateKey } from '../sync/keys.ts';
import { authorizedKeys, parseEnvelope, rotateRoot, serializeEnvelope, signEnvelope, verifyRootSelf, verifyRootUpdate, verifySignedDoc } from '../sync/root.ts';
import { tmpDir } from './helpers.ts';

describe('root of trust', () => {
  const work = tmpDir('outpost-root-');
  const tree = path.join(work, 'tree');
  const keys = path.join(work, 'keys');
  const [a, b, c] = ['a', 'b', 'c'].map((n) => generateKeyPair(keys, n));
  const signer = generateKeyPair(keys, 'signer');
  const priv = (k: { privatePath: string }) => loadPrivateKey(k.privatePath);

  it('runs a two-holder ceremony through a draft and keeps every version verifiable in order', () => {
    const v1 = rotateRoot({ tree, rootKeys: [priv(a), priv(b)], threshold: 2, addSigningKeys: [signer.publicPath] });
    expect(v1).toMatchObject({ version: 1, draft: null });
    expect(v1.root.root_keys.map((k) => k.key_id).sort()).toEqual([a.keyId, b.keyId].sort());

    // Holder A replaces B by C; alone A cannot reach either threshold, so a draft is written.
    const draft = path.join(work, 'root-2.draft.json');
    const d = rotateRoot({ tree, rootKeys: [priv(a)], addRootKeys: [c.publicPath], removeRootKeys: [b.keyId], draft });
    expect(d).toMatchObject({ version: 2, path: null, draft, missing: { old: 1, own: 1 } });
    expect(fs.existsSync(path.join(tree, 'root/2.json'))).toBe(false);
    // B (old) and C (new) sign the draft at their own machines; then it is published.
    expect(rotateRoot({ tree, rootKeys: [priv(b)], fromDraft: draft })).toMatchObject({ draft, missing: { old: 0, own: 1 } });
    const done = rotateRoot({ tree, rootKeys: [priv(c)], fromDraft: draft });
    expect(done).toMatchObject({ version: 2, draft: null });
    expect(fs.existsSync(draft)).toBe(false);

    const r1 = verifyRootSelf(fs.readFileSync(path.join(tree, 'root/1.json'))).root;
    const r2 = verifyRootUpdate(r1, fs.readFileSync(path.join(tree, 'root/2.json'))).root;
    expect(r2.root_keys.map((k) => k.key_id).sort()).toEqual([a.keyId, c.keyId].sort());
    expect(fs.readFileSync(path.join(tree, 'root.json'), 'utf8')).toBe(fs.readFileSync(path.join(tree, 'root/2.json'), 'utf8'));
  });

  it('refuses a root signed by too few previous keys, a skipped version and a tampered text (E_ROOT)', () => {
    const r1 = verifyRootSelf(fs.readFileSync(path.join(tree, 'root/1.json'))).root;
    const r2text = fs.readFileSync(path.join(tree, 'root/2.json'), 'utf8');
    const r2 = verifyRootSelf(r2text).root;
    // Version 3 signed by A and C (its own threshold) but the new keys were chosen by C alone: only A of the old.
    const v3 = { ...r2, version: 3, threshold: 1, root_keys: r2.root_keys.filter((k) => k.key_id === c.keyId) };
    expect(() => verifyRootUpdate(r2, signEnvelope(v3, [priv(c)]))).toThrow(expect.objectContaining({ code: 'E_ROOT' }));
    // Skipping a version is refused even with every signature.
    expect(() => verifyRootUpdate(r1, signEnvelope(v3, [priv(a), priv(c)]))).toThrow(expect.objectContaining({ code: 'E_ROOT' }));
    // One changed byte in the signed text invalidates every signature.
    const env = parseEnvelope(r2text, 'root');
    const tampered = serializeEnvelope({ ...env, signed: env.signed.replace('"threshold": 2', '"threshold": 1') });
    expect(tampered).not.toBe(r2text);
    expect(() => verifyRootUpdate(r1, tampered)).toThrow(expect.objectContaining({ code: 'E_ROOT' }));
  });

  it('signed documents: unknown key, revoked key, bad signature, expiry', () => {
    const r2 = verifyRootSelf(fs.readFileSync(path.join(tree, 'root.json'))).root;
    const future = new Date(Date.now() + 86400_000).toISOString().replace(/\.\d+Z$/, 'Z');
    const doc = { type: 'outpost-index/1', created: '2026-01-01T00:00:00Z', expires: future, feeds: [] };
    const keysNow = authorizedKeys(r2);
    expect(verifySignedDoc(signEnvelope(doc, [priv(signer)]), keysNow, 'outpost-index/1', 'index')).toMatchObject({ feeds: [] });
    expect(() => verifySignedDoc(signEnvelope(doc, [priv(a)]), keysNow, 'outpost-index/1', 'index')).toThrow(expect.objectContaining({ code: 'E_UNKNOWN_KEY' }));
    const revoked = authorizedKeys({ ...r2, signing_keys: [], revoked_keys: [{ key_id: signer.keyId, revoked_at: '2026-01-01T00:00:00Z' }] });
    expect(() => verifySignedDoc(signEnvelope(doc, [priv(signer)]), revoked, 'outpost-index/1', 'index')).toThrow(expect.objectContaining({ code: 'E_REVOKED_KEY' }));
    const env = parseEnvelope(signEnvelope(doc, [priv(signer)]), 'index');
    const forged = serializeEnvelope({ ...env, signed: env.signed.replace('"feeds": []', '"feeds": [{"name":"x"}]') });
    expect(() => verifySignedDoc(forged, keysNow, 'outpost-index/1', 'index')).toThrow(expect.objectContaining({ code: 'E_SIG' }));
    const old = { ...doc, expires: '2026-01-02T00:00:00Z' };
    expect(() => verifySignedDoc(signEnvelope(old, [priv(signer)]), keysNow, 'outpost-index/1', 'index', new Date('2026-02-01T00:00:00Z'))).toThrow(expect.objectContaining({ code: 'E_EXPIRED' }));
  });
});
