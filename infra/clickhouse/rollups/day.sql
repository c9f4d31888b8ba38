-- Recompute the days of (tenant, model) a batch touched, from the hour rollup (24 rows a day).
INSERT INTO usage_day
SELECT
    tenant, model, toDate(hour) AS day,
    sum(requests), sum(ok), sum(aborted), sum(blocked), sum(rejected), sum(errors),
    sum(prompt_tokens), sum(completion_tokens), sum(reasoning_tokens), sum(cached_tokens),
    sum(cost_nano), sum(energy_kwh),
    {version:UInt64}
FROM usage_hour FINAL
WHERE tenant IN {tenants:Array(String)}
  AND hour >= {start:DateTime('UTC')} AND hour < {end:DateTime('UTC')}
  AND has({keys:Array(Tuple(String, String, Date))}, (tenant, model, toDate(hour)))
GROUP BY tenant, model, day
