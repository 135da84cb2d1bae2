// `?fields=` on the lookup API: trims result objects to the named top-level fields for callers that only
// want e.g. the verdict (`fields=verdict,confidence`). Names are checked, so a typo is an E_INPUT error
// rather than a silently empty object.
import { OutpostError } from '../appliance/errors.ts';
import type { LookupResult } from '../appliance/types.ts';

/** Top-level fields a lookup result may carry (CONTRACT.md plus the documented extensions). */
export const RESULT_FIELDS = [
  'value', 'type', 'normalized', 'error', 'verdict', 'confidence', 'matches', 'rule', 'reasons', 'actors', 'families', 'generation', 'data_age_s',
  'stale', 'stale_feeds',
] as const;

/**
 * The fail-closed flags (appliance/freshness.ts): kept whatever `fields` names, so a caller that asked for
 * the verdict alone still learns that it is `unknown` because a stale feed's matches are withheld.
 */
const ALWAYS_KEPT = ['stale', 'stale_feeds'];

/** Parses a `fields` query value; undefined/empty → undefined (whole results). Throws E_INPUT for an unknown name. */
export function parseFields(raw: string | undefined): string[] | undefined {
  if (raw === undefined || raw.trim() === '') return undefined;
  const names = [...new Set(raw.split(',').map((s) => s.trim()).filter(Boolean))];
  const bad = names.filter((n) => !(RESULT_FIELDS as readonly string[]).includes(n));
  if (bad.length) throw new OutpostError('E_INPUT', `unknown field(s) ${bad.map((b) => JSON.stringify(b.slice(0, 40))).join(', ')}; fields are: ${RESULT_FIELDS.join(', ')}`);
  return names;
}

/** The result with only `fields` kept (in the result's own key order); no fields → the result itself. */
export function pickFields(result: LookupResult, fields: string[] | undefined): Partial<LookupResult> {
  if (!fields) return result;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(result)) if (fields.includes(k) || ALWAYS_KEPT.includes(k)) out[k] = v;
  return out as Partial<LookupResult>;
}
