//! Golden test of `parse_container` against `golden/cgroup_paths.txt`.

use flowlens_correlator::cgroup::parse_container;

fn render(path: &str) -> String {
    match parse_container(path) {
        None => "host".to_owned(),
        Some(c) => match c.pod_uid {
            Some(pod) => format!("{} {} {pod}", c.runtime, c.id),
            None => format!("{} {}", c.runtime, c.id),
        },
    }
}

#[test]
fn cgroup_paths_match_golden_file() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/cgroup_paths.txt");
    let text = std::fs::read_to_string(file).expect("read golden file");
    let mut failures = Vec::new();
    let mut cases = 0;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (path, expected) = line.split_once('\t').expect("path<TAB>expected");
        cases += 1;
        let got = render(path);
        if got != expected {
            failures.push(format!(
                "line {}: {path}\n  expected {expected}\n  got      {got}",
                n + 1
            ));
        }
    }
    assert!(cases >= 40, "only {cases} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
