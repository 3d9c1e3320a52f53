//! Evaluation of a filter on one end (traffic questions) or one conversation
//! record (the conversation list). This is the one definition of what a
//! filter means; stores may narrow what they read with a translated filter,
//! but every row is then checked here, so both stores agree.

use std::net::IpAddr;

use super::{Atom, Expr, Literal, Op};
use crate::{
    fact::{Conv, End, Owner},
    field::{Field, Scope},
};

/// A value of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val<'a> {
    /// Text.
    Text(&'a str),
    /// Number.
    Num(u64),
    /// Address.
    Addr(IpAddr),
}

/// Something a filter can be evaluated on.
pub trait Subject {
    /// Whether any value of `field` satisfies `pred` (false when the field has none).
    fn any(&self, field: Field, pred: &mut dyn FnMut(Val<'_>) -> bool) -> bool;

    /// Whether the filter holds.
    fn matches(&self, e: &Expr) -> bool
    where
        Self: Sized,
    {
        eval(e, self)
    }
}

fn eval(e: &Expr, s: &dyn Subject) -> bool {
    match e {
        Expr::Atom(a) => atom(a, s) != a.negated,
        Expr::And(v) => v.iter().all(|e| eval(e, s)),
        Expr::Or(v) => v.iter().any(|e| eval(e, s)),
        Expr::Not(e) => !eval(e, s),
    }
}

/// ASCII case-insensitive substring test.
pub fn contains_ignore_ascii_case(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// The positive comparison of one value.
fn compare(op: Op, lit: &Literal, v: Val<'_>) -> bool {
    match (op, lit, v) {
        (Op::Eq, Literal::Text(t), Val::Text(x)) => t == x,
        (Op::Eq, Literal::Num(n), Val::Num(x)) => *n == x,
        (Op::Eq, Literal::Addr(a), Val::Addr(x)) => *a == x.to_canonical(),
        (Op::Contains, Literal::Text(t), Val::Text(x)) => contains_ignore_ascii_case(x, t),
        (Op::Subnet, Literal::Net(n), Val::Addr(x)) => n.contains(x),
        (Op::Lt, Literal::Num(n), Val::Num(x)) => x < *n,
        (Op::Le, Literal::Num(n), Val::Num(x)) => x <= *n,
        (Op::Gt, Literal::Num(n), Val::Num(x)) => x > *n,
        (Op::Ge, Literal::Num(n), Val::Num(x)) => x >= *n,
        _ => false,
    }
}

fn atom(a: &Atom, s: &dyn Subject) -> bool {
    s.any(a.field, &mut |v| {
        a.values.iter().any(|lit| compare(a.op, lit, v))
    })
}

/// A local end, seen in one direction (`None` when the filter does not name
/// `direction`).
pub struct EndSubject<'e, 'a> {
    /// The end.
    pub end: &'e End<'a>,
    /// `Some("out")` / `Some("in")`.
    pub direction: Option<&'static str>,
}

impl Subject for EndSubject<'_, '_> {
    fn any(&self, field: Field, pred: &mut dyn FnMut(Val<'_>) -> bool) -> bool {
        let e = self.end;
        let text = |t: &str, pred: &mut dyn FnMut(Val<'_>) -> bool| pred(Val::Text(t));
        match field {
            Field::Host => text(e.host, pred),
            Field::Proto => text(e.proto, pred),
            Field::Container => text(e.container, pred),
            Field::Process => text(e.process, pred),
            Field::User => text(e.user, pred),
            Field::Role => text(e.role.name(), pred),
            Field::Direction => self.direction.is_some_and(|d| pred(Val::Text(d))),
            Field::Peer => text(e.peer, pred),
            Field::PeerLocal => e
                .peer_local
                .is_some_and(|l| pred(Val::Text(if l { "true" } else { "false" }))),
            Field::ServerPort => e.server_port.is_some_and(|p| pred(Val::Num(p.into()))),
            Field::Port => e.raw.is_some_and(|r| {
                pred(Val::Num(r.local_port.into())) || pred(Val::Num(r.peer_port.into()))
            }),
            Field::Addr => e
                .raw
                .is_some_and(|r| pred(Val::Addr(r.local_addr)) || pred(Val::Addr(r.peer_addr))),
            Field::LocalAddr => e.raw.is_some_and(|r| pred(Val::Addr(r.local_addr))),
            Field::PeerAddr => e.raw.is_some_and(|r| pred(Val::Addr(r.peer_addr))),
            Field::Pid => e.raw.is_some_and(|r| pred(Val::Num(r.pid.into()))),
            Field::Exe => e
                .raw
                .and_then(|r| r.exe)
                .is_some_and(|x| pred(Val::Text(x))),
        }
    }
}

/// A conversation record: end fields hold when they hold for either local end.
pub struct ConvSubject<'e, 'a> {
    /// The record.
    pub conv: &'e Conv<'a>,
}

impl Subject for ConvSubject<'_, '_> {
    fn any(&self, field: Field, pred: &mut dyn FnMut(Val<'_>) -> bool) -> bool {
        let c = self.conv;
        match field.scope() {
            Scope::Direction => false,
            Scope::Conversation => match field {
                Field::Host => pred(Val::Text(c.host)),
                Field::Proto => pred(Val::Text(c.proto)),
                Field::ServerPort => c.server_port().is_some_and(|p| pred(Val::Num(p.into()))),
                Field::Port => {
                    pred(Val::Num(c.client.port.into())) || pred(Val::Num(c.server.port.into()))
                }
                Field::Addr => pred(Val::Addr(c.client.addr)) || pred(Val::Addr(c.server.addr)),
                _ => false,
            },
            Scope::End => {
                let sides = [
                    (&c.client, &c.server, "client"),
                    (&c.server, &c.client, "server"),
                ];
                sides.iter().any(|(me, other, role)| {
                    let Some(o): Option<&Owner<'_>> = me.owner.as_ref() else {
                        return false;
                    };
                    match field {
                        Field::Container => pred(Val::Text(o.container)),
                        Field::Process => pred(Val::Text(o.comm)),
                        Field::User => pred(Val::Text(o.user)),
                        Field::Role => pred(Val::Text(role)),
                        Field::Peer => pred(Val::Text(other.as_peer())),
                        Field::PeerLocal => pred(Val::Text(if other.owner.is_some() {
                            "true"
                        } else {
                            "false"
                        })),
                        Field::LocalAddr => pred(Val::Addr(me.addr)),
                        Field::PeerAddr => pred(Val::Addr(other.addr)),
                        Field::Pid => pred(Val::Num(o.pid.into())),
                        Field::Exe => o.exe.is_some_and(|x| pred(Val::Text(x))),
                        _ => false,
                    }
                })
            }
        }
    }
}
