//! Links between two actors (Erlang's `link`; not to be confused with `link.rs`, one client
//! connection): when one of them ends abnormally, the other's process is killed.
//!
//! A link is two files in the run's private directory, one beside each actor's socket, each
//! holding the other's socket path (`actor-<a>.link-actor-<b>` and `actor-<b>.link-actor-<a>`).
//! Any process of the run can make or remove them, and nothing of the link lives in that
//! process: it may end and the link holds. The one who acts on a link is the actor's supervisor
//! (a task in the process that spawned the actor, alive as long as the actor is). When the
//! actor ends for good, its supervisor removes both files of each of its links and, if the end
//! was abnormal (`Panicked`, `Died` or `Killed`; not `Stopped`), sends SIGKILL to the current
//! process of each peer. Each supervisor keeps that pid in `actor-<x>.pid` while an incarnation
//! runs (written before the actor is handed to anyone, removed as soon as the incarnation is
//! seen to die). The peer's own supervisor then sees a death like any other: it restarts the
//! peer if its policy allows, or the peer ends `Died` and its own links propagate in turn.
//!
//! # Races
//! The supervisor removes the socket and writes the exit file before it reads the links, and
//! `link` writes the links before it checks for those, so a link made as one of the two actors
//! ends is seen by that actor's supervisor, refused by `link`, or both; never silently lost.
//! A peer between two incarnations (its previous one died, the next not yet started) has no
//! pid file and is not killed: its next instance starts from its spawned value anyway.

use super::watch::exit_path;
use super::ActorExit;
use crate::error::{Error, Result};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The file that records the current pid of the actor at `socket`.
fn pid_path(socket: &Path) -> PathBuf {
    socket.with_extension("pid")
}

/// The prefix of the link files beside `socket` (`actor-<a>.link-`).
fn prefix(socket: &Path) -> OsString {
    let mut name = socket.file_stem().unwrap_or_default().to_owned();
    name.push(".link-");
    name
}

/// The file beside `from` that records its link to `to`.
fn link_path(from: &Path, to: &Path) -> PathBuf {
    let mut name = prefix(from);
    name.push(to.file_stem().unwrap_or_default());
    from.with_file_name(name)
}

/// Records `pid` as the process now serving the actor at `socket`.
pub(super) fn write_pid(socket: &Path, pid: u32) {
    let path = pid_path(socket);
    let mut tmp = path.clone().into_os_string();
    tmp.push(format!(".tmp-{}", std::process::id()));
    // Written whole, then renamed into place: a reader never sees half a number.
    if std::fs::write(&tmp, pid.to_string()).is_ok() && std::fs::rename(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The incarnation recorded for `socket` has died: nobody is to be killed through the record.
pub(super) fn remove_pid(socket: &Path) {
    let _ = std::fs::remove_file(pid_path(socket));
}

fn read_pid(socket: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_path(socket)).ok()?.parse().ok()
}

/// True when the actor at `socket` has ended for good (or its supervisor is gone).
fn has_ended(socket: &Path) -> bool {
    exit_path(socket).exists() || !socket.exists()
}

/// Links the actors at `a` and `b`.
///
/// # Errors
/// `ActorStopped` when either has ended (then there is no link); `Io` when a file cannot be
/// written.
pub(super) fn link(a: &Path, b: &Path) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let written = std::fs::write(link_path(a, b), b.as_os_str().as_bytes())
        .and_then(|()| std::fs::write(link_path(b, a), a.as_os_str().as_bytes()));
    if let Err(e) = written {
        unlink(a, b);
        return Err(e.into());
    }
    if has_ended(a) || has_ended(b) {
        unlink(a, b);
        return Err(Error::ActorStopped);
    }
    Ok(())
}

/// Removes the link between the actors at `a` and `b`, if there is one.
pub(super) fn unlink(a: &Path, b: &Path) {
    let _ = std::fs::remove_file(link_path(a, b));
    let _ = std::fs::remove_file(link_path(b, a));
}

/// The actor at `socket` has ended for good with `exit`: removes its links and, if the end was
/// abnormal, kills each linked actor's current process.
pub(super) fn propagate(socket: &Path, exit: &ActorExit) {
    let (Some(dir), prefix) = (socket.parent(), prefix(socket)) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let abnormal = !matches!(exit, ActorExit::Stopped);
    for entry in entries.flatten() {
        if !entry.file_name().as_bytes().starts_with(prefix.as_bytes()) {
            continue;
        }
        let Ok(peer) = std::fs::read(entry.path()) else {
            continue;
        };
        let peer = PathBuf::from(OsString::from_vec(peer));
        unlink(socket, &peer);
        if !abnormal {
            continue;
        }
        if let Some(pid) = read_pid(&peer) {
            tracing::warn!(
                target: "multiprocessing::actor",
                "killing actor process {pid}: an actor linked to it ended ({exit:?})"
            );
            crate::start::send_signal(pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("actor-{name}.sock"));
        std::fs::write(&path, b"").unwrap();
        path
    }

    /// Both files appear with `link` and go with `unlink`; a link to an actor that has ended is
    /// refused and leaves nothing; a normal end removes the links and kills nobody.
    #[test]
    fn files_of_a_link() {
        let dir = std::env::temp_dir().join(format!("actor-links-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b, c) = (socket(&dir, "a"), socket(&dir, "b"), socket(&dir, "c"));
        link(&a, &b).unwrap();
        assert_eq!(
            std::fs::read(link_path(&a, &b)).unwrap(),
            b.as_os_str().as_bytes()
        );
        assert_eq!(
            std::fs::read(link_path(&b, &a)).unwrap(),
            a.as_os_str().as_bytes()
        );
        unlink(&b, &a);
        assert!(!link_path(&a, &b).exists() && !link_path(&b, &a).exists());
        link(&a, &a).unwrap();
        assert!(!link_path(&a, &a).exists());

        std::fs::write(exit_path(&c), b"").unwrap();
        assert!(matches!(link(&a, &c), Err(Error::ActorStopped)));
        assert!(!link_path(&a, &c).exists() && !link_path(&c, &a).exists());

        link(&a, &b).unwrap();
        propagate(&a, &ActorExit::Stopped);
        assert!(!link_path(&a, &b).exists() && !link_path(&b, &a).exists());

        write_pid(&b, 4_000_000_000);
        assert_eq!(read_pid(&b), Some(4_000_000_000));
        remove_pid(&b);
        assert_eq!(read_pid(&b), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
