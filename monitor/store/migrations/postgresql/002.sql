-- every row names its environment (SPEC 11.4: environments may share the database); the
-- rows already here are the migrating replica's (`_ENVIRONMENT`: its name, bound). The column
-- has no default and the keys change, so an older depmon still connected cannot write a row
-- without one: its inserts fail (NOT NULL), its upserts name a conflict target that no longer
-- exists, its fence reads a column that is gone, and its outbox claims name renamed columns.
ALTER TABLE outbox ADD COLUMN environment TEXT;
UPDATE outbox SET environment = _ENVIRONMENT;
ALTER TABLE outbox ALTER COLUMN environment SET NOT NULL;
ALTER TABLE incidents ADD COLUMN environment TEXT;
UPDATE incidents SET environment = _ENVIRONMENT;
ALTER TABLE incidents ALTER COLUMN environment SET NOT NULL;
ALTER TABLE timeline ADD COLUMN environment TEXT;
UPDATE timeline SET environment = _ENVIRONMENT;
ALTER TABLE timeline ALTER COLUMN environment SET NOT NULL;
ALTER TABLE feature_history ADD COLUMN environment TEXT;
UPDATE feature_history SET environment = _ENVIRONMENT;
ALTER TABLE feature_history ALTER COLUMN environment SET NOT NULL;
ALTER TABLE silences ADD COLUMN environment TEXT;
UPDATE silences SET environment = _ENVIRONMENT;
ALTER TABLE silences ALTER COLUMN environment SET NOT NULL;
ALTER TABLE replicas ADD COLUMN environment TEXT;
UPDATE replicas SET environment = _ENVIRONMENT;
ALTER TABLE replicas ALTER COLUMN environment SET NOT NULL;
ALTER TABLE observations ADD COLUMN environment TEXT;
UPDATE observations SET environment = _ENVIRONMENT;
ALTER TABLE observations ALTER COLUMN environment SET NOT NULL;
ALTER TABLE outbox RENAME COLUMN claimed_by TO claim_replica;
ALTER TABLE outbox RENAME COLUMN claimed_until TO claim_until;
DROP INDEX outbox_pending_by_key;
CREATE INDEX outbox_pending_by_key ON outbox (environment, destination, dedup_key, id) WHERE status = 'pending';
DROP INDEX incidents_by_dependency;
CREATE INDEX incidents_by_dependency ON incidents (environment, dependency, id);
DROP INDEX feature_history_by_feature;
CREATE INDEX feature_history_by_feature ON feature_history (environment, feature, at);
ALTER TABLE replicas DROP CONSTRAINT replicas_pkey;
ALTER TABLE replicas ADD PRIMARY KEY (environment, name);
ALTER TABLE observations DROP CONSTRAINT observations_pkey;
ALTER TABLE observations ADD PRIMARY KEY (environment, replica, dependency);
ALTER TABLE leadership ADD COLUMN environment TEXT;
UPDATE leadership SET environment = _ENVIRONMENT;
ALTER TABLE leadership ALTER COLUMN environment SET NOT NULL;
ALTER TABLE leadership DROP CONSTRAINT leadership_pkey;
ALTER TABLE leadership DROP COLUMN id;
ALTER TABLE leadership ADD PRIMARY KEY (environment);
