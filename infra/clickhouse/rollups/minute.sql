-- Recompute the minutes of (tenant, model) a batch touched, from deduplicated raw usage.
INSERT INTO usage_minute (
    tenant, model, minute, requests, ok, aborted, blocked, rejected, errors,
    prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens, cost_nano, energy_kwh,
    answered, ttft_p50_ms, ttft_p95_ms, decode_tokens, decode_s, computed_at
)
SELECT
    tenant, model, toStartOfMinute(at) AS minute,
    count() AS requests,
    countIf(status = 'ok'), countIf(status = 'aborted'), countIf(status = 'blocked'),
    countIf(status = 'rejected'), countIf(status = 'error'),
    sum(prompt_tokens), sum(completion_tokens), sum(reasoning_tokens), sum(cached_tokens),
    sum(cost_nano), sum(energy_kwh),
    countIf(is_answered) AS answered,
    if(answered > 0, quantileExactIf(0.5)(assumeNotNull(ttft_ms), is_answered), 0),
    if(answered > 0, quantileExactIf(0.95)(assumeNotNull(ttft_ms), is_answered), 0),
    sumIf(greatest(completion_tokens, 1) - 1, is_answered),
    sumIf(greatest(duration_ms - assumeNotNull(ttft_ms), 0) / 1000, is_answered),
    {version:UInt64}
FROM (
    SELECT *, status = 'ok' AND ttft_ms IS NOT NULL AS is_answered
    FROM usage FINAL
    WHERE tenant IN {tenants:Array(String)}
      AND at >= {start:DateTime64(3, 'UTC')} AND at < {end:DateTime64(3, 'UTC')}
      AND has({keys:Array(Tuple(String, String, DateTime('UTC')))}, (tenant, model, toStartOfMinute(at)))
)
GROUP BY tenant, model, minute
