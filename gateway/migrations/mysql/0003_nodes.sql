-- Cluster membership: one row per rtcgate node, refreshed by its heartbeat.
-- A node whose expires_at has passed is dead; its location rows are not routed to.
CREATE TABLE nodes (
    node_id     VARCHAR(128) NOT NULL PRIMARY KEY,
    sip_addr    VARCHAR(255) NOT NULL,
    started_at  BIGINT       NOT NULL,
    expires_at  BIGINT       NOT NULL,
    updated_at  BIGINT       NOT NULL,
    KEY nodes_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
