// pino logger with redaction: tokens, passwords, keys and cookies never reach a log line.
import pino from 'pino';

export const REDACT_PATHS = [
  'token', '*.token', 'password', '*.password', 'secret', '*.secret',
  'privateKey', '*.privateKey', 'authorization', '*.authorization',
  'headers.authorization', 'req.headers.authorization', 'req.headers.cookie', 'headers.cookie', 'cookie', '*.cookie',
];

export type Logger = pino.Logger;

export function createLogger(level = 'info', destination?: pino.DestinationStream): Logger {
  return pino(
    { level, base: { app: 'outpost' }, redact: { paths: REDACT_PATHS, censor: '[redacted]' } },
    destination ?? pino.destination(2),
  );
}
