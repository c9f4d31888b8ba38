-- The audit trail (stream LLMAAS_AUDIT, hash-chained) and the guard's blocks (LLMAAS_SECURITY).
-- Deduplicated like usage: ids already stored are skipped, ReplacingMergeTree merges the rest.
CREATE TABLE IF NOT EXISTS audit
(
    seq     UInt64 COMMENT 'the event''s sequence in LLMAAS_AUDIT',
    at      DateTime64(3, 'UTC'),
    actor   String COMMENT 'admin:<operator>, key:<id>, system or anonymous',
    action  LowCardinality(String),
    target  String,
    outcome LowCardinality(String),
    source  String,
    detail  Map(String, String),
    edge    String,
    prev    String,
    hash    String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (at, seq);

CREATE TABLE IF NOT EXISTS security_events
(
    request_id    String,
    at            DateTime64(3, 'UTC'),
    tenant        LowCardinality(String),
    token_id      String,
    model         LowCardinality(String),
    layer         LowCardinality(String),
    rules         Array(String),
    prompt_sha256 String COMMENT 'SHA-256 of the screened text, never the text',
    guard         String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (tenant, at, request_id)
TTL toDateTime(at) + INTERVAL 400 DAY;
