//! The shared library's SONAME.
//!
//! Without one, a C program linked with `-lgracekill` records the unversioned file name
//! (`NEEDED libgracekill.so`), which only the `-dev` package provides, and any future
//! incompatible library would be loaded in its place. With `libgracekill.so.0` the program
//! records the ABI it was built for; the runtime package (`libgracekill0`) ships that name.
//!
//! The `0` is the C ABI's major version, not the crate's: additions to the ABI raise
//! `GRACEKILL_ABI_VERSION` (programs check `>=`) and keep the SONAME; only a change that breaks
//! a compiled program would raise it. `ci/install-lib` and the Debian packages use the same name.

/// The C ABI's major version: the number in `libgracekill.so.N`.
const ABI_MAJOR: u32 = 0;

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libgracekill.so.{ABI_MAJOR}");
    println!("cargo:rerun-if-changed=build.rs");
}
