//! Compiles the project's pause program (`../pause/pause.c`) into a static executable in
//! `OUT_DIR`, which `kubelet::runtime::images` embeds: a fresh machine with no registry
//! can then build the pause image itself.
//!
//! It also generates the protobuf field table (`build/protobuf_table.rs`).

use std::path::PathBuf;
use std::process::Command;

#[path = "build/protobuf_table.rs"]
mod protobuf_table;

fn main() {
    let out_dir = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    protobuf_table::generate(&PathBuf::from(&out_dir).join("protobuf_table.rs"));

    let source = PathBuf::from("../pause/pause.c");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=CC");

    let output = PathBuf::from(out_dir).join("pause");
    // `CC` lets a cross or non-standard toolchain be used; plain `cc` otherwise.
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());

    let status = Command::new(&compiler)
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&output)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the C compiler `{compiler}` to build the pause program: {e}; \
                 install a C toolchain with static libc (Debian: build-essential)"
            )
        });
    if !status.success() {
        panic!(
            "`{compiler} -static -Os -s -o {} {}` failed ({status}); the pause program needs \
             a C compiler and a static libc (Debian: build-essential provides libc6-dev's libc.a)",
            output.display(),
            source.display()
        );
    }
}
