import type { ContainerInfo, Finding, RunwatchEvent } from '../events/types.js';

/** What the engine knows besides the event itself; gathered by the pipeline, never fetched by the engine. */
export interface DecisionContext {
  container?: ContainerInfo;
}

/**
 * The seam between the pipeline and the rules: given an event and its context, which findings follow.
 * Implementations are pure and never throw.
 */
export interface Decider {
  decide(ev: RunwatchEvent, ctx: DecisionContext): Finding[];
}
