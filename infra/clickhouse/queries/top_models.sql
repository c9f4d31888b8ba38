-- Top models of the last 30 days by output tokens, with their tenants and euros.
SELECT
    model,
    uniqExact(tenant) AS tenants,
    sum(requests) AS requests,
    sum(completion_tokens) AS output_tokens,
    toDecimal128(sum(cost_nano), 9) / 1000000000 AS eur
FROM usage_hour FINAL
WHERE hour >= now() - INTERVAL 30 DAY
GROUP BY model
ORDER BY output_tokens DESC
LIMIT 10
