-- Values copied from SIP messages have no length limit in SIP (a Call-ID or
-- User-Agent can be hundreds of characters): TEXT like the PostgreSQL and
-- SQLite schemas, so a long value can neither be refused in strict mode nor
-- fail a whole accounting batch. Indexed columns keep a prefix index.
ALTER TABLE location
    DROP INDEX location_aor,
    MODIFY aor        TEXT NOT NULL,
    MODIFY received   TEXT NULL,
    MODIFY instance   TEXT NULL,
    MODIFY user_agent TEXT NULL,
    MODIFY call_id    TEXT NOT NULL,
    ADD INDEX location_aor (aor(255));

ALTER TABLE call_records
    DROP INDEX call_records_call_id,
    MODIFY call_id     TEXT NOT NULL,
    MODIFY caller      TEXT NOT NULL,
    MODIFY callee      TEXT NOT NULL,
    MODIFY destination TEXT NULL,
    ADD INDEX call_records_call_id (call_id(255));
