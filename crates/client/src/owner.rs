//! The local tunnel serves only the OS user who started it.
//!
//! Anyone on the machine can connect to `127.0.0.1:PORT`, so every accepted
//! loopback connection is traced to the OS user owning the client's end of
//! it before a byte goes to the gateway. On Linux that is the `uid` column
//! of the client socket's row in `/proc/net/tcp` (or `tcp6` for a
//! dual-stack client): the row whose local address is the client's and
//! whose remote address is the tunnel's. Other systems have no lookup yet
//! (see the README's security notes).
//!
//! A Unix-socket tunnel is guarded by its 0700 directory; the peer's
//! credentials are checked there too, which costs one `getsockopt`.

use std::net::{IpAddr, SocketAddr};

/// Why a connection was refused. `Display` is the sentence the client sees.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// The connecting program runs as another OS user.
    #[error("this tunnel belongs to OS user {owner}")]
    OtherUser {
        /// The tunnel owner's name.
        owner: String,
        /// The connecting program's uid (for the log).
        peer_uid: u32,
    },
    /// The connecting program's user could not be found (for example, it
    /// closed its end already).
    #[error("this tunnel belongs to OS user {owner}; the connecting program's user is unknown")]
    Unknown {
        /// The tunnel owner's name.
        owner: String,
        /// Why the lookup failed (for the log).
        reason: String,
    },
}

/// Whether loopback TCP connections can be traced to their OS user here.
pub const TCP_OWNER_CHECK: bool = cfg!(target_os = "linux");

/// The OS user a tunnel belongs to: the one running this process.
#[derive(Clone, Debug)]
pub struct Owner {
    uid: u32,
    name: String,
}

impl Owner {
    /// The effective user of this process.
    pub fn current() -> Self {
        #[cfg(unix)]
        {
            let uid = nix::unistd::geteuid();
            let name = nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| format!("uid {uid}"));
            Owner {
                uid: uid.as_raw(),
                name,
            }
        }
        #[cfg(not(unix))]
        {
            Owner {
                uid: 0,
                name: std::env::var("USERNAME").unwrap_or_else(|_| "this user".into()),
            }
        }
    }

    /// The owner's numeric user id.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The owner's user name, as shown to people.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Allows a peer running as `uid`, refuses any other.
    pub fn check_uid(&self, uid: u32) -> Result<(), OwnerError> {
        if uid == self.uid {
            Ok(())
        } else {
            Err(OwnerError::OtherUser {
                owner: self.name.clone(),
                peer_uid: uid,
            })
        }
    }

    /// Checks a loopback TCP connection accepted on `local` from `peer`.
    /// Where [`TCP_OWNER_CHECK`] is false every connection passes (the
    /// tunnel warns about it when it starts).
    pub fn check_tcp(&self, local: SocketAddr, peer: SocketAddr) -> Result<(), OwnerError> {
        if !TCP_OWNER_CHECK {
            return Ok(());
        }
        match tcp_peer_uid(local, peer) {
            Ok(uid) => self.check_uid(uid),
            Err(reason) => Err(OwnerError::Unknown {
                owner: self.name.clone(),
                reason,
            }),
        }
    }

    /// Checks a Unix-socket peer.
    #[cfg(unix)]
    pub fn check_unix(&self, peer: &tokio::net::UnixStream) -> Result<(), OwnerError> {
        match peer.peer_cred() {
            Ok(cred) => self.check_uid(cred.uid()),
            Err(e) => Err(OwnerError::Unknown {
                owner: self.name.clone(),
                reason: e.to_string(),
            }),
        }
    }
}

/// The uid owning the client end of the loopback connection `peer` → `local`.
#[cfg(target_os = "linux")]
pub fn tcp_peer_uid(local: SocketAddr, peer: SocketAddr) -> Result<u32, String> {
    // The client's row: its own address first, the tunnel's second.
    let v4 = match (peer.ip(), local.ip()) {
        (IpAddr::V4(p), IpAddr::V4(l)) => Some((proc_v4(p, peer.port()), proc_v4(l, local.port()))),
        _ => None,
    };
    if let Some((p, l)) = &v4
        && let Some(uid) = find_in("/proc/net/tcp", |row| row.local == p && row.remote == l)?
    {
        return Ok(uid);
    }
    // A dual-stack client socket lists IPv4 peers as ::ffff:a.b.c.d.
    let (p, l) = (proc_v6(peer), proc_v6(local));
    find_in("/proc/net/tcp6", |row| row.local == p && row.remote == l)?
        .ok_or_else(|| "no socket of this machine has this connection's address".into())
}

/// Other systems: the lookup is not implemented yet (see the README).
#[cfg(not(target_os = "linux"))]
pub fn tcp_peer_uid(_local: SocketAddr, _peer: SocketAddr) -> Result<u32, String> {
    Err("the owner check is only implemented on Linux".into())
}

/// The uid of the program listening on loopback `port`, if any.
#[cfg(target_os = "linux")]
pub fn tcp_listener_uid(port: u16) -> Option<u32> {
    const LISTEN: &str = "0A";
    let suffix = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|file| {
        find_in(file, |row| row.state == LISTEN && row.local.ends_with(&suffix))
            .ok()
            .flatten()
    })
}

/// Other systems: unknown.
#[cfg(not(target_os = "linux"))]
pub fn tcp_listener_uid(_port: u16) -> Option<u32> {
    None
}

/// The name of OS user `uid`, or `uid N` when it has none.
pub fn user_name(uid: u32) -> String {
    #[cfg(unix)]
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        return user.name;
    }
    format!("uid {uid}")
}

/// An IPv4 socket address as `/proc/net/tcp` prints it: the address's four
/// bytes read as one native-endian word, then the port, in upper-case hex.
#[cfg(target_os = "linux")]
fn proc_v4(ip: std::net::Ipv4Addr, port: u16) -> String {
    format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip.octets()))
}

/// An address as `/proc/net/tcp6` prints it (IPv4 as `::ffff:a.b.c.d`).
#[cfg(target_os = "linux")]
fn proc_v6(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut out = String::with_capacity(37);
    for word in ip.octets().chunks_exact(4) {
        let word: [u8; 4] = word.try_into().expect("four bytes");
        out.push_str(&format!("{:08X}", u32::from_ne_bytes(word)));
    }
    out.push_str(&format!(":{:04X}", addr.port()));
    out
}

/// The fields of a `/proc/net/tcp*` row that the checks read.
#[cfg(target_os = "linux")]
struct Row<'a> {
    local: &'a str,
    remote: &'a str,
    state: &'a str,
    uid: u32,
    inode: u64,
}

#[cfg(target_os = "linux")]
fn parse_row(line: &str) -> Option<Row<'_>> {
    let mut f = line.split_whitespace();
    let _slot = f.next()?;
    let local = f.next()?;
    let remote = f.next()?;
    let state = f.next()?;
    let mut f = f.skip(3);
    let uid = f.next()?.parse().ok()?;
    let _timeout = f.next()?;
    let inode = f.next()?.parse().ok()?;
    Some(Row {
        local,
        remote,
        state,
        uid,
        inode,
    })
}

/// The uid of the first row of `file` that `wanted` accepts. A row whose
/// socket no program holds any more (inode 0: closed, orphaned, or in
/// TIME_WAIT) is reported as root by the kernel, so it counts as unknown.
#[cfg(target_os = "linux")]
fn find_in(file: &str, wanted: impl Fn(&Row<'_>) -> bool) -> Result<Option<u32>, String> {
    use std::io::BufRead;
    let f = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
    let mut reader = std::io::BufReader::with_capacity(16 * 1024, f);
    let mut line = String::with_capacity(160);
    // The header.
    reader
        .read_line(&mut line)
        .map_err(|e| format!("{file}: {e}"))?;
    loop {
        line.clear();
        if reader
            .read_line(&mut line)
            .map_err(|e| format!("{file}: {e}"))?
            == 0
        {
            return Ok(None);
        }
        if let Some(row) = parse_row(&line).filter(|r| wanted(r)) {
            return if row.inode == 0 {
                Err("the connecting socket is no longer held by any program".into())
            } else {
                Ok(Some(row.uid))
            };
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn addresses_are_written_as_the_kernel_does() {
        let a = SocketAddr::from(([127, 0, 0, 1], 5432));
        if cfg!(target_endian = "little") {
            assert_eq!(proc_v4(Ipv4Addr::LOCALHOST, 5432), "0100007F:1538");
            assert_eq!(proc_v6(a), "0000000000000000FFFF00000100007F:1538");
        }
        let row = "   3: 0100007F:9C40 0100007F:1538 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1";
        let r = parse_row(row).unwrap();
        assert_eq!((r.local, r.remote, r.state), ("0100007F:9C40", "0100007F:1538", "01"));
        assert_eq!((r.uid, r.inode), (1000, 4242));
    }

    #[test]
    fn a_connection_of_this_process_is_its_own() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let local = server.local_addr().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let me = Owner::current();
        me.check_tcp(local, peer).unwrap();
        assert_eq!(tcp_listener_uid(local.port()), Some(me.uid));

        let stranger = Owner {
            uid: me.uid.wrapping_add(1),
            name: "someone".into(),
        };
        let err = stranger.check_tcp(local, peer).unwrap_err();
        assert_eq!(err.to_string(), "this tunnel belongs to OS user someone");

        // A connection that does not exist has no owner.
        let gone = SocketAddr::from(([127, 0, 0, 1], 1));
        assert!(matches!(
            me.check_tcp(local, gone),
            Err(OwnerError::Unknown { .. })
        ));
    }
}
