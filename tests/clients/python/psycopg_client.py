"""psycopg 3 (pgAdmin 4's driver) through a Postern tunnel, for tests/tests/clients.rs.

Usage: psycopg_client.py PORT METHOD, where METHOD is how the running
statement is cancelled once a line arrives on stdin:
  cancel       Connection.cancel() (libpq's PQcancel, a CancelRequest)
  cancel_safe  Connection.cancel_safe() (libpq 17's cancel connection)
  pgadmin      what pgAdmin 4's Cancel button does: a second connection runs
               SELECT pg_cancel_backend(conn.info.backend_pid)

Prints one JSON object per line: {"step": "query", ...} after the first
statement, {"step": "sleeping"} when the long statement is being sent, and
{"step": "cancelled", ...} with what the driver reported.
"""

import json
import sys
import threading

import psycopg


def say(**fields):
    print(json.dumps(fields), flush=True)


def connect(port):
    # Any user name and no password: the tunnel decides who we are upstream.
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user="whoever",
        dbname="app",
        sslmode="disable",
        connect_timeout=10,
        autocommit=True,
    )


def main():
    port, method = int(sys.argv[1]), sys.argv[2]
    conn = connect(port)
    user, count = conn.execute("select current_user, count(*) from items").fetchone()
    say(step="query", user=user, count=count)

    outcome = {}

    def sleep():
        try:
            conn.execute("select pg_sleep(30)")
            outcome["error"] = "the statement was not cancelled"
        except psycopg.Error as e:
            outcome.update(sqlstate=e.sqlstate, message=e.diag.message_primary)

    worker = threading.Thread(target=sleep)
    worker.start()
    say(step="sleeping")
    sys.stdin.readline()
    if method == "cancel":
        conn.cancel()
    elif method == "cancel_safe":
        conn.cancel_safe(timeout=10)
    elif method == "pgadmin":
        with connect(port) as other:
            other.add_notice_handler(
                lambda notice: print(
                    f"server: {notice.severity}: {notice.message_primary}",
                    file=sys.stderr,
                    flush=True,
                )
            )
            pid = conn.info.backend_pid
            (cancelled,) = other.execute(
                "SELECT pg_cancel_backend(%s)", (pid,)
            ).fetchone()
            print(f"SELECT pg_cancel_backend({pid}) -> {cancelled}", file=sys.stderr, flush=True)
    else:
        sys.exit(f"unknown cancel method {method!r}")
    worker.join()
    say(step="cancelled", **outcome)
    # The session is still usable after a cancelled statement.
    (one,) = conn.execute("select 1").fetchone()
    say(step="after", value=one)
    conn.close()


if __name__ == "__main__":
    main()
