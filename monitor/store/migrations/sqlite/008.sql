-- escalation's REST writes (SPEC 11.2): a row may wait for another (`after_id`: its trigger)
-- and be `cancelled` (its incident resolved, its trigger dropped). SQLite cannot change a CHECK:
-- the table is rebuilt, its AUTOINCREMENT sequence kept so that no id is given twice.
CREATE TABLE outbox_v8 (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key       TEXT    NOT NULL,
    action          TEXT    NOT NULL CHECK (action IN ('trigger', 'resolve')),
    body            TEXT    NOT NULL,
    created_at      REAL    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'accepted', 'dropped', 'dry_run', 'cancelled')),
    last_error      TEXT,
    delivered_at    REAL,
    destination     TEXT    NOT NULL DEFAULT 'pagerduty',
    claim_replica   TEXT,
    claim_until     REAL,
    environment     TEXT    NOT NULL,
    after_id        INTEGER
);
INSERT INTO outbox_v8 (id, dedup_key, action, body, created_at, attempts, next_attempt_at, status, last_error,
                       delivered_at, destination, claim_replica, claim_until, environment)
    SELECT id, dedup_key, action, body, created_at, attempts, next_attempt_at, status, last_error,
           delivered_at, destination, claim_replica, claim_until, environment FROM outbox;
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'outbox_v8', COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox_v8');
UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0))
    WHERE name = 'outbox_v8';
DROP TABLE outbox;
ALTER TABLE outbox_v8 RENAME TO outbox;
CREATE INDEX outbox_pending_by_key ON outbox (environment, destination, dedup_key, id) WHERE status = 'pending';
CREATE INDEX outbox_settled_by_age ON outbox (created_at) WHERE status != 'pending';
CREATE INDEX outbox_after ON outbox (after_id) WHERE after_id IS NOT NULL;
