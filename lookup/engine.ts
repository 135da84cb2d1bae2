// The lookup engine: normalize a value, ask the in-memory Bloom filters which stored keys could match,
// confirm each filter hit in SQLite (all feeds, unexpired rows only) and decide a verdict. A value that is
// not listed never touches SQLite; a filter false positive never reaches a caller (it is only counted).
//
// Matching (kinds as in the contract):
//  - IP: the address itself (`exact`) and every listed network containing it (`cidr`).
//  - domain: itself (`exact`) and each parent down to its registrable domain (`subdomain`).
//  - URL: the URL itself (`exact`), the URL without query and its path prefixes (`url`), then its host:
//    a domain host and its parents all count as `subdomain` — the contract's example reports a URL whose
//    host is the listed domain as `subdomain`, i.e. "the URL lies under a listed domain"; an IP host is
//    matched like an IP (`exact` for the address, `cidr` for networks), since "subdomain" means nothing there.
//  - md5/sha1/sha256/email: exact.
import fs from 'node:fs';
import path from 'node:path';
import type { DB } from '../appliance/db.ts';
import type { FeedKind, IndicatorType, LookupResult, LookupType, Match, MatchKind } from '../appliance/types.ts';
import {
  buildFilters, buildFiltersInWorker, loadFilters, parseV4, probe, probeRange, probeV4, probeV4Net, serializeFilters,
  storeFingerprint, storeFingerprintWithoutRows, testHashed, urlAuthorityEnd, withoutRows, v4BlockMarked, v4Network, type FilterSet, type TypedFilter,
} from './filters.ts';
import { hashDomainKeys, MAX_DOMAIN_KEYS } from './hash.ts';
import { annotateResult } from './actors.ts';
import type { IndicatorRow } from '../sync/records.ts';
import { CANONICAL_V4, canonicalType, cidrKey, normalizeNonCanonical, parentDomains } from './normalize.ts';
import { OverrideIndex } from './overrides.ts';
import { FeedPolicy } from '../appliance/freshness.ts';
import { decide, DEFAULT_CONFIDENCE, DEFAULT_POLICY, type VerdictPolicy } from './verdict.ts';

/** decide()'s answer for no matches: every miss carries it (copied, so results never share an array). */
const NO_MATCH = decide([]);

export interface EngineOptions {
  /** Target false-positive rate of each filter (config `filterFpRate`). */
  fpRate: number;
  /** Current time in unix seconds (expiry and data age); injectable for tests. */
  now?: () => number;
  /** Build filters in a worker thread on reload (default: yes for a file database). */
  worker?: boolean;
  /**
   * Where filters are persisted per generation; default `<data dir>/filters` next to the database file,
   * null to disable (in-memory databases never persist).
   */
  filterDir?: string | null;
  /** Verdict policy (lookup/verdict.ts); default DEFAULT_POLICY. */
  verdict?: VerdictPolicy;
  /** Local overrides; default: an OverrideIndex on the same database, false to ignore overrides. */
  overrides?: OverrideIndex | false;
  /** Default expiry per type and fail-closed stale feeds (appliance/freshness.ts); default: built-in defaults. */
  feedPolicy?: FeedPolicy;
  /**
   * Serving processes: at construction, accept the persisted set of the current generation on generation
   * and feed versions alone (storeFingerprintWithoutRows), so a start does not wait for a count of every
   * row; `rowsUnchecked` says so until the generation follower has checked the count in its loader thread
   * (GenerationFollower.poll). Default: the whole fingerprint is checked at once.
   */
  checkRowsLater?: boolean;
}

/**
 * A stored indicator row joined with its feed's defaults, as confirmStmt returns it: a raw row (an array in
 * the statement's column order), so better-sqlite3 builds no object with named properties per row — on a
 * confirmed hit that was a third of the query's cost. R_* name the positions.
 */
type Row = [
  type: IndicatorRow['type'], value: string, feed: string, kind: string, category: string | null, confidence: number | null,
  first_seen: number | null, last_seen: number | null, expires_at: number | null, extra: string | null,
  feed_category: string | null, feed_confidence: number | null, feed_created: string | null,
];
const R_TYPE = 0, R_VALUE = 1, R_FEED = 2, R_KIND = 3, R_CATEGORY = 4, R_CONFIDENCE = 5, R_FIRST_SEEN = 6, R_LAST_SEEN = 7;
const R_EXPIRES_AT = 8, R_EXTRA = 9, R_FEED_CATEGORY = 10, R_FEED_CONFIDENCE = 11, R_FEED_CREATED = 12;

/** Counters behind /metrics; all numbers so the exporter can print each one. */
export interface EngineStats {
  generation: number;
  lookups: number;
  invalid: number;
  filterProbes: number;
  filterHits: number;
  filterFalsePositives: number;
  confirmedMatches: number;
  expiredSkipped: number;
  filterBytes: number;
  filterValues: number;
  filterBuildMs: number;
  reloads: number;
  reloadFailures: number;
  nonCanonicalNetworks: number;
}

/** Unix seconds → `…Z` text. Rows share few distinct times (a feed's default expiry, list dates): cached. */
const isoCache = new Map<number, string>();
function iso(s: number | null): string | null {
  if (s == null) return null;
  let t = isoCache.get(s);
  if (t === undefined) {
    t = new Date(s * 1000).toISOString().replace('.000Z', 'Z');
    if (isoCache.size >= 10_000) isoCache.clear();
    isoCache.set(s, t);
  }
  return t;
}

export class LookupEngine {
  generation = 0;
  private set: FilterSet;
  private readonly db: DB;
  private readonly fpRate: number;
  /** The false-positive rate the filters are sized for (OUTPOST_FILTER_FP_RATE). */
  get targetFpRate(): number {
    return this.fpRate;
  }
  private readonly now: () => number;
  private readonly useWorker: boolean;
  private readonly filterDir: string | null;
  private readonly confirmStmt;
  private readonly beginStmt;
  private readonly commitStmt;
  private readonly feedPolicy: FeedPolicy;
  // ---- verdicts (lookup/verdict.ts, lookup/overrides.ts) ----
  /** Local overrides, matched in memory after the feed matches; refreshOverrides() follows other writers. */
  readonly overrides: OverrideIndex | null;
  private readonly policy: VerdictPolicy;
  private feedCreated = new Map<string, number>();
  private readonly feedCreatedOf = (feed: string): number | undefined => this.feedCreated.get(feed);
  // ---- end verdicts ----
  private newestCreated: number | null = null;
  private reloading: Promise<void> | null = null;
  /** The set in use was accepted without its row count (checkRowsLater); cleared by rowsChecked() or a new set. */
  rowsUnchecked = false;
  private counters = {
    lookups: 0, invalid: 0, filterProbes: 0, filterHits: 0, filterFalsePositives: 0, confirmedMatches: 0,
    expiredSkipped: 0, reloads: 0, reloadFailures: 0,
  };
  // Per-lookup scratch, reused: a lookup gathers its matches here before building the result.
  private matches: Match[] = [];
  private seen = new Set<string>();
  /** Candidate keys of one match step (network prefixes, domain parents); emptied before confirmation. */
  private keyScratch: string[] = [];
  /** mayMatch() in progress: confirm() records that a filter hit instead of reading SQLite. */
  private probing = false;
  private probeHit = false;
  /** URL key end offsets of one lookup (urlKeyEndsInto), reused. */
  private endScratch: number[] = [0, 0, 0, 0, 0, 0];
  /** Hash pairs and start offsets of one domain's keys (hashDomainKeys), reused. */
  private domainHashes = new Uint32Array(2 * MAX_DOMAIN_KEYS);
  private domainStarts = new Int32Array(MAX_DOMAIN_KEYS);
  /** How many keys the last domainCandidates() hashed. */
  private domainKeys = 0;
  // The set's filters the lookup path probes, at hand (set by adopt(): no Map lookup per probe).
  private fV4!: TypedFilter;
  private fV4Net!: TypedFilter;
  private fV6!: TypedFilter;
  private fV6Net!: TypedFilter;
  private fDomain!: TypedFilter;
  private fUrl!: TypedFilter;
  /** The URL authority index hashes keys as the domain filter does (same seeds): a host's hash serves both. */
  private hostHashShared = false;

  constructor(db: DB, opts: EngineOptions) {
    this.db = db;
    this.fpRate = opts.fpRate;
    this.now = opts.now ?? (() => Date.now() / 1000);
    const fileDb = Boolean(db.name) && db.name !== ':memory:' && !db.memory;
    this.useWorker = opts.worker ?? fileDb;
    this.filterDir = opts.filterDir !== undefined ? opts.filterDir : fileDb ? path.join(path.dirname(db.name), 'filters') : null;
    this.policy = opts.verdict ?? DEFAULT_POLICY;
    this.overrides = opts.overrides === false ? null : (opts.overrides ?? new OverrideIndex(db));
    this.feedPolicy = opts.feedPolicy ?? new FeedPolicy(db);
    this.confirmStmt = db.prepare(
      `SELECT i.type, i.value, i.feed, i.kind, i.category, i.confidence, i.first_seen, i.last_seen, i.expires_at, i.extra,
              f.category AS feed_category, f.confidence AS feed_confidence, f.created AS feed_created
         FROM indicators i LEFT JOIN feeds f ON f.name = i.feed
        WHERE i.type = ? AND i.value = ?`,
    ).raw(true); // rows as arrays: see Row
    this.beginStmt = db.prepare('BEGIN');
    this.commitStmt = db.prepare('COMMIT');
    // Start answering at once: a persisted set of the current content, else a synchronous build.
    // (A set the check without rows refuses, the whole check refuses too: no second look, no row count.)
    const persisted = this.loadPersisted(Boolean(opts.checkRowsLater));
    this.rowsUnchecked = persisted !== null && Boolean(opts.checkRowsLater);
    this.set = persisted ?? this.persist(buildFilters(db, this.fpRate));
    this.adopt(this.set);
  }

  /** Rebuilds the filters when meta.generation moved (or always with force) and swaps them in one assignment. */
  reload(opts: { force?: boolean } = {}): Promise<void> {
    if (this.reloading) return this.reloading.then(() => this.reload(opts));
    const run = async () => {
      const gen = Number((this.db.prepare("SELECT value FROM meta WHERE key = 'generation'").get() as { value: string } | undefined)?.value ?? 0);
      if (!opts.force && gen === this.generation) {
        this.refreshFeedInfo();
        return;
      }
      try {
        let next = opts.force ? null : this.loadPersisted();
        if (!next) {
          next = this.useWorker ? await buildFiltersInWorker(this.db.name, this.fpRate) : buildFilters(this.db, this.fpRate);
          this.persist(next);
        }
        this.set = next;
        this.rowsUnchecked = false;
        this.adopt(next);
        this.counters.reloads++;
      } catch (e) {
        this.counters.reloadFailures++;
        throw e;
      }
    };
    this.reloading = run().finally(() => {
      this.reloading = null;
    });
    return this.reloading;
  }

  /**
   * Swaps in a set that was loaded and checked against the current store elsewhere (appliance/filter-follow.ts
   * reads the persisted file and compares its fingerprint in a worker thread), as reload() swaps in a
   * persisted one: one assignment, so lookups never see a half-swapped state.
   */
  adoptSet(set: FilterSet): void {
    this.rowsUnchecked = false;
    this.set = set;
    this.adopt(set);
    this.counters.reloads++;
  }

  lookup(raw: string): LookupResult {
    const now = this.now();
    return this.answer(raw, now, this.dataAge(now), this.feedPolicy.withheld(now).size !== 0);
  }

  /**
   * Same results as lookup() per value, answered at one instant: the clock, data age and fail-closed state
   * are read once per batch, and a value already in canonical form is typed without a normalize result.
   */
  lookupMany(raws: readonly string[]): LookupResult[] {
    const out = new Array<LookupResult>(raws.length);
    if (raws.length === 0) return out;
    const now = this.now();
    const age = this.dataAge(now);
    const stale = this.feedPolicy.withheld(now).size !== 0;
    // Filter hits are confirmed inside one read transaction: one snapshot for the batch, and SQLite takes
    // its WAL read lock once instead of per statement. (Deferred: costs nothing until the first hit.)
    const txn = raws.length > 1 && !this.db.inTransaction;
    if (txn) this.beginStmt.run();
    try {
      for (let i = 0; i < raws.length; i++) out[i] = this.answer(raws[i], now, age, stale);
    } finally {
      if (txn && this.db.inTransaction) this.commitStmt.run();
    }
    return out;
  }

  /** One lookup at time `now` (unix s); `stale`: fail-closed feeds are withheld now (results get flagged). */
  private answer(raw: string, now: number, age: number | null, stale: boolean): LookupResult {
    this.counters.lookups++;
    let type: Exclude<LookupType, 'invalid'>;
    let value: string;
    // canonicalType() answers exactly what normalize() would for canonical input, without allocating.
    const fast = typeof raw === 'string' ? canonicalType(raw) : null;
    if (fast !== null) {
      type = fast as Exclude<LookupType, 'invalid'>;
      value = raw;
    } else {
      const n = normalizeNonCanonical(raw);
      if (!n.ok) return this.invalid(raw, n.error, age);
      if (n.type === 'ipv4-cidr' || n.type === 'ipv6-cidr') return this.invalid(raw, 'a network is not a lookup value; look up an address', age);
      type = n.type as Exclude<LookupType, 'invalid'>;
      value = n.value;
    }
    const matches = this.matches;
    if (matches.length !== 0) matches.length = 0; // setting length costs even when it is already 0
    if (this.seen.size !== 0) this.seen.clear();
    if (fast === 'ipv4') this.matchV4(value, 0, value.length, CANONICAL_V4[0], 'exact'); // parsed once, by canonicalType
    else this.match(type, value);
    // Local overrides (in memory) join the feed matches; decide() lets them take precedence.
    if (this.overrides !== null && this.overrides.size > 0) this.overrides.collect(type, value, matches, now);
    let result: LookupResult;
    if (matches.length === 0) {
      // A miss (the common case): decide()'s answer for no matches, without a verdict context.
      result = {
        value: raw,
        type,
        normalized: value,
        verdict: NO_MATCH.verdict,
        confidence: NO_MATCH.confidence,
        matches: [],
        rule: NO_MATCH.rule,
        reasons: NO_MATCH.reasons.slice(),
        generation: this.generation,
        data_age_s: age,
      };
    } else {
      const found = matches.slice();
      const d = decide(found, { now, feedCreated: this.feedCreatedOf, type, normalized: value, policy: this.policy });
      result = {
        value: raw,
        type,
        normalized: value,
        verdict: d.verdict,
        confidence: d.confidence,
        matches: found,
        rule: d.rule,
        reasons: d.reasons,
        generation: this.generation,
        data_age_s: age,
      };
      // Actors/families the matches' context links to (lookup/actors.ts); only matches with context link any.
      for (let i = 0; i < found.length; i++) {
        if (found[i].context) {
          annotateResult(this.db, result);
          break;
        }
      }
    }
    return stale ? this.feedPolicy.flag(result, now) : result; // fail-closed stale feeds: `stale: true` (freshness.ts)
  }

  /**
   * Filter stage only: could this normalized value, or any key it is matched under, be listed? The same
   * probes as lookup() (match() below), with each filter hit answered `true` instead of confirmed: no
   * SQLite, no result object — what the benchmark calls the in-process miss path.
   */
  mayMatch(type: IndicatorType, value: string): boolean {
    this.probing = true;
    this.probeHit = false;
    try {
      this.match(type, value);
    } finally {
      this.probing = false;
    }
    return this.probeHit;
  }

  stats(): EngineStats {
    let bytes = 0;
    let values = 0;
    for (const f of this.set.filters.values()) {
      bytes += f.bits.byteLength;
      values += f.count;
    }
    return {
      generation: this.generation,
      ...this.counters,
      filterBytes: bytes + this.set.v4Index.byteLength + this.set.v4Blocks.byteLength + this.set.urlHosts.bits.byteLength,
      filterValues: values,
      filterBuildMs: this.set.buildMs,
      nonCanonicalNetworks: this.set.nonCanonical,
    };
  }

  /** The row count of the set accepted at start was checked and matches (GenerationFollower). */
  rowsChecked(): void {
    this.rowsUnchecked = false;
  }

  /** The filters in use (read-only; for tools and tests). */
  get filters(): FilterSet {
    return this.set;
  }

  // ------------------------------------------------------------------ matching

  /** Probes the filters for every key `value` is matched under and confirms each hit (see confirm()). */
  private match(type: IndicatorType, value: string): void {
    switch (type) {
      case 'ipv4':
      case 'ipv6':
        this.matchIp(value, type, 'exact');
        break;
      case 'domain':
        this.matchDomain(value, 'exact', 'subdomain');
        break;
      case 'url':
        this.matchUrl(value);
        break;
      default:
        this.check(type, type, value, 'exact');
    }
  }

  private matchIp(ip: string, type: 'ipv4' | 'ipv6', exactKind: MatchKind): void {
    if (type === 'ipv4') {
      this.matchV4(ip, 0, ip.length, parseV4(ip), exactKind);
      return;
    }
    const f = this.fV6;
    this.counters.filterProbes++;
    if (probe(f, ip)) this.confirm(type, ip, exactKind);
    if (this.set.prefixes6.length) {
      const nf = this.fV6Net;
      for (const p of this.set.prefixes6) {
        if (p === 128) continue; // normalize stores a /128 as the plain address: matched exactly above
        const key = cidrKey(ip, 6, p);
        this.counters.filterProbes++;
        if (probe(nf, key)) this.confirm('ipv6-cidr', key, 'cidr');
      }
    }
  }

  /**
   * The IPv4 address s[start, end), parsed as `n` (parseV4; < 0 when not canonical): probed as a range of
   * `s`, so a URL's host is matched inside the URL and sliced only when a filter hits. The /24 block bitmap
   * first: a clear bit means no listed address and no listed network of length 16..32 in the address's /24,
   * so neither the exact filter nor those network keys need a probe.
   */
  private matchV4(s: string, start: number, end: number, n: number, exactKind: MatchKind): void {
    const inBlock = n < 0 || this.v4BlockListed(n);
    if (inBlock) {
      this.counters.filterProbes++;
      const hit = n >= 0 ? probeV4(this.fV4, n) : probe(this.fV4, s.slice(start, end)); // (not canonical: never, from match())
      if (hit) this.confirm('ipv4', start === 0 && end === s.length ? s : s.slice(start, end), exactKind);
    }
    // Scratch list reused across lookups (confirm() never re-enters matchV4): no array per lookup.
    const keys = this.keyScratch;
    if (n >= 0 && this.v4NetworkKeys(n, inBlock, keys) > 0) for (const k of keys.splice(0)) this.confirm('ipv4-cidr', k, 'cidr');
  }

  /** The /24 of address `n` holds a listed address or overlaps a listed network of length 16..32 (v4Blocks). */
  private v4BlockListed(n: number): boolean {
    return v4BlockMarked(this.set.v4Blocks, n);
  }

  /**
   * Probes the listed-network filter for each prefix length the /16 index says is present around address
   * `n` (prefixes 16..32 only when `inBlock`, see v4BlockListed); collects the keys that hit (when `out` is
   * given). Returns the number of hits.
   */
  private v4NetworkKeys(n: number, inBlock: boolean, out: string[] | null): number {
    const set = this.set;
    let mask = set.v4Index[n >>> 16];
    // Prefixes 16..32 (bits 15..31) only when a listed network of that range overlaps the address's /24.
    if ((mask & 0xffff8000) !== 0 && !inBlock) mask &= 0x7fff;
    if (mask === 0 && !set.v4HasZero) return 0;
    const nf = this.fV4Net;
    let hits = 0;
    if (set.v4HasZero) {
      this.counters.filterProbes++;
      if (probeV4Net(nf, 0, 0)) {
        hits++;
        out?.push('0.0.0.0/0');
      }
    }
    while (mask !== 0) {
      const bit = 31 - Math.clz32(mask & -mask);
      mask &= mask - 1;
      const prefix = bit + 1;
      const net = v4Network(n, prefix);
      this.counters.filterProbes++;
      if (probeV4Net(nf, net, prefix)) {
        hits++;
        out?.push(`${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.${net & 255}/${prefix}`);
      }
    }
    return hits;
  }

  /**
   * Probes the domain d[start, end) and every suffix of ≥ 2 labels, hashed in one pass from the string
   * (hashDomainKeys: no slicing, no public suffix parsing). Only when something hits are the hits checked
   * against parentDomains(), so a listed public suffix (`github.io`, `co.uk`) never matches. Returns the
   * number of accepted candidates, pushed to `out` (when given) as d first, then its parents longest first.
   * Afterwards the domain's own hash pair is in domainHashes at 2 · (keys − 1) (matchUrl reuses it).
   * (A range lets a URL's host be probed inside the URL.)
   */
  private domainCandidates(f: TypedFilter, s: string, out: string[] | null, start = 0, end = s.length): number {
    const h = this.domainHashes;
    const n = hashDomainKeys(s, start, end, f.s1, f.s2, h, this.domainStarts);
    this.domainKeys = n;
    this.counters.filterProbes += n;
    // Every key's block is read before any answer is acted on; the answers are nearly always false.
    let hitKeys = 0; // bit j: key j (parents shortest first, the domain itself last) may be listed
    let far: number[] | null = null; // hits among keys 31 and up (a host of 32+ labels)
    for (let j = 0; j < n; j++) {
      if (testHashed(f, h[2 * j], h[2 * j + 1])) {
        if (j < 31) hitKeys |= 1 << j;
        else (far ??= []).push(j);
      }
    }
    if (hitKeys === 0 && far === null) return 0;
    // (From here on only for a filter hit: a listed value, or a false positive.)
    const isHit = (j: number) => (j < 31 ? (hitKeys & (1 << j)) !== 0 : far !== null && far.includes(j));
    const d = start === 0 && end === s.length ? s : s.slice(start, end);
    let hits = 0;
    const self = n - 1;
    if (isHit(self)) {
      hits++;
      out?.push(d);
    }
    const parents = self > 0 ? parentDomains(d) : [];
    for (let j = self - 1; j >= 0; j--) {
      if (!isHit(j)) continue;
      const suffix = d.slice(this.domainStarts[j] - start);
      if (parents.includes(suffix)) {
        hits++;
        out?.push(suffix);
      }
    }
    return hits;
  }

  private matchDomain(d: string, selfKind: MatchKind, parentKind: MatchKind): void {
    const f = this.fDomain;
    const keys = this.keyScratch; // always left empty (splice below)
    if (this.domainCandidates(f, d, keys) === 0) return;
    for (const k of keys.splice(0)) this.confirm('domain', k, k === d ? selfKind : parentKind);
  }

  /**
   * The keys of urlKeyEnds() (the URL, without its query, up to 4 path prefixes), probed as ranges of the
   * URL in that order when the authority index lets them (urlKeysMayMatch), then the host — a domain
   * probed inside the URL, sliced only when a filter hits. A domain host is hashed before the URL keys:
   * its own hash is the authority's when the URL names no port, so the index reuses it.
   */
  private matchUrl(url: string): void {
    const sep = url.indexOf('://');
    const len = url.length;
    // The host as urlHost() finds it: bracketed IPv6, else up to the first ':' before the path.
    let hs = sep < 0 ? 0 : sep + 3;
    let he = url.indexOf('/', hs);
    if (he < 0) he = len;
    if (url.charCodeAt(hs) === 91) {
      const close = url.indexOf(']', hs);
      this.matchUrlKeys(url, sep, -1);
      this.matchIp(url.slice(hs + 1, close < 0 ? he : close), 'ipv6', 'exact'); // rare: the bracketed host on its own
      return;
    }
    const colon = url.indexOf(':', hs);
    if (colon >= 0 && colon < he) he = colon;
    const v4 = parseV4(url, hs, he);
    if (v4 >= 0) {
      this.matchUrlKeys(url, sep, -1);
      this.matchV4(url, hs, he, v4, 'exact');
      return;
    }
    const keys = this.keyScratch; // always left empty (splice below)
    const hosts = this.domainCandidates(this.fDomain, url, keys, hs, he);
    // The host's own hash pair (domainCandidates) is the authority's when nothing follows the host but the path.
    const shared = this.hostHashShared && sep >= 0 && urlAuthorityEnd(url, hs) === he;
    this.matchUrlKeys(url, sep, shared ? 2 * (this.domainKeys - 1) : -1);
    if (hosts !== 0) for (const k of keys.splice(0)) this.confirm('domain', k, 'subdomain');
  }

  /**
   * Probes the URL keys when the authority index lets them (urlKeysMayMatch); `hostHash` ≥ 0: the
   * authority's hash pair is in domainHashes at that index (already hashed as the host).
   */
  private matchUrlKeys(url: string, sep: number, hostHash: number): void {
    let may: boolean;
    if (sep < 0) may = true;
    else if (hostHash >= 0) {
      this.counters.filterProbes++;
      may = testHashed(this.set.urlHosts, this.domainHashes[hostHash], this.domainHashes[hostHash + 1]);
    } else may = this.urlKeysMayMatch(url, sep);
    if (!may) return;
    const f = this.fUrl;
    const ends = this.endScratch; // confirm() never re-enters matchUrl: the scratch stays ours
    const n = urlKeyEndsInto(url, ends);
    for (let i = 0; i < n; i++) {
      this.counters.filterProbes++;
      if (probeRange(f, url, 0, ends[i])) this.confirm('url', i === 0 ? url : url.slice(0, ends[i]), i === 0 ? 'exact' : 'url');
    }
  }

  /** False when no listed URL has this URL's authority (FilterSet.urlHosts), so none of its URL keys is listed. */
  private urlKeysMayMatch(url: string, sep: number): boolean {
    if (sep < 0) return true;
    this.counters.filterProbes++;
    return probeRange(this.set.urlHosts, url, sep + 3, urlAuthorityEnd(url, sep + 3));
  }

  private check(filterType: IndicatorType, storeType: IndicatorType, value: string, kind: MatchKind): void {
    const f = this.set.filters.get(filterType);
    if (!f) return;
    this.counters.filterProbes++;
    if (probe(f, value)) this.confirm(storeType, value, kind);
  }

  /** A filter hit: read every feed's row for the key; only unexpired rows match. None → a counted false positive. */
  private confirm(type: IndicatorType, value: string, kind: MatchKind): void {
    if (this.probing) {
      this.probeHit = true; // mayMatch(): a filter hit is the answer
      return;
    }
    this.counters.filterHits++;
    const key = `${type}\u0000${value}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    const rows = this.confirmStmt.all(type, value) as Row[];
    const now = this.now();
    let live = 0;
    const withheld = this.feedPolicy.withheld(now);
    for (const r of rows) {
      // Own `exp`, else the type default from the feed's package creation time (sync/expiry.ts).
      const exp = r[R_EXPIRES_AT] ?? this.feedPolicy.expiresAt(r[R_TYPE], null, r[R_FEED_CREATED] ?? null);
      if (exp != null && exp < now) {
        this.counters.expiredSkipped++;
        continue;
      }
      if (withheld.size !== 0 && withheld.has(r[R_FEED])) continue; // fail-closed and stale: answers unknown
      live++;
      this.matches.push(toMatch(r, kind, exp));
    }
    if (rows.length === 0) this.counters.filterFalsePositives++; // no row at all: the filter's own error
    this.counters.confirmedMatches += live;
  }

  // ------------------------------------------------------------------ helpers

  /** Refused input: never flagged stale (nothing was looked up). */
  private invalid(raw: string, error: string, age: number | null): LookupResult {
    this.counters.invalid++;
    return {
      value: typeof raw === 'string' ? raw : String(raw),
      type: 'invalid',
      error,
      verdict: 'unknown',
      confidence: 0,
      matches: [],
      generation: this.generation,
      data_age_s: age,
    };
  }

  private dataAge(now: number): number | null {
    if (this.newestCreated == null) return null;
    return Math.max(0, Math.floor(now - this.newestCreated));
  }

  private adopt(set: FilterSet): void {
    const f = set.filters;
    this.fV4 = f.get('ipv4')!;
    this.fV4Net = f.get('ipv4-cidr')!;
    this.fV6 = f.get('ipv6')!;
    this.fV6Net = f.get('ipv6-cidr')!;
    this.fDomain = f.get('domain')!;
    this.fUrl = f.get('url')!;
    this.hostHashShared = set.urlHosts.keys === 'text' && set.urlHosts.s1 === this.fDomain.s1 && set.urlHosts.s2 === this.fDomain.s2;
    this.generation = set.generation;
    this.refreshFeedInfo();
  }

  /** data_age_s counts from the creation time of the newest applied package (feeds.created). */
  /** Picks up override changes made by another process (cheap: one meta read when nothing changed). */
  refreshOverrides(): boolean {
    return this.overrides?.refresh() ?? false;
  }

  private refreshFeedInfo(): void {
    // Package creation time per feed: the age of rows that carry no first/last-seen dates (verdict decay).
    const created = new Map<string, number>();
    for (const f of this.db.prepare('SELECT name, created FROM feeds').all() as { name: string; created: string }[]) {
      const t = Date.parse(f.created);
      if (Number.isFinite(t)) created.set(f.name, t / 1000);
    }
    this.feedCreated = created;
    this.overrides?.refresh();
    const row = this.db.prepare('SELECT max(created) AS created FROM feeds').get() as { created: string | null } | undefined;
    const t = row?.created ? Date.parse(row.created) : NaN;
    this.newestCreated = Number.isFinite(t) ? t / 1000 : null;
  }

  private filterFile(generation: number): string | null {
    return this.filterDir ? path.join(this.filterDir, `filters-${generation}.bin`) : null;
  }

  /**
   * A persisted set is used only when it was built from exactly the current content at the same rate
   * (`withoutRows`: the same generation and feed versions, the row count checked later; checkRowsLater).
   */
  private loadPersisted(withoutRowCount = false): FilterSet | null {
    try {
      const { generation, fingerprint } = withoutRowCount ? storeFingerprintWithoutRows(this.db) : storeFingerprint(this.db);
      const file = this.filterFile(generation);
      if (!file || !fs.existsSync(file)) return null;
      const set = loadFilters(file);
      const found = withoutRowCount ? withoutRows(set.fingerprint) : set.fingerprint;
      return found === fingerprint && set.fpRate === this.fpRate ? set : null;
    } catch {
      return null; // unreadable or stale file: rebuild
    }
  }

  /** Saves the set for the next start and removes older generations' files. Best effort: lookups do not depend on it. */
  private persist(set: FilterSet): FilterSet {
    const file = this.filterFile(set.generation);
    if (!file || !this.filterDir) return set;
    try {
      serializeFilters(set, file);
      for (const name of fs.readdirSync(this.filterDir)) {
        if (/^filters-\d+\.bin$/.test(name) && name !== path.basename(file)) fs.rmSync(path.join(this.filterDir, name), { force: true });
      }
    } catch {
      /* read-only data dir or full disk: keep serving from memory */
    }
    return set;
  }
}

// ------------------------------------------------------------------ serializing results

/** Keys of a miss as answer() builds it, in order. */
const MISS_KEYS = ['value', 'type', 'normalized', 'verdict', 'confidence', 'matches', 'rule', 'reasons', 'generation', 'data_age_s'];
const TYPE_JSON = new Map<string, string>(
  ['ipv4', 'ipv6', 'domain', 'url', 'md5', 'sha1', 'sha256', 'email'].map((t) => [t, JSON.stringify(t)]),
);
/** The JSON after `"normalized":…` of a miss; the same for every miss of one generation and data age. */
let missTail = '';
let missTailGen: number | null = null;
let missTailAge: number | null | undefined;

function isPlainMiss(r: LookupResult): boolean {
  if (r.verdict !== NO_MATCH.verdict || r.confidence !== NO_MATCH.confidence || r.rule !== NO_MATCH.rule) return false;
  const m = r.matches as unknown;
  const reasons = r.reasons as unknown;
  if (!Array.isArray(m) || m.length !== 0 || !Array.isArray(reasons) || reasons.length !== NO_MATCH.reasons.length) return false;
  for (let i = 0; i < reasons.length; i++) if (reasons[i] !== NO_MATCH.reasons[i]) return false;
  if (typeof r.value !== 'string' || typeof r.normalized !== 'string' || !TYPE_JSON.has(r.type)) return false;
  if (!Number.isFinite(r.generation) || (r.data_age_s !== null && !Number.isFinite(r.data_age_s))) return false;
  if (Object.getPrototypeOf(r) !== Object.prototype || Object.getPrototypeOf(m) !== Array.prototype || Object.getPrototypeOf(reasons) !== Array.prototype) return false;
  // Exactly the miss keys in answer()'s order: anything added (stale flags, actors) goes to JSON.stringify.
  const keys = Object.keys(r);
  if (keys.length !== MISS_KEYS.length) return false;
  for (let i = 0; i < keys.length; i++) if (keys[i] !== MISS_KEYS[i]) return false;
  return true;
}

/**
 * `JSON.stringify(result)`, byte for byte. A plain miss — the common case of a batch — is written from a
 * template (about a tenth of JSON.stringify's cost on a result object); anything else is JSON.stringify's.
 */
export function resultJson(r: LookupResult): string {
  if (!isPlainMiss(r)) return JSON.stringify(r);
  if (r.generation !== missTailGen || r.data_age_s !== missTailAge) {
    missTailGen = r.generation;
    missTailAge = r.data_age_s;
    missTail = JSON.stringify({ verdict: NO_MATCH.verdict, confidence: NO_MATCH.confidence, matches: [], rule: NO_MATCH.rule, reasons: NO_MATCH.reasons, generation: r.generation, data_age_s: r.data_age_s }).slice(1);
  }
  const v = jsonString(r.value);
  return `{"value":${v},"type":${TYPE_JSON.get(r.type)},"normalized":${r.normalized === r.value ? v : jsonString(r.normalized!)},${missTail}`;
}

/**
 * `JSON.stringify(s)` for a string. Printable ASCII without `"` or `\` — every canonical IP, domain, hash
 * and nearly every URL — is quoted as it is, without the runtime call JSON.stringify costs per value.
 * (Not sync/records.ts plainJsonText, the reading direction: that one lets surrogates through, which
 * JSON.stringify escapes when they stand alone.)
 */
export function jsonString(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return JSON.stringify(s);
  }
  return `"${s}"`;
}

/**
 * The keys urlMatchKeys() gives for a normalized URL are all prefixes of it (the URL, the URL without
 * its query, base + path prefixes), so they are probed as ranges of the one string — no slicing unless
 * the filter hits. Returns the end offsets in urlMatchKeys' order; a test checks both agree on real URLs.
 */
export function urlKeyEnds(url: string): number[] {
  const ends: number[] = [];
  urlKeyEndsInto(url, ends); // fills ends[0..n) of the empty array in order
  return ends;
}

/** urlKeyEnds() written into `ends` (at most 6 entries; the engine reuses one array); returns how many. */
export function urlKeyEndsInto(url: string, ends: number[]): number {
  let n = 0;
  ends[n++] = url.length;
  const sep = url.indexOf('://');
  const pathStart = url.indexOf('/', sep + 3);
  if (sep < 0 || pathStart < 0) return n;
  const q = url.indexOf('?', pathStart);
  const pathEnd = q >= 0 ? q : url.length;
  if (q >= 0) ends[n++] = q;
  let prefixes = 0;
  for (let i = pathStart; i < pathEnd && prefixes < 4; i++) {
    if (url.charCodeAt(i) !== 47) continue;
    prefixes++;
    // Earlier prefix ends are all ≤ i, so only the URL's and the query's ends can repeat.
    if (i + 1 !== url.length && i + 1 !== q) ends[n++] = i + 1;
  }
  return n;
}

/** A confirmed row as a match; `expiresAt`: its effective expiry (own, else the type default). */
function toMatch(r: Row, kind: MatchKind, expiresAt: number | null): Match {
  const m: Match = {
    feed: r[R_FEED],
    feed_kind: (r[R_KIND] === 'allow' ? 'allow' : 'block') as FeedKind,
    indicator: r[R_VALUE],
    kind,
    category: r[R_CATEGORY] ?? r[R_FEED_CATEGORY] ?? null,
    confidence: r[R_CONFIDENCE] ?? r[R_FEED_CONFIDENCE] ?? DEFAULT_CONFIDENCE,
    first_seen: iso(r[R_FIRST_SEEN]),
    last_seen: iso(r[R_LAST_SEEN]),
    expires_at: iso(expiresAt),
  };
  const extra = r[R_EXTRA];
  if (extra) {
    try {
      const x = JSON.parse(extra) as { ports?: number[]; tags?: string[]; ctx?: Record<string, unknown> };
      if (Array.isArray(x.ports) && x.ports.length) m.ports = x.ports;
      if (Array.isArray(x.tags) && x.tags.length) m.tags = x.tags;
      if (x.ctx && typeof x.ctx === 'object') m.context = x.ctx;
    } catch {
      /* extra is written by apply as JSON; a damaged one loses only the context */
    }
  }
  return m;
}
