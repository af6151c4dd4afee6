//! Brings `lo` up inside a container's fresh network namespace.
//!
//! libcontainer 0.7 creates the namespace but leaves `lo` down (runc brings it up itself), so
//! 127.0.0.1 would not work inside. The helper enters the namespace, opens a socket there and
//! returns; the socket stays bound to the container's namespace for the ioctl. The switch is
//! made on a short-lived thread that ends with it: switching back would need privileges over
//! the host's namespace that a rootless helper does not have.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sched::{CloneFlags, setns};
use nix::unistd::Pid;
use rustix::net::{AddressFamily, SocketFlags, SocketType, socket_with};

/// Sets IFF_UP on `lo` in the network namespace of `pid`. The namespace is entered by a
/// thread that exits right after (it is joined before this returns, so the caller is
/// single-threaded again when libcontainer goes on).
pub fn bring_up_loopback(pid: Pid) -> std::io::Result<()> {
    let target = File::open(format!("/proc/{pid}/ns/net"))?;
    bring_up_loopback_in(target.as_fd())
}

/// A new network namespace (only `lo`, down), held by the returned descriptor: created by a
/// short-lived thread, so the caller stays in its own. A bridged run gets its namespace this
/// way before its container exists, so that pasta configures it while libcontainer creates
/// the container (the init joins it through the inherited descriptor).
pub fn new_netns() -> std::io::Result<OwnedFd> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("netns-new".into())
            .spawn_scoped(s, || -> std::io::Result<OwnedFd> {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
                Ok(File::open("/proc/thread-self/ns/net")?.into())
            })?
            .join()
            .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
    })
}

/// [`bring_up_loopback`] for the namespace `target` (an open `/proc/.../ns/net`).
pub fn bring_up_loopback_in(target: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    let sock = std::thread::scope(|s| {
        // A thread may not be available (rootless, RLIMIT_NPROC): an error, not a panic.
        std::thread::Builder::new()
            .name("netns-lo".into())
            .spawn_scoped(s, || -> std::io::Result<OwnedFd> {
                setns(target, CloneFlags::CLONE_NEWNET)?;
                Ok(socket_with(
                    AddressFamily::INET,
                    SocketType::DGRAM,
                    SocketFlags::CLOEXEC,
                    None,
                )?)
            })?
            .join()
            .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
    })?;

    let mut req = libc::ifreq {
        ifr_name: [0; libc::IFNAMSIZ],
        ifr_ifru: libc::__c_anonymous_ifr_ifru { ifru_flags: 0 },
    };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY (must stay: neither rustix nor nix wraps the interface-flag ioctls):
    // SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own, whose flags member the
    // first call fills in before it is read.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
