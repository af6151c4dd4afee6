//! The host's own addresses, made unreachable inside a bridged container's namespace.
//!
//! pasta turns the container's connections into sockets of the host: without this, a service
//! listening on any address of the host (a second interface, a `docker0` bridge, a dummy
//! address) would be reachable from the container, although pasta's `--no-map-gw` keeps the
//! host's loopback out and the default interface's address is the container's own. An
//! `unreachable` route per host address in the container's namespace ends such a connection
//! inside the container; the container has no `CAP_NET_ADMIN` to remove them.

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sched::{CloneFlags, setns};

/// The addresses of the host's interfaces (the caller's network namespace), loopback ones
/// left out (the container's loopback is its own).
pub fn host_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if !ip.is_loopback() && !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// Adds an `unreachable` route for each of `addrs` in the network namespace `netns`, from a
/// thread that enters it and ends (the caller stays where it is). IPv6 routes are skipped
/// where the namespace has no IPv6 at all.
pub fn block_in(netns: BorrowedFd<'_>, addrs: &[IpAddr]) -> std::io::Result<()> {
    if addrs.is_empty() {
        return Ok(());
    }
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("netns-block".into())
            .spawn_scoped(s, || -> std::io::Result<()> {
                setns(netns, CloneFlags::CLONE_NEWNET)?;
                let sock = rustix::net::socket_with(
                    rustix::net::AddressFamily::NETLINK,
                    rustix::net::SocketType::RAW,
                    rustix::net::SocketFlags::CLOEXEC,
                    // NETLINK_ROUTE is protocol 0, rustix's `None`.
                    None,
                )?;
                for (seq, addr) in addrs.iter().enumerate() {
                    match add_unreachable(&sock, seq as u32 + 1, *addr) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e)
                            if addr.is_ipv6() && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {}
                        Err(e) => {
                            return Err(std::io::Error::new(
                                e.kind(),
                                format!("cannot add an unreachable route to {addr}: {e}"),
                            ));
                        }
                    }
                }
                Ok(())
            })?
            .join()
            .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
    })
}

/// The RTM_NEWROUTE request for `unreachable <addr>/<full length>` in the main table.
fn route_message(seq: u32, addr: IpAddr) -> Vec<u8> {
    let (family, bytes): (u8, Vec<u8>) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let len = 16 + 12 + 4 + bytes.len();
    let mut m = Vec::with_capacity(len);
    // nlmsghdr
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&libc::RTM_NEWROUTE.to_ne_bytes());
    let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL;
    m.extend_from_slice(&(flags as u16).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
    m.extend_from_slice(&[
        family,
        (bytes.len() * 8) as u8,
        0,
        0,
        libc::RT_TABLE_MAIN,
        libc::RTPROT_STATIC,
        libc::RT_SCOPE_UNIVERSE,
        libc::RTN_UNREACHABLE,
    ]);
    m.extend_from_slice(&0u32.to_ne_bytes());
    // rtattr RTA_DST
    m.extend_from_slice(&((4 + bytes.len()) as u16).to_ne_bytes());
    m.extend_from_slice(&libc::RTA_DST.to_ne_bytes());
    m.extend_from_slice(&bytes);
    m
}

/// Sends one request and reads the kernel's acknowledgement (an NLMSG_ERROR with code 0).
fn add_unreachable(sock: &OwnedFd, seq: u32, addr: IpAddr) -> std::io::Result<()> {
    let msg = route_message(seq, addr);
    rustix::io::write(sock.as_fd(), &msg)?;
    let mut buf = [0u8; 512];
    let n = rustix::io::read(sock.as_fd(), &mut buf)?;
    // nlmsghdr (16 bytes), then for NLMSG_ERROR the (negative) errno.
    if n < 20 || u16::from_ne_bytes([buf[4], buf[5]]) != libc::NLMSG_ERROR as u16 {
        return Err(std::io::Error::other("unexpected netlink answer"));
    }
    match i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]) {
        0 => Ok(()),
        code => Err(std::io::Error::from_raw_os_error(-code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_a_full_length_unreachable_route() {
        let m = route_message(7, "192.0.2.9".parse().unwrap());
        assert_eq!(m.len(), 36);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 36);
        assert_eq!(m[17], 32, "dst_len");
        assert_eq!(m[23], libc::RTN_UNREACHABLE);
        assert_eq!(&m[32..36], &[192, 0, 2, 9]);
        let m6 = route_message(8, "2001:db8::1".parse().unwrap());
        assert_eq!(m6.len(), 48);
        assert_eq!(m6[17], 128);
    }

    #[test]
    fn loopback_is_never_listed() {
        let addrs = host_addresses().unwrap();
        assert!(addrs.iter().all(|a| !a.is_loopback()), "{addrs:?}");
    }
}
