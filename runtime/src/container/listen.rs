//! Listening sockets for a service the runner offers to one container (a log server), made
//! inside the container's own network namespace.
//!
//! A socket stays in the namespace it was created in, whatever thread or process later
//! holds it. The helper enters the container's namespace on a short-lived thread (as for
//! `lo`, see `loopback`), creates and binds the sockets to that namespace's 127.0.0.1 and
//! hands them to the runner over a unix socket (`SCM_RIGHTS`) before the container starts.
//! The component reaches them on its own loopback and, with no other interface, nothing
//! else; the runner reads them from the host side.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use nix::sched::{CloneFlags, setns};
use nix::unistd::Pid;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrV4, SocketFlags, SocketType, bind, listen, recvmsg,
    sendmsg, socket_with, sockopt,
};

/// Most sockets one run may ask for (the fd message is sized for it).
pub const MAX_LISTEN_SOCKETS: usize = 4;

/// The transport of a [`ListenSocket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ListenKind {
    /// A UDP socket, bound.
    Udp,
    /// A TCP socket, bound and listening.
    Tcp,
}

/// A socket the runner wants bound to `127.0.0.1:port` in the container's network
/// namespace before the container starts (see [`Runner::run_listening`]).
///
/// [`Runner::run_listening`]: super::Runner::run_listening
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListenSocket {
    /// UDP or TCP.
    pub kind: ListenKind,
    /// The port on the container's loopback.
    pub port: u16,
}

/// Creates `sockets` in the network namespace of `pid`, non-blocking and close-on-exec. The
/// namespace is entered by a thread that ends right after (joined before this returns, so the
/// helper is single-threaded again when libcontainer goes on).
pub(super) fn listen_in_netns(pid: Pid, sockets: &[ListenSocket]) -> std::io::Result<Vec<OwnedFd>> {
    let target = File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("netns-listen".into())
            .spawn_scoped(s, || -> std::io::Result<Vec<OwnedFd>> {
                setns(target.as_fd(), CloneFlags::CLONE_NEWNET)?;
                sockets.iter().map(|s| open(*s)).collect()
            })?
            .join()
            .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
    })
}

fn open(want: ListenSocket) -> std::io::Result<OwnedFd> {
    let kind = match want.kind {
        ListenKind::Udp => SocketType::DGRAM,
        ListenKind::Tcp => SocketType::STREAM,
    };
    let fd = socket_with(
        AddressFamily::INET,
        kind,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    if want.kind == ListenKind::Udp {
        // Room for a burst of datagrams while the runner is busy (the kernel caps it at
        // net.core.rmem_max); what still overflows is lost, as UDP is.
        let _ = sockopt::set_socket_recv_buffer_size(&fd, 4 << 20);
    }
    bind(&fd, &SocketAddrV4::new([127, 0, 0, 1].into(), want.port))?;
    if want.kind == ListenKind::Tcp {
        listen(&fd, 64)?;
    }
    Ok(fd)
}

/// Sends `fds` as one message on `chan`.
pub(super) fn send_fds(chan: BorrowedFd<'_>, fds: &[OwnedFd]) -> std::io::Result<()> {
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTEN_SOCKETS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(std::io::Error::other("too many sockets for one message"));
    }
    sendmsg(
        chan,
        &[IoSlice::new(b"L")],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    Ok(())
}

/// Waits for the helper's one message of fds on `chan`, until `deadline`. `Ok(None)`: the
/// helper closed the channel without sending (it failed before; its report says why) or the
/// deadline passed (`timed_out` is set then).
pub(super) fn recv_fds(
    chan: BorrowedFd<'_>,
    deadline: Option<Instant>,
    timed_out: &mut bool,
) -> std::io::Result<Option<Vec<OwnedFd>>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    *timed_out = true;
                    return Ok(None);
                }
                PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = [PollFd::new(chan, PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTEN_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        chan,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut out = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = msg {
            out.extend(fds);
        }
    }
    if got.bytes == 0 && out.is_empty() {
        return Ok(None);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_pass_over_a_seqpacket_pair() {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let sock = open(ListenSocket {
            kind: ListenKind::Udp,
            port: 0,
        })
        .unwrap();
        send_fds(a.as_fd(), &[sock]).unwrap();
        let mut timed_out = false;
        let got = recv_fds(b.as_fd(), None, &mut timed_out).unwrap().unwrap();
        assert_eq!(got.len(), 1);
        assert!(!timed_out);
        drop(a);
        // The sender went away without a message: no fds, no hang.
        assert!(recv_fds(b.as_fd(), None, &mut timed_out).unwrap().is_none());
    }
}
