import type { ContainerInfo, Finding, RunwatchEvent } from '../events/types.js';

/** What this host ran before under an image tag (see image-history.ts). */
export interface ImageSighting {
  imageId: string;
  digest?: string;
  /** ISO time this image was first seen under the tag. */
  since: string;
}

/** What the engine knows besides the event itself; gathered by the pipeline, never fetched by the engine. */
export interface DecisionContext {
  container?: ContainerInfo;
  /**
   * Image and posture findings were already produced for this container in this agent run (at its
   * create, or an earlier start); set by the stateful RulesDecider so restarts do not repeat them.
   */
  containerAssessed?: boolean;
  /** The image the container's tag ran before on this host, when it was started by tag. */
  previousImage?: ImageSighting;
}

/**
 * The seam between the pipeline and the rules: given an event and its context, which findings follow.
 * Implementations are pure and never throw.
 */
export interface Decider {
  decide(ev: RunwatchEvent, ctx: DecisionContext): Finding[];
}
