//! Compresses the static assets (gzip, best) into OUT_DIR so the binary
//! carries them ready to send with `Content-Encoding: gzip`.

use std::{fs, io::Write, path::Path};

/// Every asset served under `/assets/`; `src/assets.rs` lists the same names.
const ASSETS: &[&str] = &[
    "flowlens.css",
    "favicon.svg",
    "app.js",
    "overview.js",
    "visualize.js",
    "conversations.js",
    "topology.js",
    "entity.js",
    "vendor/echarts/echarts.min.js",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::var("OUT_DIR")?;
    for name in ASSETS {
        let src = Path::new("assets").join(name);
        println!("cargo:rerun-if-changed={}", src.display());
        let body = fs::read(&src)?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&body)?;
        let dst = Path::new(&out).join(format!("{}.gz", name.replace('/', "_")));
        fs::write(dst, gz.finish()?)?;
    }
    Ok(())
}
