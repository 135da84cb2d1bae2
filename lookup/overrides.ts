// Local overrides: an admin allows or blocks a value, a network (every address inside) or a domain
// subtree on this site, with a reason and an optional expiry. They live in their own table, never in
// `indicators`, so no sync or rollback can erase them; every change is audited and bumps
// meta.overrides_rev, which tells every process's in-memory OverrideIndex to reload (the lookup path
// only reads memory). In results they appear as matches of feed "local-override" (lookup/verdict.ts
// lets them decide).
import ipaddr from 'ipaddr.js';
import { audit, getMeta, setMeta, type DB } from '../appliance/db.ts';
import { OutpostError } from '../appliance/errors.ts';
import type { IndicatorType, LookupType, Match, MatchKind } from '../appliance/types.ts';
import { normalize, urlHost, urlMatchKeys } from './normalize.ts';
import { decidingOverride, OVERRIDE_FEED } from './verdict.ts';

export type OverrideAction = 'allow' | 'block';

export interface OverrideRow {
  id: number;
  action: OverrideAction;
  type: IndicatorType;
  value: string;
  reason: string;
  created_by: string;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
  revoked_by: string | null;
}

export interface AddOverrideInput {
  action: string;
  value: string;
  reason: string;
  createdBy: string;
  /** ISO 8601 expiry; or `days` from now. Neither: no expiry. */
  expiresAt?: string | null;
  days?: number | null;
  now?: Date;
}

const REV_KEY = 'overrides_rev';

/** Category an override's match carries (results, and exports of block-overridden values). */
export const OVERRIDE_CATEGORY: Record<OverrideAction, string> = { allow: 'local-allow', block: 'local-block' };
const MAX_REASON = 1000;
const isoSec = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

/** Validates, normalizes and stores an override; returns the new row. Bad input changes nothing. */
export function addOverride(db: DB, input: AddOverrideInput): OverrideRow {
  const action = input.action;
  if (action !== 'allow' && action !== 'block') throw new OutpostError('E_INPUT', `override action must be "allow" or "block", got "${action}"`);
  const reason = (input.reason ?? '').trim();
  if (!reason) throw new OutpostError('E_INPUT', 'an override needs a reason (--reason <text>)');
  if (reason.length > MAX_REASON) throw new OutpostError('E_INPUT', `reason longer than ${MAX_REASON} characters`);
  if (typeof input.value !== 'string') throw new OutpostError('E_INPUT', 'override value must be a string');
  const n = normalize(input.value);
  if (!n.ok) throw new OutpostError('E_INPUT', `override value "${input.value}": ${n.error}`);
  const now = input.now ?? new Date();
  let expires: string | null = null;
  if (input.expiresAt != null && input.days != null) throw new OutpostError('E_INPUT', 'give either an expiry date or a number of days, not both');
  if (input.expiresAt != null) {
    const t = Date.parse(input.expiresAt);
    if (!Number.isFinite(t)) throw new OutpostError('E_INPUT', `expiry "${input.expiresAt}" is not an ISO 8601 date`);
    expires = isoSec(new Date(t));
  } else if (input.days != null) {
    if (!(Number.isFinite(input.days) && input.days > 0)) throw new OutpostError('E_INPUT', `days must be a positive number, got "${input.days}"`);
    expires = isoSec(new Date(now.getTime() + input.days * 86_400_000));
  }
  if (expires && Date.parse(expires) <= now.getTime()) throw new OutpostError('E_INPUT', `expiry ${expires} is not in the future`);
  if (n.type === 'ipv4-cidr' || n.type === 'ipv6-cidr') {
    // A local override is a deliberate, narrow decision: refuse the whole address space by accident.
    if ((n.prefix ?? 0) < (n.type === 'ipv4-cidr' ? 8 : 16)) throw new OutpostError('E_INPUT', `network ${n.value} is too broad for an override`);
  }
  return db.transaction(() => {
    const dup = db
      .prepare('SELECT id FROM overrides WHERE action = ? AND type = ? AND value = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)')
      .get(action, n.type, n.value, isoSec(now)) as { id: number } | undefined;
    if (dup) throw new OutpostError('E_CONFLICT', `an active ${action} override for ${n.value} exists already (id ${dup.id}); remove it first`);
    const info = db
      .prepare('INSERT INTO overrides(action, type, value, reason, created_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(action, n.type, n.value, reason, input.createdBy, isoSec(now), expires);
    const row = getOverride(db, Number(info.lastInsertRowid))!;
    bump(db);
    audit(db, input.createdBy, 'override.add', { subject: `${action} ${n.value}`, detail: { id: row.id, type: n.type, reason, expires_at: expires } });
    return row;
  })();
}

export function getOverride(db: DB, id: number): OverrideRow | undefined {
  return db.prepare('SELECT * FROM overrides WHERE id = ?').get(id) as OverrideRow | undefined;
}

/** Active overrides (not revoked, not expired), newest first; `all` includes revoked and expired ones. */
export function listOverrides(db: DB, opts: { all?: boolean; now?: Date } = {}): OverrideRow[] {
  if (opts.all) return db.prepare('SELECT * FROM overrides ORDER BY id DESC').all() as OverrideRow[];
  return db
    .prepare('SELECT * FROM overrides WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) ORDER BY id DESC')
    .all(isoSec(opts.now ?? new Date())) as OverrideRow[];
}

/** Revokes an override (kept for the audit trail). */
export function removeOverride(db: DB, id: number, actor: string): OverrideRow {
  if (!Number.isInteger(id) || id <= 0) throw new OutpostError('E_INPUT', `override id must be a positive integer, got "${id}"`);
  return db.transaction(() => {
    const row = getOverride(db, id);
    if (!row) throw new OutpostError('E_NOT_FOUND', `no override with id ${id}`);
    if (row.revoked_at) throw new OutpostError('E_CONFLICT', `override ${id} was removed already at ${row.revoked_at}`);
    db.prepare('UPDATE overrides SET revoked_at = ?, revoked_by = ? WHERE id = ?').run(isoSec(new Date()), actor, id);
    bump(db);
    audit(db, actor, 'override.remove', { subject: `${row.action} ${row.value}`, detail: { id } });
    return getOverride(db, id)!;
  })();
}

function bump(db: DB): void {
  setMeta(db, REV_KEY, String(Number(getMeta(db, REV_KEY) ?? 0) + 1));
}

/**
 * Changes whenever the set of active overrides changes: on add/remove by any writer (the revision) and
 * when one passes its expiry (the count of expired, unrevoked ones). Serve regenerates the export files
 * when it moves (appliance/serve.ts); one meta read and one indexed count.
 */
export function overridesState(db: DB, now: Date = new Date()): string {
  try {
    const rev = getMeta(db, REV_KEY) ?? '0';
    const expired = (db.prepare('SELECT count(*) AS n FROM overrides WHERE revoked_at IS NULL AND expires_at IS NOT NULL AND expires_at <= ?').get(isoSec(now)) as { n: number }).n;
    return `${rev}:${expired}`;
  } catch {
    return '0:0'; // a store without the overrides table: none
  }
}

/** Which override decides a value, and how (lookup/verdict.ts decidingOverride). */
export interface OverrideDecision {
  action: OverrideAction;
  row: OverrideRow;
}

// ------------------------------------------------------------------------------------------ index

interface Net {
  addr: ipaddr.IPv4 | ipaddr.IPv6;
  prefix: number;
  row: OverrideRow;
}

/**
 * In-memory view of the active overrides. refresh() costs one meta read and reloads only when the
 * revision moved; collect() costs a few Map lookups (and a scan of the override networks, which are few).
 */
export class OverrideIndex {
  private readonly db: DB;
  private rev: string | null = null;
  private byKey = new Map<string, OverrideRow[]>();
  private nets: Net[] = [];
  private ids = new Map<number, OverrideRow>();
  private count = 0;
  /** Unix seconds the active set is loaded for; default: the wall clock at each reload. */
  private readonly loadAt: number | undefined;

  constructor(db: DB, opts: { now?: number } = {}) {
    this.db = db;
    this.loadAt = opts.now;
    this.refresh(true);
  }

  get size(): number {
    return this.count;
  }

  /** Reloads when another writer (CLI, API, console) changed overrides. Returns true when it reloaded. */
  refresh(force = false): boolean {
    let rev: string;
    try {
      rev = getMeta(this.db, REV_KEY) ?? '0';
    } catch {
      return false; // no meta table: nothing to load
    }
    if (!force && rev === this.rev) return false;
    let rows: OverrideRow[] = [];
    try {
      rows = listOverrides(this.db, { now: this.loadAt === undefined ? undefined : new Date(this.loadAt * 1000) });
    } catch {
      /* schema without overrides (older database opened read-only): none */
    }
    const byKey = new Map<string, OverrideRow[]>();
    const nets: Net[] = [];
    const ids = new Map<number, OverrideRow>();
    for (const r of rows) {
      ids.set(r.id, r);
      if (r.type === 'ipv4-cidr' || r.type === 'ipv6-cidr') {
        const [addr, prefix] = ipaddr.parseCIDR(r.value);
        nets.push({ addr, prefix, row: r });
        continue;
      }
      const k = `${r.type}\u0000${r.value}`;
      const list = byKey.get(k);
      if (list) list.push(r);
      else byKey.set(k, [r]);
    }
    this.byKey = byKey;
    this.nets = nets;
    this.ids = ids;
    this.count = rows.length;
    this.rev = rev;
    return true;
  }

  /** Appends the override matches for a normalized lookup value to `out`. `now` in unix seconds. */
  collect(type: LookupType, value: string, out: Match[], now: number): void {
    if (this.count === 0) return;
    switch (type) {
      case 'ipv4':
      case 'ipv6':
        this.ip(type, value, 'exact', out, now);
        return;
      case 'domain':
        this.domain(value, 'exact', out, now);
        return;
      case 'url': {
        const keys = urlMatchKeys(value);
        for (let i = 0; i < keys.length; i++) this.take('url', keys[i], i === 0 ? 'exact' : 'url', out, now);
        const host = urlHost(value);
        if (ipaddr.IPv4.isValidFourPartDecimal(host)) this.ip('ipv4', host, 'exact', out, now);
        else if (host.includes(':')) this.ip('ipv6', host.replace(/^\[|\]$/g, ''), 'exact', out, now);
        else this.domain(host, 'subdomain', out, now);
        return;
      }
      case 'invalid':
        return;
      default:
        this.take(type, value, 'exact', out, now);
    }
  }

  /**
   * The override that decides a stored value exactly as a lookup of it would be decided (collect() and
   * decide()'s override rule), or null when no override applies. A listed network (which is not a lookup
   * value) is decided by an override of that network or of a network containing it whole; an address or
   * smaller network inside it does not decide the whole network.
   */
  decision(type: IndicatorType, value: string, now: number): OverrideDecision | null {
    if (this.count === 0) return null;
    const out: Match[] = [];
    if (type === 'ipv4-cidr' || type === 'ipv6-cidr') this.network(type, value, out, now);
    else this.collect(type, value, out, now);
    if (!out.length) return null;
    const best = decidingOverride(out, { type: type as LookupType, normalized: value });
    const id = best?.context?.override_id;
    const row = typeof id === 'number' ? this.ids.get(id) : undefined;
    return row ? { action: row.action, row } : null;
  }

  /** Active overrides of one type and action (e.g. block overrides of domains, for the exports). */
  values(type: IndicatorType, action: OverrideAction, now: number): OverrideRow[] {
    const out: OverrideRow[] = [];
    for (const r of this.ids.values()) if (r.type === type && r.action === action && live(r, now)) out.push(r);
    return out;
  }

  /** Overrides of the network itself (`exact`) and of networks containing it whole (`cidr`). */
  private network(type: 'ipv4-cidr' | 'ipv6-cidr', value: string, out: Match[], now: number): void {
    let addr: ipaddr.IPv4 | ipaddr.IPv6;
    let prefix: number;
    try {
      [addr, prefix] = ipaddr.parseCIDR(value);
    } catch {
      return;
    }
    for (const n of this.nets) {
      if (n.addr.kind() !== addr.kind() || !live(n.row, now)) continue;
      if (n.prefix === prefix && n.row.type === type && n.row.value === value) out.push(toMatch(n.row, 'exact'));
      else if (n.prefix <= prefix && addr.match(n.addr, n.prefix)) out.push(toMatch(n.row, 'cidr'));
    }
  }

  private ip(type: 'ipv4' | 'ipv6', ip: string, kind: MatchKind, out: Match[], now: number): void {
    this.take(type, ip, kind, out, now);
    if (!this.nets.length) return;
    let addr: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      addr = ipaddr.parse(ip);
    } catch {
      return;
    }
    for (const n of this.nets) {
      if (n.addr.kind() === addr.kind() && addr.match(n.addr, n.prefix) && live(n.row, now)) out.push(toMatch(n.row, 'cidr'));
    }
  }

  /** The domain itself (`selfKind`) and every parent, as `subdomain`: an override covers its subtree. */
  private domain(d: string, selfKind: MatchKind, out: Match[], now: number): void {
    this.take('domain', d, selfKind, out, now);
    for (let i = d.indexOf('.'); i >= 0; i = d.indexOf('.', i + 1)) this.take('domain', d.slice(i + 1), 'subdomain', out, now);
  }

  private take(type: IndicatorType, value: string, kind: MatchKind, out: Match[], now: number): void {
    const rows = this.byKey.get(`${type}\u0000${value}`);
    if (!rows) return;
    for (const r of rows) if (live(r, now)) out.push(toMatch(r, kind));
  }
}

function live(r: OverrideRow, now: number): boolean {
  return r.expires_at === null || Date.parse(r.expires_at) / 1000 > now;
}

function toMatch(r: OverrideRow, kind: MatchKind): Match {
  return {
    feed: OVERRIDE_FEED,
    feed_kind: r.action,
    indicator: r.value,
    kind,
    category: OVERRIDE_CATEGORY[r.action],
    confidence: 100,
    first_seen: r.created_at,
    last_seen: null,
    expires_at: r.expires_at,
    context: { override_id: r.id, reason: r.reason, created_by: r.created_by },
  };
}
