-- `llmaas usage`: one tenant's (or, with an empty tenant, every tenant's) totals in [since, until).
SELECT
    count() AS requests,
    sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    toDecimal128(sum(cost_nano), 9) / 1000000000 AS cost_eur,
    round(sum(energy_kwh), 6) AS energy_kwh
FROM usage FINAL
WHERE ({tenant:String} = '' OR tenant = {tenant:String})
  AND at >= {since:DateTime64(3, 'UTC')} AND at < {until:DateTime64(3, 'UTC')}
