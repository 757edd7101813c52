//! A network namespace joined to this one by a veth pair, for tests whose peer must really be
//! another host's address (198.18.0.0/15, the benchmarking range); removed when dropped.
//! Shared by the tests that need one (`mod netns_common;`).

use std::process::Command;

/// A veth pair between this network namespace and a new one, removed when dropped.
pub(crate) struct Netns {
    pub(crate) name: String,
    pub(crate) veth: String,
}

impl Netns {
    pub(crate) fn ip(args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run `ip`: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Makes the namespace; `subnet` is the third octet of its 198.18.x.0/30 (this side .1,
    /// the namespace .2). Names carry this process's pid, so test binaries running at once do
    /// not collide.
    pub(crate) fn create(subnet: u8) -> Result<Self, String> {
        let pid = std::process::id();
        let ns = Netns {
            name: format!("mp-test-{pid}"),
            veth: format!("mpv{pid}"),
        };
        Self::ip(&["netns", "add", &ns.name])?;
        // From here on `ns` is dropped (and removes what was made) on any failure.
        let peer = format!("mpp{pid}");
        let (host, guest) = (
            format!("198.18.{subnet}.1/30"),
            format!("198.18.{subnet}.2/30"),
        );
        Self::ip(&[
            "link", "add", &ns.veth, "type", "veth", "peer", "name", &peer,
        ])?;
        Self::ip(&["link", "set", &peer, "netns", &ns.name])?;
        Self::ip(&["addr", "add", &host, "dev", &ns.veth])?;
        Self::ip(&["link", "set", &ns.veth, "up"])?;
        Self::ip(&["-n", &ns.name, "addr", "add", &guest, "dev", &peer])?;
        Self::ip(&["-n", &ns.name, "link", "set", &peer, "up"])?;
        Self::ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both; the namespace goes by name.
        let _ = Self::ip(&["link", "del", &self.veth]);
        let _ = Self::ip(&["netns", "del", &self.name]);
    }
}
