// docs/api.md's route table lists exactly the /api routes of API_SCOPES (lookup/limits.ts), each with its scope.
import fs from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { API_SCOPES } from '../lookup/limits.ts';
import { ROOT } from './helpers.ts';

/** `METHOD /api/...` → scope, from the table rows of the doc's "## Routes under /api" section. */
function documentedRoutes(doc: string): Map<string, string> {
  const start = doc.indexOf('\n## Routes under /api');
  const end = doc.indexOf('\n## ', start + 1);
  const section = start < 0 ? '' : doc.slice(start, end < 0 ? undefined : end);
  const routes = new Map<string, string>();
  for (const m of section.matchAll(/^\|\s*`([A-Z]+ \/api\/[^`]*)`\s*\|\s*`?(\w+)`?\s*\|/gm)) routes.set(m[1], m[2]);
  return routes;
}

it('docs/api.md lists every /api route of API_SCOPES with its scope, and no other', () => {
  const doc = fs.readFileSync(path.join(ROOT, 'docs/api.md'), 'utf8');
  const routes = documentedRoutes(doc);
  for (const key of Object.keys(API_SCOPES)) expect(doc).toContain(`\`${key}\``);
  expect(Object.fromEntries(routes)).toEqual({ ...API_SCOPES });
});
