-- Accounting: how a call went (direction between browsers and SIP/PBX peers, why it ended).
ALTER TABLE call_records
    ADD COLUMN direction VARCHAR(32) NULL,
    ADD COLUMN reason    VARCHAR(64) NULL;
