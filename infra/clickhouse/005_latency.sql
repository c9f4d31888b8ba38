-- First-token latency and decode speed per tenant, model and minute or hour: the console's latency
-- and throughput graphs read these, never raw rows. Answered requests only (status 'ok' with a
-- first token); percentiles are exact within their minute or hour, and not summed across them.
ALTER TABLE usage_minute ADD COLUMN IF NOT EXISTS answered UInt64 DEFAULT 0;
ALTER TABLE usage_minute ADD COLUMN IF NOT EXISTS ttft_p50_ms Float32 DEFAULT 0;
ALTER TABLE usage_minute ADD COLUMN IF NOT EXISTS ttft_p95_ms Float32 DEFAULT 0;
ALTER TABLE usage_minute ADD COLUMN IF NOT EXISTS decode_tokens UInt64 DEFAULT 0 COMMENT 'output tokens after the first';
ALTER TABLE usage_minute ADD COLUMN IF NOT EXISTS decode_s Float64 DEFAULT 0 COMMENT 'seconds from first token to end';
ALTER TABLE usage_hour ADD COLUMN IF NOT EXISTS answered UInt64 DEFAULT 0;
ALTER TABLE usage_hour ADD COLUMN IF NOT EXISTS ttft_p50_ms Float32 DEFAULT 0;
ALTER TABLE usage_hour ADD COLUMN IF NOT EXISTS ttft_p95_ms Float32 DEFAULT 0;
ALTER TABLE usage_hour ADD COLUMN IF NOT EXISTS decode_tokens UInt64 DEFAULT 0 COMMENT 'output tokens after the first';
ALTER TABLE usage_hour ADD COLUMN IF NOT EXISTS decode_s Float64 DEFAULT 0 COMMENT 'seconds from first token to end';
