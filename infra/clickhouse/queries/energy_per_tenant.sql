-- Energy per tenant this month (kWh), and how much of it rests on estimated model figures.
SELECT
    tenant,
    round(sum(energy_kwh), 6) AS kwh,
    round(sumIf(energy_kwh, energy_basis = 'estimated'), 6) AS kwh_estimated,
    countIf(energy_basis = 'unknown') AS requests_without_figure
FROM usage FINAL
WHERE at >= toStartOfMonth(now())
GROUP BY tenant
ORDER BY kwh DESC
