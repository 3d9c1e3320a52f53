//! The filter language: `container = web AND proto = tcp AND NOT server_port IN (22, 443)`,
//! `addr << 10.0.0.0/8`. Parsed into a typed AST ([`Expr`]) whose identifiers
//! come from the [`Field`] allow-list and whose literals are typed values;
//! every error names its position in the text.
//!
//! Grammar (keywords are case-insensitive):
//! ```text
//! expr   := and ("OR" and)*
//! and    := unary ("AND" unary)*
//! unary  := "NOT" unary | "(" expr ")" | atom
//! atom   := field op value | field ["NOT"] "IN" "(" value ("," value)* ")"
//! op     := "=" | "!=" | "~" (contains) | "!~" | "<<" (in subnet) | "!<<" | "<" | "<=" | ">" | ">="
//! value  := bare word (letters, digits, _ . : / - @ +) | "double" or 'single' quoted (\\ and \" escapes)
//! ```

mod eval;
pub mod lexer;
mod parser;

use std::{fmt, net::IpAddr};

use serde::Serialize;

pub use eval::{ConvSubject, EndSubject, Subject, Val};
pub use lexer::{Lexer, Tok, Token};
pub use parser::{operators as parser_operators, parse};

use crate::field::{Field, FieldSet, Scope};

/// Longest filter text accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Longest single value, in bytes.
pub const MAX_VALUE_BYTES: usize = 256;
/// Deepest nesting of parentheses and NOTs.
pub const MAX_DEPTH: usize = 32;
/// Most atoms in one filter.
pub const MAX_ATOMS: usize = 64;
/// Most values in one `IN (...)` list.
pub const MAX_IN_VALUES: usize = 256;

/// A filter that cannot be used, with where in the text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message} (at {start})")]
pub struct FilterError {
    /// What is wrong, phrased for the user.
    pub message: String,
    /// Start of the offending text, in UTF-16 code units (JavaScript string indices).
    pub start: usize,
    /// End (exclusive), in UTF-16 code units.
    pub end: usize,
}

impl FilterError {
    /// An error covering bytes `start..end` of `src`.
    pub fn at(src: &str, start: usize, end: usize, message: impl Into<String>) -> Self {
        let u16_at = |b: usize| {
            let b = b.min(src.len());
            // Clamp to a char boundary at or before `b`.
            let mut b = b;
            while !src.is_char_boundary(b) {
                b -= 1;
            }
            src[..b].encode_utf16().count()
        };
        FilterError {
            message: message.into(),
            start: u16_at(start),
            end: u16_at(end.max(start)),
        }
    }
}

/// An IP network (`10.0.0.0/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    /// Network address (host bits zeroed).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Net {
    /// Parses `a.b.c.d/n` or `v6::/n`; a bare address is a host network.
    pub fn parse(s: &str) -> Result<Net, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("'{a}' is not an IP address"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("'/{p}' is not a prefix length (0 to {max})"))?,
        };
        Ok(Net {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A typed literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Literal {
    /// Text (choices are normalized to lower case; protocol numbers to names).
    Text(String),
    /// A port or number.
    Num(u64),
    /// An address.
    Addr(IpAddr),
    /// A network.
    Net(Net),
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Equal to one of the values (`=` has one, `IN` several).
    Eq,
    /// Contains the text (ASCII case-insensitive).
    Contains,
    /// Address in the network.
    Subnet,
    /// Less than.
    Lt,
    /// Less or equal.
    Le,
    /// Greater than.
    Gt,
    /// Greater or equal.
    Ge,
}

/// One comparison of a field with values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Atom {
    /// The field.
    pub field: Field,
    /// The comparison.
    pub op: Op,
    /// One value, or several for `IN`.
    pub values: Vec<Literal>,
    /// `!=`, `NOT IN`, `!~`, `!<<`: the atom is true when the positive comparison is false.
    pub negated: bool,
    /// Bytes of the atom in the filter text.
    pub span: (usize, usize),
}

/// A filter expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// A comparison.
    Atom(Atom),
    /// All of these.
    And(Vec<Expr>),
    /// Any of these.
    Or(Vec<Expr>),
    /// Not this.
    Not(Box<Expr>),
}

impl Expr {
    /// Every field the expression names.
    pub fn fields(&self) -> FieldSet {
        let mut s = FieldSet::EMPTY;
        self.visit(&mut |a| s.insert(a.field));
        s
    }

    /// Calls `f` on every atom.
    pub fn visit(&self, f: &mut dyn FnMut(&Atom)) {
        match self {
            Expr::Atom(a) => f(a),
            Expr::And(v) | Expr::Or(v) => v.iter().for_each(|e| e.visit(f)),
            Expr::Not(e) => e.visit(f),
        }
    }

    /// The negation normal form: `Not` only directly on atoms, folded into
    /// their `negated` flag (De Morgan); InfluxQL has no NOT operator.
    pub fn nnf(&self) -> Expr {
        self.nnf_inner(false)
    }

    fn nnf_inner(&self, neg: bool) -> Expr {
        match self {
            Expr::Atom(a) => Expr::Atom(Atom {
                negated: a.negated != neg,
                ..a.clone()
            }),
            Expr::Not(e) => e.nnf_inner(!neg),
            Expr::And(v) => {
                let v = v.iter().map(|e| e.nnf_inner(neg)).collect();
                if neg {
                    Expr::Or(v)
                } else {
                    Expr::And(v)
                }
            }
            Expr::Or(v) => {
                let v = v.iter().map(|e| e.nnf_inner(neg)).collect();
                if neg {
                    Expr::And(v)
                } else {
                    Expr::Or(v)
                }
            }
        }
    }

    /// Refuses fields that have no meaning for a question (direction in the
    /// conversation list), naming the position in `src`.
    pub fn check_conversation_scope(&self, src: &str) -> Result<(), FilterError> {
        let mut err = None;
        self.visit(&mut |a| {
            if err.is_none() && a.field.scope() == Scope::Direction {
                err = Some(FilterError::at(
                    src,
                    a.span.0,
                    a.span.1,
                    format!(
                        "'{}' applies to traffic (series, tables, sankey), not to the conversation list",
                        a.field
                    ),
                ));
            }
        });
        err.map_or(Ok(()), Err)
    }
}

/// Quotes a text value for the filter language.
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Text(s) => f.write_str(&quote(s)),
            Literal::Num(n) => write!(f, "{n}"),
            Literal::Addr(a) => write!(f, "{a}"),
            Literal::Net(n) => write!(f, "{n}"),
        }
    }
}

impl fmt::Display for Expr {
    /// The canonical text of the expression (parses back to the same AST, spans aside).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Atom(a) => {
                let op = match (a.op, a.negated, a.values.len() > 1) {
                    (Op::Eq, false, false) => "=",
                    (Op::Eq, true, false) => "!=",
                    (Op::Eq, false, true) => "IN",
                    (Op::Eq, true, true) => "NOT IN",
                    (Op::Contains, false, _) => "~",
                    (Op::Contains, true, _) => "!~",
                    (Op::Subnet, false, _) => "<<",
                    (Op::Subnet, true, _) => "!<<",
                    (Op::Lt, _, _) => "<",
                    (Op::Le, _, _) => "<=",
                    (Op::Gt, _, _) => ">",
                    (Op::Ge, _, _) => ">=",
                };
                let neg_cmp = a.negated && matches!(a.op, Op::Lt | Op::Le | Op::Gt | Op::Ge);
                if neg_cmp {
                    f.write_str("NOT ")?;
                }
                write!(f, "{} {op} ", a.field)?;
                if a.values.len() > 1 {
                    f.write_str("(")?;
                    for (i, v) in a.values.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        write!(f, "{v}")?;
                    }
                    f.write_str(")")
                } else {
                    match a.values.first() {
                        Some(v) => write!(f, "{v}"),
                        None => Ok(()),
                    }
                }
            }
            Expr::And(v) | Expr::Or(v) => {
                let sep = if matches!(self, Expr::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                for (i, e) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    if matches!(e, Expr::And(_) | Expr::Or(_)) {
                        write!(f, "({e})")?;
                    } else {
                        write!(f, "{e}")?;
                    }
                }
                Ok(())
            }
            Expr::Not(e) => match **e {
                Expr::Atom(_) | Expr::Not(_) => write!(f, "NOT {e}"),
                _ => write!(f, "NOT ({e})"),
            },
        }
    }
}

/// Parses an optional filter: `None` or blank text is no filter.
pub fn parse_optional(src: Option<&str>) -> Result<Option<Expr>, FilterError> {
    match src {
        Some(s) if !s.trim().is_empty() => parse(s).map(Some),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests;
