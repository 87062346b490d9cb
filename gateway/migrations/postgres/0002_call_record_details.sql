-- Accounting: how a call went (direction between browsers and SIP/PBX peers, why it ended).
ALTER TABLE call_records ADD COLUMN direction TEXT NULL;
ALTER TABLE call_records ADD COLUMN reason TEXT NULL;
