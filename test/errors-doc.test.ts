import fs from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { ERRORS } from '../appliance/errors.ts';
import { ROOT } from './helpers.ts';

it('docs/errors.md lists every code of the catalog with its status and exit code', () => {
  const doc = fs.readFileSync(path.join(ROOT, 'docs/errors.md'), 'utf8');
  for (const [code, e] of Object.entries(ERRORS)) {
    expect(doc).toContain(`| \`${code}\` | ${e.status} | ${e.exit} |`);
  }
});
