-- replicas (SPEC 10.6): outbox claims, heartbeats, observations, the leader of record;
-- feature_history gets an explicit id (the same rowid), as the PostgreSQL schema has.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until REAL;
CREATE TABLE feature_history_v6 (
    id      INTEGER PRIMARY KEY,
    feature TEXT NOT NULL,
    state   TEXT NOT NULL,
    at      REAL NOT NULL
);
INSERT INTO feature_history_v6 (id, feature, state, at) SELECT rowid, feature, state, at FROM feature_history;
DROP TABLE feature_history;
ALTER TABLE feature_history_v6 RENAME TO feature_history;
CREATE INDEX feature_history_by_feature ON feature_history (feature, at);
CREATE TABLE replicas (
    name          TEXT PRIMARY KEY,
    instance      TEXT NOT NULL,
    started_at    REAL NOT NULL,
    seen_at       REAL NOT NULL,
    every_seconds REAL NOT NULL,
    self_state    TEXT NOT NULL DEFAULT 'ok',
    self_reason   TEXT NOT NULL DEFAULT ''
);
CREATE TABLE observations (
    replica    TEXT    NOT NULL,
    dependency TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    failing    INTEGER NOT NULL,
    since      REAL    NOT NULL,
    at         REAL    NOT NULL,
    detail     TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (replica, dependency)
);
CREATE TABLE leadership (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    epoch   INTEGER NOT NULL,
    replica TEXT    NOT NULL,
    since   REAL    NOT NULL
);
