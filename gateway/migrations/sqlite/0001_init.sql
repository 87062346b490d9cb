-- rtcgate schema, SQLite dialect. Times: unix seconds, call records: unix milliseconds.
CREATE TABLE subscribers (
    username    TEXT    NOT NULL,
    domain      TEXT    NOT NULL,
    ha1_md5     TEXT    NOT NULL,
    ha1_sha256  TEXT    NOT NULL,
    password    TEXT    NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (username, domain)
);

CREATE TABLE location (
    id          TEXT    NOT NULL PRIMARY KEY,
    aor         TEXT    NOT NULL,
    contact     TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL,
    q           INTEGER NOT NULL,
    path        TEXT    NOT NULL,
    received    TEXT    NULL,
    flow_id     TEXT    NULL,
    node_id     TEXT    NOT NULL,
    instance    TEXT    NULL,
    reg_id      INTEGER NULL,
    user_agent  TEXT    NULL,
    call_id     TEXT    NOT NULL,
    cseq        INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX location_aor ON location (aor);
CREATE INDEX location_flow ON location (node_id, flow_id);
CREATE INDEX location_expires ON location (expires_at);

CREATE TABLE call_records (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id       TEXT    NOT NULL,
    caller        TEXT    NOT NULL,
    callee        TEXT    NOT NULL,
    destination   TEXT    NULL,
    started_at_ms INTEGER NOT NULL,
    answered_at_ms INTEGER NULL,
    ended_at_ms   INTEGER NULL,
    disposition   INTEGER NULL,
    media_stats   TEXT    NULL
);
CREATE INDEX call_records_call_id ON call_records (call_id);
CREATE INDEX call_records_started ON call_records (started_at_ms);
