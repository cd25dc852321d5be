import type { HrTime } from '@opentelemetry/api';
import { SeverityNumber } from '@opentelemetry/api-logs';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableLogRecord } from '@opentelemetry/sdk-logs';
import type { RunwatchRecord, Severity } from '../../events/types.js';

/** The log attribute that makes Application Insights file a log record as a custom event of that name. */
export const CUSTOM_EVENT_ATTRIBUTE = 'microsoft.custom_event.name';

/** customEvents names, one per record kind: `customEvents | where name == "RunwatchAlert"`. */
export const EVENT_NAMES = { alert: 'RunwatchAlert', audit: 'RunwatchAudit' } as const satisfies Record<RunwatchRecord['kind'], string>;

export type FlatValue = string | number | boolean | string[];

const SEVERITY_NUMBERS: Record<Severity, SeverityNumber> = {
  info: SeverityNumber.INFO,
  low: SeverityNumber.INFO2,
  medium: SeverityNumber.WARN,
  high: SeverityNumber.ERROR,
  critical: SeverityNumber.FATAL,
};

/** Fields the envelope or the event name already carry. */
const SKIPPED = new Set(['time', 'kind']);
/** Maps whose keys are user data (container labels): one JSON property, not one property per key. */
const OPAQUE = new Set(['container.labels']);

const SCOPE = { name: 'runwatch' };

/**
 * The record's fields as dotted attribute names (`rule`, `container.id`, `process.exe`, `details.capability`),
 * so KQL reads `customDimensions["container.image"]` directly. Lists of strings stay lists (OTLP keeps them,
 * Application Insights shows them as JSON); lists of objects and label maps become one JSON string.
 */
export function flattenRecord(rec: RunwatchRecord): Record<string, FlatValue> {
  const out: Record<string, FlatValue> = {};
  const walk = (value: unknown, key: string): void => {
    if (value === undefined || value === null) return;
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') {
      out[key] = value;
    } else if (Array.isArray(value)) {
      out[key] = value.every((v) => typeof v !== 'object' || v === null) ? value.map((v) => String(v)) : JSON.stringify(value);
    } else if (typeof value === 'object') {
      if (OPAQUE.has(key)) {
        out[key] = JSON.stringify(value);
        return;
      }
      for (const [k, v] of Object.entries(value)) walk(v, key ? `${key}.${k}` : k);
    }
  };
  for (const [k, v] of Object.entries(rec)) if (!SKIPPED.has(k)) walk(v, k);
  return out;
}

/**
 * The one mapping from a record to an OTel log record; both exporters start here. The custom-event attribute
 * rides along on OTLP too, so a Collector forwarding to Azure Monitor files the same customEvents.
 */
export function toLogRecord(rec: RunwatchRecord, resource: Resource): ReadableLogRecord {
  const eventName = EVENT_NAMES[rec.kind];
  const parsed = Date.parse(rec.time);
  const ms = Number.isFinite(parsed) ? parsed : Date.now();
  const hrTime: HrTime = [Math.floor(ms / 1000), (ms % 1000) * 1_000_000];
  return {
    hrTime,
    hrTimeObserved: hrTime,
    severityNumber: SEVERITY_NUMBERS[rec.severity],
    severityText: rec.severity.toUpperCase(),
    body: rec.message,
    eventName,
    resource,
    instrumentationScope: SCOPE,
    attributes: { [CUSTOM_EVENT_ATTRIBUTE]: eventName, ...flattenRecord(rec) },
    droppedAttributesCount: 0,
  };
}
