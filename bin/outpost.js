#!/usr/bin/env node
// Entry point: registers the TypeScript loader (tsx) and runs the CLI from source.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../appliance/cli.ts');
await main(process.argv);
