// Every export format as a file made of effective rows (source.ts): a head, one line per row of the types
// it takes, a tail. One definition serves both ways an export is made:
//  - streamed alone (`outpost export`, GET /api/v1/export/:format): streamRowFile reads the rows it needs;
//  - written with all the others (writeExportFiles after each generation): runPass reads the store once
//    and hands each row to every file that takes its type. At 10M indicators the effective rows cost
//    ~2 µs each (SQLite ~1, the rules ~1), and the file sets used to read them six times over.
// Rows come type by type in INDICATOR_TYPES order, values in byte order, either way, so a file is the
// same bytes whichever way it was made.
import { INDICATOR_TYPES, type IndicatorType } from '../../appliance/types.ts';
import { chunked, effectiveIndicators, newStats, type ExportRow, type ExportStats, type SourceContext } from './source.ts';
import { AtomicFile } from './atomic-file.ts';

/** One export file: its name in the exports dir, the types it takes, how it starts, each row's line, how it ends. */
export interface RowFile {
  name: string;
  types: readonly IndicatorType[];
  head?: string;
  /** The row's text (one or more lines, newline included; counted as written), or null when the format leaves it out (the format counts why in `stats`). */
  line?: (r: ExportRow, stats: ExportStats) => string | null;
  /** Text after the last row (may read more of the store, e.g. RPZ's allowlisted names). */
  tail?: (stats: ExportStats) => Iterable<string>;
}

/** Takes rows of some types during a pass; its files are written and renamed into place by `end`. */
export interface RowSink {
  types: ReadonlySet<IndicatorType>;
  begin(): void;
  row(r: ExportRow): void;
  end(): void;
  /** Removes what is not renamed into place yet. */
  abort(): void;
}

function typesInOrder(types: Iterable<IndicatorType>): IndicatorType[] {
  const want = new Set(types);
  return INDICATOR_TYPES.filter((t) => want.has(t));
}

/** The file's whole text in ~64 KiB chunks, reading the rows it needs (stats: ctx.stats). */
export function* streamRowFile(ctx: SourceContext, file: RowFile): Generator<string> {
  if (file.head) yield file.head;
  const line = file.line;
  if (line && file.types.length) {
    function* lines() {
      for (const r of effectiveIndicators(ctx, typesInOrder(file.types))) {
        const text = line!(r, ctx.stats);
        if (text === null) continue;
        ctx.stats.written++;
        yield text;
      }
    }
    yield* chunked(lines());
  }
  if (file.tail) yield* file.tail(ctx.stats);
}

/** A RowFile written to `path` during a pass; its format's counts go to `stats`. */
export class FileSink implements RowSink {
  readonly types: ReadonlySet<IndicatorType>;
  private out: AtomicFile | null = null;

  constructor(private readonly path: string, private readonly file: RowFile, private readonly stats: ExportStats) {
    this.types = new Set(file.line ? file.types : []);
  }

  begin(): void {
    this.out = new AtomicFile(this.path);
    if (this.file.head) this.out.write(this.file.head);
  }

  row(r: ExportRow): void {
    const text = this.file.line!(r, this.stats);
    if (text === null) return;
    this.stats.written++;
    this.out!.write(text);
  }

  end(): void {
    if (this.file.tail) for (const s of this.file.tail(this.stats)) this.out!.write(s);
    this.out!.commit();
    this.out = null;
  }

  abort(): void {
    this.out?.abort();
    this.out = null;
  }
}

/**
 * One read of the effective rows for every sink: each row goes to the sinks that take its type. Sinks
 * end (write their tails, rename into place) in the order given. If anything fails, every file not yet
 * renamed is removed and the error is thrown. Returns what the shared rules left out, by type (a value
 * left out counts once, whatever number of files take it); a set's report adds the counts of its types.
 */
export function runPass(ctx: SourceContext, sinks: RowSink[]): Map<IndicatorType, ExportStats> {
  const byType = new Map<IndicatorType, ExportStats>();
  const pending = [...sinks];
  try {
    for (const s of sinks) s.begin();
    for (const type of typesInOrder(sinks.flatMap((s) => [...s.types]))) {
      const takers = sinks.filter((s) => s.types.has(type));
      const stats = newStats();
      byType.set(type, stats);
      ctx.stats = stats; // finish() counts what it leaves out in ctx.stats
      for (const r of effectiveIndicators(ctx, [type])) for (const s of takers) s.row(r);
    }
    while (pending.length) {
      pending[0].end();
      pending.shift();
    }
  } finally {
    for (const s of pending) s.abort();
  }
  return byType;
}

/** A set's report: its own counts (rows written, format skips) plus what the shared rules left out of its types. */
export function setStats(own: ExportStats, byType: Map<IndicatorType, ExportStats>, types: Iterable<IndicatorType>): ExportStats {
  const out: ExportStats = { written: own.written, skipped: {} };
  for (const t of typesInOrder(types)) {
    for (const [k, n] of Object.entries(byType.get(t)?.skipped ?? {})) out.skipped[k] = (out.skipped[k] ?? 0) + n;
  }
  for (const [k, n] of Object.entries(own.skipped)) out.skipped[k] = (out.skipped[k] ?? 0) + n;
  return out;
}
