-- escalation's REST writes (SPEC 11.2): a row may wait for another (`after_id`: its trigger)
-- and be `cancelled` (its incident resolved, its trigger dropped).
ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('pending', 'accepted', 'dropped', 'dry_run', 'cancelled'));
ALTER TABLE outbox ADD COLUMN after_id BIGINT;
CREATE INDEX outbox_after ON outbox (after_id) WHERE after_id IS NOT NULL;
