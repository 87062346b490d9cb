-- rtcgate schema, MySQL/MariaDB dialect. utf8mb4_bin: user names and URIs compare byte-wise.
CREATE TABLE subscribers (
    username    VARCHAR(255) NOT NULL,
    domain      VARCHAR(255) NOT NULL,
    ha1_md5     VARCHAR(64)  NOT NULL,
    ha1_sha256  VARCHAR(128) NOT NULL,
    password    VARCHAR(255) NULL,
    created_at  BIGINT       NOT NULL,
    updated_at  BIGINT       NOT NULL,
    PRIMARY KEY (username, domain)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE location (
    id          CHAR(64)     NOT NULL PRIMARY KEY,
    aor         VARCHAR(512) NOT NULL,
    contact     TEXT         NOT NULL,
    expires_at  BIGINT       NOT NULL,
    q           BIGINT       NOT NULL,
    path        TEXT         NOT NULL,
    received    VARCHAR(255) NULL,
    flow_id     VARCHAR(128) NULL,
    node_id     VARCHAR(128) NOT NULL,
    instance    VARCHAR(255) NULL,
    reg_id      BIGINT       NULL,
    user_agent  VARCHAR(512) NULL,
    call_id     VARCHAR(255) NOT NULL,
    cseq        BIGINT       NOT NULL,
    updated_at  BIGINT       NOT NULL,
    KEY location_aor (aor),
    KEY location_flow (node_id, flow_id),
    KEY location_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE call_records (
    id             BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    call_id        VARCHAR(255) NOT NULL,
    caller         VARCHAR(512) NOT NULL,
    callee         VARCHAR(512) NOT NULL,
    destination    VARCHAR(512) NULL,
    started_at_ms  BIGINT       NOT NULL,
    answered_at_ms BIGINT       NULL,
    ended_at_ms    BIGINT       NULL,
    disposition    BIGINT       NULL,
    media_stats    MEDIUMTEXT   NULL,
    KEY call_records_call_id (call_id),
    KEY call_records_started (started_at_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
