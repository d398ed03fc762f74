-- the first schema
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key       TEXT    NOT NULL,
    action          TEXT    NOT NULL CHECK (action IN ('trigger', 'resolve')),
    body            TEXT    NOT NULL,
    created_at      REAL    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'accepted', 'rejected', 'dry_run')),
    last_error      TEXT,
    delivered_at    REAL
);
CREATE INDEX outbox_pending_by_key ON outbox (dedup_key, id) WHERE status = 'pending';
CREATE TABLE incidents (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    dependency  TEXT    NOT NULL,
    dedup_key   TEXT    NOT NULL,
    opened_at   REAL    NOT NULL,
    resolved_at REAL,
    escalated   INTEGER NOT NULL DEFAULT 0,
    features    TEXT    NOT NULL DEFAULT '[]',
    summary     TEXT    NOT NULL DEFAULT '',
    severity    TEXT    NOT NULL DEFAULT '',
    data        TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX incidents_by_dependency ON incidents (dependency, id);
CREATE TABLE timeline (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    at          REAL    NOT NULL,
    kind        TEXT    NOT NULL,
    data        TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX timeline_by_incident ON timeline (incident_id, at, id);
