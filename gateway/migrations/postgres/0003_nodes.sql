-- Cluster membership: one row per rtcgate node, refreshed by its heartbeat.
-- A node whose expires_at has passed is dead; its location rows are not routed to.
CREATE TABLE nodes (
    node_id     TEXT   NOT NULL PRIMARY KEY,
    sip_addr    TEXT   NOT NULL,
    started_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX nodes_expires ON nodes (expires_at);
