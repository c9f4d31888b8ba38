-- Which batch a usage row came from ('' for interactive requests), for per-batch reports.
ALTER TABLE usage ADD COLUMN IF NOT EXISTS batch_id String DEFAULT '' AFTER batch;
