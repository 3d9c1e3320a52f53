//! A small HTTP/1.1 server playing a misbehaving InfluxDB (not a real one):
//! scripted answers, every request recorded (gzip bodies decompressed).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the fake server answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A status with headers and a body.
    Status {
        /// HTTP status.
        code: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Body (JSON like InfluxDB's).
        body: String,
    },
    /// Never answer (until the server is dropped).
    Stall,
}

impl Reply {
    /// 204 No Content.
    pub fn ok() -> Self {
        Self::status(204, "")
    }

    /// `code` with InfluxDB's `{"error": ...}` body (none when empty).
    pub fn status(code: u16, error: &str) -> Self {
        let body = if error.is_empty() {
            String::new()
        } else {
            serde_json::json!({ "error": error }).to_string()
        };
        Reply::Status {
            code,
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a header.
    pub fn header(mut self, k: &str, v: &str) -> Self {
        if let Reply::Status { headers, .. } = &mut self {
            headers.push((k.to_owned(), v.to_owned()));
        }
        self
    }
}

/// One request the fake server received.
#[derive(Clone, Debug)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// Decoded query parameters.
    pub query: Vec<(String, String)>,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body, gunzipped when `Content-Encoding: gzip`.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl Request {
    /// A header by (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A write with points (not the empty start-up probe).
    pub fn is_write(&self) -> bool {
        self.method == "POST" && self.path.ends_with("write") && !self.body.is_empty()
    }

    /// The body's lines.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.body)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

type Script = dyn Fn(&Request, usize) -> Reply + Send + Sync;

/// A small HTTP/1.1 server (keep-alive) playing InfluxDB: `script(request,
/// n)` decides each answer, `n` counting earlier writes with points. Every
/// request is recorded.
pub struct FakeInflux {
    /// Port on 127.0.0.1.
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl FakeInflux {
    /// Starts it.
    pub fn start(script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let connections = Arc::new(AtomicUsize::new(0));
        let (reqs, st, conns) = (
            Arc::clone(&requests),
            Arc::clone(&stop),
            Arc::clone(&connections),
        );
        let accept = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        conns.fetch_add(1, Ordering::Relaxed);
                        let (reqs, st, script) =
                            (Arc::clone(&reqs), Arc::clone(&st), Arc::clone(&script));
                        std::thread::spawn(move || serve(s, &reqs, &st, &*script));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeInflux {
            port,
            requests,
            connections,
            stop,
            accept: Some(accept),
        }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Writes with points so far.
    pub fn writes(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(Request::is_write)
            .collect()
    }
}

impl Drop for FakeInflux {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(s: TcpStream, reqs: &Mutex<Vec<Request>>, stop: &AtomicBool, script: &Script) {
    let Ok(mut out) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut raw = vec![0u8; len];
        if r.read_exact(&mut raw).is_err() {
            return;
        }
        let gz = headers
            .iter()
            .any(|(k, v)| k == "content-encoding" && v == "gzip");
        let body = if gz && !raw.is_empty() {
            let mut b = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut b)
                .expect("the body is not valid gzip");
            b
        } else {
            raw
        };
        let (path, q) = target.split_once('?').unwrap_or((target.as_str(), ""));
        let query = url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let req = Request {
            method,
            path: path.to_owned(),
            target: target.clone(),
            query,
            headers,
            body,
            at: Instant::now(),
        };
        let n = {
            let mut all = reqs.lock().expect("lock");
            let n = all.iter().filter(|r| r.is_write()).count();
            all.push(req.clone());
            n
        };
        match script(&req, n) {
            Reply::Stall => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Reply::Status {
                code,
                headers,
                body,
            } => {
                let mut resp = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                resp.push_str(&body);
                if out.write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}
