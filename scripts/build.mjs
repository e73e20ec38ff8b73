// Bundle runnable entry points into dist/<project>/ for deployment without tsx:
//   node scripts/build.mjs <project> <entry.ts>...
// Workspace packages (@understudy/*) and relative imports are bundled; npm packages stay
// external (required from node_modules at run time). Keeping @grpc/grpc-js external matters:
// OpenTelemetry instruments it through a require hook, which cannot see a bundled copy.
import { build } from 'esbuild';
import * as path from 'node:path';

const [project, ...entries] = process.argv.slice(2);
if (!project || entries.length === 0) {
  console.error('usage: node scripts/build.mjs <project> <entry.ts>...');
  process.exit(2);
}
const outdir = path.join('dist', project);
await build({
  entryPoints: entries,
  outdir,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: true,
  logLevel: 'warning',
  plugins: [
    {
      name: 'npm-packages-external',
      setup(b) {
        b.onResolve({ filter: /^[^./]/ }, (args) => (args.path.startsWith('@understudy/') ? undefined : { path: args.path, external: true }));
      },
    },
  ],
});
console.log(`built ${entries.length} entr${entries.length === 1 ? 'y' : 'ies'} into ${outdir}/`);
