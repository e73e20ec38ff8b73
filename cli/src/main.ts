/**
 * Process entry of the `understudy` command (run by `cli/bin/understudy.js` through tsx).
 * The exit code is set, not forced, so piped output is flushed before the process ends; a
 * fallback timer (unref'd) ends it anyway should a stray handle keep the loop alive.
 */
import { runCli } from './cli';
import { ExitCode } from './errors';

// `understudy status | head -3`: a closed pipe is the reader's choice, not an error to report.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? ExitCode.OK);
  throw e;
});

runCli(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    setTimeout(() => process.exit(code), 2000).unref();
  },
  (e: unknown) => {
    // runCli never rejects; this is a last resort for a bug in it.
    process.stderr.write(`understudy: internal error: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(ExitCode.FAILURE);
  },
);
