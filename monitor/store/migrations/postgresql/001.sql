-- the first schema
CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedup_key       TEXT             NOT NULL,
    action          TEXT             NOT NULL CHECK (action IN ('trigger', 'resolve')),
    body            TEXT             NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    attempts        INTEGER          NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    status          TEXT             NOT NULL DEFAULT 'pending'
                                     CHECK (status IN ('pending', 'accepted', 'dropped', 'dry_run')),
    last_error      TEXT,
    delivered_at    DOUBLE PRECISION,
    destination     TEXT             NOT NULL DEFAULT 'pagerduty',
    claimed_by      TEXT,
    claimed_until   DOUBLE PRECISION
);
CREATE INDEX outbox_pending_by_key ON outbox (destination, dedup_key, id) WHERE status = 'pending';
CREATE INDEX outbox_settled_by_age ON outbox (created_at) WHERE status != 'pending';
CREATE TABLE incidents (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dependency  TEXT             NOT NULL,
    dedup_key   TEXT             NOT NULL,
    opened_at   DOUBLE PRECISION NOT NULL,
    resolved_at DOUBLE PRECISION,
    escalated   INTEGER          NOT NULL DEFAULT 0,
    features    TEXT             NOT NULL DEFAULT '[]',
    summary     TEXT             NOT NULL DEFAULT '',
    severity    TEXT             NOT NULL DEFAULT '',
    data        TEXT             NOT NULL DEFAULT '{}',
    up_since    DOUBLE PRECISION,
    flapping    INTEGER          NOT NULL DEFAULT 0
);
CREATE INDEX incidents_by_dependency ON incidents (dependency, id);
CREATE INDEX incidents_by_resolution ON incidents (resolved_at);
CREATE TABLE timeline (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id BIGINT           NOT NULL REFERENCES incidents (id),
    at          DOUBLE PRECISION NOT NULL,
    kind        TEXT             NOT NULL,
    data        TEXT             NOT NULL DEFAULT '{}'
);
CREATE INDEX timeline_by_incident ON timeline (incident_id, at, id);
CREATE TABLE feature_history (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    feature TEXT             NOT NULL,
    state   TEXT             NOT NULL,
    at      DOUBLE PRECISION NOT NULL
);
CREATE INDEX feature_history_by_feature ON feature_history (feature, at);
CREATE TABLE silences (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dependency TEXT             NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    ends_at    DOUBLE PRECISION NOT NULL,
    reason     TEXT             NOT NULL,
    expired_at DOUBLE PRECISION
);
CREATE INDEX silences_by_end ON silences (ends_at);
CREATE TABLE replicas (
    name          TEXT PRIMARY KEY,
    instance      TEXT             NOT NULL,
    started_at    DOUBLE PRECISION NOT NULL,
    seen_at       DOUBLE PRECISION NOT NULL,
    every_seconds DOUBLE PRECISION NOT NULL,
    self_state    TEXT             NOT NULL DEFAULT 'ok',
    self_reason   TEXT             NOT NULL DEFAULT ''
);
CREATE TABLE observations (
    replica    TEXT             NOT NULL,
    dependency TEXT             NOT NULL,
    state      TEXT             NOT NULL,
    failing    INTEGER          NOT NULL,
    since      DOUBLE PRECISION NOT NULL,
    at         DOUBLE PRECISION NOT NULL,
    detail     TEXT             NOT NULL DEFAULT '',
    PRIMARY KEY (replica, dependency)
);
CREATE TABLE leadership (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    epoch   BIGINT           NOT NULL,
    replica TEXT             NOT NULL,
    since   DOUBLE PRECISION NOT NULL
);
