# shellcheck shell=bash
# Helpers shared by scripts/demo and scripts/bench. Source it; it defines
# functions and sets no shell options of its own.

# Messages go to stderr so that stdout stays for what a script prints on purpose.
# LOG_PREFIX is set by the sourcing script (e.g. "demo").
log() { echo "${LOG_PREFIX:-postern}: $*" >&2; }
warn() { echo "${LOG_PREFIX:-postern}: warning: $*" >&2; }
die() {
    echo "${LOG_PREFIX:-postern}: error: $*" >&2
    exit 1
}

# Absolute path of $1 (which need not exist yet), without resolving symlinks.
abspath() {
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/$1" ;;
    esac
}

# True when something listens on 127.0.0.1:$1 (TCP).
port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Htln "sport = :$port" 2>/dev/null)" ]
    else
        # Without ss: a successful connect means the port is taken.
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi
}

# Prints the first free loopback port >= $1 that is not among the other
# arguments (ports already promised to something not yet listening).
free_port_from() {
    local port=$1 taken
    shift
    while [ "$port" -lt 65535 ]; do
        taken=false
        for p in "$@"; do
            [ "$p" = "$port" ] && taken=true
        done
        if ! $taken && ! port_in_use "$port"; then
            echo "$port"
            return 0
        fi
        port=$((port + 1))
    done
    die "no free TCP port above $1 on 127.0.0.1"
}

# A random secret that needs no quoting anywhere (hex, 128 bits).
random_secret() { openssl rand -hex 16; }

# Writes a secret to a file only its owner can read.
write_secret() {
    local file=$1 value=$2
    (umask 077 && printf '%s\n' "$value" >"$file")
    chmod 600 "$file"
}

# Last $2 (default 30) lines of file $1, indented, or a note that it is missing.
log_tail() {
    local file=$1 lines=${2:-30}
    if [ -s "$file" ]; then
        echo "--- last $lines lines of $file ---" >&2
        tail -n "$lines" "$file" | sed 's/^/    /' >&2
        echo "---" >&2
    else
        echo "(no log at $file)" >&2
    fi
}

# Waits until file $1 contains a line matching the extended regex $2.
# Gives up after $3 seconds, or at once when process $4 (optional) is gone.
wait_for_line() {
    local file=$1 pattern=$2 timeout=$3 pid=${4:-} waited=0
    while ! grep -Eq -- "$pattern" "$file" 2>/dev/null; do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        if [ "$waited" -ge $((timeout * 10)) ]; then
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

# Sends SIGTERM to process $1 and waits up to $2 seconds (default 15) for it
# to exit, then SIGKILL. Works for children and non-children alike.
stop_pid() {
    local pid=$1 timeout=${2:-15} waited=0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do
        # A child that exited stays a zombie until reaped: reap it.
        if [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)" = Z ]; then
            wait "$pid" 2>/dev/null || true
            return 0
        fi
        if [ "$waited" -ge $((timeout * 10)) ]; then
            warn "process $pid did not stop within ${timeout}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    wait "$pid" 2>/dev/null || true
}

# Directory cargo builds into: honours CARGO_TARGET_DIR (cargo metadata does
# too, and resolves it the way cargo does); must run inside the workspace.
cargo_target_dir() {
    local dir
    if command -v jq >/dev/null 2>&1 &&
        dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | jq -r .target_directory) &&
        [ -n "$dir" ] && [ "$dir" != null ]; then
        printf '%s\n' "$dir"
    elif [ -n "${CARGO_TARGET_DIR:-}" ]; then
        abspath "$CARGO_TARGET_DIR"
    else
        printf '%s\n' "$PWD/target"
    fi
}

# Floating-point arithmetic: calc EXPR [printf format, default %.2f].
# Prints "n/a" when an operand is missing ("n/a", empty) or the result is
# not finite, so one failed measurement never stops a report.
calc() {
    local expr=$1 fmt=${2:-%.2f}
    case $expr in
        *n/a* | '') echo n/a && return 0 ;;
    esac
    awk "BEGIN { v = ($expr); if (v != v || v == v + 1 && v != 0) print \"n/a\"; else printf \"$fmt\\n\", v }" \
        2>/dev/null || echo n/a
}
