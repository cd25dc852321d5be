/**
 * Imported before `@azure/monitor-opentelemetry-exporter` by every module that loads it. ESM evaluates
 * imports in order, so this runs first: without it the exporter calls the Azure instance-metadata address
 * (169.254.169.254) and a public statsbeat host. A host security agent talks only to the endpoints its
 * operator configured. An operator who sets the variable explicitly keeps their value.
 */
process.env.APPLICATION_INSIGHTS_NO_STATSBEAT ??= '1';

export {};
