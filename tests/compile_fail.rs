//! Compile-time diagnostics of the attribute macros (trybuild UI tests).
//!
//! Each file under `tests/ui/fail/` must fail to compile with exactly the error pinned in its
//! `.stderr`; each file under `tests/ui/pass/` must compile and run. After a toolchain change,
//! regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test --test compile_fail` and
//! read every diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
