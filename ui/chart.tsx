// Server-rendered SVG bar chart: no chart library, no script, styled by classes from console.css
// (inline style attributes would need 'unsafe-inline' in the CSP).
import type { FC } from 'hono/jsx';
import { fmtInt } from './layout.tsx';

export interface Bar {
  label: string;
  value: number;
  /** CSS class suffix, e.g. "block" / "allow". */
  tone?: string;
}

export const BarChart: FC<{ bars: Bar[]; title: string }> = ({ bars, title }) => {
  if (!bars.length) return <p class="muted">No data yet.</p>;
  const rowH = 26;
  const labelW = 170;
  const valueW = 90;
  const barW = 420;
  const width = labelW + barW + valueW;
  const height = bars.length * rowH + 6;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const clip = (s: string) => (s.length > 24 ? `${s.slice(0, 23)}…` : s);
  return (
    <svg class="chart" viewBox={`0 0 ${width} ${height}`} role="img" aria-label={title} xmlns="http://www.w3.org/2000/svg">
      <title>{title}</title>
      {bars.map((b, i) => {
        const y = i * rowH + 3;
        const w = b.value > 0 ? Math.max(2, Math.round((b.value / max) * barW)) : 0;
        return (
          <g>
            <text x={labelW - 8} y={y + 16} class="chart-label" text-anchor="end">
              {clip(b.label)}
            </text>
            <rect x={labelW} y={y} width={w} height={rowH - 8} class={`chart-bar ${b.tone ? `tone-${b.tone}` : ''}`} />
            <text x={labelW + w + 6} y={y + 16} class="chart-value">
              {fmtInt(b.value)}
            </text>
          </g>
        );
      })}
    </svg>
  );
};

export interface Series {
  name: string;
  /** CSS class suffix for the bars, as for Bar.tone. */
  tone?: string;
  values: number[];
}

/** Vertical grouped bars over time: one group per label (e.g. a day), one bar per series, with a legend. */
export const TimeChart: FC<{ labels: string[]; series: Series[]; title: string }> = ({ labels, series, title }) => {
  if (!labels.length || !series.length) return <p class="muted">No data yet.</p>;
  const left = 60;
  const top = 24;
  const plotH = 140;
  const bottom = 22;
  const groupW = Math.max(24, Math.floor(900 / labels.length));
  const barW = Math.max(4, Math.floor((groupW - 6) / series.length));
  const width = left + labels.length * groupW + 10;
  const height = top + plotH + bottom;
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  // Label every day when few, else about eight labels along the axis.
  const every = Math.max(1, Math.ceil(labels.length / 8));
  return (
    <svg class="chart" viewBox={`0 0 ${width} ${height}`} role="img" aria-label={title} xmlns="http://www.w3.org/2000/svg">
      <title>{title}</title>
      {series.map((s, k) => (
        <g class="chart-legend">
          <rect x={left + k * 140} y={6} width={10} height={10} class={`chart-bar ${s.tone ? `tone-${s.tone}` : ''}`} />
          <text x={left + k * 140 + 14} y={15} class="chart-label">
            {s.name}
          </text>
        </g>
      ))}
      <text x={left - 6} y={top + 10} class="chart-value" text-anchor="end">
        {fmtInt(max)}
      </text>
      <text x={left - 6} y={top + plotH} class="chart-value" text-anchor="end">
        0
      </text>
      {labels.map((label, i) => (
        <g>
          {series.map((s, k) => {
            const v = s.values[i] ?? 0;
            const h = v > 0 ? Math.max(2, Math.round((v / max) * plotH)) : 0;
            return (
              <rect x={left + i * groupW + 3 + k * barW} y={top + plotH - h} width={barW - 1} height={h} class={`chart-bar ${s.tone ? `tone-${s.tone}` : ''}`} data-series={s.name}>
                <title>{`${label} ${s.name}: ${fmtInt(v)}`}</title>
              </rect>
            );
          })}
          {i % every === 0 ? (
            <text x={left + i * groupW + groupW / 2} y={height - 6} class="chart-value" text-anchor="middle">
              {label}
            </text>
          ) : null}
        </g>
      ))}
    </svg>
  );
};
