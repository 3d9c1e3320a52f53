//! Compiles `bpf/bench_empty.bpf.c` (the empty programs the benchmarks divide
//! by) into `$OUT_DIR/bench_empty.bpf.o`, with flowlens-ebpf's headers.
use std::{env, path::PathBuf};

include!("../collector-ebpf/build/bpf_clang.rs");

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-env-changed=FLOWLENS_CLANG");
    println!("cargo:rerun-if-changed=../collector-ebpf/build/bpf_clang.rs");
    let clang = find_clang();
    let includes = bpf_includes(&manifest.join("../collector-ebpf/bpf"));
    let includes: Vec<&std::path::Path> = includes.iter().map(PathBuf::as_path).collect();
    compile_bpf(
        &clang,
        &manifest.join("bpf/bench_empty.bpf.c"),
        &out.join("bench_empty.bpf.o"),
        &includes,
        &[],
    );
}
