//! Which process is at the other end of a loopback TCP connection, for agents that do not
//! say their PID (an OpenTelemetry SDK without a resource detector): the kernel's socket
//! tables (`/proc/net/tcp`, `tcp6`) name the inode of the peer's socket, and the process
//! holding a descriptor on that inode is the agent. Only possible when the peer shares this
//! process's network and PID namespaces (the same pod, or the same host); `None` otherwise.
//! Reads every process's descriptor list once: call it once per connection, not per message.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The PID of the process whose socket is `peer` and is connected to `local` (this side's
/// address), read under `proc_root` (`/proc`).
pub fn pid_of_tcp_peer(proc_root: &Path, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let inode = ["net/tcp", "net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(proc_root.join(table)).ok())
        .find_map(|text| inode_of(&text, peer, local))?;
    holder_of_socket(proc_root, inode)
}

/// The inode of the socket in `table` whose local address is `from` and remote `to`.
fn inode_of(table: &str, from: SocketAddr, to: SocketAddr) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
        (parse_addr(local)? == from && parse_addr(remote)? == to)
            .then(|| inode.parse().ok())
            .flatten()
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6), as the kernel prints them:
/// each 32-bit word in host (little-endian) order. An IPv4-mapped IPv6 address is
/// returned as IPv4, as a `SocketAddr` from an IPv4 socket would be.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<Vec<u32>>>()?;
    let ip = match words.as_slice() {
        [w] => IpAddr::from(w.to_le_bytes()),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (chunk, w) in bytes.chunks_mut(4).zip([a, b, c, d]) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
            let v6 = std::net::Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The first process found with a descriptor on socket `inode`.
fn holder_of_socket(proc_root: &Path, inode: u64) -> Option<u32> {
    let target = format!("socket:[{inode}]");
    std::fs::read_dir(proc_root)
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
            fds.flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|link| link.as_os_str() == target.as_str())
                })
                .then_some(pid)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_addresses_parse_in_host_order() {
        assert_eq!(
            parse_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            parse_addr("0000000000000000FFFF00000100007F:0050"),
            Some("127.0.0.1:80".parse().unwrap()),
            "IPv4-mapped, as an IPv4 socket sees it"
        );
        assert_eq!(parse_addr("zz:1"), None);
    }

    #[test]
    fn the_peer_of_a_loopback_connection_in_this_process_is_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, peer) = listener.accept().unwrap();
        let local = server_side.local_addr().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(
            pid_of_tcp_peer(Path::new("/proc"), local, peer),
            Some(std::process::id())
        );
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(pid_of_tcp_peer(Path::new("/proc"), local, nobody), None);
    }
}
