# shellcheck shell=bash
# PostgreSQL helpers for scripts/demo and scripts/bench, mirroring the test
# fixture (tests/src/pg.rs). Source scripts/lib/common.sh first.
#
# PostgreSQL refuses to run as root: under root, initdb, pg_ctl and the
# server run as the `postgres` OS user (`runuser -u postgres --`), which then
# also names the bootstrap superuser; otherwise the current user does.

# Sets PG_BINDIR (initdb, pg_ctl, postgres, psql, pgbench), PG_OS_USER and
# PG_RUN (the command prefix that runs a program as PG_OS_USER).
pg_init() {
    local dir
    PG_BINDIR=
    for dir in "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/15/bin; do
        if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
            PG_BINDIR=$dir
            break
        fi
    done
    [ -n "$PG_BINDIR" ] ||
        die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found via pg_config or in /usr/lib/postgresql/15/bin; run scripts/install-test-deps"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 ||
            die "running as root but there is no \`postgres\` OS user to run PostgreSQL as; run scripts/install-test-deps"
        PG_OS_USER=postgres
        PG_RUN=(runuser -u postgres --)
    else
        PG_OS_USER=$(id -un)
        PG_RUN=()
    fi
}

# Runs a command as PG_OS_USER, from / (a root-only working directory would
# make PostgreSQL's tools complain).
as_pg() { (cd / && "${PG_RUN[@]}" "$@"); }

# True when PG_OS_USER can reach directory $1.
pg_can_reach() { as_pg test -x "$1" 2>/dev/null; }

# Hands a file or directory we created to PG_OS_USER (a no-op unless root).
pg_own() {
    if [ "$(id -u)" -eq 0 ]; then
        chown -R "$PG_OS_USER:" "$@"
    fi
}

# Makes sure a certificate authority and a server certificate for
# localhost/127.0.0.1 exist in directory $1 (ca.crt, ca.key, server.crt,
# server.key), generating them with openssl the first time and renewing the
# server certificate when it expires within 30 days.
pg_ensure_server_tls() {
    local dir=$1 cnf
    mkdir -p "$dir"
    chmod 700 "$dir"
    cnf="$dir/openssl.cnf"
    cat >"$cnf" <<'EOF'
# Written by scripts/lib/pg.sh: extensions for the demo PostgreSQL certificates.
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF
    if [ ! -s "$dir/ca.crt" ] || [ ! -s "$dir/ca.key" ] ||
        ! openssl x509 -in "$dir/ca.crt" -noout -checkend 2592000 >/dev/null 2>&1; then
        log "generating the PostgreSQL server CA in $dir"
        (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key" 2>/dev/null)
        openssl req -x509 -new -config "$cnf" -extensions v3_ca -key "$dir/ca.key" \
            -subj "/CN=Postern demo PostgreSQL server CA" -days 3650 -out "$dir/ca.crt" 2>/dev/null
        rm -f "$dir/server.crt" # signed by the old CA
    fi
    if [ ! -s "$dir/server.crt" ] || [ ! -s "$dir/server.key" ] ||
        ! openssl x509 -in "$dir/server.crt" -noout -checkend 2592000 >/dev/null 2>&1; then
        log "generating the PostgreSQL server certificate (localhost, 127.0.0.1)"
        (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/server.key" 2>/dev/null)
        openssl req -new -config "$cnf" -key "$dir/server.key" -subj "/CN=localhost" -out "$dir/server.csr" 2>/dev/null
        openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
            -days 825 -extfile "$cnf" -extensions v3_server -out "$dir/server.crt" 2>/dev/null
        rm -f "$dir/server.csr"
    fi
    chmod 600 "$dir/ca.key" "$dir/server.key"
}

# psql as the bootstrap superuser over the unix socket (trust): pg_admin_psql
# SOCKET_DIR PORT DATABASE [psql arguments...].
pg_admin_psql() {
    local socket=$1 port=$2 db=$3
    shift 3
    PGAPPNAME=postern-scripts PGOPTIONS="-c client_min_messages=warning" "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 \
        -h "$socket" -p "$port" -U "$PG_OS_USER" -d "$db" "$@"
}
