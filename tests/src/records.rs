//! flowlens JSON lines: validation against the contract and summing of the
//! per-interval deltas into conversations.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

/// Which end of a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `client`.
    Client,
    /// `server`.
    Server,
}

impl Side {
    /// The JSON key.
    pub fn key(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// `(proto, client, server)`.
pub type ConvKey = (String, SocketAddr, SocketAddr);

/// All lines of one conversation, summed.
#[derive(Clone, Debug, Default)]
pub struct Conversation {
    /// `proto` as written.
    pub proto: String,
    /// Client address and port.
    pub client: Option<SocketAddr>,
    /// Server address and port.
    pub server: Option<SocketAddr>,
    /// Sum of `bytes_c2s`.
    pub bytes_c2s: u64,
    /// Sum of `bytes_s2c`.
    pub bytes_s2c: u64,
    /// Sum of `packets_c2s`.
    pub packets_c2s: u64,
    /// Sum of `packets_s2c`.
    pub packets_s2c: u64,
    /// OR of `tcp_flags`.
    pub tcp_flags: u8,
    /// Union of `ifaces`.
    pub ifaces: BTreeSet<String>,
    /// The lines, in file order.
    pub lines: Vec<Value>,
}

impl Conversation {
    /// The distinct values of `<side>.<field>` over all lines, as JSON text
    /// (`<missing>` for a line without it). One element = consistent.
    pub fn endpoint_values(&self, side: Side, field: &str) -> BTreeSet<String> {
        self.lines
            .iter()
            .map(|l| {
                l[side.key()]
                    .get(field)
                    .map_or_else(|| "<missing>".to_owned(), Value::to_string)
            })
            .collect()
    }

    /// One-line description for messages.
    pub fn describe(&self) -> String {
        let addr = |a: Option<SocketAddr>| a.map_or_else(|| "?".to_owned(), |a| a.to_string());
        format!(
            "{} {} -> {}: c2s {} pkts/{} B, s2c {} pkts/{} B, flags {:#04x}, ifaces {:?}, {} line(s)",
            self.proto,
            addr(self.client),
            addr(self.server),
            self.packets_c2s,
            self.bytes_c2s,
            self.packets_s2c,
            self.bytes_s2c,
            self.tcp_flags,
            self.ifaces,
            self.lines.len()
        )
    }
}

/// Checks one line against the contract; `Err` says what is wrong.
pub fn validate_line(v: &Value) -> Result<(), String> {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .ok_or(format!("`{k}` missing or not a string"))
    };
    let u = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or(format!("`{k}` missing or not an unsigned integer"))
    };
    s("ts")?;
    s("host")?;
    s("proto")?;
    s("first_seen")?;
    s("last_seen")?;
    for k in [
        "bytes_c2s",
        "bytes_s2c",
        "packets_c2s",
        "packets_s2c",
        "interval_ms",
    ] {
        u(k)?;
    }
    if u("tcp_flags")? > 255 {
        return Err("`tcp_flags` > 255".into());
    }
    let ifaces = v
        .get("ifaces")
        .and_then(Value::as_array)
        .ok_or("`ifaces` missing or not an array")?;
    if ifaces.iter().any(|i| !i.is_string()) {
        return Err("`ifaces` has a non-string element".into());
    }
    for side in [Side::Client, Side::Server] {
        endpoint(v, side)?;
        if v[side.key()]
            .get("local")
            .and_then(Value::as_bool)
            .is_none()
        {
            return Err(format!("`{}.local` missing or not a bool", side.key()));
        }
    }
    Ok(())
}

fn endpoint(v: &Value, side: Side) -> Result<SocketAddr, String> {
    let e = v
        .get(side.key())
        .ok_or(format!("`{}` missing", side.key()))?;
    let addr = e
        .get("addr")
        .and_then(Value::as_str)
        .ok_or(format!("`{}.addr` missing", side.key()))?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{}.addr` {addr:?} is not an IP address", side.key()))?;
    let port = e
        .get("port")
        .and_then(Value::as_u64)
        .filter(|p| *p <= 65535)
        .ok_or(format!("`{}.port` missing or not a u16", side.key()))?;
    Ok(SocketAddr::new(ip, port as u16))
}

/// Sums all lines into conversations keyed by proto + client + server.
/// Panics on a line that violates the contract (with the line).
pub fn conversations(records: &[Value]) -> BTreeMap<ConvKey, Conversation> {
    let mut map: BTreeMap<ConvKey, Conversation> = BTreeMap::new();
    for line in records {
        if let Err(e) = validate_line(line) {
            panic!("flowlens line violates the contract: {e}: {line}");
        }
        let proto = line["proto"].as_str().unwrap_or_default().to_owned();
        let (c, s) = (endpoint(line, Side::Client), endpoint(line, Side::Server));
        let (Ok(client), Ok(server)) = (c, s) else {
            unreachable!("validated")
        };
        let conv = map.entry((proto.clone(), client, server)).or_default();
        conv.proto = proto;
        conv.client = Some(client);
        conv.server = Some(server);
        let n = |k: &str| line[k].as_u64().unwrap_or_default();
        conv.bytes_c2s += n("bytes_c2s");
        conv.bytes_s2c += n("bytes_s2c");
        conv.packets_c2s += n("packets_c2s");
        conv.packets_s2c += n("packets_s2c");
        conv.tcp_flags |= n("tcp_flags") as u8;
        let ifaces = line["ifaces"].as_array().into_iter().flatten();
        conv.ifaces
            .extend(ifaces.filter_map(Value::as_str).map(str::to_owned));
        conv.lines.push(line.clone());
    }
    map
}

/// The conversation `proto` from `client` to `server`. `Err` explains: not
/// there at all, or there with the roles swapped; plus a listing of what is.
pub fn find(
    records: &[Value],
    proto: &str,
    client: SocketAddr,
    server: SocketAddr,
) -> Result<Conversation, String> {
    let convs = conversations(records);
    if let Some(c) = convs.get(&(proto.to_owned(), client, server)) {
        return Ok(c.clone());
    }
    let why = match convs.get(&(proto.to_owned(), server, client)) {
        Some(c) => format!("found with client and server SWAPPED: {}", c.describe()),
        None => "not in the output".to_owned(),
    };
    Err(format!(
        "conversation {proto} {client} -> {server} {why}; flowlens wrote:\n{}",
        summary(&convs)
    ))
}

/// A listing of conversations for failure messages.
pub fn summary(convs: &BTreeMap<ConvKey, Conversation>) -> String {
    if convs.is_empty() {
        return "  (nothing)\n".to_owned();
    }
    convs
        .values()
        .map(|c| format!("  {}\n", c.describe()))
        .collect()
}
