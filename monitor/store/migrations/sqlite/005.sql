-- an outbox row goes to PagerDuty or to a Slack channel (`slack:<channel>`); each
-- destination and dedup key is its own ordered queue.
ALTER TABLE outbox ADD COLUMN destination TEXT NOT NULL DEFAULT 'pagerduty';
DROP INDEX outbox_pending_by_key;
CREATE INDEX outbox_pending_by_key ON outbox (destination, dedup_key, id) WHERE status = 'pending';
