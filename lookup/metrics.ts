// Prometheus text exposition of lookup counters, verdicts, latency histogram, filter and feed figures.
import type { DB } from '../appliance/db.ts';
import type { LookupResult } from '../appliance/types.ts';
import type { LookupEngine } from './engine.ts';

const BUCKETS_S = [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1];

export class Metrics {
  lookups = 0;
  requests = 0;
  readonly verdicts: Record<string, number> = { malicious: 0, suspicious: 0, benign: 0, unknown: 0 };
  private readonly buckets = new Array<number>(BUCKETS_S.length).fill(0);
  private sumS = 0;
  /** Further exposition blocks appended by optional subsystems (e.g. the SIEM push in lookup/push.ts). */
  readonly extra: (() => string)[] = [];

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

  render(engine: LookupEngine, db: DB): string {
    const out: string[] = [];
    const line = (name: string, help: string, type: string, samples: [string, number][]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of samples) out.push(`${name}${labels} ${v}`);
    };
    line('outpost_lookups_total', 'Values looked up over the API.', 'counter', [['', this.lookups]]);
    line('outpost_verdicts_total', 'Lookup results by verdict.', 'counter', Object.entries(this.verdicts).map(([v, n]) => [`{verdict="${v}"}`, n]));
    out.push('# HELP outpost_lookup_request_seconds Time to answer one lookup request.', '# TYPE outpost_lookup_request_seconds histogram');
    BUCKETS_S.forEach((b, i) => out.push(`outpost_lookup_request_seconds_bucket{le="${b}"} ${this.buckets[i]}`));
    out.push(`outpost_lookup_request_seconds_bucket{le="+Inf"} ${this.requests}`);
    out.push(`outpost_lookup_request_seconds_sum ${this.sumS}`, `outpost_lookup_request_seconds_count ${this.requests}`);
    const st = engine.stats();
    line('outpost_generation', 'Data generation being served.', 'gauge', [['', engine.generation]]);
    for (const [k, v] of Object.entries(st)) {
      if (typeof v === 'number') line(`outpost_engine_${k.replace(/[A-Z]/g, (m) => '_' + m.toLowerCase())}`, `Lookup engine figure ${k}.`, 'gauge', [['', v]]);
    }
    const now = Date.now();
    const feeds = db.prepare('SELECT name, count, created FROM feeds').all() as { name: string; count: number; created: string }[];
    line('outpost_feed_indicators', 'Indicators per feed.', 'gauge', feeds.map((f) => [`{feed="${f.name}"}`, f.count]));
    line('outpost_feed_age_seconds', 'Age of the applied package per feed.', 'gauge', feeds.map((f) => [`{feed="${f.name}"}`, Math.floor((now - Date.parse(f.created)) / 1000)]));
    return out.join('\n') + '\n' + this.extra.map((f) => f()).join('');
  }
}
