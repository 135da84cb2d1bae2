// Plain list files (one value per line), streamed line by line. One parser covers the dialects in
// real use, recognised per line so mixed files work:
//  - `#` comments and blank lines: skipped (counted). A comment directly followed by entries (no blank
//    line between) labels that block: its text becomes ctx.description of the block's entries, the way
//    LOKI reads c2-iocs.txt ("# Sofacy report Dec 2015 https://…" above a list of C2s).
//  - inline comment `value # text` (maltrail mass_scanner_cidr): text → ctx.description.
//  - `value<TAB>count` (IPsum: count = number of blacklists listing the IP): count → ctx.blacklists and
//    a confidence of min(95, 40 + 10·count), so 1 list → 50, 2 → 60, 3 → 70 (the malicious threshold;
//    IPsum's own advice is to block from level 3), capped below certainty because lists copy each other.
//  - LOKI `value;rest` (signature-base): a numeric rest 0–100 is LOKI/THOR's C2 score (`IP;65` in
//    c2-iocs.txt; LOKI's parser splits on `;` and THOR Lite uses row[1] as the score) → confidence; any
//    other rest is a comment (hash-iocs `HASH;COMMENT`) → ctx.description.
//  - Maltrail trails (copyright header names Maltrail, or `# Aliases:`/`# Reference:` lines): the file's
//    base name is the malware family (ctx.family and a tag) when the file sits in a `malware/` folder or
//    declares aliases; `# Aliases:` → ctx.aliases; each block's `# Reference:` lines → ctx.references.
//    Comments inside trails are often commented-out entries, so they never label blocks there.
//  - A value starting with `/` is a bare URL path (maltrail HTTP-path trail): malformed, it matches
//    nothing on its own. Port forms (`ip:port`) and defanged values are left to normalize().
//  - `.md5` / `.sha1` / `.sha256` files (ESET samples.*) hint their hash type, so a stray value of
//    another kind is refused instead of silently re-typed.
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { IndicatorType, SourceReport } from '../../appliance/types.ts';
import type { RawEntry } from './index.ts';
import { addMalformed, addSkipped } from './report.ts';

const EXT_HINTS: Record<string, IndicatorType> = { '.md5': 'md5', '.sha1': 'sha1', '.sha256': 'sha256' };

/** IPsum count → confidence (see the header). */
export function confidenceFromListCount(count: number): number {
  return Math.min(95, 40 + 10 * count);
}

interface PlainState {
  maltrail: boolean;
  family?: string;
  aliases?: string[];
  references: string[];
  /** References belong to the block that follows them; a new Reference after entries starts a new block. */
  entrySinceReference: boolean;
  pendingComment?: string;
  section?: string;
}

export async function* readPlain(file: string, report: SourceReport): AsyncGenerator<RawEntry> {
  const hint = EXT_HINTS[path.extname(file).toLowerCase()];
  const base = path.basename(file).replace(/\.[^.]*$/, '');
  const inMalwareDir = path.basename(path.dirname(file)).toLowerCase() === 'malware';
  const st: PlainState = { maltrail: false, references: [], entrySinceReference: false };
  const rl = readline.createInterface({ input: fs.createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  let lineNo = 0;
  for await (const rawLine of rl) {
    lineNo++;
    report.lines++;
    const line = (lineNo === 1 ? rawLine.replace(/^\uFEFF/, '') : rawLine).trim();
    if (!line) {
      addSkipped(report);
      st.pendingComment = undefined;
      st.section = undefined;
      continue;
    }
    if (line.startsWith('#')) {
      addSkipped(report);
      readComment(line, lineNo, st);
      continue;
    }
    const entry = parseEntry(line, lineNo, report, st, hint);
    if (!entry) continue;
    if (st.maltrail && (inMalwareDir || st.aliases) && !st.family) st.family = base.toLowerCase();
    decorate(entry, st);
    yield entry;
  }
}

function readComment(line: string, lineNo: number, st: PlainState): void {
  const text = line.replace(/^#+\s*/, '').trim();
  if (lineNo <= 3 && /maltrail/i.test(text)) st.maltrail = true;
  const alias = /^Aliases:\s*(.*)$/i.exec(text);
  if (alias) {
    st.maltrail = true;
    st.aliases = [...new Set(alias[1].split(',').map((a) => a.trim()).filter(Boolean))];
    st.pendingComment = undefined;
    return;
  }
  const ref = /^Reference:\s*(\S.*)$/i.exec(text);
  if (ref) {
    st.maltrail = true;
    if (st.entrySinceReference) {
      st.references = [];
      st.entrySinceReference = false;
    }
    st.references.push(ref[1].trim());
    st.pendingComment = undefined;
    return;
  }
  st.pendingComment = text;
}

/** Splits one non-comment line into value and context; returns undefined when the line was refused. */
function parseEntry(line: string, lineNo: number, report: SourceReport, st: PlainState, hint?: IndicatorType): RawEntry | undefined {
  let value = line;
  const ctx: NonNullable<RawEntry['ctx']> = {};
  // Inline comment: `#` after whitespace, so a URL fragment (`/x#y`) is not cut.
  const hash = value.search(/\s#/);
  if (hash > 0) {
    const comment = value.slice(hash).replace(/^\s*#+\s*/, '').trim();
    if (comment) ctx.description = comment;
    value = value.slice(0, hash).trim();
  }
  const tab = value.split('\t');
  if (tab.length === 2 && /^\d{1,9}$/.test(tab[1].trim())) {
    const count = Number(tab[1].trim());
    value = tab[0].trim();
    ctx.blacklists = count;
    ctx.confidence = confidenceFromListCount(count);
  }
  const semi = value.indexOf(';');
  // LOKI `value;rest`; a `/` before the `;` means a URL whose path contains `;`, which stays whole.
  if (semi > 0 && !value.slice(0, semi).includes('/')) {
    const rest = value.slice(semi + 1).trim();
    value = value.slice(0, semi).trim();
    if (/^\d{1,3}$/.test(rest) && Number(rest) <= 100) {
      ctx.score = Number(rest);
      ctx.confidence = Number(rest);
    } else if (rest) {
      ctx.description = rest;
    }
  }
  if (value.startsWith('/')) {
    addMalformed(report, lineNo, line, 'bare URL path without host (an HTTP-path trail, not a matchable indicator)');
    return undefined;
  }
  if (!value) {
    addMalformed(report, lineNo, line, 'no value before the comment');
    return undefined;
  }
  if (st.pendingComment !== undefined && !st.maltrail) st.section = st.pendingComment || undefined;
  st.pendingComment = undefined;
  if (!ctx.description && st.section) ctx.description = st.section;
  return { raw: value, hint, line: lineNo, ctx };
}

function decorate(entry: RawEntry, st: PlainState): void {
  const ctx = (entry.ctx ??= {});
  if (st.family) {
    ctx.family = st.family;
    ctx.tags = [st.family];
  }
  if (st.aliases?.length) ctx.aliases = st.aliases;
  if (st.maltrail && st.references.length) {
    ctx.references = st.references;
    st.entrySinceReference = true;
  }
}
