//! The allow-list of everything a user can name: filter fields and the
//! dimensions a question can group by. Nothing outside these enums ever
//! reaches a query as an identifier.

use std::fmt;

use serde::Serialize;

/// What kind of values a field holds (decides the operators it accepts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Free text: `=`, `!=`, `IN`, `~` (contains).
    Text,
    /// One of a fixed set of words: `=`, `!=`, `IN`.
    Choice,
    /// A port (0..=65535): `=`, `!=`, `IN`, `<`, `<=`, `>`, `>=`.
    Port,
    /// A non-negative integer (pid): as ports, up to 2^32 - 1.
    Number,
    /// An IP address: `=`, `!=`, `IN`, `<<` (in subnet).
    Address,
}

/// Where a field's value lives: on the local end of a conversation (user,
/// process, container, ...) or on the conversation itself (host, protocol,
/// ports, addresses of both ends).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The conversation: the same for both of its ends.
    Conversation,
    /// A local end (in the conversation list: true when either local end matches).
    End,
    /// The direction of the traffic of an end (only for traffic questions).
    Direction,
}

macro_rules! fields {
    ($($(#[$doc:meta])* $var:ident = $name:literal, [$($alias:literal),*], $kind:ident, $scope:ident, $help:literal;)+) => {
        /// A filter field.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Field { $($(#[$doc])* $var,)+ }

        impl Field {
            /// Every field.
            pub const ALL: &'static [Field] = &[$(Field::$var,)+];

            /// The field's name in the filter language and the API.
            pub const fn name(self) -> &'static str {
                match self { $(Field::$var => $name,)+ }
            }

            /// Other names the parser accepts.
            pub const fn aliases(self) -> &'static [&'static str] {
                match self { $(Field::$var => &[$($alias),*],)+ }
            }

            /// The kind of value.
            pub const fn kind(self) -> FieldKind {
                match self { $(Field::$var => FieldKind::$kind,)+ }
            }

            /// Where the value lives.
            pub const fn scope(self) -> Scope {
                match self { $(Field::$var => Scope::$scope,)+ }
            }

            /// One line for the UI.
            pub const fn help(self) -> &'static str {
                match self { $(Field::$var => $help,)+ }
            }
        }
    };
}

fields! {
    /// Collector host name.
    Host = "host", [], Text, Conversation, "host name of the collector";
    /// `tcp`, `udp`, `icmp`, `icmpv6` or a protocol number.
    Proto = "proto", ["protocol"], Choice, Conversation, "tcp, udp, icmp, icmpv6 or an IP protocol number";
    /// Container label of the local end (name, short id, or `host`).
    Container = "container", [], Text, End, "container of the local end (name, short id, or host)";
    /// Command name of the local end.
    Process = "process", ["comm"], Text, End, "command name (comm) of the local end";
    /// User name (uid when unknown) of the local end.
    User = "user", ["username"], Text, End, "user name (uid when unknown) of the local end";
    /// `client` or `server`: which side the local end is.
    Role = "role", [], Choice, End, "client (started the conversation) or server";
    /// `out` (sent by the local end) or `in` (received).
    Direction = "direction", ["dir"], Choice, Direction, "out (sent by the local end) or in (received)";
    /// The other end: its container when it is a local container, else its address.
    Peer = "peer", [], Text, End, "the other end: its container when local, else its address";
    /// `true` when a local process owns the other end.
    PeerLocal = "peer_local", [], Choice, End, "true when a process of this host owns the other end";
    /// Server port of the conversation (absent for ICMP).
    ServerPort = "server_port", ["sport", "service_port"], Port, Conversation, "server port of the conversation";
    /// Either end's port.
    Port = "port", [], Port, Conversation, "either end's port";
    /// Either end's address.
    Addr = "addr", ["address", "ip"], Address, Conversation, "either end's address (addr << 10.0.0.0/8)";
    /// The local end's address.
    LocalAddr = "local_addr", [], Address, End, "address of the local end";
    /// The other end's address.
    PeerAddr = "peer_addr", ["remote_addr"], Address, End, "address of the other end";
    /// Process id of the local end.
    Pid = "pid", [], Number, End, "process id of the local end";
    /// Executable path of the local end.
    Exe = "exe", [], Text, End, "executable path of the local end";
}

impl Field {
    /// The field named `s` (a name or an alias, ASCII case-insensitive).
    pub fn parse(s: &str) -> Option<Field> {
        Field::ALL.iter().copied().find(|f| {
            f.name().eq_ignore_ascii_case(s)
                || f.aliases().iter().any(|a| a.eq_ignore_ascii_case(s))
        })
    }

    /// The allowed values of a `Choice` field.
    pub const fn choices(self) -> &'static [&'static str] {
        match self {
            Field::Proto => &["tcp", "udp", "icmp", "icmpv6"],
            Field::Role => &["client", "server"],
            Field::Direction => &["out", "in"],
            Field::PeerLocal => &["true", "false"],
            _ => &[],
        }
    }

    /// The dimension of the same name, when the field can be grouped by.
    pub const fn dim(self) -> Option<Dim> {
        match self {
            Field::Host => Some(Dim::Host),
            Field::Proto => Some(Dim::Proto),
            Field::Container => Some(Dim::Container),
            Field::Process => Some(Dim::Process),
            Field::User => Some(Dim::User),
            Field::Role => Some(Dim::Role),
            Field::Direction => Some(Dim::Direction),
            Field::Peer => Some(Dim::Peer),
            Field::ServerPort => Some(Dim::ServerPort),
            _ => None,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dimension traffic can be grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dim {
    /// Collector host.
    Host,
    /// Container of the local end.
    Container,
    /// Process (comm) of the local end.
    Process,
    /// User of the local end.
    User,
    /// The other end (container or address).
    Peer,
    /// Protocol.
    Proto,
    /// Server port.
    ServerPort,
    /// `out` / `in`.
    Direction,
    /// `client` / `server`.
    Role,
}

impl Dim {
    /// Every dimension.
    pub const ALL: &'static [Dim] = &[
        Dim::Host,
        Dim::Container,
        Dim::Process,
        Dim::User,
        Dim::Peer,
        Dim::Proto,
        Dim::ServerPort,
        Dim::Direction,
        Dim::Role,
    ];

    /// The field holding the dimension's values.
    pub const fn field(self) -> Field {
        match self {
            Dim::Host => Field::Host,
            Dim::Container => Field::Container,
            Dim::Process => Field::Process,
            Dim::User => Field::User,
            Dim::Peer => Field::Peer,
            Dim::Proto => Field::Proto,
            Dim::ServerPort => Field::ServerPort,
            Dim::Direction => Field::Direction,
            Dim::Role => Field::Role,
        }
    }

    /// The name in the API (`dims=container,process`).
    pub const fn name(self) -> &'static str {
        self.field().name()
    }

    /// Parses a dimension name (or a field alias of one).
    pub fn parse(s: &str) -> Option<Dim> {
        Field::parse(s).and_then(Field::dim)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A small set of fields (a bit mask).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldSet(u32);

impl FieldSet {
    /// No field.
    pub const EMPTY: FieldSet = FieldSet(0);

    /// Every field.
    pub fn all() -> FieldSet {
        Field::ALL.iter().copied().collect()
    }

    /// The set of these fields.
    pub fn of(fields: &[Field]) -> FieldSet {
        fields.iter().copied().collect()
    }

    /// Adds a field.
    pub fn insert(&mut self, f: Field) {
        self.0 |= 1 << f as u32;
    }

    /// Whether `f` is in the set.
    pub fn contains(self, f: Field) -> bool {
        self.0 & (1 << f as u32) != 0
    }

    /// Whether every field of `other` is in the set.
    pub fn covers(self, other: FieldSet) -> bool {
        other.0 & !self.0 == 0
    }

    /// Union.
    pub fn union(self, other: FieldSet) -> FieldSet {
        FieldSet(self.0 | other.0)
    }

    /// The fields of `self` not in `other`.
    pub fn minus(self, other: FieldSet) -> FieldSet {
        FieldSet(self.0 & !other.0)
    }

    /// The fields, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Field> {
        Field::ALL
            .iter()
            .copied()
            .filter(move |f| self.contains(*f))
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Field> for FieldSet {
    fn from_iter<I: IntoIterator<Item = Field>>(iter: I) -> Self {
        let mut s = FieldSet::EMPTY;
        for f in iter {
            s.insert(f);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_are_unique() {
        let mut seen = Vec::new();
        for f in Field::ALL {
            for n in std::iter::once(f.name()).chain(f.aliases().iter().copied()) {
                assert!(!seen.contains(&n), "{n} twice");
                seen.push(n);
                assert_eq!(Field::parse(&n.to_uppercase()), Some(*f));
            }
        }
        assert_eq!(Field::parse("nope"), None);
    }

    #[test]
    fn dims_round_trip() {
        for d in Dim::ALL {
            assert_eq!(Dim::parse(d.name()), Some(*d));
            assert_eq!(d.field().dim(), Some(*d));
        }
        assert_eq!(Dim::parse("comm"), Some(Dim::Process));
        assert_eq!(Dim::parse("addr"), None);
    }

    #[test]
    fn field_sets() {
        let s = FieldSet::of(&[Field::Host, Field::Peer]);
        assert!(s.contains(Field::Peer) && !s.contains(Field::Pid));
        assert!(FieldSet::all().covers(s));
        assert!(!s.covers(FieldSet::of(&[Field::Pid])));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![Field::Host, Field::Peer]);
        assert_eq!(
            s.minus(FieldSet::of(&[Field::Host])),
            FieldSet::of(&[Field::Peer])
        );
    }
}
