//! Links GCC's unwinder into the executables (`libgcc_eh.a`, what `gcc -static-libgcc` does)
//! instead of loading `libgcc_s.so.1` at every start, where the toolchain has the archive.
//!
//! Why: every `ferry` command paid for a third shared library: the loader maps it, binds its
//! symbols, and runs its constructor, which probes the CPU with CPUID (a trap to the hypervisor
//! in a VM). Rust needs only the unwinder from it (panics, backtraces). `ferry --version` went
//! from 1.46 to 1.28 ms and mount → first read of an NTFS volume from 5.57 to 5.33 ms (medians,
//! interleaved; issue 14 measures that against ntfs-3g, which loads no libgcc_s).
use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| env::var(name).unwrap_or_default();
    // GNU toolchains only: musl targets link their unwinder statically already, and other
    // systems' compilers (clang with compiler-rt) may have no libgcc_eh.
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    let cc = env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".to_owned());
    // The compiler prints the archive's path when it has it (and then searches its directory
    // when linking), the bare name when not.
    let found = Command::new(&cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|p| Path::new(p).is_absolute() && Path::new(p).exists());
    if found.is_none() {
        return;
    }
    // Not bundled into the rlib: named at each final link, where it comes before std's
    // `-lgcc_s`, which `--as-needed` then leaves out.
    println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
}
