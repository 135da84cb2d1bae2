// Prometheus text exposition of lookup counters, verdicts, latency histogram, filter and feed figures.
// With several HTTP processes (OUTPOST_HTTP_WORKERS > 1, appliance/cluster.ts) the primary answers
// /metrics and adds up every process's counters (their snapshots, asked for at each scrape).
import type { DB } from '../appliance/db.ts';
import type { LookupResult } from '../appliance/types.ts';
import type { EngineStats, LookupEngine } from './engine.ts';

const BUCKETS_S = [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1];

/** One process's counters, as a worker sends them to the primary (plain data: structured-clone safe). */
export interface MetricsSnapshot {
  requests: number;
  lookups: number;
  verdicts: Record<string, number>;
  buckets: number[];
  sumS: number;
  engine: EngineStats;
}

/**
 * The engine's figures: `counter` ones are added up over processes; `gauge` ones describe the filter set
 * and are the answering process's (generation: the oldest any process serves).
 */
const ENGINE_FIGURES: Record<keyof EngineStats, ['counter' | 'gauge', string]> = {
  generation: ['gauge', 'Oldest data generation any lookup process answers from (each swaps to a new one once its filters are loaded).'],
  lookups: ['counter', 'Values looked up by the engine (API, console, compatible routes).'],
  invalid: ['counter', 'Values refused as not an indicator.'],
  filterProbes: ['counter', 'Bloom filter reads.'],
  filterHits: ['counter', 'Filter reads that answered "maybe listed" and went to SQLite.'],
  filterFalsePositives: ['counter', 'Filter hits SQLite found no row for (Bloom false positives; values removed since the filters were built count too).'],
  confirmedMatches: ['counter', 'Rows confirmed in SQLite and answered.'],
  expiredSkipped: ['counter', 'Confirmed rows left out because they had expired.'],
  filterBytes: ['gauge', 'Bytes of the filters and indexes in memory.'],
  filterValues: ['gauge', 'Keys held by the filters.'],
  filterBuildMs: ['gauge', 'Milliseconds the filter set in use took to build or load.'],
  reloads: ['counter', 'Filter sets swapped in.'],
  reloadFailures: ['counter', 'Filter set builds or loads that failed (the previous set kept answering).'],
  nonCanonicalNetworks: ['gauge', 'Listed networks with host bits set (matched as their network).'],
};

const snake = (k: string) => k.replace(/[A-Z]/g, (m) => '_' + m.toLowerCase());

export class Metrics {
  lookups = 0;
  requests = 0;
  readonly verdicts: Record<string, number> = { malicious: 0, suspicious: 0, benign: 0, unknown: 0 };
  private readonly buckets = new Array<number>(BUCKETS_S.length).fill(0);
  private sumS = 0;
  /** Further exposition blocks appended by optional subsystems (e.g. the SIEM push in lookup/push.ts). */
  readonly extra: (() => string)[] = [];
  /** The other lookup processes' snapshots (set by appliance/cluster.ts in the primary); null: this one only. */
  peers: (() => Promise<MetricsSnapshot[]>) | null = null;

  /** One API request that answered `results`, started at hrtime `t0`. */
  observe(results: LookupResult[], t0: bigint): void {
    for (const r of results) this.verdicts[r.verdict] = (this.verdicts[r.verdict] ?? 0) + 1;
    this.took(results.length, t0);
  }

  /** observe() of a request that answered one result, without an array around it (the GET fast path). */
  observeOne(result: LookupResult, t0: bigint): void {
    this.verdicts[result.verdict] = (this.verdicts[result.verdict] ?? 0) + 1;
    this.took(1, t0);
  }

  private took(lookups: number, t0: bigint): void {
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    this.requests++;
    this.lookups += lookups;
    this.sumS += s;
    for (let i = 0; i < BUCKETS_S.length; i++) if (s <= BUCKETS_S[i]) this.buckets[i]++;
  }

  /** This process's counters (what a worker sends the primary). */
  snapshot(engine: LookupEngine): MetricsSnapshot {
    return { requests: this.requests, lookups: this.lookups, verdicts: { ...this.verdicts }, buckets: this.buckets.slice(), sumS: this.sumS, engine: engine.stats() };
  }

  /** render() with the peers' snapshots (when there are peers). */
  async renderAll(engine: LookupEngine, db: DB): Promise<string> {
    const peers = this.peers ? await this.peers() : null;
    return this.render(engine, db, peers);
  }

  /** The exposition: this process's counters plus `peers`' (null: no peers, so no worker count either). */
  render(engine: LookupEngine, db: DB, peers: MetricsSnapshot[] | null = null): string {
    const all = [this.snapshot(engine), ...(peers ?? [])];
    const sum = (f: (s: MetricsSnapshot) => number) => all.reduce((a, s) => a + f(s), 0);
    const out: string[] = [];
    const line = (name: string, help: string, type: string, samples: [string, number][]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of samples) out.push(`${name}${labels} ${v}`);
    };
    if (peers) line('outpost_http_workers', 'HTTP worker processes whose counters are added up here (those that answered this scrape).', 'gauge', [['', peers.length]]);
    line('outpost_lookups_total', 'Values looked up over the API.', 'counter', [['', sum((s) => s.lookups)]]);
    const verdicts = new Set(all.flatMap((s) => Object.keys(s.verdicts)));
    line('outpost_verdicts_total', 'Lookup results by verdict.', 'counter', [...verdicts].map((v) => [`{verdict="${v}"}`, sum((s) => s.verdicts[v] ?? 0)]));
    out.push('# HELP outpost_lookup_request_seconds Time to answer one lookup request.', '# TYPE outpost_lookup_request_seconds histogram');
    BUCKETS_S.forEach((b, i) => out.push(`outpost_lookup_request_seconds_bucket{le="${b}"} ${sum((s) => s.buckets[i] ?? 0)}`));
    const requests = sum((s) => s.requests);
    out.push(`outpost_lookup_request_seconds_bucket{le="+Inf"} ${requests}`);
    out.push(`outpost_lookup_request_seconds_sum ${sum((s) => s.sumS)}`, `outpost_lookup_request_seconds_count ${requests}`);
    line('outpost_generation', 'Data generation in the store.', 'gauge', [['', engine.generation]]);
    const own = all[0].engine;
    const e = {} as EngineStats; // the whole appliance's figures
    for (const [k, [type, help]] of Object.entries(ENGINE_FIGURES) as [keyof EngineStats, ['counter' | 'gauge', string]][]) {
      e[k] = k === 'generation' ? Math.min(...all.map((s) => s.engine.generation)) : type === 'counter' ? sum((s) => s.engine[k]) : own[k];
      line(`outpost_engine_${snake(k)}`, help, type, [['', e[k]]]);
    }
    // The false-positive rate seen at confirm time: false positives ÷ filter reads of values not listed.
    const negatives = e.filterProbes - (e.filterHits - e.filterFalsePositives);
    line('outpost_engine_filter_fp_rate_observed', 'Filter false positives per filter read of a value that is not listed, since start (0 before any).', 'gauge', [['', negatives > 0 ? e.filterFalsePositives / negatives : 0]]);
    line('outpost_engine_filter_fp_rate_target', 'The false-positive rate the filters are sized for (OUTPOST_FILTER_FP_RATE).', 'gauge', [['', engine.targetFpRate]]);
    const now = Date.now();
    const feeds = db.prepare('SELECT name, count, created FROM feeds').all() as { name: string; count: number; created: string }[];
    line('outpost_feed_indicators', 'Indicators per feed.', 'gauge', feeds.map((f) => [`{feed="${f.name}"}`, f.count]));
    line('outpost_feed_age_seconds', 'Age of the applied package per feed.', 'gauge', feeds.map((f) => [`{feed="${f.name}"}`, Math.floor((now - Date.parse(f.created)) / 1000)]));
    return out.join('\n') + '\n' + this.extra.map((f) => f()).join('');
  }
}
