// node-postgres (pg) through a Postern tunnel, for tests/tests/clients.rs.
//
// Usage: node client.js PORT. Cancels the running statement once a line
// arrives on stdin, the way pg does it: Client#cancel(client, query) on a
// second, unconnected Client sends the CancelRequest on a new connection.
//
// Prints one JSON object per line, as tests/clients/python/psycopg_client.py does.

'use strict'

const readline = require('node:readline')
const pg = require('pg')

const say = (fields) => process.stdout.write(JSON.stringify(fields) + '\n')

async function main () {
  // Any user name and no password: the tunnel decides who we are upstream.
  const config = {
    host: '127.0.0.1',
    port: Number(process.argv[2]),
    user: 'whoever',
    database: 'app',
    ssl: false,
    connectionTimeoutMillis: 10000
  }
  const client = new pg.Client(config)
  await client.connect()
  const { rows } = await client.query('select current_user, count(*) from items')
  // pg hands bigint over as a string.
  say({ step: 'query', user: rows[0].current_user, count: Number(rows[0].count) })

  const query = new pg.Query('select pg_sleep(30)')
  const sleeping = new Promise((resolve) => {
    query.on('end', () => resolve({ error: 'the statement was not cancelled' }))
    query.on('error', (e) => resolve({ sqlstate: e.code, message: e.message }))
  })
  client.query(query)
  say({ step: 'sleeping' })

  const stdin = readline.createInterface({ input: process.stdin })
  await new Promise((resolve) => stdin.once('line', resolve))
  stdin.close()
  new pg.Client(config).cancel(client, query)
  say({ step: 'cancelled', ...(await sleeping) })

  // The session is still usable after a cancelled statement.
  const after = await client.query('select 1 as value')
  say({ step: 'after', value: after.rows[0].value })
  await client.end()
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
