//! Compiles every `bpf/*.bpf.c` with clang into `$OUT_DIR/<name>.bpf.o`.
use std::{env, path::PathBuf, process::Command};

fn find_clang() -> String {
    if let Ok(c) = env::var("FLOWLENS_CLANG") {
        return c;
    }
    for c in ["clang-19", "clang-18", "clang-17", "clang-16", "clang"] {
        if Command::new(c).arg("--version").output().is_ok() {
            return c.to_string();
        }
    }
    panic!("no clang found: install clang-19 (apt-get install clang-19 libbpf-dev) or set FLOWLENS_CLANG");
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let bpf_dir = manifest.join("bpf");
    let include = bpf_dir.join("include");
    println!("cargo:rerun-if-env-changed=FLOWLENS_CLANG");
    println!("cargo:rerun-if-changed={}", include.display());
    let clang = find_clang();
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("unsupported target arch for the BPF programs: {other}"),
        Err(_) => "x86",
    };
    for entry in std::fs::read_dir(&include).expect("bpf/include") {
        let p = entry.expect("dir entry").path();
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&bpf_dir)
        .expect("bpf/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    for src in sources {
        println!("cargo:rerun-if-changed={}", src.display());
        let stem = src
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".c"))
            .expect("file name");
        let obj = out.join(format!("{stem}.o"));
        let output = Command::new(&clang)
            // v3: jmp32 and fetching atomics (flow slot claims; the kernel needs
            // >= 5.12 to accept those, below the 6.3 the socket hooks need).
            .args([
                "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
            ])
            .arg(format!("-D__TARGET_ARCH_{arch}"))
            .arg("-I")
            .arg(&include)
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .output()
            .unwrap_or_else(|e| panic!("running {clang}: {e}"));
        if !output.status.success() {
            panic!(
                "clang failed on {}:\n{}{}",
                src.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}
