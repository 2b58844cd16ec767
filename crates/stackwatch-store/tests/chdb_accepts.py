#!/usr/bin/env python3
"""Runs statements in the current ClickHouse engine (chdb-core, in this process) and says
which ones it refuses.

    python3 chdb_accepts.py STATEMENTS_FILE

tests/clickhouse_current_engine.rs writes STATEMENTS_FILE from the query log of a
ClickHouse 18.16 that the store drove through every path that sends SQL. Records are
separated by NUL bytes (a statement may hold newlines and tabs, never a NUL); each record
is `session<TAB>kind<TAB>text`:

  session   a name: each session is a fresh chdb Session in a directory of its own,
            run one after the other in the order they first appear
  kind      cluster   text names a cluster that the session's config defines: one shard,
                      this very process (so Distributed tables read and write locally)
            database  text is a database to create
            setting   text is `name=value`, applied with SET before any statement, then
                      checked in system.settings (known, not obsolete, value taken)
            ddl       a statement, run before every `sql` one
            sql       a statement; an `INSERT ... FORMAT TabSeparated` (the log holds no
                      data) gets one row, made from the types of the columns it names,
                      written the way the store writes them (DateTime as Unix seconds)

Prints one line per statement that fails (`FAIL <session> <kind>: <statement> => <error>`),
then one summary line; exits 1 if any failed, 2 on bad input. Must not run in a directory
holding a config.xml: chdb would read it.
"""

import os
import re
import sys
import tempfile
import time

KINDS = ("cluster", "database", "setting", "ddl", "sql")

INSERT_TSV = re.compile(
    r"^\s*INSERT\s+INTO\s+(?P<db>\w+)\.(?P<table>\w+)\s*(?:\((?P<cols>[^)]*)\))?"
    r"\s*FORMAT\s+(?:TabSeparated|TSV)\s*$",
    re.IGNORECASE | re.DOTALL,
)


def one_line(s, limit=600):
    s = " ".join(str(s).split())
    return s if len(s) <= limit else s[:limit] + "..."


def read_records(path):
    with open(path, "rb") as f:
        raw = f.read()
    sessions = {}
    for i, rec in enumerate(r for r in raw.split(b"\0") if r.strip()):
        parts = rec.decode("utf-8").split("\t", 2)
        if len(parts) != 3 or parts[1] not in KINDS or not parts[0]:
            print(f"chdb_accepts.py: record {i + 1} is not session<TAB>kind<TAB>text: {one_line(rec)}", file=sys.stderr)
            sys.exit(2)
        name, kind, text = parts
        s = sessions.setdefault(name, {k: [] for k in KINDS})
        s[kind].append(text)
    return sessions


def sample_value(ch_type, now):
    """One TabSeparated field of `ch_type`, as the store writes it."""
    t = ch_type
    for wrapper in ("LowCardinality(", "Nullable("):
        while t.startswith(wrapper):
            t = t[len(wrapper):-1]
    if t == "DateTime" or t.startswith("DateTime("):
        return str(now - 3600)  # Unix seconds, an hour ago: the store's queries read it
    if t == "Date":
        return time.strftime("%Y-%m-%d", time.gmtime(now))
    if re.fullmatch(r"U?Int(8|16|32|64)", t):
        return "1"
    if re.fullmatch(r"Float(32|64)", t):
        return "1.5"
    if t == "String":
        return "main;x\\ty"  # an escaped tab, as tsv_field writes one
    return None


def insert_row(sess, m, now):
    """The row appended to a data-less INSERT, or an error text."""
    db, table, cols = m.group("db"), m.group("table"), m.group("cols")
    types = dict(
        line.split("\t", 1)
        for line in sess.query(
            f"SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{table}'"
            " AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') ORDER BY position",
            "TabSeparated",
        )
        .data()
        .splitlines()
    )
    if not types:
        return None, f"no columns known for {db}.{table}"
    names = [c.strip().strip("`") for c in cols.split(",")] if cols else list(types)
    fields = []
    for n in names:
        if n not in types:
            return None, f"{db}.{table} has no column {n}"
        v = sample_value(types[n], now)
        if v is None:
            return None, f"no sample value for column {n} of type {types[n]}"
        fields.append(v)
    return "\t".join(fields) + "\n", None


def cluster_config(path, names):
    shards = "".join(
        f"<{n}><shard><replica><host>127.0.0.1</host><port>9000</port></replica></shard></{n}>"
        for n in names
    )
    # tcp_port 9000 here makes the replica above this process (is_local): chdb listens on
    # no port, and a Distributed table reads and writes its local table directly.
    with open(path, "w") as f:
        f.write("<clickhouse><tcp_port>9000</tcp_port>")
        f.write(f"<remote_servers>{shards}</remote_servers></clickhouse>\n")


def run_session(name, recs, root, failures):
    from chdb import session

    d = os.path.join(root, name)
    os.makedirs(d)
    conn = "file:" + os.path.join(d, "data")
    if recs["cluster"]:
        cfg = os.path.join(d, "clusters.xml")
        cluster_config(cfg, recs["cluster"])
        conn += "?config-file=" + cfg
    sess = session.Session(conn)
    counts = {"ddl": 0, "sql": 0, "setting": 0, "version": None}

    def run(kind, sql, shown=None):
        try:
            return sess.query(sql, "TabSeparated").data()
        except Exception as e:  # chdb raises its own error types
            failures.append(f"FAIL {name} {kind}: {one_line(shown or sql)} => {one_line(e)}")
            return None

    try:
        counts["version"] = (run("version", "SELECT version()") or "").strip()
        if recs["cluster"]:
            known = run("cluster", "SELECT DISTINCT cluster FROM system.clusters") or ""
            for c in recs["cluster"]:
                if c not in known.split():
                    failures.append(f"FAIL {name} cluster: {c} not in system.clusters (config unread?)")
        for db in recs["database"]:
            run("database", f"CREATE DATABASE IF NOT EXISTS {db}")
        for s in recs["setting"]:
            key, _, value = s.partition("=")
            literal = value
            if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
                literal = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
            if run("setting", f"SET {key} = {literal}", shown=s) is None:
                continue
            row = run(
                "setting",
                f"SELECT value, is_obsolete FROM system.settings WHERE name = '{key}'",
                shown=s,
            )
            if row is None:
                continue
            if not row.strip():
                failures.append(f"FAIL {name} setting: {s} => not in system.settings")
                continue
            got, obsolete = row.rstrip("\n").split("\t")[:2]
            if obsolete != "0":
                failures.append(f"FAIL {name} setting: {s} => accepted but obsolete (ignored)")
            elif got != value:
                failures.append(f"FAIL {name} setting: {s} => SET took, but system.settings says {got}")
            else:
                counts["setting"] += 1
        now = int(time.time())
        for kind in ("ddl", "sql"):
            for sql in recs[kind]:
                m = INSERT_TSV.match(sql) if kind == "sql" else None
                if m:
                    try:
                        row, why = insert_row(sess, m, now)
                    except Exception as e:
                        row, why = None, f"reading the columns: {one_line(e)}"
                    if why:
                        failures.append(f"FAIL {name} {kind}: {one_line(sql)} => {why}")
                        continue
                    ok = run(kind, sql.rstrip() + "\n" + row, shown=sql) is not None
                else:
                    ok = run(kind, sql) is not None
                counts[kind] += ok
    finally:
        sess.close()
    return counts


def main():
    if len(sys.argv) != 2:
        print("usage: python3 chdb_accepts.py STATEMENTS_FILE (see the top of this file)", file=sys.stderr)
        return 2
    if os.path.exists("config.xml"):
        print("chdb_accepts.py: chdb would read the config.xml here: run elsewhere", file=sys.stderr)
        return 2
    sessions = read_records(sys.argv[1])
    try:
        import chdb
    except ImportError as e:
        print(f"chdb_accepts.py: no chdb ({e}): scripts/test.sh installs chdb-core", file=sys.stderr)
        return 2

    failures = []
    summary = []
    total = 0
    versions = set()
    with tempfile.TemporaryDirectory(prefix="chdb-accepts-") as root:
        for name, recs in sessions.items():
            c = run_session(name, recs, root, failures)
            versions.add(c.pop("version"))
            total += c["ddl"] + c["sql"]
            summary.append(
                f"{name}: {c['ddl']}/{len(recs['ddl'])} ddl, {c['sql']}/{len(recs['sql'])} sql, "
                f"{c['setting']}/{len(recs['setting'])} settings"
            )
    version = ", ".join(sorted(v for v in versions if v))
    for f in failures:
        print(f)
    print(
        f"chdb {chdb.__version__} (ClickHouse {version}): {total} statements accepted, "
        f"{len(failures)} refused ({'; '.join(summary)})"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
