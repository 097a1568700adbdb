"""asyncpg through a Postern tunnel, for tests/tests/clients.rs.

Usage: asyncpg_client.py PORT. Cancels the running statement the way asyncpg
documents it, by cancelling the task awaiting it (asyncpg then sends a
CancelRequest), once a line arrives on stdin.

Prints one JSON object per line, as psycopg_client.py does. asyncpg keeps the
server's answer to the cancel to itself (the task just ends cancelled); it
waits for that answer before the connection runs anything else, so the
"after" step only comes once the server has ended the statement.
"""

import asyncio
import json
import sys

import asyncpg


def say(**fields):
    print(json.dumps(fields), flush=True)


async def main():
    port = int(sys.argv[1])
    # Any user name and no password: the tunnel decides who we are upstream.
    conn = await asyncpg.connect(
        host="127.0.0.1", port=port, user="whoever", database="app", ssl=False, timeout=10
    )
    row = await conn.fetchrow("select current_user, count(*) from items")
    say(step="query", user=row[0], count=row[1])

    sleeping = asyncio.create_task(conn.execute("select pg_sleep(30)"))
    say(step="sleeping")
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    sleeping.cancel()
    try:
        await sleeping
        say(step="cancelled", error="the statement was not cancelled")
    except asyncio.CancelledError:
        say(step="cancelled", task="cancelled")
    except asyncpg.PostgresError as e:
        say(step="cancelled", sqlstate=e.sqlstate, message=str(e))
    say(step="after", value=await conn.fetchval("select 1"))
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
