import assert from 'node:assert/strict';
import { test } from 'node:test';
import { faultManagerOrder } from '../src/watch';

test('fault manager order: deterministic per host, and removing an instance only moves the hosts it was home for', () => {
  const fms = ['127.0.0.1:7201', '127.0.0.1:7202', '127.0.0.1:7203'];
  const hosts = Array.from({ length: 200 }, (_, i) => `host-${i}`);
  const home = new Map(hosts.map((h) => [h, faultManagerOrder(h, fms)[0]!]));
  for (const h of hosts) assert.deepEqual(faultManagerOrder(h, [...fms].reverse()), faultManagerOrder(h, fms), 'order does not depend on the list order');
  const counts = fms.map((f) => [...home.values()].filter((x) => x === f).length);
  assert.ok(Math.min(...counts) > 30, `hosts spread over the instances: ${counts}`);
  const without = fms.filter((f) => f !== fms[1]);
  for (const h of hosts) {
    const next = faultManagerOrder(h, without)[0];
    if (home.get(h) !== fms[1]) assert.equal(next, home.get(h), `${h} keeps its home when another instance goes`);
    else assert.equal(next, faultManagerOrder(h, fms)[1], `${h} moves to its second choice`);
  }
});
