//! A real headless Chromium driven over W3C WebDriver (Debian's `chromium` +
//! `chromium-driver`): a small client over HTTP (ureq), enough for the
//! explorer's tests — navigate, run scripts, click, type keys, screenshots,
//! the console log and every network request the pages made (chromedriver's
//! performance log).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

/// The chromedriver process (killed on drop) and its scratch profile.
pub struct Driver {
    child: Child,
    url: String,
    _profile: crate::TempDir,
}

/// Chromium as the brief prescribes for root in this sandbox.
const CHROME_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
    "--window-size=1280,800",
];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Driver {
    /// Starts chromedriver on a free loopback port.
    pub fn start() -> Self {
        for p in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(p).exists(),
                "{p} missing: apt-get install chromium chromium-driver (scripts/lib/deps.sh installs them)"
            );
        }
        let port = free_port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let ok = crate::cmd::wait_until(Duration::from_secs(20), || {
            ureq::get(&format!("{url}/status"))
                .call()
                .ok()
                .and_then(|r| json_of(r).ok())
                .is_some_and(|v| v["value"]["ready"] == true)
        });
        assert!(ok, "chromedriver did not become ready");
        Driver {
            child,
            url,
            _profile: crate::TempDir::new("chromium"),
        }
    }

    /// A new browser (its own fresh profile directory), 1280×800.
    pub fn session(&self) -> Session {
        let profile = crate::TempDir::new("chromium-profile");
        let mut args: Vec<String> = CHROME_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": args,
                "perfLoggingPrefs": {"enableNetwork": true, "enablePage": false},
            },
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
        }}});
        let v = post(&format!("{}/session", self.url), &caps);
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        let s = Session {
            base: format!("{}/session/{id}", self.url),
            requests: Vec::new(),
            console: Vec::new(),
            _profile: profile,
        };
        s.cmd(
            "POST",
            "/window/rect",
            &json!({"x": 0, "y": 0, "width": 1280, "height": 800}),
        );
        s
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(clippy::result_large_err)] // ureq's own error type, passed straight on
fn send(r: ureq::Request, body: &Value) -> Result<ureq::Response, ureq::Error> {
    r.set("Content-Type", "application/json")
        .send_string(&body.to_string())
}

fn json_of(r: ureq::Response) -> Result<Value, String> {
    let text = r.into_string().map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// The JSON of a GET, or `Null`.
pub fn get_json(url: &str) -> Value {
    ureq::get(url)
        .call()
        .ok()
        .and_then(|r| json_of(r).ok())
        .unwrap_or(Value::Null)
}

fn post(url: &str, body: &Value) -> Value {
    match send(ureq::post(url), body) {
        Ok(r) => json_of(r).unwrap_or(Value::Null),
        Err(ureq::Error::Status(code, r)) => {
            let v = json_of(r).unwrap_or(Value::Null);
            panic!("WebDriver {url}: {code} {v}")
        }
        Err(e) => panic!("WebDriver {url}: {e}"),
    }
}

/// One browser window. Collects the console and the requests of every page
/// it loaded ([`Session::logs`]).
pub struct Session {
    base: String,
    /// Every URL the browser requested so far.
    pub requests: Vec<String>,
    /// Console entries (`level: message`).
    pub console: Vec<String>,
    _profile: crate::TempDir,
}

impl Session {
    fn cmd(&self, method: &str, path: &str, body: &Value) -> Value {
        let url = format!("{}{path}", self.base);
        let r = match method {
            "GET" => ureq::get(&url).call(),
            "DELETE" => ureq::delete(&url).call(),
            _ => send(ureq::post(&url), body),
        };
        match r {
            Ok(r) => json_of(r)
                .map(|v| v["value"].clone())
                .unwrap_or(Value::Null),
            Err(ureq::Error::Status(code, r)) => {
                let v = json_of(r).unwrap_or(Value::Null);
                panic!("WebDriver {method} {path}: {code} {v}")
            }
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    /// Loads a URL (returns when the document has loaded).
    pub fn goto(&mut self, url: &str) {
        self.cmd("POST", "/url", &json!({ "url": url }));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.cmd("GET", "/url", &Value::Null)
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` are `args`), returns its value.
    pub fn exec(&self, script: &str, args: &[Value]) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            &json!({ "script": script, "args": args }),
        )
    }

    /// Polls `script` until it returns something truthy; panics with `what`
    /// and the last value (and a screenshot in `shots`) after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str, args: &[Value]) -> Value {
        let t0 = Instant::now();
        let mut last;
        loop {
            last = self.exec(script, args);
            let truthy = match &last {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::Object(_) => true,
            };
            if truthy {
                return last;
            }
            if t0.elapsed() > timeout {
                let text = self.exec("return document.body ? document.body.innerText : ''", &[]);
                panic!(
                    "timed out waiting for {what} at {}; last value {last}\npage text:\n{}",
                    self.url(),
                    text.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The WebDriver id of the first element matching `css`.
    pub fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            &json!({"using": "css selector", "value": css}),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_owned()
    }

    /// Clicks an element as a user would (WebDriver element click).
    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/click"), &json!({}));
    }

    /// Types `text` into an element (focusing it); `\u{E007}` is Enter.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/clear"), &json!({}));
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            &json!({ "text": text }),
        );
    }

    /// Presses keys on whatever has the focus (W3C actions).
    pub fn keys(&self, keys: &[&str]) {
        let mut actions = Vec::new();
        for k in keys {
            actions.push(json!({"type": "keyDown", "value": k}));
            actions.push(json!({"type": "keyUp", "value": k}));
        }
        self.cmd(
            "POST",
            "/actions",
            &json!({"actions": [{"type": "key", "id": "kbd", "actions": actions}]}),
        );
    }

    /// Saves a PNG of the viewport.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let v = self.cmd("GET", "/screenshot", &Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .expect("base64 screenshot");
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Drains chromedriver's browser and performance logs into
    /// [`Session::console`] and [`Session::requests`].
    pub fn logs(&mut self) {
        let console = self.cmd("POST", "/se/log", &json!({"type": "browser"}));
        for e in console.as_array().into_iter().flatten() {
            self.console.push(format!(
                "{}: {}",
                e["level"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            ));
        }
        let perf = self.cmd("POST", "/se/log", &json!({"type": "performance"}));
        for e in perf.as_array().into_iter().flatten() {
            let Some(m) = e["message"]
                .as_str()
                .and_then(|m| serde_json::from_str::<Value>(m).ok())
            else {
                continue;
            };
            let m = &m["message"];
            if m["method"] == "Network.requestWillBeSent" {
                if let Some(u) = m["params"]["request"]["url"].as_str() {
                    self.requests.push(u.to_owned());
                }
            }
        }
    }
}

impl Drop for Session {
    /// Ends the browser (also when the test panicked).
    fn drop(&mut self) {
        let _ = ureq::delete(&self.base).call();
    }
}

/// `target/tmp/browser-artifacts/<name>`: screenshots kept after the test.
pub fn artifact_dir(name: &str) -> PathBuf {
    let p = crate::target_tmpdir().join("browser-artifacts").join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("mkdir artifacts");
    p
}
