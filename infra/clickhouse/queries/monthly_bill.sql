-- Monthly bill per tenant: tokens and euros per calendar month (UTC), from the day rollup.
SELECT
    toStartOfMonth(day) AS month,
    tenant,
    sum(requests) AS requests,
    sum(prompt_tokens) AS input_tokens,
    sum(completion_tokens - reasoning_tokens) AS output_tokens,
    sum(reasoning_tokens) AS reasoning_output_tokens,
    toDecimal128(sum(cost_nano), 9) / 1000000000 AS eur
FROM usage_day FINAL
GROUP BY month, tenant
ORDER BY month DESC, eur DESC
