// Actors and families on the appliance: the alias index over the reference data (sync/reference.ts),
// resolution of the names an indicator's context carries (ctx.actor, ctx.family, sample family, the
// event or report title a source put in front of its indicators), the `actors`/`families` fields of
// lookup results, and `outpost actor <name-or-alias>` / `GET /api/v1/actors?name=` listing a group or
// family with the indicators here that link to it.
// Links are computed from indicator context, never stored by providers: a new reference package or a new
// data generation re-links lazily (table reference_links, rebuilt on the next actor query).
import type { Hono } from 'hono';
import type { DB } from '../appliance/db.ts';
import { cachedStatement, currentGeneration, getMeta, setMeta } from '../appliance/db.ts';
import { OutpostError } from '../appliance/errors.ts';
import type { LinkedEntity, LookupResult } from '../appliance/types.ts';
import { namesOf } from '../sync/context.ts';
import { aliasKey, type ReferenceEntity } from '../sync/reference.ts';

export interface ReferenceIndex {
  stamp: string;
  byId: Map<string, ReferenceEntity>;
  byKey: Map<string, ReferenceEntity[]>;
}

const cache = new WeakMap<DB, ReferenceIndex>();

function hasTable(db: DB, name: string): boolean {
  return !!cachedStatement(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name);
}

/** The alias index of this database, reloaded when a reference package was applied since (any process). */
export function referenceIndex(db: DB): ReferenceIndex {
  const stamp = hasTable(db, 'reference_entities') ? (getMeta(db, 'reference_generation') ?? '0') : 'none';
  const cached = cache.get(db);
  if (cached && cached.stamp === stamp) return cached;
  const byId = new Map<string, ReferenceEntity>();
  const byKey = new Map<string, ReferenceEntity[]>();
  if (stamp !== 'none') {
    for (const row of db.prepare('SELECT data FROM reference_entities').all() as { data: string }[]) {
      const e = JSON.parse(row.data) as ReferenceEntity;
      byId.set(e.id, e);
    }
    for (const r of db.prepare('SELECT key, entity_id FROM reference_aliases').all() as { key: string; entity_id: string }[]) {
      const e = byId.get(r.entity_id);
      if (!e) continue;
      const list = byKey.get(r.key) ?? [];
      list.push(e);
      byKey.set(r.key, list);
    }
  }
  const idx = { stamp, byId, byKey };
  cache.set(db, idx);
  return idx;
}

/**
 * Entities named `name` by canonical name or alias (case, spaces and punctuation ignored), best first:
 * a canonical-name match before an alias match, actors before families before techniques, MISP galaxy
 * before ATT&CK (the galaxy's synonym lists are the wider ones), then by name.
 */
export function findEntities(idx: ReferenceIndex, name: string, kinds: readonly string[] = ['actor', 'family', 'technique']): ReferenceEntity[] {
  const key = aliasKey(name);
  if (!key) return [];
  const order = { actor: 0, family: 1, technique: 2 } as Record<string, number>;
  return (idx.byKey.get(key) ?? [])
    .filter((e) => kinds.includes(e.kind))
    .sort((a, b) =>
      Number(aliasKey(b.name) === key) - Number(aliasKey(a.name) === key) ||
      order[a.kind] - order[b.kind] ||
      Number(b.source === 'misp-galaxy') - Number(a.source === 'misp-galaxy') ||
      a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
}

/** The entity most of `aliases` name (at least two votes, or the only alias); for trails that name a group by many aliases. */
function vote(idx: ReferenceIndex, aliases: string[], kinds: readonly string[]): ReferenceEntity | undefined {
  const votes = new Map<string, number>();
  for (const a of aliases) for (const e of new Set(findEntities(idx, a, kinds).slice(0, 1))) votes.set(e.id, (votes.get(e.id) ?? 0) + 1);
  let best: [string, number] | undefined;
  for (const v of votes) if (!best || v[1] > best[1] || (v[1] === best[1] && v[0] < best[0])) best = v;
  if (!best || (best[1] < 2 && aliases.length > 1)) return undefined;
  return idx.byId.get(best[0]);
}

/** Text before ":" or " - " of an event/report title ("MoustachedBouncer: Espionage …", "Dark Caracal - PE32 …"). */
function titlePrefix(x: unknown): string | undefined {
  if (typeof x !== 'string') return undefined;
  const m = /^\s*([^:\-–]{2,60}?)\s*(?::|\s[-–]\s)/.exec(x);
  return m ? m[1] : undefined;
}

export type LinkVia = 'actor' | 'family' | 'sample' | 'aliases' | 'title';

export interface Links {
  actors: LinkedEntity[];
  families: LinkedEntity[];
  /** Resolved entity id → how the context named it; names the reference data lacks as `name:<kind>:<key>`. */
  ids: Map<string, LinkVia>;
}

/** Link id of a name the reference data does not know (still findable by `outpost actor`). */
export const nameLinkId = (kind: 'actor' | 'family', name: string): string => `name:${kind}:${aliasKey(name)}`;
const MAX_NAME_ALIASES = 10;

function toLinked(e: ReferenceEntity, idx: ReferenceIndex): LinkedEntity {
  // Aliases of the same group in the other source (galaxy ↔ ATT&CK) are aliases too.
  const aliases = [...e.aliases];
  const seen = new Set([aliasKey(e.name), ...aliases.map(aliasKey)]);
  for (const id of e.same_as ?? []) {
    const o = idx.byId.get(id);
    for (const a of o ? [o.name, ...o.aliases] : []) {
      if (!seen.has(aliasKey(a))) {
        seen.add(aliasKey(a));
        aliases.push(a);
      }
    }
  }
  return { id: e.id, name: e.name, aliases, source: e.source };
}

/**
 * Actors and families an indicator's context links to. Resolved names carry the reference entity (id,
 * canonical name, aliases); a family the reference data does not know is still reported by its name
 * (with the source's aliases), an unknown actor named in ctx.actor likewise. Titles only count when
 * they resolve.
 */
export function linkContext(idx: ReferenceIndex, ctx: Record<string, unknown> | undefined): Links {
  const out: Links = { actors: [], families: [], ids: new Map() };
  if (!ctx) return out;
  const seen = new Set<string>();
  const add = (e: ReferenceEntity, via: LinkVia) => {
    if (e.kind === 'technique' || seen.has(e.id)) return;
    seen.add(e.id);
    out.ids.set(e.id, via);
    (e.kind === 'actor' ? out.actors : out.families).push(toLinked(e, idx));
  };
  const addName = (name: string, kind: 'actor' | 'family', aliases: string[]) => {
    const k = `${kind}:${aliasKey(name)}`;
    if (seen.has(k)) return;
    seen.add(k);
    (kind === 'actor' ? out.actors : out.families).push({ id: null, name, aliases });
    out.ids.set(nameLinkId(kind, name), kind);
    for (const a of aliases.slice(0, MAX_NAME_ALIASES)) if (!out.ids.has(nameLinkId(kind, a))) out.ids.set(nameLinkId(kind, a), 'aliases');
  };
  const srcAliases = namesOf(ctx.aliases);
  const actorNames = namesOf(ctx.actor);
  const familyNames: string[] = [];
  for (const f of [...namesOf(ctx.family), ...namesOf((ctx.sample as Record<string, unknown> | undefined)?.family)]) {
    // Maltrail names actor trails apt_<group>: an actor, not a family.
    if (/^apt[_-]/i.test(f)) actorNames.push(f.replace(/^apt[_-]/i, ''));
    else familyNames.push(f);
  }
  for (const name of actorNames) {
    const e = findEntities(idx, name, ['actor', 'family'])[0] ?? (srcAliases.length ? vote(idx, srcAliases, ['actor']) : undefined);
    if (e) add(e, srcAliases.length && !findEntities(idx, name, ['actor', 'family']).length ? 'aliases' : 'actor');
    else addName(name, 'actor', srcAliases);
  }
  for (const name of [...new Set(familyNames)]) {
    const e = findEntities(idx, name, ['family', 'actor'])[0] ?? (srcAliases.length ? vote(idx, srcAliases, ['family', 'actor']) : undefined);
    if (e) add(e, name === familyNames[0] && namesOf(ctx.family).includes(name) ? 'family' : 'sample');
    else addName(name, 'family', srcAliases);
  }
  for (const t of [titlePrefix(ctx.event), titlePrefix(ctx.description)]) {
    if (!t) continue;
    const e = findEntities(idx, t, ['actor', 'family'])[0];
    if (e) add(e, 'title');
  }
  return out;
}

/** Adds `actors` and `families` to a lookup result from the context of its matches (only when some link). */
export function annotateResult(db: DB, result: LookupResult): LookupResult {
  if (!result.matches.length) return result;
  const idx = referenceIndex(db);
  const actors = new Map<string, LinkedEntity>();
  const families = new Map<string, LinkedEntity>();
  for (const m of result.matches) {
    if (!m.context) continue;
    const l = linkContext(idx, m.context);
    for (const a of l.actors) actors.set(a.id ?? `name:${aliasKey(a.name)}`, a);
    for (const f of l.families) families.set(f.id ?? `name:${aliasKey(f.name)}`, f);
  }
  if (actors.size) result.actors = [...actors.values()];
  if (families.size) result.families = [...families.values()];
  return result;
}

// ---------------------------------------------------------------- links table and actor queries

/** Recomputes indicator → entity links when the data generation or the reference data changed since the last run. */
export function refreshLinks(db: DB): { rebuilt: boolean; links: number } {
  const idx = referenceIndex(db);
  // The link rules' own version is part of the stamp, so a build with other rules re-links once.
  const stamp = `links-2:${currentGeneration(db)}:${idx.stamp}`;
  if (getMeta(db, 'reference_links_stamp') === stamp) {
    return { rebuilt: false, links: (db.prepare('SELECT count(*) AS n FROM reference_links').get() as { n: number }).n };
  }
  let links = 0;
  db.transaction(() => {
    // Links are gathered first: a connection cannot write while one of its statements is still iterating.
    const found: [string, string, string, string, string][] = [];
    const rows = db.prepare('SELECT type, value, feed, extra FROM indicators WHERE extra IS NOT NULL').iterate() as Iterable<{ type: string; value: string; feed: string; extra: string }>;
    for (const r of rows) {
      let ctx: Record<string, unknown> | undefined;
      try {
        ctx = (JSON.parse(r.extra) as { ctx?: Record<string, unknown> }).ctx;
      } catch {
        continue;
      }
      if (!ctx) continue;
      for (const [id, via] of linkContext(idx, ctx).ids) found.push([id, r.type, r.value, r.feed, via]);
    }
    db.prepare('DELETE FROM reference_links').run();
    const ins = db.prepare('INSERT OR IGNORE INTO reference_links(entity_id, type, value, feed, via) VALUES (?, ?, ?, ?, ?)');
    for (const f of found) links += ins.run(...f).changes;
    setMeta(db, 'reference_links_stamp', stamp);
  }).immediate();
  return { rebuilt: true, links };
}

export interface ActorReport {
  query: string;
  entity: ReferenceEntity & { same_as_entities: { id: string; name: string; source: string }[]; uses_names: { id: string; kind: string; name: string }[] };
  /** Other entities the same alias names (ambiguous aliases), best first. */
  also: { id: string; kind: string; name: string; source: string }[];
  indicators: { type: string; value: string; feed: string; via: string }[];
  total: number;
}

/**
 * A group or family by any alias, with the indicators here linked to it (directly, through its entry in
 * the other source, or — for an actor — through the families it uses). Throws E_NOT_FOUND when no
 * reference entity has that name, E_INPUT for an empty name.
 */
export function actorReport(db: DB, query: string, opts: { limit?: number } = {}): ActorReport {
  const q = String(query ?? '').trim();
  if (!aliasKey(q)) throw new OutpostError('E_INPUT', 'give an actor or family name or alias');
  if (q.length > 200) throw new OutpostError('E_INPUT', 'name longer than 200 characters');
  const idx = referenceIndex(db);
  const found = findEntities(idx, q, ['actor', 'family']);
  refreshLinks(db);
  if (!found.length) return nameReport(db, q, opts.limit);
  const e = found[0];
  const limit = Math.max(1, Math.min(opts.limit ?? 100, 10_000));
  const group = [e.id, ...(e.same_as ?? [])];
  const via = new Map<string, string>(group.map((id) => [id, '']));
  if (e.kind === 'actor') {
    for (const id of group) {
      for (const u of idx.byId.get(id)?.uses ?? []) {
        const fam = idx.byId.get(u);
        if (fam?.kind === 'family' && !via.has(u)) via.set(u, `uses:${fam.name}`);
      }
    }
  }
  const ids = [...via.keys()];
  const ph = ids.map(() => '?').join(',');
  const total = (db.prepare(`SELECT count(*) AS n FROM (SELECT DISTINCT type, value, feed FROM reference_links WHERE entity_id IN (${ph}))`).get(...ids) as { n: number }).n;
  const rows = db.prepare(`SELECT entity_id, type, value, feed, via FROM reference_links WHERE entity_id IN (${ph}) ORDER BY type, value, feed`).all(...ids) as { entity_id: string; type: string; value: string; feed: string; via: string }[];
  const indicators: ActorReport['indicators'] = [];
  const seenRow = new Set<string>();
  for (const r of rows) {
    const k = `${r.type}\0${r.value}\0${r.feed}`;
    if (seenRow.has(k)) continue;
    seenRow.add(k);
    if (indicators.length < limit) indicators.push({ type: r.type, value: r.value, feed: r.feed, via: via.get(r.entity_id) || r.via });
  }
  const name = (id: string) => idx.byId.get(id);
  return {
    query: q,
    entity: {
      ...e,
      same_as_entities: (e.same_as ?? []).map(name).filter((x): x is ReferenceEntity => !!x).map((x) => ({ id: x.id, name: x.name, source: x.source })),
      uses_names: (e.uses ?? []).map(name).filter((x): x is ReferenceEntity => !!x).map((x) => ({ id: x.id, kind: x.kind, name: x.name })),
    },
    also: found.slice(1).map((x) => ({ id: x.id, kind: x.kind, name: x.name, source: x.source })),
    indicators,
    total,
  };
}

/**
 * A name the reference data lacks but indicators here carry (a Maltrail family and its aliases, an
 * actor named only in ctx.actor): reported with those indicators, id null. None → E_NOT_FOUND.
 */
function nameReport(db: DB, q: string, limitOpt: number | undefined): ActorReport {
  const limit = Math.max(1, Math.min(limitOpt ?? 100, 10_000));
  for (const kind of ['actor', 'family'] as const) {
    const id = nameLinkId(kind, q);
    const total = (db.prepare('SELECT count(*) AS n FROM reference_links WHERE entity_id = ?').get(id) as { n: number }).n;
    if (!total) continue;
    const indicators = db.prepare('SELECT type, value, feed, via FROM reference_links WHERE entity_id = ? ORDER BY type, value, feed LIMIT ?').all(id, limit) as ActorReport['indicators'];
    return {
      query: q,
      entity: { id, kind, name: q, aliases: [], source: 'indicators' as ReferenceEntity['source'], same_as_entities: [], uses_names: [] },
      also: [],
      indicators,
      total,
    };
  }
  const none = referenceIndex(db).byId.size ? '' : ' (no reference data on this appliance: outpost provider reference …; outpost import <package>)';
  throw new OutpostError('E_NOT_FOUND', `no actor or family named "${q}" in the reference data or in the context of indicators here${none}`);
}

/** `GET /api/v1/actors?name=<name-or-alias>[&limit=n]` (scope lookup; lookup/limits.ts). */
export function mountActors(db: DB) {
  return (app: Hono<any>) => {
    app.get('/api/v1/actors', (c) => {
      const name = c.req.query('name');
      if (name === undefined || name.trim() === '') throw new OutpostError('E_INPUT', 'query parameter "name" is required');
      const limitRaw = c.req.query('limit');
      const limit = limitRaw === undefined ? undefined : Number(limitRaw);
      if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1 && limit <= 10_000)) throw new OutpostError('E_INPUT', 'limit must be an integer 1-10000');
      return c.json(actorReport(db, name, { limit }));
    });
  };
}
