// What every console page module receives, and the shape of a console route.
import type { Config } from '../appliance/config.ts';
import type { DB } from '../appliance/db.ts';
import type { Logger } from '../appliance/log.ts';
import type { LoginPolicy, SessionPolicy } from '../appliance/users.ts';
import type { LookupEngine } from '../lookup/engine.ts';
import type { SightingsWriter } from '../lookup/sightings.ts';
import type { Access, Ctx } from './guard.ts';
import type { UploadStore } from './uploads.ts';

export interface UiContext {
  cfg: Config;
  db: DB;
  engine: LookupEngine;
  log: Logger;
  sessionPolicy: SessionPolicy;
  loginPolicy: LoginPolicy;
  /** Largest package accepted through the browser (bigger ones: `outpost import` on the host). */
  maxUploadBytes: number;
  uploads: UploadStore;
  /** Hit log writer (null when the console runs without one, e.g. in route-table tests). */
  sightings: SightingsWriter | null;
}

export interface RouteDef {
  method: 'GET' | 'POST';
  path: string;
  access: Access;
  /** Body cap for this route when it is larger than an ordinary form's. */
  maxBody?: number;
  handler: (c: Ctx) => Response | Promise<Response>;
}

/** Statuses a console page may answer with (a narrow type keeps c.html's status parameter happy). */
export type PageStatus = 200 | 400 | 403 | 404 | 409 | 413 | 422 | 429 | 500 | 502 | 503 | 504;
