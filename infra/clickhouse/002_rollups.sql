-- Per tenant and model, per minute, hour and day: for dashboards and monthly bills.
--
-- Not materialized views: a view would add a duplicate delivery twice. The metering consumer
-- recomputes, after each batch, the minutes, hours and days the batch touched, from deduplicated
-- data (rollup_*.sql); a recomputed row replaces the one before (ReplacingMergeTree on
-- computed_at), so a batch delivered again, or a consumer killed between the steps, leaves the
-- same totals. Read them with FINAL.
CREATE TABLE IF NOT EXISTS usage_minute
(
    tenant            LowCardinality(String),
    model             LowCardinality(String),
    minute            DateTime('UTC'),
    requests          UInt64,
    ok                UInt64,
    aborted           UInt64,
    blocked           UInt64,
    rejected          UInt64,
    errors            UInt64,
    prompt_tokens     UInt64,
    completion_tokens UInt64,
    reasoning_tokens  UInt64,
    cached_tokens     UInt64,
    cost_nano         Int64,
    energy_kwh        Float64,
    computed_at       UInt64
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMMDD(minute)
ORDER BY (tenant, minute, model)
TTL minute + INTERVAL 30 DAY;

CREATE TABLE IF NOT EXISTS usage_hour
(
    tenant            LowCardinality(String),
    model             LowCardinality(String),
    hour              DateTime('UTC'),
    requests          UInt64,
    ok                UInt64,
    aborted           UInt64,
    blocked           UInt64,
    rejected          UInt64,
    errors            UInt64,
    prompt_tokens     UInt64,
    completion_tokens UInt64,
    reasoning_tokens  UInt64,
    cached_tokens     UInt64,
    cost_nano         Int64,
    energy_kwh        Float64,
    computed_at       UInt64
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, hour, model)
TTL hour + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS usage_day
(
    tenant            LowCardinality(String),
    model             LowCardinality(String),
    day               Date,
    requests          UInt64,
    ok                UInt64,
    aborted           UInt64,
    blocked           UInt64,
    rejected          UInt64,
    errors            UInt64,
    prompt_tokens     UInt64,
    completion_tokens UInt64,
    reasoning_tokens  UInt64,
    cached_tokens     UInt64,
    cost_nano         Int64,
    energy_kwh        Float64,
    computed_at       UInt64
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYear(day)
ORDER BY (tenant, day, model)
TTL day + INTERVAL 10 YEAR;
