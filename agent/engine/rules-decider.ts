import type { Finding, RunwatchEvent } from '../events/types.js';
import { silentLogger } from '../log.js';
import { decide } from './decide.js';
import type { DecisionContext, Decider, ImageSighting } from './engine.js';
import { ImageHistory } from './image-history.js';
import { parseImageRef } from './image-ref.js';
import type { Ruleset } from './ruleset.js';

/** What the decider remembers across events and rule reloads. */
export interface DecisionState {
  history: ImageHistory;
  /** Containers whose image and posture were assessed in this agent run (insertion-ordered, bounded). */
  assessed: Set<string>;
}

const MAX_ASSESSED = 100_000;

export function newDecisionState(history = new ImageHistory({ log: silentLogger })): DecisionState {
  return { history, assessed: new Set() };
}

/**
 * The Decider the agent runs: the pure decide() over one immutable ruleset, plus the two memories
 * decide() must not hold itself: which containers were already assessed (so a create and its start,
 * or a restart, do not repeat posture findings) and which image each tag ran before (image.digest_changed).
 * A hot reload makes a new RulesDecider over the same state with withRuleset().
 */
export class RulesDecider implements Decider {
  constructor(
    readonly ruleset: Ruleset,
    private readonly state: DecisionState = newDecisionState(),
  ) {}

  withRuleset(ruleset: Ruleset): RulesDecider {
    return new RulesDecider(ruleset, this.state);
  }

  decide(ev: RunwatchEvent, ctx: DecisionContext): Finding[] {
    if (ev.kind !== 'container') return decide(this.ruleset, ev, ctx);
    const { assessed, history } = this.state;
    if (ev.action === 'destroy') {
      assessed.delete(ev.containerId);
      return decide(this.ruleset, ev, ctx);
    }
    const info = ev.info;
    if ((ev.action !== 'create' && ev.action !== 'start') || !info) return decide(this.ruleset, ev, ctx);
    if (assessed.has(info.id)) return decide(this.ruleset, ev, { ...ctx, containerAssessed: true });
    const ref = parseImageRef(info.image);
    const byTag = !ref.digest && !ref.byId;
    const previousImage: ImageSighting | undefined = byTag ? history.get(ref.normalised) : undefined;
    const findings = decide(this.ruleset, ev, { ...ctx, containerAssessed: false, previousImage });
    assessed.add(info.id);
    if (assessed.size > MAX_ASSESSED) assessed.delete(assessed.values().next().value as string);
    if (byTag) history.record(ref.normalised, info.imageId, info.imageDigest, ev.ts);
    return findings;
  }
}
