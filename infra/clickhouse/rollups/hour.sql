-- Recompute the hours of (tenant, model) a batch touched, from deduplicated raw usage (kept as
-- long as this rollup, so a late event's hour is complete).
INSERT INTO usage_hour
SELECT
    tenant, model, toStartOfHour(at) AS hour,
    count() AS requests,
    countIf(status = 'ok'), countIf(status = 'aborted'), countIf(status = 'blocked'),
    countIf(status = 'rejected'), countIf(status = 'error'),
    sum(prompt_tokens), sum(completion_tokens), sum(reasoning_tokens), sum(cached_tokens),
    sum(cost_nano), sum(energy_kwh),
    {version:UInt64}
FROM usage FINAL
WHERE tenant IN {tenants:Array(String)}
  AND at >= {start:DateTime64(3, 'UTC')} AND at < {end:DateTime64(3, 'UTC')}
  AND has({keys:Array(Tuple(String, String, DateTime('UTC')))}, (tenant, model, toStartOfHour(at)))
GROUP BY tenant, model, hour
