-- every row names its environment (SPEC 11.4); the rows already here are the migrating
-- daemon's (`_ENVIRONMENT` is replaced by its name, quoted). The claim columns are renamed so
-- that no older depmon's claim can be written (see the PostgreSQL migration).
ALTER TABLE outbox ADD COLUMN environment TEXT NOT NULL DEFAULT _ENVIRONMENT;
ALTER TABLE outbox RENAME COLUMN claimed_by TO claim_replica;
ALTER TABLE outbox RENAME COLUMN claimed_until TO claim_until;
DROP INDEX outbox_pending_by_key;
CREATE INDEX outbox_pending_by_key ON outbox (environment, destination, dedup_key, id) WHERE status = 'pending';
ALTER TABLE incidents ADD COLUMN environment TEXT NOT NULL DEFAULT _ENVIRONMENT;
DROP INDEX incidents_by_dependency;
CREATE INDEX incidents_by_dependency ON incidents (environment, dependency, id);
ALTER TABLE timeline ADD COLUMN environment TEXT NOT NULL DEFAULT _ENVIRONMENT;
ALTER TABLE feature_history ADD COLUMN environment TEXT NOT NULL DEFAULT _ENVIRONMENT;
DROP INDEX feature_history_by_feature;
CREATE INDEX feature_history_by_feature ON feature_history (environment, feature, at);
ALTER TABLE silences ADD COLUMN environment TEXT NOT NULL DEFAULT _ENVIRONMENT;
CREATE TABLE replicas_v7 (
    environment   TEXT NOT NULL,
    name          TEXT NOT NULL,
    instance      TEXT NOT NULL,
    started_at    REAL NOT NULL,
    seen_at       REAL NOT NULL,
    every_seconds REAL NOT NULL,
    self_state    TEXT NOT NULL DEFAULT 'ok',
    self_reason   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (environment, name)
);
INSERT INTO replicas_v7 SELECT _ENVIRONMENT, name, instance, started_at, seen_at, every_seconds, self_state,
    self_reason FROM replicas;
DROP TABLE replicas;
ALTER TABLE replicas_v7 RENAME TO replicas;
CREATE TABLE observations_v7 (
    environment TEXT    NOT NULL,
    replica     TEXT    NOT NULL,
    dependency  TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    failing     INTEGER NOT NULL,
    since       REAL    NOT NULL,
    at          REAL    NOT NULL,
    detail      TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (environment, replica, dependency)
);
INSERT INTO observations_v7 SELECT _ENVIRONMENT, replica, dependency, state, failing, since, at, detail
    FROM observations;
DROP TABLE observations;
ALTER TABLE observations_v7 RENAME TO observations;
CREATE TABLE leadership_v7 (
    environment TEXT    PRIMARY KEY,
    epoch       INTEGER NOT NULL,
    replica     TEXT    NOT NULL,
    since       REAL    NOT NULL
);
INSERT INTO leadership_v7 SELECT _ENVIRONMENT, epoch, replica, since FROM leadership;
DROP TABLE leadership;
ALTER TABLE leadership_v7 RENAME TO leadership;
