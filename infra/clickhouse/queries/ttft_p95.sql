-- Latency to the first token per model over the last 24 hours: p50, p95, p99 (answered requests).
SELECT
    model,
    count() AS requests,
    round(quantileExact(0.50)(ttft_ms), 1) AS p50_ms,
    round(quantileExact(0.95)(ttft_ms), 1) AS p95_ms,
    round(quantileExact(0.99)(ttft_ms), 1) AS p99_ms
FROM usage FINAL
WHERE at >= now() - INTERVAL 24 HOUR AND status = 'ok' AND ttft_ms IS NOT NULL
GROUP BY model
ORDER BY p95_ms DESC
