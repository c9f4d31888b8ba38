-- One row per finished request (stream LLMAAS_USAGE), priced and with its energy estimate.
--
-- At-least-once delivery: the metering consumer skips request ids already stored before it inserts,
-- and ReplacingMergeTree keeps one row per (tenant, at, request_id) when parts merge, so a row that
-- slipped in twice (a consumer killed between insert and acknowledgement, two consumers racing) is
-- exact again after a merge and at once with FINAL. Report queries read `usage FINAL`.
-- Ordered for "one tenant, a time range"; a partition per month; rows kept 400 days (the day
-- rollup keeps the billing totals ten years).
CREATE TABLE IF NOT EXISTS usage
(
    request_id        String,
    at                DateTime64(3, 'UTC') COMMENT 'when the request finished',
    tenant            LowCardinality(String),
    token_id          String COMMENT 'the API key id (never the secret)',
    model             LowCardinality(String),
    endpoint          LowCardinality(String) COMMENT 'chat, completion or embedding',
    status            LowCardinality(String) COMMENT 'ok, aborted, blocked, rejected or error',
    http_status       UInt16,
    error_code        LowCardinality(String),
    finish_reason     LowCardinality(String),
    worker            LowCardinality(String),
    edge              LowCardinality(String),
    batch             Bool,
    prompt_tokens     UInt32,
    completion_tokens UInt32 COMMENT 'includes reasoning_tokens',
    reasoning_tokens  UInt32,
    cached_tokens     UInt32,
    ttft_ms           Nullable(Float32) COMMENT 'request start to first token, at the edge',
    duration_ms       Float32,
    price_version     Date COMMENT 'valid_from of the price list version that priced the row',
    cost_nano         Int64 COMMENT 'nano-euros (1e-9 EUR)',
    energy_kwh        Float64,
    energy_basis      LowCardinality(String) COMMENT 'measured, estimated or unknown',
    inserted_at       DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX request_id_bloom request_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (tenant, at, request_id)
TTL toDateTime(at) + INTERVAL 400 DAY;
