-- each feature's state changes, for the status page's last 24 hours.
CREATE TABLE feature_history (
    feature TEXT NOT NULL,
    state   TEXT NOT NULL,
    at      REAL NOT NULL
);
CREATE INDEX feature_history_by_feature ON feature_history (feature, at);
