// Structured context (sync/context.ts): TLP, vocabularies, validation, and what provider tooling fills
// from real sources — sample entries tying md5/sha1/sha256 together (ESET MISP events, signature-base),
// families from AV detections, TLP from STIX markings and --tlp, ATT&CK ids from MISP galaxies.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Indicator } from '../appliance/types.ts';
import { collectIndicators } from '../sync/collect.ts';
import {
  checkContext, contextualize, familyFromDetection, parseTlp, stixTlpResolver, stricterTlp, threatTypesFrom, tlpAllowed, type SampleContext,
} from '../sync/context.ts';
import { generateKeyPair } from '../sync/keys.ts';
import { readIndicators, stagePackage } from '../sync/package-reader.ts';
import { buildPackage } from '../sync/provider-build.ts';
import { DATA, tmpDir } from './helpers.ts';

const MISP = ['eset/moustachedbouncer/misp-moustachedbouncer.event.json', 'eset/mozi/mozi.misp-event.json'].map((f) => path.join(DATA, f));
const HASHES = new Set(['md5', 'sha1', 'sha256']);

/** The data lines of a package, read with the appliance's own staged reader. */
async function packageLines(tarPath: string, work: string): Promise<Indicator[]> {
  const staged = await stagePackage(tarPath, path.join(work, 'staging'), { maxPackageBytes: 1 << 30, maxUncompressedBytes: 1 << 30 });
  try {
    const out: Indicator[] = [];
    for (const f of staged.manifest.files) for await (const i of readIndicators(staged, f, { maxPackageBytes: 1 << 30, maxUncompressedBytes: 1 << 30 })) out.push(i);
    return out;
  } finally {
    staged.cleanup();
  }
}
const sampleOf = (i: Indicator | undefined) => i?.ctx?.sample as SampleContext | undefined;

/** File objects of a MISP event file with their hashes, file name and detections, read straight from the JSON. */
function mispFileObjects(file: string) {
  const ev = JSON.parse(fs.readFileSync(file, 'utf8')).response[0].Event;
  const byUuid = new Map<string, any>(ev.Object.map((o: any) => [o.uuid, o]));
  return ev.Object.filter((o: any) => o.name === 'file').map((o: any) => {
    const get = (rel: string) => o.Attribute.find((a: any) => a.object_relation === rel)?.value as string | undefined;
    const detections = (o.ObjectReference ?? [])
      .map((r: any) => byUuid.get(r.referenced_uuid))
      .filter((t: any) => t?.name === 'av-signature')
      .map((t: any) => t.Attribute.find((a: any) => a.object_relation === 'signature')?.value);
    return { md5: get('md5')?.toLowerCase(), sha1: get('sha1')?.toLowerCase(), sha256: get('sha256')?.toLowerCase(), filename: get('filename'), detections };
  });
}

describe('TLP', () => {
  it('parses the spellings in use and orders markings', () => {
    expect(parseTlp('TLP:AMBER+STRICT')).toBe('AMBER+STRICT');
    expect(parseTlp('tlp:amber strict')).toBe('AMBER+STRICT');
    expect(parseTlp('tlp:white')).toBe('CLEAR');
    expect(parseTlp('green')).toBe('GREEN');
    expect(parseTlp('tlp:purple')).toBeUndefined();
    expect(parseTlp(3)).toBeUndefined();
    expect(stricterTlp('GREEN', 'AMBER')).toBe('AMBER');
    expect(stricterTlp('RED', 'CLEAR')).toBe('RED');
    expect(stricterTlp(undefined, 'GREEN')).toBe('GREEN');
  });

  it('RED never leaves; AMBER only with amber; CLEAR/GREEN by default', () => {
    expect(tlpAllowed('RED', 'amber')).toBe(false);
    expect(tlpAllowed('AMBER', 'green')).toBe(false);
    expect(tlpAllowed('AMBER+STRICT', 'green')).toBe(false);
    expect(tlpAllowed('AMBER', 'amber')).toBe(true);
    expect(tlpAllowed('AMBER+STRICT', 'amber')).toBe(true);
    expect(tlpAllowed('GREEN', 'green')).toBe(true);
    expect(tlpAllowed('CLEAR', 'green')).toBe(true);
  });

  it('resolves STIX marking refs: published ids and a bundle\'s own TLP definitions, statements ignored', () => {
    const bundle = JSON.parse(fs.readFileSync(path.join(DATA, 'stix21-examples/using-marking-definitions.json'), 'utf8'));
    const resolve = stixTlpResolver(bundle.objects);
    const ind = bundle.objects.find((o: any) => o.type === 'indicator');
    expect(resolve(ind.object_marking_refs)).toBe('AMBER');
    expect(resolve(['marking-definition--d81f86b9-975b-4c0b-875e-810c5ad45a4f'])).toBeUndefined(); // a copyright statement
    expect(resolve(['marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1', 'marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da'])).toBe('RED');
    expect(resolve(undefined)).toBeUndefined();
  });
});

describe('vocabularies and validation', () => {
  it('family from AV detection names (ESET naming), generic names give none', () => {
    expect(familyFromDetection('Linux/Mozi.D')).toBe('Mozi');
    expect(familyFromDetection('Win32/Nightclub.B')).toBe('Nightclub');
    expect(familyFromDetection('WinGo/Agent.ET')).toBeUndefined();
    expect(familyFromDetection('JS/TrojanDownloader.Agent.YJJ')).toBeUndefined();
    expect(familyFromDetection('Win64/Exploit.CVE-2021-1732.A')).toBeUndefined();
  });

  it('threat types only from the fixed vocabulary', () => {
    expect(threatTypesFrom(['botnet_cc', 'apt_lazarus', 'malware_download', 'elf', 'whatever'])).toEqual(['apt', 'botnet', 'c2', 'malware']);
    expect(threatTypesFrom([undefined, 3, ''])).toEqual([]);
  });

  it('checkContext names every bad structured field and accepts a full one', () => {
    expect(checkContext({
      tlp: 'AMBER', severity: 'high', threat_types: ['c2'], attack: ['T1059.004', 'T0803'], asn: 64500, country: 'DE', resolves_to: ['192.0.2.1'],
      family: ['Mozi'], actor: 'APT28', sample: { md5: 'b8a89ec3fffab735bb689532f1d2410f', size: 10, file_name: 'x.exe' }, comment: 'free text is not checked',
    })).toEqual([]);
    const errs = checkContext({ tlp: 'PURPLE', severity: 'extreme', threat_types: ['evil'], attack: ['1059'], asn: -1, country: 'Germany', sample: { md5: 'XYZ', size: -3 } });
    expect(errs).toHaveLength(8);
    expect(checkContext([])).toEqual(['ctx must be an object']);
  });
});

describe('sample entries from real sources', () => {
  it('ESET MISP events: each file object gives one sample entry with md5, sha1 and sha256 on each of its hash indicators', async () => {
    const { indicators } = await collectIndicators(MISP, { kind: 'block' });
    const byValue = new Map(indicators.map((i) => [i.v, i]));
    const objects = MISP.flatMap(mispFileObjects).filter((o) => o.md5 && o.sha1 && o.sha256);
    expect(objects.length).toBe(50); // data/README: 50 md5, 50 sha1, 50 sha256 attributes in these events
    for (const o of objects) {
      const expected = { md5: o.md5, sha1: o.sha1, sha256: o.sha256 };
      const samples = [o.md5!, o.sha1!, o.sha256!].map((h) => sampleOf(byValue.get(h)));
      for (const s of samples) expect(s).toMatchObject(expected);
      expect(samples[1]).toEqual(samples[0]);
      expect(samples[2]).toEqual(samples[0]);
      if (o.filename) expect(samples[0]!.file_name).toBe(o.filename);
      const fams = o.detections.map(familyFromDetection).filter(Boolean);
      if (fams.length) expect(samples[0]!.family).toBe(fams[0]);
    }
    // Mozi's samples carry the family from their ESET detection and the event's ATT&CK techniques.
    const mozi = byValue.get(mispFileObjects(MISP[1])[0].md5!)!;
    expect(mozi.ctx).toMatchObject({ family: 'Mozi', sample: { family: 'Mozi' } });
    expect(mozi.ctx!.attack).toEqual(expect.arrayContaining(['T1059.004', 'T1190']));
  });

  it('signature-base LOKI hashes: consecutive md5/sha1/sha256 lines of one file become one sample, other hashes stay alone', async () => {
    const file = path.join(DATA, 'signature-base/hash-iocs.txt');
    const { indicators } = await collectIndicators([file], { kind: 'block' });
    const hashes = indicators.filter((i) => HASHES.has(i.t));
    const full = hashes.filter((i) => { const s = sampleOf(i); return s?.md5 && s.sha1 && s.sha256; });
    expect(full.length).toBeGreaterThanOrEqual(60);
    expect(full.length % 3).toBe(0);
    const byValue = new Map(indicators.map((i) => [i.v, i]));
    for (const i of full) {
      const s = sampleOf(i)!;
      for (const h of [s.md5!, s.sha1!, s.sha256!]) expect(sampleOf(byValue.get(h))).toEqual(s);
    }
    // The Bronze Union ZxShell installer, as published (lines 755-757).
    expect(sampleOf(byValue.get('b7f958f93e2f297e717cffc2fe43f2e9'))).toEqual({
      md5: 'b7f958f93e2f297e717cffc2fe43f2e9', sha1: 'fa53f09cd22b46b554762dc1a12c99dd692ec681', sha256: 'ef049339f1eb091cda335b51939f91e784e1ab1e006056d5a6bb526743b6cbc7',
    });
    // A Dark Caracal sha256 has no companions in the file: a sample with its one hash.
    expect(sampleOf(byValue.get('ce583821191345274cd954b2db7da9742c239fe413fc17dcb97ffdd7b51cb072'))).toEqual({ sha256: 'ce583821191345274cd954b2db7da9742c239fe413fc17dcb97ffdd7b51cb072' });
  });

  it('never links lines whose comments differ or that are not adjacent', async () => {
    const entries = [
      { raw: 'b7f958f93e2f297e717cffc2fe43f2e9', line: 1, ctx: { description: 'A - MD5 hash - one' } },
      { raw: 'fa53f09cd22b46b554762dc1a12c99dd692ec681', line: 2, ctx: { description: 'A - SHA1 hash - other' } },
      { raw: 'ef049339f1eb091cda335b51939f91e784e1ab1e006056d5a6bb526743b6cbc7', line: 3, ctx: { description: 'A - SHA256 hash - one' } },
      { raw: '62bcbfae5276064615d0d45b895fdff2', line: 5, ctx: { description: 'B' } },
      { raw: '9020e5010a916c6187597e9932402ed29098371c', line: 6, ctx: { description: 'B' } },
      { raw: 'c2229a463637433451a3a50ccf3c888da8202058f5022ffd2b00fc411b395b79', line: 8, ctx: { description: 'B' } },
    ];
    const out = [];
    for await (const e of contextualize(entries)) out.push(e);
    expect(out.map((e) => e.raw)).toEqual(entries.map((e) => e.raw));
    for (const e of out) expect(Object.keys(e.ctx!.sample as object)).toHaveLength(1);
  });
});

describe('provider tooling fills context', () => {
  it('Maltrail family from the file name, ip:port → port, STIX kill-chain phases, STIX TLP, --tlp default for the rest', async () => {
    const work = tmpDir('outpost-ctx-');
    try {
      const k = generateKeyPair(work, 'p');
      const files = ['maltrail/malware/emotet.txt', 'stix21-examples/apt1.json', 'stix21-examples/using-marking-definitions.json'].map((f) => path.join(DATA, f));
      const r = await buildPackage({ feed: 'ctx', keyPath: k.privatePath, outDir: work, files, tlp: 'tlp:green' });
      const lines = await packageLines(r.path, work);
      const withPort = lines.find((i) => i.t === 'ipv4' && i.ports?.length && i.ctx?.family === 'emotet');
      expect(withPort).toBeDefined();
      expect(withPort!.ctx).toMatchObject({ family: 'emotet', aliases: ['Emotet', 'Heodo', 'Geodo'], tlp: 'GREEN' });
      const apt1Net = lines.find((i) => i.v === '223.166.0.0/15')!;
      expect(apt1Net.ctx).toMatchObject({ kill_chain: ['mandiant-attack-lifecycle-model:establish-foothold'], tlp: 'GREEN' });
      expect(lines.find((i) => i.v === '10.0.0.0')!.ctx!.tlp).toBe('AMBER'); // the source's marking wins over --tlp
      for (const l of lines) expect(checkContext(l.ctx)).toEqual([]);
      await expect(buildPackage({ feed: 'ctx', keyPath: k.privatePath, outDir: work, files, tlp: 'purple' })).rejects.toMatchObject({ code: 'E_USAGE' });
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  });
});
