//! Actor names: one file per name in the run's private directory, holding the actor's address.
//!
//! A name is claimed by hard-linking a fully written file into place, which fails if the name
//! is taken: two spawns racing for one name cannot both win, and a reader never sees half an
//! address. The supervisor removes the file when the actor ends; the run directory goes with
//! the launch.

use super::wire::Addr;
use crate::error::{Error, Result};
use crate::protocol::{decode_value, encode_value};
use crate::start::Context;
use std::path::{Path, PathBuf};

/// Longest name accepted, in bytes (it becomes part of a file name, hex-encoded).
const MAX_NAME: usize = 100;

/// A claimed name; dropping it frees the name.
#[derive(Debug)]
pub(super) struct NameGuard(PathBuf);

impl Drop for NameGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn name_path(run_dir: &Path, name: &str) -> PathBuf {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    run_dir.join(format!("actor-name-{hex}"))
}

/// Claims `name` for the actor at `addr`.
///
/// # Errors
/// `NameTaken` when another live actor has it; `InvalidArgument` for an empty or too long name;
/// `Io`.
pub(super) fn claim(run_dir: &Path, name: &str, addr: &Addr) -> Result<NameGuard> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Error::InvalidArgument(format!(
            "an actor name must be 1 to {MAX_NAME} bytes long"
        )));
    }
    let path = name_path(run_dir, name);
    // Unique per claim: two claimants must not write the same file.
    static CLAIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CLAIMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = run_dir.join(format!("actor-claim-{}-{n}", std::process::id()));
    std::fs::write(&tmp, encode_value("an actor's address", addr)?)?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(NameGuard(path)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::NameTaken {
            name: name.to_owned(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The address registered under `name` in the current run.
///
/// # Errors
/// `NoSuchActor` when nothing is; `NotLaunched` outside a launch.
pub(super) fn resolve(name: &str) -> Result<Addr> {
    let ctx = Context::current()?;
    let missing = || Error::NoSuchActor {
        name: name.to_owned(),
        note: None,
    };
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(missing());
    }
    let bytes = std::fs::read(name_path(ctx.run_dir(), name)).map_err(|_| missing())?;
    decode_value("an actor's address", &bytes)
}
