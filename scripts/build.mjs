// Bundle runnable entry points into dist/<project>/ for deployment without tsx:
//   node scripts/build.mjs <project> <entry.ts>...
//   node scripts/build.mjs --all      every project's build target (its project.json), in one go
// dist/entries.json maps each built entry (`services/router/src/main.ts`) to its bundle
// (`dist/router/main.js`): the test harness reads it to run bundles (UNDERSTUDY_RUN_BUILT=1).
// Workspace packages (@understudy/*) and relative imports are bundled; npm packages stay
// external (required from node_modules at run time). Keeping @grpc/grpc-js external matters:
// OpenTelemetry instruments it through a require hook, which cannot see a bundled copy.
import { build } from 'esbuild';
import { readFileSync, readdirSync, existsSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

/** `[project, entries]` of every project whose nx build target runs this script. */
function allTargets() {
  const out = [];
  for (const dir of ['services', 'examples', 'cli']) {
    const roots = dir === 'cli' ? ['cli'] : readdirSync(dir).map((d) => path.join(dir, d));
    for (const root of roots) {
      const file = path.join(root, 'project.json');
      if (!existsSync(file)) continue;
      const project = JSON.parse(readFileSync(file, 'utf8'));
      const command = project.targets?.build?.options?.command;
      if (typeof command !== 'string') continue;
      const words = command.replaceAll('{projectName}', project.name).split(/\s+/);
      const at = words.indexOf('scripts/build.mjs');
      if (at < 0) throw new Error(`${file}: build command does not run scripts/build.mjs: ${command}`);
      out.push([words[at + 1], words.slice(at + 2)]);
    }
  }
  return out;
}

async function bundle(project, entries) {
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
  return entries.map((e) => [path.normalize(e), path.join(outdir, `${path.basename(e, path.extname(e))}.js`)]);
}

/** Adds `built` (entry → bundle pairs) to dist/entries.json. */
function record(built) {
  const file = path.join('dist', 'entries.json');
  const manifest = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {};
  for (const [entry, out] of built) manifest[entry] = out;
  writeFileSync(file, `${JSON.stringify(manifest, null, 2)}\n`);
}

const [first, ...rest] = process.argv.slice(2);
if (first === '--all') {
  record((await Promise.all(allTargets().map(([project, entries]) => bundle(project, entries)))).flat());
} else if (first && rest.length > 0) {
  record(await bundle(first, rest));
} else {
  console.error('usage: node scripts/build.mjs <project> <entry.ts>... | --all');
  process.exit(2);
}
