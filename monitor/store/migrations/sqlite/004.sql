-- silences (`depmon silence`): no page for a dependency until `ends_at`.
CREATE TABLE silences (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    dependency TEXT    NOT NULL,
    created_at REAL    NOT NULL,
    ends_at    REAL    NOT NULL,
    reason     TEXT    NOT NULL,
    expired_at REAL
);
CREATE INDEX silences_by_end ON silences (ends_at);
