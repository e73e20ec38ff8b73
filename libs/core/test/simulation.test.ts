import { test } from 'node:test';
import { runSeed } from './sim';

const SEEDS = Number(process.env.SIM_SEEDS ?? 1000);
const STEPS = Number(process.env.SIM_STEPS ?? 120);

test(`randomized simulation: ${SEEDS} seeds x ${STEPS} steps, invariants after every step`, () => {
  let rejections = 0;
  for (let seed = 1; seed <= SEEDS; seed++) rejections += runSeed(seed, { steps: STEPS, coldCheckEvery: 17, pendingCheck: true }).rejections;
  // Sanity: the schedule must exercise rejections too, not only happy paths.
  if (rejections === 0) throw new Error('simulation produced no rejections; generator is broken');
});
