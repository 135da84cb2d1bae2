// Bookkeeping shared by the source parsers: every line or record a parser looks at is counted
// exactly once (emitted, skipped or malformed), so a provider can reconcile a report with the file.
import type { SourceReport } from '../../appliance/types.ts';

/** Samples kept per file: enough to show a provider what was refused without bloating the manifest. */
export const MAX_SAMPLES = 20;
const MAX_SAMPLE_TEXT = 200;

export function newReport(file: string, format = ''): SourceReport {
  return { file, format, lines: 0, accepted: 0, malformed: 0, duplicates: 0, skipped: 0, samples: [] };
}

/** Counts one refused line/record and keeps it as a sample while there is room. */
export function addMalformed(report: SourceReport, line: number, text: string, error: string): void {
  report.malformed++;
  if (report.samples.length < MAX_SAMPLES) {
    report.samples.push({ line, text: text.length > MAX_SAMPLE_TEXT ? text.slice(0, MAX_SAMPLE_TEXT) : text, error });
  }
}

/** Counts one line/record that is deliberately not an indicator (comment, blank, header, context-only attribute). */
export function addSkipped(report: SourceReport, n = 1): void {
  report.skipped = (report.skipped ?? 0) + n;
}

export function addNote(report: SourceReport, note: string): void {
  (report.notes ??= []).push(note);
}
