-- a 400 is `dropped` (the only final failure); incidents remember the resolve hold and
-- flapping; indexes for retention pruning.
CREATE TABLE outbox_v2 (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key       TEXT    NOT NULL,
    action          TEXT    NOT NULL CHECK (action IN ('trigger', 'resolve')),
    body            TEXT    NOT NULL,
    created_at      REAL    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'accepted', 'dropped', 'dry_run')),
    last_error      TEXT,
    delivered_at    REAL
);
INSERT INTO outbox_v2
    SELECT id, dedup_key, action, body, created_at, attempts, next_attempt_at,
           CASE status WHEN 'rejected' THEN 'dropped' ELSE status END, last_error, delivered_at
    FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v2 RENAME TO outbox;
CREATE INDEX outbox_pending_by_key ON outbox (dedup_key, id) WHERE status = 'pending';
CREATE INDEX outbox_settled_by_age ON outbox (created_at) WHERE status != 'pending';
ALTER TABLE incidents ADD COLUMN up_since REAL;
ALTER TABLE incidents ADD COLUMN flapping INTEGER NOT NULL DEFAULT 0;
CREATE INDEX incidents_by_resolution ON incidents (resolved_at);
