// Reference data: threat actors, malware families and ATT&CK techniques with their aliases, carried in
// a signed package of kind "reference" — the same tar, manifest, signature, hashes, expiry and version
// floor as any feed (docs/package-format.md), with `reference` data files instead of indicators.
// Provider side: read MISP galaxy threat-actor clusters (synonyms → aliases) and STIX intrusion-set /
// malware / tool / attack-pattern objects (ATT&CK bundles) into entities, link them (uses, same_as) and
// write the package. Appliance side: verify like any package (sync/import.ts routes here after
// verification), check the state hash, replace the set in one transaction.
// Each data line is `{"t":"actor"|"family"|"technique","v":"<entity id>","ctx":{name, aliases, …}}`, so
// canonical lines, sort order and the state hash are exactly the indicator ones.
import fs from 'node:fs';
import path from 'node:path';
import type { DB } from '../appliance/db.ts';
import { audit, currentGeneration } from '../appliance/db.ts';
import { OutpostError } from '../appliance/errors.ts';
import type { FeedKind, Indicator, Manifest, SourceReport } from '../appliance/types.ts';
import { loadPrivateKey } from './keys.ts';
import { FEED_NAME, readIndicators, type Limits, type StagedPackage } from './package-reader.ts';
import { StateHasher, writePackage } from './package-writer.ts';
import { compareIndicators } from './records.ts';
import { addMalformed, addNote, addSkipped, newReport } from './sources/report.ts';

export const REFERENCE_KINDS = ['actor', 'family', 'technique'] as const;
export type ReferenceKind = (typeof REFERENCE_KINDS)[number];

export interface ReferenceEntity {
  id: string;
  kind: ReferenceKind;
  name: string;
  /** Other names, canonical name excluded. */
  aliases: string[];
  source: 'misp-galaxy' | 'mitre-attack';
  /** ATT&CK ids (G0034, S0605, T0803). */
  external_ids?: string[];
  description?: string;
  country?: string;
  refs?: string[];
  /** Entity ids this one uses (intrusion-set → malware / attack-pattern; malware → attack-pattern). */
  uses?: string[];
  /** The same group or family in another source (galaxy cluster ↔ ATT&CK intrusion set). */
  same_as?: string[];
}

const MAX_DESCRIPTION = 600;
const MAX_REFS = 8;
const ENTITY_ID = /^[a-z][a-z0-9-]{0,40}--[0-9a-f-]{36}$/;

/** Alias index key: letters and digits only, lowercased — "APT 28", "apt-28" and "APT28" are one key. */
export function aliasKey(name: string): string {
  return name.normalize('NFKC').toLowerCase().replace(/[^\p{L}\p{N}]+/gu, '');
}

const str = (x: unknown): string | undefined => (typeof x === 'string' && x.trim() ? x.trim() : undefined);
const strs = (x: unknown): string[] => (Array.isArray(x) ? x.map(str).filter((s): s is string => !!s) : []);
const trim = (s: string | undefined): string | undefined => (s && s.length > MAX_DESCRIPTION ? `${s.slice(0, MAX_DESCRIPTION - 1)}…` : s);

function cleanAliases(name: string, aliases: string[]): string[] {
  const own = aliasKey(name);
  const seen = new Set<string>([own]);
  const out: string[] = [];
  for (const a of aliases) {
    const k = aliasKey(a);
    if (!k || seen.has(k)) continue;
    seen.add(k);
    out.push(a);
  }
  return out;
}

// ---------------------------------------------------------------- provider side: sources

/** MISP galaxy cluster file (threat-actor.json): `{"type","values":[{"value","uuid","description","meta":{synonyms,country,refs}}]}`. */
export function readGalaxy(doc: Record<string, unknown>, report: SourceReport): ReferenceEntity[] {
  const out: ReferenceEntity[] = [];
  const values = Array.isArray(doc.values) ? doc.values : [];
  const galaxyType = str(doc.type) ?? 'threat-actor';
  const kind: ReferenceKind = /actor|intrusion/i.test(galaxyType) ? 'actor' : 'family';
  values.forEach((v, i) => {
    report.lines++;
    const c = v && typeof v === 'object' ? (v as Record<string, unknown>) : {};
    const name = str(c.value);
    const uuid = str(c.uuid)?.toLowerCase();
    if (!name || !uuid || !/^[0-9a-f-]{36}$/.test(uuid)) {
      addMalformed(report, i + 1, JSON.stringify(v).slice(0, 120), 'galaxy cluster without value or uuid');
      return;
    }
    const meta = c.meta && typeof c.meta === 'object' ? (c.meta as Record<string, unknown>) : {};
    const synonyms = strs(meta.synonyms);
    const e: ReferenceEntity = { id: `${kind === 'actor' ? 'threat-actor' : 'malware'}--${uuid}`, kind, name, aliases: cleanAliases(name, synonyms), source: 'misp-galaxy' };
    const ext = synonyms.filter((s) => /^[GS]\d{4}$/.test(s));
    if (ext.length) e.external_ids = ext;
    const d = trim(str(c.description));
    if (d) e.description = d;
    const country = str(meta.country);
    if (country && /^[A-Z]{2}$/.test(country)) e.country = country;
    const refs = strs(meta.refs).slice(0, MAX_REFS);
    if (refs.length) e.refs = refs;
    out.push(e);
    report.accepted++;
  });
  if (!values.length) addNote(report, 'galaxy has no values');
  return out;
}

/** STIX 2.x bundle: intrusion-set → actor, malware/tool → family, attack-pattern → technique; `uses` relationships kept. */
export function readStixReference(doc: Record<string, unknown>, report: SourceReport): ReferenceEntity[] {
  const objects = Array.isArray(doc.objects) ? (doc.objects as Record<string, unknown>[]) : [];
  const byId = new Map<string, ReferenceEntity>();
  const rels: Record<string, unknown>[] = [];
  objects.forEach((o, i) => {
    report.lines++;
    if (!o || typeof o !== 'object') {
      addMalformed(report, i + 1, String(o), 'not an object');
      return;
    }
    if (o.type === 'relationship') {
      rels.push(o);
      addSkipped(report);
      return;
    }
    const kind: ReferenceKind | undefined = o.type === 'intrusion-set' ? 'actor' : o.type === 'malware' || o.type === 'tool' ? 'family' : o.type === 'attack-pattern' ? 'technique' : undefined;
    if (!kind || o.revoked === true || o.x_mitre_deprecated === true) {
      addSkipped(report);
      return;
    }
    const id = str(o.id);
    const name = str(o.name);
    if (!id || !name || !ENTITY_ID.test(id)) {
      addMalformed(report, i + 1, String(o.id ?? o.name ?? ''), `${String(o.type)} without a valid id or name`);
      return;
    }
    const refs = Array.isArray(o.external_references) ? (o.external_references as Record<string, unknown>[]) : [];
    const attackRef = refs.find((r) => r && r.source_name === 'mitre-attack' && str(r.external_id));
    const ext = attackRef ? [str(attackRef.external_id)!] : [];
    const aliases = [...strs(o.aliases), ...strs(o.x_mitre_aliases), ...ext];
    const e: ReferenceEntity = { id, kind, name, aliases: cleanAliases(name, aliases), source: 'mitre-attack' };
    if (ext.length) e.external_ids = ext;
    const d = trim(str(o.description)?.replace(/\(Citation:[^)]*\)/g, '').replace(/\[([^\]]+)\]\([^)]+\)/g, '$1').replace(/\s+/g, ' ').trim());
    if (d) e.description = d;
    const url = attackRef ? str(attackRef.url) : undefined;
    if (url) e.refs = [url];
    byId.set(id, e);
    report.accepted++;
  });
  for (const r of rels) {
    if (r.relationship_type !== 'uses' || r.revoked === true) continue;
    const src = byId.get(String(r.source_ref));
    const dst = byId.get(String(r.target_ref));
    if (!src || !dst || src.kind === 'technique') continue;
    if (!(src.uses ??= []).includes(dst.id)) src.uses.push(dst.id);
  }
  for (const e of byId.values()) e.uses?.sort();
  if (!byId.size) addNote(report, 'STIX bundle has no intrusion-set, malware, tool or attack-pattern objects');
  return [...byId.values()];
}

/** Reads reference source files (MISP galaxy JSON, STIX bundles). Unknown JSON shapes are refused with E_INPUT. */
export function readReferenceSources(files: string[]): { entities: ReferenceEntity[]; reports: SourceReport[] } {
  const byId = new Map<string, ReferenceEntity>();
  const reports: SourceReport[] = [];
  for (const file of files) {
    let doc: unknown;
    try {
      doc = JSON.parse(fs.readFileSync(file, 'utf8').replace(/^\uFEFF/, ''));
    } catch (e) {
      throw new OutpostError('E_INPUT', `${file}: not readable JSON (${(e as Error).message})`);
    }
    const report = newReport(path.basename(file));
    let got: ReferenceEntity[];
    if (doc && typeof doc === 'object' && (doc as Record<string, unknown>).type === 'bundle') {
      report.format = 'stix';
      got = readStixReference(doc as Record<string, unknown>, report);
    } else if (doc && typeof doc === 'object' && Array.isArray((doc as Record<string, unknown>).values)) {
      report.format = 'misp-galaxy';
      got = readGalaxy(doc as Record<string, unknown>, report);
    } else {
      throw new OutpostError('E_INPUT', `${file}: not a MISP galaxy cluster file or a STIX bundle`);
    }
    for (const e of got) {
      if (byId.has(e.id)) {
        report.duplicates++;
        report.accepted--;
      } else byId.set(e.id, e);
    }
    reports.push(report);
  }
  const entities = [...byId.values()];
  linkSameAs(entities);
  return { entities, reports };
}

/** Galaxy clusters and ATT&CK objects describing the same group/family: a shared ATT&CK id, else the same name key. */
function linkSameAs(entities: ReferenceEntity[]): void {
  const byKey = new Map<string, ReferenceEntity[]>();
  for (const e of entities) {
    if (e.kind === 'technique') continue;
    for (const k of new Set([aliasKey(e.name), ...(e.external_ids ?? []).map(aliasKey)])) {
      const list = byKey.get(`${e.kind}:${k}`) ?? [];
      list.push(e);
      byKey.set(`${e.kind}:${k}`, list);
    }
  }
  for (const list of byKey.values()) {
    for (const a of list) {
      for (const b of list) {
        if (a === b || a.source === b.source) continue;
        if (!(a.same_as ??= []).includes(b.id)) a.same_as.push(b.id);
      }
    }
  }
  for (const e of entities) e.same_as?.sort();
}

export function entityToLine(e: ReferenceEntity): Indicator {
  const { id, kind, ...rest } = e;
  return { t: kind as unknown as Indicator['t'], v: id, ctx: rest as unknown as Record<string, unknown> };
}

export interface ReferenceBuildOptions {
  /** Set name (the manifest's `feed`); default "reference". */
  name?: string;
  keyPath: string;
  outDir: string;
  files: string[];
  version?: number;
  expiresDays?: number;
  now?: Date;
}

/** Provider side: build the signed reference package. Prints nothing; returns path, hash, manifest and reports. */
export async function buildReferencePackage(opts: ReferenceBuildOptions): Promise<{ path: string; sha256: string; manifest: Manifest; reports: SourceReport[]; counts: Record<ReferenceKind, number> }> {
  const name = opts.name ?? 'reference';
  if (!FEED_NAME.test(name)) throw new OutpostError('E_USAGE', `reference set name "${name}" must match ${FEED_NAME}`);
  if (!opts.files.length) throw new OutpostError('E_USAGE', 'give at least one reference source file (MISP galaxy JSON, STIX bundle)');
  const key = loadPrivateKey(opts.keyPath);
  const { entities, reports } = readReferenceSources(opts.files.map((f) => path.resolve(f)));
  const lines = entities.map(entityToLine).sort(compareIndicators);
  const now = opts.now ?? new Date();
  const created = new Date(Math.floor(now.getTime() / 1000) * 1000);
  const expires = new Date(created.getTime() + (opts.expiresDays ?? 365) * 86400_000);
  const res = await writePackage({
    outDir: opts.outDir,
    privateKey: key,
    manifest: {
      feed: name,
      // The manifest type names block/allow feeds; reference is the third kind the reader accepts.
      kind: 'reference' as unknown as FeedKind,
      type: 'full',
      version: opts.version ?? created.getTime(),
      created: created.toISOString(),
      expires: expires.toISOString(),
      defaults: {},
      sources: reports,
    },
    files: [{ role: 'reference', indicators: lines }],
  });
  const counts = { actor: 0, family: 0, technique: 0 };
  for (const e of entities) counts[e.kind]++;
  return { ...res, reports, counts };
}

// ---------------------------------------------------------------- appliance side

export function isReferenceManifest(m: Manifest): boolean {
  return (m.kind as string) === 'reference';
}

interface ReferenceSetRow {
  name: string;
  version: number;
  state: string;
  package_sha256: string;
}

/** Checks one signed reference line; returns the entity or throws E_FORMAT naming the line. */
function lineToEntity(ind: Indicator, file: string, n: number): ReferenceEntity {
  const bad = (why: string) => new OutpostError('E_FORMAT', `${file} line ${n}: ${why}`);
  if (!(REFERENCE_KINDS as readonly string[]).includes(ind.t)) throw bad(`reference kind must be one of ${REFERENCE_KINDS.join(', ')}`);
  if (typeof ind.v !== 'string' || !ENTITY_ID.test(ind.v)) throw bad('entity id must look like <type>--<uuid>');
  const c = ind.ctx as Record<string, unknown> | undefined;
  if (!c || typeof c.name !== 'string' || !c.name.trim() || c.name.length > 200) throw bad('entity needs a name (at most 200 chars)');
  if (!Array.isArray(c.aliases) || !c.aliases.every((a) => typeof a === 'string' && a.length <= 200)) throw bad('aliases must be a list of strings');
  if (c.source !== 'misp-galaxy' && c.source !== 'mitre-attack') throw bad('source must be misp-galaxy or mitre-attack');
  for (const k of ['uses', 'same_as', 'external_ids', 'refs'] as const) {
    if (c[k] !== undefined && !(Array.isArray(c[k]) && (c[k] as unknown[]).every((x) => typeof x === 'string'))) throw bad(`${k} must be a list of strings`);
  }
  return { ...(c as unknown as Omit<ReferenceEntity, 'id' | 'kind'>), id: ind.v, kind: ind.t as unknown as ReferenceKind };
}

export interface ReferenceImportResult {
  feed: string;
  version: number;
  type: 'full';
  dryRun: boolean;
  sha256: string;
  manifest: Manifest;
  generation: number;
  added: number;
  removed: number;
  total: number;
  state: string;
}

/**
 * Applies a verified reference package: version floor per set (E_ROLLBACK, E_EQUIVOCATION), every line
 * checked, the state hash recomputed (E_STATE), then the set replaced in one transaction. `dryRun`
 * checks everything and changes nothing.
 */
export async function importReference(db: DB, staged: StagedPackage, limits: Limits, opts: { dryRun?: boolean; source: string; actor: string }): Promise<ReferenceImportResult> {
  const m = staged.manifest;
  const checkFloor = () => {
    const cur = db.prepare('SELECT name, version, state, package_sha256 FROM reference_sets WHERE name = ?').get(m.feed) as ReferenceSetRow | undefined;
    if (!cur) return cur;
    if (m.version === cur.version) {
      if (staged.sha256 === cur.package_sha256 || m.state === cur.state) throw new OutpostError('E_ROLLBACK', `reference set "${m.feed}" version ${m.version} is already applied (replay refused)`);
      throw new OutpostError('E_EQUIVOCATION', `reference set "${m.feed}" version ${m.version} was already applied with different content`);
    }
    if (m.version < cur.version) throw new OutpostError('E_ROLLBACK', `reference set "${m.feed}" version ${m.version} is older than the applied version ${cur.version}`);
    return cur;
  };
  checkFloor();
  const entities: ReferenceEntity[] = [];
  const hasher = new StateHasher();
  for (const f of m.files) {
    let n = 0;
    for await (const ind of readIndicators(staged, f, limits)) {
      n++;
      entities.push(lineToEntity(ind, f.name, n));
      try {
        hasher.update(ind);
      } catch (e) {
        throw new OutpostError('E_FORMAT', `${f.name} line ${n}: ${(e as Error).message}`);
      }
    }
  }
  const state = hasher.digest();
  if (state !== m.state) throw new OutpostError('E_STATE', `reference set "${m.feed}": content state ${state.slice(0, 12)}… does not match the manifest's ${m.state.slice(0, 12)}…`);
  const base = { feed: m.feed, version: m.version, type: 'full' as const, sha256: staged.sha256, manifest: m, generation: currentGeneration(db), state };
  const before = (db.prepare('SELECT count(*) AS n FROM reference_entities WHERE set_name = ?').get(m.feed) as { n: number }).n;
  if (opts.dryRun) return { ...base, dryRun: true, added: entities.length, removed: before, total: entities.length };

  const now = new Date().toISOString();
  db.transaction(() => {
    checkFloor(); // again inside the write transaction: another writer may have applied meanwhile
    db.prepare('DELETE FROM reference_aliases WHERE entity_id IN (SELECT id FROM reference_entities WHERE set_name = ?)').run(m.feed);
    db.prepare('DELETE FROM reference_entities WHERE set_name = ?').run(m.feed);
    const insE = db.prepare('INSERT OR REPLACE INTO reference_entities(id, set_name, kind, name, data) VALUES (?, ?, ?, ?, ?)');
    const insA = db.prepare('INSERT OR IGNORE INTO reference_aliases(key, entity_id) VALUES (?, ?)');
    for (const e of entities) {
      insE.run(e.id, m.feed, e.kind, e.name, JSON.stringify(e));
      for (const a of [e.name, ...e.aliases]) {
        const k = aliasKey(a);
        if (k) insA.run(k, e.id);
      }
    }
    db.prepare(
      `INSERT INTO reference_sets(name, version, state, package_sha256, key_id, created, expires, applied_at, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(name) DO UPDATE SET version = excluded.version, state = excluded.state, package_sha256 = excluded.package_sha256, key_id = excluded.key_id,
         created = excluded.created, expires = excluded.expires, applied_at = excluded.applied_at, count = excluded.count`,
    ).run(m.feed, m.version, m.state, staged.sha256, m.key_id, m.created, m.expires, now, entities.length);
    // Links to indicators are recomputed lazily by lookup/actors.ts when this counter moves.
    db.prepare("INSERT INTO meta(key, value) VALUES ('reference_generation', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1").run();
    db.prepare('INSERT INTO packages(received_at, source, feed, version, type, sha256, status, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run(
      now, opts.source, m.feed, m.version, m.type, staged.sha256, 'accepted', JSON.stringify({ kind: 'reference', entities: entities.length }),
    );
    audit(db, opts.actor, 'reference.apply', { subject: `${m.feed}@${m.version}`, detail: { entities: entities.length, key_id: m.key_id } });
  }).immediate();
  return { ...base, dryRun: false, added: entities.length, removed: before, total: entities.length };
}
