//! Compiles every `bpf/*.bpf.c` with clang into `$OUT_DIR/<name>.bpf.o`, and
//! `flow.bpf.c` and `sock.bpf.c` a second time with `-DFL_COMPAT` into
//! `<name>.compat.bpf.o` (the programs for kernels 5.10 and 5.11).
use std::{env, path::PathBuf};

include!("build/bpf_clang.rs");

/// Sources that have a compat build.
const COMPAT: [&str; 2] = ["flow.bpf", "sock.bpf"];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let bpf_dir = manifest.join("bpf");
    println!("cargo:rerun-if-env-changed=FLOWLENS_CLANG");
    println!("cargo:rerun-if-changed=build/bpf_clang.rs");
    let clang = find_clang();
    let includes = bpf_includes(&bpf_dir);
    let includes: Vec<&std::path::Path> = includes.iter().map(PathBuf::as_path).collect();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&bpf_dir)
        .expect("bpf/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    for src in sources {
        let stem = src
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".c"))
            .expect("file name");
        compile_bpf(&clang, &src, &out.join(format!("{stem}.o")), &includes, &[]);
        if COMPAT.contains(&stem) {
            let obj = out.join(format!("{}.compat.bpf.o", stem.trim_end_matches(".bpf")));
            compile_bpf(&clang, &src, &obj, &includes, &["FL_COMPAT"]);
        }
    }
}
