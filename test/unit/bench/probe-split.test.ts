import { describe, expect, it } from 'vitest';
import { splitByProbe, type ProbedBatch } from '../../../bench/bench.js';

const batches = (count: number, nsPerItem: number, probeBefore: number, probeAfter = probeBefore): ProbedBatch[] =>
  Array.from({ length: count }, () => ({ nsPerItem, probeBefore, probeAfter }));

describe('splitByProbe', () => {
  it('rates the batches measured with the probe at full speed apart from those with it slow on both sides', () => {
    const split = splitByProbe([
      ...batches(100, 400, 2.0),
      ...batches(120, 800, 4.5),
      // The state changed during these: they count in neither figure.
      ...batches(40, 600, 2.0, 4.5),
      ...batches(40, 600, 4.5, 2.1),
    ]);
    expect(split.fullSpeed).toBe(1e9 / 400);
    expect(split.shared).toBe(1e9 / 800);
    expect(split.fullSpeedBatches).toBe(100);
    expect(split.sharedBatches).toBe(120);
    expect(split.probeSlowdown).toBeCloseTo(2.25);
    expect(split.all).toBe(1e9 / 600);
  });

  it('gives no figure for a state seen in under 5% of the batches', () => {
    const split = splitByProbe([...batches(10, 400, 2.0), ...batches(290, 800, 4.5)]);
    expect(split.fullSpeed).toBeNaN();
    expect(split.shared).toBe(1e9 / 800);
  });

  it('calls a run that never saw the core whole "full speed" at the shared speed (it can understate, not overstate)', () => {
    const split = splitByProbe(batches(300, 800, 4.5));
    expect(split.fullSpeed).toBe(1e9 / 800);
    expect(split.shared).toBeNaN();
  });
});
