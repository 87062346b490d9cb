#!/usr/bin/env python3
"""Bulk-insert load-test users into rtcgate's SQLite `subscribers` table.

    loadtest/lib/provision_rtcgate.py DB.sqlite DOMAIN USERS.csv

USERS.csv is a make_users.sh file (SEQUENTIAL, then user;password lines). HA1
values are computed the way `rtcgate user add` stores them (realm = domain).
`rtcgate user add` is one process per user; tens of thousands of users need a
single transaction. Existing users are replaced. The gateway must have created
the schema already (it migrates the database when it starts).
"""
import hashlib
import sqlite3
import sys
import time


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    db, domain, csv = sys.argv[1:]
    now = int(time.time())
    rows = []
    with open(csv, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line == "SEQUENTIAL" or ";" not in line:
                continue
            user, password = line.split(";", 1)
            a1 = f"{user}:{domain}:{password}".encode()
            rows.append((user, domain, hashlib.md5(a1).hexdigest(),
                         hashlib.sha256(a1).hexdigest(), now, now))
    con = sqlite3.connect(db, timeout=30)
    with con:
        con.executemany(
            "INSERT OR REPLACE INTO subscribers (username, domain, ha1_md5, ha1_sha256, password,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, NULL, ?, ?)", rows)
    con.close()
    print(f"{len(rows)} users in {db}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
