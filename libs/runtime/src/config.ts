/**
 * Validated configuration from environment variables and command-line flags.
 *
 * A service declares its schema once with {@link defineConfig}; {@link loadConfig} reads
 * flags (highest precedence), then env vars, then defaults, and either returns a typed
 * object (types inferred from the schema) or throws a {@link ConfigError} listing every
 * problem at once — with the env var / flag name and the expected form — so an operator
 * fixes the whole config in one round.
 *
 * @example
 * const schema = defineConfig({
 *   listenAddress: { type: 'string', env: 'UNDERSTUDY_LISTEN', flag: 'listen', default: '127.0.0.1:7000', description: 'gRPC listen address' },
 *   heartbeatIntervalMs: { type: 'ms', env: 'UNDERSTUDY_HEARTBEAT_INTERVAL', flag: 'heartbeat-interval', default: 200, min: 10, description: 'heartbeat period' },
 *   mode: { type: 'enum', values: ['redis', 'embedded'], env: 'UNDERSTUDY_STORE', default: 'embedded', description: 'store adapter' },
 * });
 * const config = loadConfig(schema); // { listenAddress: string; heartbeatIntervalMs: number; mode: 'redis' | 'embedded' }
 */
import { parseArgs } from 'node:util';

interface FieldBase {
  /** Environment variable that sets it (e.g. `UNDERSTUDY_LISTEN`). */
  readonly env?: string;
  /** Long flag without dashes (e.g. `listen` for `--listen`). */
  readonly flag?: string;
  /** One line for `--help` and error messages. */
  readonly description: string;
  /** When true and there is no default, a missing value gives `undefined` instead of an error. */
  readonly optional?: boolean;
}

/**
 * A free string. An empty value (`--flag=`) is rejected unless `allowEmpty` or the default
 * itself is `''` (the usual way to say "unset", e.g. no Redis URL).
 */
export interface StringField extends FieldBase {
  readonly type: 'string';
  readonly default?: string;
  /** @default false */
  readonly allowEmpty?: boolean;
}

/** A decimal integer, within `[min, max]` when given. */
export interface IntField extends FieldBase {
  readonly type: 'int';
  readonly default?: number;
  readonly min?: number;
  readonly max?: number;
}

/**
 * A duration in milliseconds: `250`, `250ms`, `2s`, `1.5m`, `1h` (a bare number is ms).
 * `min` / `max` / `default` are in ms.
 */
export interface MsField extends FieldBase {
  readonly type: 'ms';
  readonly default?: number;
  readonly min?: number;
  readonly max?: number;
}

/**
 * A boolean: env accepts `true/false/1/0/yes/no/on/off`; the flag is `--name` (true) or
 * `--no-name` (false).
 */
export interface BoolField extends FieldBase {
  readonly type: 'bool';
  readonly default?: boolean;
}

/** One of a fixed set of strings. */
export interface EnumField<V extends string = string> extends FieldBase {
  readonly type: 'enum';
  readonly values: readonly V[];
  readonly default?: NoInfer<V>;
}

/** Any field of a schema. */
export type ConfigField = StringField | IntField | MsField | BoolField | EnumField;

/** A config schema: field name (with units last, e.g. `heartbeatIntervalMs`) → field. */
export type ConfigSchema = Readonly<Record<string, ConfigField>>;

type BaseValue<F extends ConfigField> = F extends EnumField<infer V>
  ? V
  : F extends BoolField
    ? boolean
    : F extends IntField | MsField
      ? number
      : string;

/** The value type of one field: `| undefined` only for optional fields without a default. */
export type FieldValue<F extends ConfigField> = F extends { default: unknown }
  ? BaseValue<F>
  : F extends { optional: true }
    ? BaseValue<F> | undefined
    : BaseValue<F>;

/** The typed config object a schema produces. */
export type ConfigOf<S extends ConfigSchema> = { readonly [K in keyof S]: FieldValue<S[K]> };

/** Thrown by {@link loadConfig} (all problems) and {@link defineConfig} (schema mistakes). */
export class ConfigError extends Error {
  /** One line per problem, each naming the env var / flag and the expected form. */
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super(`invalid configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

const ENV_NAME = /^[A-Z][A-Z0-9_]*$/;
const FLAG_NAME = /^[a-z][a-z0-9-]*$/;

function sources(f: ConfigField): string {
  const parts: string[] = [];
  if (f.env) parts.push(f.env);
  if (f.flag) parts.push(f.type === 'bool' ? `--${f.flag}/--no-${f.flag}` : `--${f.flag}`);
  return parts.join(' / ');
}

function expected(f: ConfigField): string {
  switch (f.type) {
    case 'string':
      return 'a non-empty string';
    case 'bool':
      return 'a boolean (true/false, 1/0, yes/no, on/off)';
    case 'enum':
      return `one of ${f.values.map((v) => `'${v}'`).join(', ')}`;
    case 'int':
    case 'ms': {
      const what = f.type === 'int' ? 'an integer' : "a duration (e.g. 250, 250ms, 2s, 1m; bare numbers are ms)";
      const unit = f.type === 'ms' ? ' ms' : '';
      if (f.min !== undefined && f.max !== undefined) return `${what} between ${f.min} and ${f.max}${unit}`;
      if (f.min !== undefined) return `${what} >= ${f.min}${unit}`;
      if (f.max !== undefined) return `${what} <= ${f.max}${unit}`;
      return what;
    }
  }
}

const MS_PER_UNIT: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parse one raw string; undefined when it is not of the field's form. */
function parseValue(f: ConfigField, raw: string): string | number | boolean | undefined {
  const text = raw.trim();
  switch (f.type) {
    case 'string':
      return raw === '' && !f.allowEmpty && f.default !== '' ? undefined : raw;
    case 'enum':
      return (f.values as readonly string[]).includes(text) ? text : undefined;
    case 'bool': {
      const lower = text.toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(lower)) return true;
      if (['false', '0', 'no', 'off'].includes(lower)) return false;
      return undefined;
    }
    case 'int': {
      if (!/^[+-]?\d+$/.test(text)) return undefined;
      const n = Number(text);
      return Number.isSafeInteger(n) && inRange(f, n) ? n : undefined;
    }
    case 'ms': {
      const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(text);
      if (!m) return undefined;
      const n = Math.round(Number(m[1]) * MS_PER_UNIT[m[2] ?? 'ms']!);
      return Number.isSafeInteger(n) && inRange(f, n) ? n : undefined;
    }
  }
}

function inRange(f: IntField | MsField, n: number): boolean {
  return (f.min === undefined || n >= f.min) && (f.max === undefined || n <= f.max);
}

/** Check a default against the field's own rules (returns a problem or null). */
function checkDefault(name: string, f: ConfigField): string | null {
  if (f.default === undefined) return null;
  const d = f.default;
  switch (f.type) {
    case 'string':
      // An empty default is a deliberate "not set" (e.g. no Redis URL): allowed.
      return typeof d === 'string' ? null : `${name}: default must be a string`;
    case 'bool':
      return typeof d === 'boolean' ? null : `${name}: default must be a boolean`;
    case 'enum':
      return typeof d === 'string' && (f.values as readonly string[]).includes(d) ? null : `${name}: default must be ${expected(f)}`;
    case 'int':
    case 'ms':
      return typeof d === 'number' && Number.isSafeInteger(d) && inRange(f, d) ? null : `${name}: default ${String(d)} must be ${f.type === 'ms' ? 'an integer number of ms' : 'an integer'} within [${f.min ?? '-inf'}, ${f.max ?? 'inf'}]`;
  }
}

/**
 * Declare a schema. Checks the schema itself (names, defaults within their own bounds,
 * no duplicate env vars or flags) and returns it unchanged, with literal types kept so
 * {@link loadConfig} can infer the config type.
 */
export function defineConfig<const S extends ConfigSchema>(schema: S): S {
  const problems: string[] = [];
  const seenEnv = new Map<string, string>();
  const seenFlag = new Map<string, string>();
  for (const [name, f] of Object.entries(schema)) {
    if (!f.env && !f.flag && f.default === undefined && !f.optional) problems.push(`${name}: has no env, no flag and no default, so it can never be set`);
    if (f.env !== undefined) {
      if (!ENV_NAME.test(f.env)) problems.push(`${name}: env '${f.env}' must be UPPER_SNAKE_CASE`);
      if (seenEnv.has(f.env)) problems.push(`${name}: env '${f.env}' is also used by ${seenEnv.get(f.env)}`);
      seenEnv.set(f.env, name);
    }
    if (f.flag !== undefined) {
      if (!FLAG_NAME.test(f.flag) || f.flag.startsWith('no-')) problems.push(`${name}: flag '${f.flag}' must be kebab-case without dashes in front and must not start with 'no-'`);
      const names = f.type === 'bool' ? [f.flag, `no-${f.flag}`] : [f.flag];
      for (const n of names) {
        if (seenFlag.has(n)) problems.push(`${name}: flag '--${n}' is also used by ${seenFlag.get(n)}`);
        seenFlag.set(n, name);
      }
    }
    if (f.type === 'enum' && f.values.length === 0) problems.push(`${name}: enum needs at least one value`);
    if ((f.type === 'int' || f.type === 'ms') && f.min !== undefined && f.max !== undefined && f.min > f.max) problems.push(`${name}: min ${f.min} > max ${f.max}`);
    const d = checkDefault(name, f);
    if (d) problems.push(d);
  }
  if (problems.length > 0) throw new ConfigError(problems.map((p) => `schema: ${p}`));
  return schema;
}

/** Where {@link loadConfig} reads from. */
export interface LoadConfigSources {
  /**
   * Environment variables.
   * @default process.env
   */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /**
   * Command-line arguments (without the node binary and script path).
   * @default process.argv.slice(2)
   */
  readonly argv?: readonly string[];
}

/**
 * Read and validate a config: flag > env > default. Throws {@link ConfigError} listing every
 * problem (unknown flags, positional arguments, missing values, malformed values).
 */
export function loadConfig<S extends ConfigSchema>(schema: S, sources_: LoadConfigSources = {}): ConfigOf<S> {
  const env = sources_.env ?? process.env;
  const argv = [...(sources_.argv ?? process.argv.slice(2))];
  const problems: string[] = [];

  // Every flag is parsed as a string (bools as boolean pairs) so that we validate the
  // values ourselves and can report all problems instead of parseArgs' first one.
  const options: Record<string, { type: 'string' | 'boolean' }> = {};
  const flagOwner = new Map<string, string>();
  for (const [name, f] of Object.entries(schema)) {
    if (!f.flag) continue;
    if (f.type === 'bool') {
      options[f.flag] = { type: 'boolean' };
      options[`no-${f.flag}`] = { type: 'boolean' };
      flagOwner.set(`no-${f.flag}`, name);
    } else {
      options[f.flag] = { type: 'string' };
    }
    flagOwner.set(f.flag, name);
  }
  // parseArgs in non-strict mode would take `--listen --verbose` as listen='--verbose' and
  // hide the next flag; catch a string flag with no value here and drop it.
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      args.push(...argv.slice(i));
      break;
    }
    const name = /^--([^=]+)$/.exec(a)?.[1];
    const field = name !== undefined && options[name]?.type === 'string' ? schema[flagOwner.get(name)!] : undefined;
    const next = argv[i + 1];
    if (field && (next === undefined || next.startsWith('--'))) {
      problems.push(`--${name}: missing value; expected ${expected(field)} (${field.description})`);
      continue;
    }
    args.push(a);
  }
  const { values, positionals } = parseArgs({ args, options, strict: false, allowPositionals: true });
  for (const p of positionals) problems.push(`unexpected argument '${p}'`);
  for (const key of Object.keys(values)) {
    if (!flagOwner.has(key)) problems.push(`unknown flag '--${key}'`);
  }

  const out: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(schema)) {
    let raw: string | undefined;
    let from = '';
    if (f.flag && f.type === 'bool') {
      const yes = values[f.flag];
      const no = values[`no-${f.flag}`];
      if (yes !== undefined && no !== undefined) {
        problems.push(`--${f.flag} and --no-${f.flag} both given (${f.description})`);
        continue;
      }
      if (typeof yes === 'string' || typeof no === 'string') {
        problems.push(`--${typeof yes === 'string' ? f.flag : `no-${f.flag}`} takes no value; use --${f.flag} or --no-${f.flag} (${f.description})`);
        continue;
      }
      if (yes !== undefined) [raw, from] = ['true', `--${f.flag}`];
      else if (no !== undefined) [raw, from] = ['false', `--no-${f.flag}`];
    } else if (f.flag && values[f.flag] !== undefined) {
      const v = values[f.flag];
      if (typeof v !== 'string') {
        // strict:false turns `--flag` without a value into `true`.
        problems.push(`--${f.flag}: missing value; expected ${expected(f)} (${f.description})`);
        continue;
      }
      [raw, from] = [v, `--${f.flag}`];
    }
    // An empty env var counts as unset: compose files and shells often write `FOO=`.
    if (raw === undefined && f.env && env[f.env] !== undefined && env[f.env] !== '') [raw, from] = [env[f.env]!, f.env];

    if (raw === undefined) {
      if (f.default !== undefined) out[name] = f.default;
      else if (f.optional) out[name] = undefined;
      else problems.push(`${sources(f) || name}: required, expected ${expected(f)} (${f.description})`);
      continue;
    }
    const parsed = parseValue(f, raw);
    if (parsed === undefined) problems.push(`${from}: expected ${expected(f)}, got '${raw}' (${f.description})`);
    else out[name] = parsed;
  }

  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(out) as ConfigOf<S>;
}

/** Usage text for `--help`: one line per field with its env var, flag, default and form. */
export function configHelp(schema: ConfigSchema): string {
  return Object.entries(schema)
    .map(([name, f]) => {
      const def = f.default === undefined ? (f.optional ? 'optional' : 'required') : `default ${JSON.stringify(f.default)}`;
      return `  ${sources(f) || name}\n      ${f.description}; ${expected(f)}; ${def}`;
    })
    .join('\n');
}
