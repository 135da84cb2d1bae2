// Dry-run diff for an uploaded package (read-only): the staged package's lines against the feed's
// current rows — added, removed and changed counts with up to SAMPLES examples of each. A full package
// replaces the feed (rows it lacks are removed); a delta's add/remove files are checked row by row.
// "Changed" means the same (type, value) with another category, confidence, expiry or extra context;
// first/last-seen times move on every build and are not counted as a change.
import type { FC } from 'hono/jsx';
import type { Config } from '../../appliance/config.ts';
import type { DB } from '../../appliance/db.ts';
import { limitsOf, stageAndVerify } from '../../sync/import.ts';
import { readIndicators } from '../../sync/package-reader.ts';
import { indicatorToRow } from '../../sync/records.ts';
import { fmtInt, Table } from '../layout.tsx';

export const SAMPLES = 20;

export interface DiffSample {
  type: string;
  value: string;
  /** For a change: what differs, "field: old → new". */
  detail?: string;
}

export interface PackageDiff {
  feed: string;
  added: number;
  removed: number;
  changed: number;
  unchanged: number;
  samples: { added: DiffSample[]; removed: DiffSample[]; changed: DiffSample[] };
}

interface CurrentRow {
  category: string | null;
  confidence: number | null;
  expires_at: number | null;
  extra: string | null;
}

const COMPARED = ['category', 'confidence', 'expires_at', 'extra'] as const;

/** Verifies the package again (it is not trusted between requests) and compares it with the feed. */
export async function diffPackage(cfg: Config, db: DB, tarPath: string): Promise<PackageDiff> {
  const staged = await stageAndVerify(cfg, db, tarPath);
  try {
    const m = staged.manifest;
    const limits = limitsOf(cfg);
    const current = db.prepare('SELECT category, confidence, expires_at, extra FROM indicators WHERE type = ? AND value = ? AND feed = ?');
    const d: PackageDiff = { feed: m.feed, added: 0, removed: 0, changed: 0, unchanged: 0, samples: { added: [], removed: [], changed: [] } };
    const push = (k: keyof PackageDiff['samples'], s: DiffSample) => {
      if (d.samples[k].length < SAMPLES) d.samples[k].push(s);
    };
    const seen = m.type === 'full' ? new Set<string>() : null;
    for (const file of m.files) {
      if (file.role === 'reference') continue;
      for await (const ind of readIndicators(staged, file, limits)) {
        const row = indicatorToRow(ind, m.feed, m.kind);
        const old = current.get(row.type, row.value, m.feed) as CurrentRow | undefined;
        if (file.role === 'remove') {
          if (old) {
            d.removed++;
            push('removed', { type: row.type, value: row.value });
          }
          continue;
        }
        seen?.add(`${row.type}\u0000${row.value}`);
        if (!old) {
          d.added++;
          push('added', { type: row.type, value: row.value });
          continue;
        }
        const diffs = COMPARED.filter((k) => (old[k] ?? null) !== (row[k] ?? null)).map((k) => `${k}: ${old[k] ?? '—'} → ${row[k] ?? '—'}`);
        if (diffs.length) {
          d.changed++;
          push('changed', { type: row.type, value: row.value, detail: diffs.join('; ') });
        } else d.unchanged++;
      }
    }
    if (seen) {
      // A full package replaces the feed: every current row it does not carry goes.
      for (const r of db.prepare('SELECT type, value FROM indicators WHERE feed = ? ORDER BY type, value').iterate(m.feed) as Iterable<{ type: string; value: string }>) {
        if (seen.has(`${r.type}\u0000${r.value}`)) continue;
        d.removed++;
        push('removed', { type: r.type, value: r.value });
      }
    }
    return d;
  } finally {
    staged.cleanup();
  }
}

const Samples: FC<{ title: string; rows: DiffSample[]; total: number; detail?: boolean }> = ({ title, rows, total, detail }) =>
  total === 0 ? null : (
    <details class="diff-samples">
      <summary>
        {title}: {rows.length < total ? `first ${rows.length} of ${fmtInt(total)}` : `${fmtInt(total)}`}
      </summary>
      <Table head={['Type', 'Value', ...(detail ? ['Change'] : [])]} class="diff-table">
        {rows.map((s) => (
          <tr>
            <td>{s.type}</td>
            <td class="wrap">
              <code>{s.value}</code>
            </td>
            {detail ? <td class="wrap">{s.detail}</td> : null}
          </tr>
        ))}
      </Table>
    </details>
  );

export const DiffSummary: FC<{ diff: PackageDiff }> = ({ diff }) => (
  <div class="diff">
    <p class="tally">
      <span class="badge kind-allow">+{fmtInt(diff.added)} added</span> <span class="badge kind-block">−{fmtInt(diff.removed)} removed</span>{' '}
      <span class="badge">{fmtInt(diff.changed)} changed</span> <span class="muted">{fmtInt(diff.unchanged)} unchanged</span>
    </p>
    <Samples title="Added" rows={diff.samples.added} total={diff.added} />
    <Samples title="Removed" rows={diff.samples.removed} total={diff.removed} />
    <Samples title="Changed" rows={diff.samples.changed} total={diff.changed} detail />
  </div>
);
