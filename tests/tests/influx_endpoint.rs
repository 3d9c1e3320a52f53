//! What `flowlens run --influx-url` says about the server at the URL,
//! through the real binary: a web server that is not InfluxDB (Python's
//! `http.server`, answering 404 with an HTML page) is a configuration error
//! that says so, a closed port is "not reachable" and the run goes on
//! (spooling), and error pages are logged as one short line.
//! `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test influx_endpoint -- --test-threads=1`

use std::time::Duration;

use flowlens_tests::influx::fake::{FakeInflux, Reply};
use flowlens_tests::influx::flowlens::FlowlensRun;
use flowlens_tests::influx::{free_port, wait_for, TempDir};
use flowlens_tests::{agent, Place, Proc};

fn influx_args(url: &str, dir: &TempDir) -> Vec<String> {
    vec![
        "--influx-url".into(),
        url.into(),
        "--influx-spool-dir".into(),
        dir.path().join("spool").to_string_lossy().into_owned(),
    ]
}

/// No line of the log is a piece of an HTML page.
fn assert_no_html(log: &str) {
    for l in log.lines() {
        let t = l.trim_start();
        assert!(
            !t.starts_with('<') && !l.contains("<html") && !l.contains("<body"),
            "an HTML page reached the log: {l}\n{log}"
        );
    }
}

#[test]
fn a_web_server_is_not_influxdb_and_a_closed_port_is_down() {
    flowlens_tests::assert_root();
    let dir = TempDir::new("not-influx");
    let port = free_port();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).expect("www");
    let (p, w) = (port.to_string(), www.to_string_lossy().into_owned());
    let _web = Proc::spawn(
        Place::Host,
        None,
        &[
            &agent::python(),
            "-m",
            "http.server",
            &p,
            "--bind",
            "127.0.0.1",
            "--directory",
            &w,
        ],
    );
    let url = format!("http://127.0.0.1:{port}");
    let up = wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "HARNESS: http.server did not listen");
    let mut fl = FlowlensRun::spawn(dir.path(), "lo", &influx_args(&url, &dir), &[], "web");
    let st = fl.wait_exit(Duration::from_secs(20));
    let log = fl.log();
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(1),
        "a web server at the URL is a configuration error:\n{log}"
    );
    assert!(
        log.contains("is not InfluxDB")
            && log.contains("GET /ping answered HTTP 404 (an HTML page: Error response)")
            && !log.contains("not reachable"),
        "{log}"
    );
    assert_no_html(&log);
    // Nothing listens: InfluxDB is down, not misconfigured; the run goes on.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let fl = FlowlensRun::start(dir.path(), "lo", &influx_args(&closed, &dir), &[], "down");
    let log = fl.stop();
    assert!(
        log.contains("InfluxDB is not reachable") && !log.contains("is not InfluxDB"),
        "{log}"
    );
}

/// A proxy in front of a stopped InfluxDB answers writes with a 502 page:
/// retried (an outage), and logged as one line with the page's title.
#[test]
fn error_pages_are_logged_on_one_short_line() {
    flowlens_tests::assert_root();
    let dir = TempDir::new("error-page");
    let page = "<!DOCTYPE html>\n<html>\n<head>\n<title>502 Bad Gateway</title>\n</head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n<hr><center>nginx</center>\n</body>\n</html>\n".repeat(3);
    let srv = FakeInflux::start(move |r, _| {
        if r.is_write() && !r.body.is_empty() {
            Reply::Status {
                code: 502,
                headers: vec![("Content-Type".into(), "text/html".into())],
                body: page.clone(),
            }
        } else {
            Reply::ok()
        }
    });
    let fl = FlowlensRun::start(dir.path(), "lo", &influx_args(&srv.url(), &dir), &[], "502");
    // Traffic on lo, so there is something to write.
    let ping = std::process::Command::new("ping")
        .args(["-c", "3", "-i", "0.2", "127.0.0.1"])
        .output()
        .expect("ping");
    assert!(ping.status.success(), "HARNESS: ping");
    let retried = wait_for(Duration::from_secs(15), || {
        fl.log().contains("InfluxDB write failed")
    });
    let log = fl.stop();
    assert!(retried, "no failed write logged:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("InfluxDB write failed"))
        .unwrap_or_default();
    assert!(
        line.contains("HTTP 502: an HTML page: 502 Bad Gateway"),
        "{line}"
    );
    assert!(line.len() < 600, "one short line: {} bytes", line.len());
    assert_no_html(&log);
}
