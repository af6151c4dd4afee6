//! Brings `lo` up inside a container's fresh network namespace.
//!
//! libcontainer 0.7 creates the namespace but leaves `lo` down (runc brings it up itself), so
//! 127.0.0.1 would not work inside. The helper enters the namespace, opens a socket there and
//! returns; the socket stays bound to the container's namespace for the ioctl.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::sched::{CloneFlags, setns};
use nix::unistd::Pid;

/// Sets IFF_UP on `lo` in the network namespace of `pid`. The calling process must be
/// single-threaded (setns changes the calling thread only, and we switch back).
pub fn bring_up_loopback(pid: Pid) -> std::io::Result<()> {
    let own = File::open("/proc/self/ns/net")?;
    let target = File::open(format!("/proc/{pid}/ns/net"))?;
    setns(target.as_fd(), CloneFlags::CLONE_NEWNET)?;
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    let socket_err = std::io::Error::last_os_error();
    setns(own.as_fd(), CloneFlags::CLONE_NEWNET)?;
    if raw < 0 {
        return Err(socket_err);
    }
    // SAFETY: `raw` is a fresh socket owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };

    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
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
