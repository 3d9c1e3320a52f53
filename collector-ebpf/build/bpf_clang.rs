// Shared by the build scripts of flowlens-ebpf and flowlens-bench (each
// `include!`s this file): compiles one BPF C file with clang, CO-RE, BTF.

/// The clang to use: $FLOWLENS_CLANG, else the newest clang-NN found.
fn find_clang() -> String {
    if let Ok(c) = std::env::var("FLOWLENS_CLANG") {
        return c;
    }
    for c in ["clang-19", "clang-18", "clang-17", "clang-16", "clang"] {
        if std::process::Command::new(c).arg("--version").output().is_ok() {
            return c.to_string();
        }
    }
    panic!("no clang found: install clang-19 (apt-get install clang-19 libbpf-dev) or set FLOWLENS_CLANG");
}

/// `__TARGET_ARCH_*` of the target the collector is built for.
fn bpf_target_arch() -> &'static str {
    match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") | Err(_) => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("unsupported target arch for the BPF programs: {other}"),
    }
}

/// Include directories for flowlens' BPF sources under `bpf_dir`
/// (collector-ebpf/bpf): the generated vmlinux.h of the target architecture
/// (`include/vmlinux/<arch>/`, see `include/vmlinux/generate.sh`), then
/// `include/`. Prints the rerun-if-changed lines for both.
fn bpf_includes(bpf_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let include = bpf_dir.join("include");
    let vmlinux = include.join("vmlinux").join(bpf_target_arch());
    println!("cargo:rerun-if-changed={}", vmlinux.join("vmlinux.h").display());
    for entry in std::fs::read_dir(&include).expect("bpf/include") {
        let p = entry.expect("dir entry").path();
        println!("cargo:rerun-if-changed={}", p.display());
    }
    vec![vmlinux, include]
}

/// Compiles `src` into `obj` with the include directories `includes` and
/// extra `defines` (`NAME` or `NAME=VALUE`).
fn compile_bpf(
    clang: &str,
    src: &std::path::Path,
    obj: &std::path::Path,
    includes: &[&std::path::Path],
    defines: &[&str],
) {
    println!("cargo:rerun-if-changed={}", src.display());
    let mut cmd = std::process::Command::new(clang);
    // v3: jmp32 and ALU32 (5.1+); fetching atomics are emitted only where a
    // source uses an atomic's result (flow.bpf.c without FL_COMPAT).
    cmd.args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{}", bpf_target_arch()));
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    for i in includes {
        cmd.arg("-I").arg(i);
    }
    let output = cmd
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(obj)
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
