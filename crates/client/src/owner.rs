//! The local tunnel serves only the OS user who started it.
//!
//! Anyone on the machine can connect to `127.0.0.1:PORT`, so every accepted
//! loopback connection is traced to the OS user owning the client's end of
//! it before a byte goes to the gateway. On Linux the kernel's socket
//! diagnostics (`NETLINK_SOCK_DIAG`) look up that one socket by its address
//! pair and report its owner: a hash lookup of a few microseconds, where
//! reading `/proc/net/tcp` walks the whole table (about a millisecond).
//! macOS and Windows have no such lookup: there the socket table with its
//! owning pids is read (`netstat2`), then the pid's user (`sysinfo`), a
//! walk of every socket that costs about a millisecond. That path runs in
//! this repository's tests on Linux only; on macOS and Windows it is
//! untested (see the README's security notes).
//!
//! A Unix-socket tunnel is guarded by its 0700 directory; the peer's
//! credentials are checked there too, which costs one `getsockopt`.

#[cfg(target_os = "linux")]
use std::net::IpAddr;
use std::net::SocketAddr;

/// Why a connection was refused. `Display` is the sentence the client sees.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// The connecting program runs as another OS user.
    #[error("this tunnel belongs to OS user {owner}")]
    OtherUser {
        /// The tunnel owner's name.
        owner: String,
        /// The connecting program's user (for the log).
        peer_uid: UserId,
    },
    /// The connecting program closed its end before it could be checked:
    /// no program holds that socket any more, so it has no user.
    #[error(
        "this tunnel belongs to OS user {owner}; the connecting program closed its end before it could be checked"
    )]
    Closed {
        /// The tunnel owner's name.
        owner: String,
    },
    /// The connecting program's user could not be found.
    #[error("this tunnel belongs to OS user {owner}; the connecting program's user is unknown")]
    Unknown {
        /// The tunnel owner's name.
        owner: String,
        /// Why the lookup failed (for the log).
        reason: String,
    },
}

/// Whether loopback TCP connections can be traced to their OS user here.
pub const TCP_OWNER_CHECK: bool = cfg!(any(target_os = "linux", target_os = "macos", windows));

/// How the system names an OS user: its uid on Unix, its SID
/// (`S-1-5-21-…`) on Windows.
#[cfg(unix)]
pub type UserId = u32;
/// How the system names an OS user: its uid on Unix, its SID
/// (`S-1-5-21-…`) on Windows.
#[cfg(not(unix))]
pub type UserId = String;

/// The OS user a tunnel belongs to: the one running this process.
#[derive(Clone, Debug)]
pub struct Owner {
    uid: UserId,
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
            // No SID (an empty one) matches no peer: every check refuses.
            let uid = process_table::user_of(std::process::id())
                .map(|uid| uid.to_string())
                .unwrap_or_default();
            Owner {
                uid,
                name: std::env::var("USERNAME").unwrap_or_else(|_| "this user".into()),
            }
        }
    }

    /// The owner's numeric user id.
    #[cfg(unix)]
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The owner's user name, as shown to people.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Allows a peer running as `uid`, refuses any other.
    pub fn check_uid(&self, uid: UserId) -> Result<(), OwnerError> {
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
        match tcp_peer(local, peer) {
            Ok(Holder::User(uid)) => self.check_uid(uid),
            Ok(Holder::Nobody) => Err(OwnerError::Closed {
                owner: self.name.clone(),
            }),
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

/// Who holds the client end of a loopback connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Holder {
    /// A program running as this user.
    User(UserId),
    /// No program: the client closed its socket, perhaps right after
    /// writing to it. Only Linux tells this apart; elsewhere such a
    /// connection has an unknown user.
    Nobody,
}

/// Who holds the client end of the loopback connection `peer` → `local`.
#[cfg(target_os = "linux")]
pub fn tcp_peer(local: SocketAddr, peer: SocketAddr) -> Result<Holder, String> {
    // The client's socket: its own address is the source, the tunnel's the
    // destination. A dual-stack client socket is an IPv6 one that holds
    // IPv4 addresses as ::ffff:a.b.c.d; the kernel finds those only by
    // asking for IPv6.
    if let Some(holder) = sock_diag::holder(peer, local)? {
        return Ok(holder);
    }
    let mapped = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    sock_diag::holder(mapped(peer), mapped(local))?
        .ok_or_else(|| "no socket of this machine has this connection's address".into())
}

/// Who holds the client end of the loopback connection `peer` → `local`.
#[cfg(target_os = "macos")]
pub fn tcp_peer(local: SocketAddr, peer: SocketAddr) -> Result<Holder, String> {
    process_table::tcp_peer_user(local, peer).map(|uid| Holder::User(*uid))
}

/// Who holds the client end of the loopback connection `peer` → `local`.
#[cfg(windows)]
pub fn tcp_peer(local: SocketAddr, peer: SocketAddr) -> Result<Holder, String> {
    process_table::tcp_peer_user(local, peer).map(|uid| Holder::User(uid.to_string()))
}

/// Other systems: no lookup (see the README).
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub fn tcp_peer(_local: SocketAddr, _peer: SocketAddr) -> Result<Holder, String> {
    Err("the owner check is not implemented on this system".into())
}

/// A connection's owner found through the socket table and the owning
/// program, for systems without a kernel lookup by address pair.
#[cfg(any(target_os = "macos", windows, test))]
mod process_table {
    use std::net::{IpAddr, SocketAddr};

    use netstat2::{AddressFamilyFlags, ProtocolFlags, ProtocolSocketInfo};
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, Uid, UpdateKind};

    /// The user of the program holding the client end of `peer` → `local`.
    /// A program this user may not inspect hides its sockets or its user:
    /// that is an error, so the connection is refused.
    pub(super) fn tcp_peer_user(local: SocketAddr, peer: SocketAddr) -> Result<Uid, String> {
        let sockets = netstat2::get_sockets_info(
            AddressFamilyFlags::IPV4 | AddressFamilyFlags::IPV6,
            ProtocolFlags::TCP,
        )
        .map_err(|e| format!("socket table: {e}"))?;
        let pid = sockets
            .iter()
            .find_map(|socket| match &socket.protocol_socket_info {
                ProtocolSocketInfo::Tcp(tcp)
                    if same_end(tcp.local_addr, tcp.local_port, peer)
                        && same_end(tcp.remote_addr, tcp.remote_port, local) =>
                {
                    socket.associated_pids.first().copied()
                }
                _ => None,
            })
            .ok_or("no program of this machine holds this connection")?;
        user_of(pid)
    }

    /// Whether `ip`:`port` is `end`, an IPv4 address also in its IPv6
    /// (`::ffff:a.b.c.d`) form.
    fn same_end(ip: IpAddr, port: u16, end: SocketAddr) -> bool {
        port == end.port() && ip.to_canonical() == end.ip().to_canonical()
    }

    /// The effective user of program `pid`.
    pub(super) fn user_of(pid: u32) -> Result<Uid, String> {
        let pid = Pid::from_u32(pid);
        let mut system = System::new();
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            false,
            ProcessRefreshKind::nothing().with_user(UpdateKind::Always),
        );
        let process = system
            .process(pid)
            .ok_or("the connecting program has exited")?;
        process
            .effective_user_id()
            .or(process.user_id())
            .cloned()
            .ok_or_else(|| "the connecting program's user is hidden".into())
    }
}

/// One socket's owner, asked of the kernel's socket diagnostics
/// (`linux/inet_diag.h`): an `inet_diag_req_v2` naming the exact address
/// pair, answered by one `inet_diag_msg` or an error.
#[cfg(target_os = "linux")]
mod sock_diag {
    use std::net::{IpAddr, SocketAddr};
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
        socket,
    };

    use super::Holder;

    /// `nlmsghdr`: length, type, flags, sequence, port id.
    const HEADER: usize = 16;
    /// `inet_diag_req_v2`: family, protocol, extensions, pad, states, then
    /// the 48-byte `inet_diag_sockid`.
    const REQUEST: usize = 56;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const NLMSG_ERROR: u16 = 2;
    const IPPROTO_TCP: u8 = 6;
    /// `INET_DIAG_NOCOOKIE`: match by addresses, not by a socket cookie.
    const NO_COOKIE: u32 = !0;
    /// Offsets of `idiag_uid` and `idiag_inode` in a reply.
    const UID_AT: usize = HEADER + 64;
    const INODE_AT: usize = HEADER + 68;

    /// The request for the socket whose local address is `src` and whose
    /// peer is `dst`.
    pub(super) fn request(src: SocketAddr, dst: SocketAddr) -> [u8; HEADER + REQUEST] {
        let mut m = [0u8; HEADER + REQUEST];
        m[0..4].copy_from_slice(&((HEADER + REQUEST) as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        let r = &mut m[HEADER..];
        r[0] = match src.ip() {
            IpAddr::V4(_) => AddressFamily::Inet as u8,
            IpAddr::V6(_) => AddressFamily::Inet6 as u8,
        };
        r[1] = IPPROTO_TCP;
        r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // any state
        let id = &mut r[8..];
        id[0..2].copy_from_slice(&src.port().to_be_bytes());
        id[2..4].copy_from_slice(&dst.port().to_be_bytes());
        let octets = |a: IpAddr| match a {
            IpAddr::V4(v4) => {
                let mut o = [0u8; 16];
                o[..4].copy_from_slice(&v4.octets());
                o
            }
            IpAddr::V6(v6) => v6.octets(),
        };
        id[4..20].copy_from_slice(&octets(src.ip()));
        id[20..36].copy_from_slice(&octets(dst.ip()));
        id[40..44].copy_from_slice(&NO_COOKIE.to_ne_bytes());
        id[44..48].copy_from_slice(&NO_COOKIE.to_ne_bytes());
        m
    }

    /// Who holds the socket; `None` when the kernel has no such socket.
    pub(super) fn holder(src: SocketAddr, dst: SocketAddr) -> Result<Option<Holder>, String> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )
        .map_err(|e| format!("socket diagnostics: {e}"))?;
        sendto(
            fd.as_raw_fd(),
            &request(src, dst),
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(|e| format!("socket diagnostics: {e}"))?;
        let mut reply = [0u8; 512];
        let n = recv(fd.as_raw_fd(), &mut reply, MsgFlags::empty())
            .map_err(|e| format!("socket diagnostics: {e}"))?;
        parse(&reply[..n])
    }

    /// Reads the kernel's answer: the socket's holder, `None` for "no such
    /// socket". A socket no program holds any more (inode 0: closed or
    /// orphaned) is reported as root's: that is [`Holder::Nobody`].
    pub(super) fn parse(reply: &[u8]) -> Result<Option<Holder>, String> {
        let u16_at = |i: usize| {
            reply
                .get(i..i + 2)
                .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        };
        let u32_at = |i: usize| {
            reply
                .get(i..i + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        match u16_at(4) {
            Some(NLMSG_ERROR) => {
                let errno = u32_at(HEADER).map(|e| -(e as i32)).unwrap_or(0);
                if errno == nix::errno::Errno::ENOENT as i32 {
                    Ok(None)
                } else {
                    Err(format!(
                        "socket diagnostics: {}",
                        nix::errno::Errno::from_raw(errno)
                    ))
                }
            }
            Some(SOCK_DIAG_BY_FAMILY) => match (u32_at(UID_AT), u32_at(INODE_AT)) {
                (Some(_), Some(0)) => Ok(Some(Holder::Nobody)),
                (Some(uid), Some(_)) => Ok(Some(Holder::User(uid))),
                _ => Err("socket diagnostics: short answer".into()),
            },
            other => Err(format!("socket diagnostics: unexpected answer {other:?}")),
        }
    }
}

/// The uid of the program listening on loopback `port`, if any.
#[cfg(target_os = "linux")]
pub fn tcp_listener_uid(port: u16) -> Option<u32> {
    const LISTEN: &str = "0A";
    let suffix = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|file| {
        find_in(file, |row| {
            row.state == LISTEN && row.local.ends_with(&suffix)
        })
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

/// The fields of a `/proc/net/tcp*` row that the checks read.
#[cfg(target_os = "linux")]
struct Row<'a> {
    local: &'a str,
    state: &'a str,
    uid: u32,
    inode: u64,
}

#[cfg(target_os = "linux")]
fn parse_row(line: &str) -> Option<Row<'_>> {
    let mut f = line.split_whitespace();
    let _slot = f.next()?;
    let local = f.next()?;
    let _remote = f.next()?;
    let state = f.next()?;
    let mut f = f.skip(3);
    let uid = f.next()?.parse().ok()?;
    let _timeout = f.next()?;
    let inode = f.next()?.parse().ok()?;
    Some(Row {
        local,
        state,
        uid,
        inode,
    })
}

/// The uid of the first row of `file` that `wanted` accepts (a listener's
/// owner: rare, so reading the whole table is fine). A row whose socket no
/// program holds any more (inode 0) is reported as root's, so it counts as
/// unknown.
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
    fn kernel_rows_and_answers_are_read_field_by_field() {
        let row = "   3: 0100007F:9C40 0100007F:1538 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1";
        let r = parse_row(row).unwrap();
        assert_eq!((r.local, r.state), ("0100007F:9C40", "01"));
        assert_eq!((r.uid, r.inode), (1000, 4242));

        let req = sock_diag::request(
            SocketAddr::from(([127, 0, 0, 1], 40000)),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 5432)),
        );
        assert_eq!(req.len(), 72);
        assert_eq!(&req[24..28], &[0x9C, 0x40, 0x15, 0x38], "ports, big-endian");
        assert_eq!(&req[28..32], &[127, 0, 0, 1]);
        assert_eq!(&req[44..48], &[127, 0, 0, 1]);

        let mut answer = vec![0u8; 88];
        answer[4..6].copy_from_slice(&20u16.to_ne_bytes());
        answer[80..84].copy_from_slice(&1000u32.to_ne_bytes());
        answer[84..88].copy_from_slice(&77u32.to_ne_bytes());
        assert_eq!(sock_diag::parse(&answer), Ok(Some(Holder::User(1000))));
        answer[84..88].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(
            sock_diag::parse(&answer),
            Ok(Some(Holder::Nobody)),
            "an orphan has no owner"
        );
        let mut none = vec![0u8; 36];
        none[4..6].copy_from_slice(&2u16.to_ne_bytes());
        none[16..20].copy_from_slice(&(-2i32).to_ne_bytes());
        assert_eq!(sock_diag::parse(&none), Ok(None));
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
        // The lookup macOS and Windows use finds the same user here.
        assert_eq!(
            process_table::tcp_peer_user(local, peer).map(|uid| *uid),
            Ok(me.uid)
        );

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
        assert!(process_table::tcp_peer_user(local, gone).is_err());
    }

    /// Both lookups name another OS user's program (`nobody`, which root
    /// can become; skipped when the tests do not run as root).
    #[test]
    fn a_connection_of_another_user_is_theirs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to run a program as nobody");
            return;
        }
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut program = std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}; read -u 3"))
            .spawn()
            .unwrap();
        let (server, peer) = listener.accept().unwrap();
        let local = server.local_addr().unwrap();
        let expected = nobody.uid.as_raw();
        assert_eq!(tcp_peer(local, peer), Ok(Holder::User(expected)));
        assert_eq!(
            process_table::tcp_peer_user(local, peer).map(|uid| *uid),
            Ok(expected)
        );
        assert!(matches!(
            Owner::current().check_tcp(local, peer),
            Err(OwnerError::OtherUser { .. })
        ));
        drop(server);
        program.wait().unwrap();
    }
}
