//! The fork server: a fresh, single-threaded copy of this executable that forks children on
//! request (Python's `forkserver`).
//!
//! It is started like any child (re-exec of `current_exe`) with `fork_server` set in its
//! configuration and a socket as its stdin, on which the root sends [`ForkRequest`]s (each one
//! frame of the transport's format, postcard-encoded, as are the replies). It never
//! builds a runtime, so `fork()` is sound here; each forked child then takes the ordinary child
//! path (runtime, connect, serve) — as a spare, which waits to be assigned (see `README.md`).
//! The server reaps its children and reports their exit status, since the root cannot wait for
//! processes that are not its own children.

use crate::protocol::{ChildConfig, ForkReply, ForkRequest};
use crate::transport::frame;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

/// The largest request the root sends (a configuration and an environment).
const MAX_REQUEST: usize = 1 << 20;

/// Writes `reply` as one frame, in one write, so the root wakes once per reply.
fn send(control: &mut UnixStream, reply: &ForkReply) -> bool {
    let Ok(frame) = frame::encode_single(reply, "a fork server reply") else {
        return false;
    };
    control.write_all(&frame).is_ok()
}

fn receive(control: &mut UnixStream) -> Option<ForkRequest> {
    frame::read_single_blocking(control, MAX_REQUEST)
}

/// Serves fork requests until the root closes the control socket (then exits). Returns only in
/// a freshly forked child, with that child's configuration.
///
/// Children are watched through pidfds, not SIGCHLD: in a test binary this process has other
/// threads (libtest's), which would take the signal. Each turn waits for the control socket or
/// a child, reports the children that exited, then serves one request if one came.
pub(crate) fn serve() -> (ChildConfig, Vec<(String, String)>) {
    // What every child would otherwise work out for itself after the fork.
    crate::transport::auth::warm_up();
    let mut server = Server {
        // SAFETY: fd 0 is the control socket the root passed as our stdin; we own it from here
        // on.
        control: unsafe { UnixStream::from_raw_fd(0) },
        children: Vec::new(),
    };
    loop {
        let Some(fds) = server.wait() else {
            continue;
        };
        server.reap(&fds[1..]);
        if fds[0].revents != 0 {
            let Some(request) = receive(&mut server.control) else {
                // The root is gone or closed us: our children follow by their death signal.
                std::process::exit(0);
            };
            if server.fork() {
                server.become_child();
                return (request.config, request.env);
            }
        }
    }
}

/// The server's state: the control socket, and the children it has not reaped yet.
struct Server {
    control: UnixStream,
    /// (pid, pidfd) of every child not yet reaped.
    children: Vec<(libc::pid_t, libc::c_int)>,
}

impl Server {
    /// Waits until the control socket or a child's pidfd is ready. Returns the polled
    /// descriptors (the control socket first, then one per child, in `children`'s order), or
    /// `None` when a signal interrupted the wait. Exits if `poll` fails otherwise.
    fn wait(&self) -> Option<Vec<libc::pollfd>> {
        let mut fds: Vec<libc::pollfd> = std::iter::once(libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        })
        .chain(self.children.iter().map(|&(_, fd)| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }))
        .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                return None;
            }
            // Nothing sensible is left to do: our children follow by their death signal.
            std::process::exit(0);
        }
        Some(fds)
    }

    /// Reaps the children whose pidfds are ready (`polled`, in `children`'s order) and reports
    /// each exit status to the root.
    fn reap(&mut self, polled: &[libc::pollfd]) {
        let exited: Vec<usize> = polled
            .iter()
            .enumerate()
            .filter(|(_, f)| f.revents != 0)
            .map(|(i, _)| i)
            .collect();
        // From the back, so that `swap_remove` never moves an entry still to be removed.
        for &i in exited.iter().rev() {
            let (pid, pidfd) = self.children.swap_remove(i);
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid out-pointer; its pidfd said it exited,
            // so this does not block. Then the pidfd is ours to close.
            let reaped = unsafe {
                let r = libc::waitpid(pid, &mut status, 0);
                libc::close(pidfd);
                r
            };
            if reaped == pid {
                self.report(&ForkReply::Exited {
                    pid: pid as u32,
                    status,
                });
            }
        }
    }

    /// Forks a child. Returns `true` in the child; in the server, the child is watched and
    /// reported as started (or the failure is reported), and `false` is returned.
    fn fork(&mut self) -> bool {
        // SAFETY: this thread never started a runtime or any other thread; the forked child
        // has only this thread and may run arbitrary code.
        match unsafe { libc::fork() } {
            -1 => {
                let message = std::io::Error::last_os_error().to_string();
                self.report(&ForkReply::Failed { message });
                false
            }
            0 => true,
            pid => {
                self.watch(pid);
                false
            }
        }
    }

    /// Opens a pidfd on the new child `pid` and reports it started; without a pidfd its exit
    /// could not be reported, so it is killed and reaped at once and the failure reported.
    fn watch(&mut self, pid: libc::pid_t) {
        // SAFETY: pidfd_open(2) on our own child; returns a new descriptor or -1.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
        if pidfd < 0 {
            let message = format!("pidfd_open failed: {}", std::io::Error::last_os_error());
            // SAFETY: kill and reap our own child, with a valid out-pointer.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
            }
            self.report(&ForkReply::Failed { message });
            return;
        }
        // SAFETY: setting FD_CLOEXEC on a descriptor we own.
        unsafe { libc::fcntl(pidfd, libc::F_SETFD, libc::FD_CLOEXEC) };
        self.children.push((pid, pidfd));
        self.report(&ForkReply::Started { pid: pid as u32 });
    }

    /// Sends `reply` to the root; exits if the root is gone.
    fn report(&mut self, reply: &ForkReply) {
        if !send(&mut self.control, reply) {
            std::process::exit(0);
        }
    }

    /// In a freshly forked child: drops the server's descriptors, and stdin becomes /dev/null.
    fn become_child(self) {
        // SAFETY: closing our own descriptors and opening /dev/null.
        unsafe {
            for &(_, fd) in &self.children {
                libc::close(fd);
            }
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::close(null);
            }
        }
        // fd 0 now is /dev/null; the socket must not be closed again by a drop.
        std::mem::forget(self.control);
    }
}
