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
