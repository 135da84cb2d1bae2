// MISP event JSON: `{"Event":{…}}`, `{"response":[{"Event":…}, …]}` (REST search) or a bare array of
// either. Attributes are read from Event.Attribute and Event.Object[].Attribute.
// Decisions:
//  - Indicator types: ip-src/ip-dst (and `|port`), domain/hostname (and `hostname|port`), `domain|ip`
//    (two values), url, md5/sha1/sha256 (and `filename|<hash>`), email/email-src/email-dst/email-reply-to.
//    Everything else (text, filename, port, datetime, imphash, authentihash, sha512, link, …) is context
//    or a type we cannot store: skipped, counted.
//  - `to_ids: false` means the producer says "not for automated detection". ESET publishes its C2 IPs
//    that way, so dropping them would lose real indicators; they are kept with confidence 40 (below the
//    malicious threshold of 70, so they can only make a lookup "suspicious") and ctx.to_ids = false.
//  - Attributes of `victim` / `corporate-asset` objects describe the victim, not the attacker (Mozi's
//    infected corporate IP): skipped. Deleted attributes are skipped.
//  - Context: event info/uuid, attribute category and comment (else the object's), object name, the
//    sibling `filename` of a file object, AV detections of referenced av-signature objects, first/last
//    seen (attribute, else object). Tags: attribute and event tags except galaxy tags; malware-like
//    galaxy clusters become ctx.family.
// Records: each value (a composite gives two) and each skipped attribute is one "line"; the sample line
// number is the attribute's 1-based position in reading order.
import type { IndicatorType, SourceReport } from '../../appliance/types.ts';
import type { RawEntry } from './index.ts';
import { addMalformed, addSkipped } from './report.ts';
import { attackIdsFrom } from '../context.ts';

/** Confidence for attributes flagged `to_ids: false` (see the header). */
export const NOT_FOR_IDS_CONFIDENCE = 40;

type Obj = Record<string, unknown>;

const SIMPLE: Record<string, IndicatorType> = {
  'ip-src': 'ipv4', 'ip-dst': 'ipv4', domain: 'domain', hostname: 'domain', url: 'url',
  md5: 'md5', sha1: 'sha1', sha256: 'sha256',
  email: 'email', 'email-src': 'email', 'email-dst': 'email', 'email-reply-to': 'email',
};
const VICTIM_OBJECTS = new Set(['victim', 'corporate-asset']);
/** Galaxy types whose cluster names are malware/tool families worth carrying as ctx.family. */
const FAMILY_GALAXY = /malware|malpedia|tool|ransomware|botnet|rat|backdoor|stealer|banker/i;

const s = (v: unknown): string | undefined => (typeof v === 'string' && v.trim() ? v.trim() : undefined);
const arr = (v: unknown): Obj[] => (Array.isArray(v) ? (v.filter((x) => x && typeof x === 'object') as Obj[]) : []);
const tagNames = (v: unknown): string[] => arr(v).map((t) => s(t.name)).filter((n): n is string => !!n);

/** The events in a MISP JSON document, or undefined when it is not one. */
export function mispEvents(doc: unknown): Obj[] | undefined {
  const one = (d: unknown): Obj | undefined => (d && typeof d === 'object' && (d as Obj).Event && typeof (d as Obj).Event === 'object' ? ((d as Obj).Event as Obj) : undefined);
  if (one(doc)) return [one(doc)!];
  const list = doc && typeof doc === 'object' && Array.isArray((doc as Obj).response) ? ((doc as Obj).response as unknown[]) : Array.isArray(doc) ? doc : undefined;
  if (!list || !list.length) return undefined;
  const events = list.map(one);
  return events.every(Boolean) ? (events as Obj[]) : undefined;
}

interface Split {
  parts: { raw: string; hint: IndicatorType; port?: number; filename?: string }[];
}

/** Maps one attribute to the values it carries; undefined = not an indicator type; throws on a broken composite. */
function splitAttribute(type: string, value: string): Split | undefined {
  if (SIMPLE[type]) return { parts: [{ raw: value, hint: SIMPLE[type] }] };
  const bar = value.indexOf('|');
  const pair = () => {
    if (bar < 0) throw new Error(`composite type ${type} without "|"`);
    return [value.slice(0, bar), value.slice(bar + 1)] as const;
  };
  if (type === 'ip-src|port' || type === 'ip-dst|port' || type === 'hostname|port') {
    const [host, port] = pair();
    const p = Number(port);
    if (!/^\d{1,5}$/.test(port) || p < 1 || p > 65535) throw new Error(`bad port "${port}"`);
    return { parts: [{ raw: host, hint: type === 'hostname|port' ? 'domain' : 'ipv4', port: p }] };
  }
  if (type === 'domain|ip') {
    const [d, ip] = pair();
    return { parts: [{ raw: d, hint: 'domain' }, { raw: ip, hint: 'ipv4' }] };
  }
  const fh = /^filename\|(md5|sha1|sha256)$/.exec(type);
  if (fh) {
    const [filename, hash] = pair();
    return { parts: [{ raw: hash, hint: fh[1] as IndicatorType, filename }] };
  }
  return undefined;
}

export function* readMispEvents(events: Obj[], report: SourceReport): Generator<RawEntry> {
  let n = 0;
  for (const ev of events) {
    const eventTags = tagNames(ev.Tag).filter((t) => !t.startsWith('misp-galaxy:'));
    const families = arr(ev.Galaxy)
      .filter((g) => FAMILY_GALAXY.test(String(g.type ?? '')))
      .flatMap((g) => arr(g.GalaxyCluster).map((c) => s(c.value)).filter((v): v is string => !!v));
    const base: Obj = {};
    if (s(ev.info)) base.event = s(ev.info);
    if (s(ev.uuid)) base.event_uuid = s(ev.uuid);
    if (families.length) base.family = families.length === 1 ? families[0] : families;
    // Structured context (sync/context.ts): ATT&CK technique ids and actor names from the event's galaxies.
    const clusters = (re: RegExp) => arr(ev.Galaxy).filter((g) => re.test(String(g.type ?? ''))).flatMap((g) => arr(g.GalaxyCluster).map((c) => s(c.value)).filter((v): v is string => !!v));
    const attack = attackIdsFrom(clusters(/attack-pattern/i));
    if (attack.length) base.attack = attack;
    const actors = clusters(/threat-actor|intrusion-set/i);
    if (actors.length) base.actor = actors.length === 1 ? actors[0] : actors;

    const objects = arr(ev.Object);
    const byUuid = new Map(objects.map((o) => [String(o.uuid), o]));
    const work: { a: Obj; o?: Obj }[] = [...arr(ev.Attribute).map((a) => ({ a })), ...objects.flatMap((o) => arr(o.Attribute).map((a) => ({ a, o })))];
    for (const { a, o } of work) {
      n++;
      const type = String(a.type ?? '');
      const value = typeof a.value === 'string' ? a.value : '';
      if (a.deleted === true || (o && o.deleted === true) || (o && VICTIM_OBJECTS.has(String(o.name)))) {
        report.lines++;
        addSkipped(report);
        continue;
      }
      let split: Split | undefined;
      try {
        split = splitAttribute(type, value);
      } catch (e) {
        report.lines++;
        addMalformed(report, n, `${type}: ${value}`, `MISP attribute: ${(e as Error).message}`);
        continue;
      }
      if (!split) {
        report.lines++;
        addSkipped(report);
        continue;
      }
      const ctx: NonNullable<RawEntry['ctx']> = { ...base };
      if (s(a.category)) ctx.misp_category = s(a.category);
      const comment = s(a.comment) ?? (o ? s(o.comment) : undefined);
      if (comment) ctx.comment = comment;
      if (o) {
        ctx.object = String(o.name);
        if (s(o.uuid)) ctx.object_uuid = s(o.uuid); // links the hashes of one file object (sync/context.ts)
        const filename = arr(o.Attribute).find((x) => x.type === 'filename' && x.object_relation === 'filename');
        if (filename && s(filename.value)) ctx.filename = s(filename.value);
        const detections = arr(o.ObjectReference)
          .map((r) => byUuid.get(String(r.referenced_uuid)))
          .filter((t): t is Obj => !!t && t.name === 'av-signature')
          .flatMap((t) => arr(t.Attribute).filter((x) => x.object_relation === 'signature').map((x) => s(x.value)))
          .filter((v): v is string => !!v);
        if (detections.length) ctx.detection = [...new Set(detections)];
      }
      const fs = s(a.first_seen) ?? (o ? s(o.first_seen) : undefined);
      const ls = s(a.last_seen) ?? (o ? s(o.last_seen) : undefined);
      if (fs) ctx.first_seen = fs;
      if (ls) ctx.last_seen = ls;
      const tags = [...tagNames(a.Tag).filter((t) => !t.startsWith('misp-galaxy:')), ...eventTags];
      if (tags.length) ctx.tags = tags;
      if (a.to_ids === false) {
        ctx.to_ids = false;
        ctx.confidence = NOT_FOR_IDS_CONFIDENCE;
      }
      for (const p of split.parts) {
        report.lines++;
        const c = { ...ctx };
        if (p.port) c.port = p.port;
        if (p.filename) c.filename = p.filename;
        yield { raw: p.raw, hint: p.hint, line: n, ctx: c };
      }
    }
  }
}
