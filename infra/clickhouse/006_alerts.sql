-- Alerts firing and resolving (the console's alert history; the same events as LLMAAS_ALERTS).
CREATE TABLE IF NOT EXISTS alert_events
(
    at        DateTime64(3, 'UTC'),
    tenant    LowCardinality(String),
    rule_id   String,
    kind      LowCardinality(String),
    state     LowCardinality(String) COMMENT 'firing or resolved',
    value     Float64,
    threshold Float64,
    model     String,
    window_s  Float64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (tenant, at, rule_id)
TTL toDateTime(at) + INTERVAL 400 DAY;
