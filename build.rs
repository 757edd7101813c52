//! Stops a build for any target but Linux with one message that says why.
//!
//! A `compile_error!` alone would not do it: rustc reports it and then every Linux-only
//! symbol the crate uses, a cascade that hides the reason. A failed build script stops the
//! build before the library is compiled at all.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        println!(
            "cargo::error=async-multiprocessing supports Linux only (this target's OS is `{os}`). \
             It is built on Linux interfaces that other systems lack or do differently: \
             pidfd_open (a child's exit is awaited without polling and without pid reuse), \
             prctl(PR_SET_PDEATHSIG) (a child dies with its parent, even after a SIGKILL), \
             memfd_create (shared memory that is no file), and smaller ones (MSG_CMSG_CLOEXEC, getrandom). \
             Build for a Linux target (e.g. x86_64-unknown-linux-gnu), or depend on this crate \
             only under [target.'cfg(target_os = \"linux\")'.dependencies]."
        );
    }
}
