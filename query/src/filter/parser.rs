//! Recursive-descent parser: tokens -> typed [`Expr`], every value checked
//! against its field's kind.

use std::net::IpAddr;

use super::{
    lexer::{Lexer, Tok, Token},
    Atom, Expr, FilterError, Literal, Net, Op, MAX_ATOMS, MAX_DEPTH, MAX_FILTER_BYTES,
    MAX_IN_VALUES,
};
use crate::field::{Field, FieldKind};

/// Parses a filter.
pub fn parse(src: &str) -> Result<Expr, FilterError> {
    if src.len() > MAX_FILTER_BYTES {
        return Err(FilterError::at(
            src,
            MAX_FILTER_BYTES,
            src.len(),
            format!(
                "the filter is {} bytes long; at most {MAX_FILTER_BYTES} are accepted",
                src.len()
            ),
        ));
    }
    let tokens = Lexer::new(src).tokens()?;
    if tokens.is_empty() {
        return Err(FilterError::at(src, 0, src.len(), "the filter is empty"));
    }
    let mut p = Parser {
        src,
        tokens,
        pos: 0,
        atoms: 0,
    };
    let e = p.expr(0)?;
    if let Some(t) = p.tokens.get(p.pos) {
        let msg = match t.tok {
            Tok::RParen => "unbalanced ')'".to_owned(),
            _ => format!("expected AND or OR before '{}'", &src[t.start..t.end]),
        };
        return Err(FilterError::at(src, t.start, t.end, msg));
    }
    Ok(e)
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    atoms: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn err_at(&self, t: Option<&Token>, msg: impl Into<String>) -> FilterError {
        match t {
            Some(t) => FilterError::at(self.src, t.start, t.end, msg),
            None => FilterError::at(self.src, self.src.len(), self.src.len(), msg),
        }
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek().is_some_and(|t| &t.tok == tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut v = vec![self.and(depth)?];
        while self.eat(&Tok::Or) {
            v.push(self.and(depth)?);
        }
        Ok(if v.len() == 1 {
            v.swap_remove(0)
        } else {
            Expr::Or(v)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut v = vec![self.unary(depth)?];
        while self.eat(&Tok::And) {
            v.push(self.unary(depth)?);
        }
        Ok(if v.len() == 1 {
            v.swap_remove(0)
        } else {
            Expr::And(v)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, FilterError> {
        if depth >= MAX_DEPTH {
            return Err(self.err_at(
                self.peek(),
                format!("nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        match self.peek().map(|t| &t.tok) {
            Some(Tok::Not) => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Tok::LParen) => {
                let open = self.pos;
                self.pos += 1;
                let e = self.expr(depth + 1)?;
                if !self.eat(&Tok::RParen) {
                    let t = self.tokens.get(open).cloned();
                    return Err(self.err_at(t.as_ref(), "'(' is never closed"));
                }
                Ok(e)
            }
            _ => self.atom(),
        }
    }

    fn atom(&mut self) -> Result<Expr, FilterError> {
        let Some(t) = self.peek().cloned() else {
            return Err(self.err_at(None, "expected a field name at the end of the filter"));
        };
        let name = match &t.tok {
            Tok::Word(w) => w.clone(),
            _ => {
                return Err(self.err_at(
                    Some(&t),
                    format!(
                        "expected a field name, found '{}'",
                        &self.src[t.start..t.end]
                    ),
                ))
            }
        };
        let Some(field) = Field::parse(&name) else {
            let known: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
            return Err(self.err_at(
                Some(&t),
                format!("unknown field '{name}' (fields: {})", known.join(", ")),
            ));
        };
        self.atoms += 1;
        if self.atoms > MAX_ATOMS {
            return Err(self.err_at(
                Some(&t),
                format!("more than {MAX_ATOMS} comparisons in one filter"),
            ));
        }
        self.pos += 1;
        let op_tok = self.peek().cloned();
        let (op, negated, list) = match op_tok.as_ref().map(|t| &t.tok) {
            Some(Tok::Eq) => (Op::Eq, false, false),
            Some(Tok::Ne) => (Op::Eq, true, false),
            Some(Tok::Contains) => (Op::Contains, false, false),
            Some(Tok::NotContains) => (Op::Contains, true, false),
            Some(Tok::Subnet) => (Op::Subnet, false, false),
            Some(Tok::NotSubnet) => (Op::Subnet, true, false),
            Some(Tok::Lt) => (Op::Lt, false, false),
            Some(Tok::Le) => (Op::Le, false, false),
            Some(Tok::Gt) => (Op::Gt, false, false),
            Some(Tok::Ge) => (Op::Ge, false, false),
            Some(Tok::In) => (Op::Eq, false, true),
            Some(Tok::Not) => {
                self.pos += 1;
                if !self.peek().is_some_and(|t| t.tok == Tok::In) {
                    return Err(
                        self.err_at(self.peek(), format!("expected IN after '{field} NOT'"))
                    );
                }
                (Op::Eq, true, true)
            }
            _ => {
                return Err(self.err_at(
                    op_tok.as_ref(),
                    format!(
                        "expected an operator after '{field}' ({})",
                        operators(field.kind()).join(" ")
                    ),
                ))
            }
        };
        let op_tok = self.peek().cloned();
        self.pos += 1;
        if !allowed(field.kind(), op) {
            return Err(self.err_at(
                op_tok.as_ref(),
                format!(
                    "'{field}' does not take this operator (it takes {})",
                    operators(field.kind()).join(" ")
                ),
            ));
        }
        let mut values = Vec::new();
        let end;
        if list {
            if !self.eat(&Tok::LParen) {
                return Err(self.err_at(self.peek(), "expected '(' after IN"));
            }
            loop {
                values.push(self.value(field, op)?);
                if values.len() > MAX_IN_VALUES {
                    return Err(self.err_at(
                        self.tokens.get(self.pos - 1),
                        format!("more than {MAX_IN_VALUES} values in one IN list"),
                    ));
                }
                if self.eat(&Tok::Comma) {
                    continue;
                }
                match self.peek() {
                    Some(t) if t.tok == Tok::RParen => {
                        end = t.end;
                        self.pos += 1;
                        break;
                    }
                    t => {
                        let t = t.cloned();
                        return Err(self.err_at(t.as_ref(), "expected ',' or ')' in the IN list"));
                    }
                }
            }
        } else {
            values.push(self.value(field, op)?);
            end = self.tokens[self.pos - 1].end;
        }
        Ok(Expr::Atom(Atom {
            field,
            op,
            values,
            negated,
            span: (t.start, end),
        }))
    }

    fn value(&mut self, field: Field, op: Op) -> Result<Literal, FilterError> {
        let Some(t) = self.peek().cloned() else {
            return Err(self.err_at(None, format!("expected a value for '{field}'")));
        };
        let raw = match &t.tok {
            Tok::Word(w) | Tok::Str(w) => w.clone(),
            // After an operator a keyword can only be a value (`direction = in`).
            Tok::In | Tok::And | Tok::Or | Tok::Not => self.src[t.start..t.end].to_owned(),
            // Keywords are values when quoted; bare, they are a mistake.
            _ => {
                return Err(self.err_at(
                    Some(&t),
                    format!(
                    "expected a value for '{field}', found '{}' (quote values that are keywords)",
                    &self.src[t.start..t.end]
                ),
                ))
            }
        };
        self.pos += 1;
        typed(field, op, &raw).map_err(|m| self.err_at(Some(&t), m))
    }
}

/// The operators a kind of field takes, as typed.
pub fn operators(kind: FieldKind) -> &'static [&'static str] {
    match kind {
        FieldKind::Text => &["=", "!=", "IN", "NOT IN", "~", "!~"],
        FieldKind::Choice => &["=", "!=", "IN", "NOT IN"],
        FieldKind::Port | FieldKind::Number => &["=", "!=", "IN", "NOT IN", "<", "<=", ">", ">="],
        FieldKind::Address => &["=", "!=", "IN", "NOT IN", "<<", "!<<"],
    }
}

fn allowed(kind: FieldKind, op: Op) -> bool {
    match kind {
        FieldKind::Text => matches!(op, Op::Eq | Op::Contains),
        FieldKind::Choice => op == Op::Eq,
        FieldKind::Port | FieldKind::Number => {
            matches!(op, Op::Eq | Op::Lt | Op::Le | Op::Gt | Op::Ge)
        }
        FieldKind::Address => matches!(op, Op::Eq | Op::Subnet),
    }
}

/// The record name of a protocol given by name or number.
pub fn normalize_proto(s: &str) -> Option<String> {
    let l = s.to_ascii_lowercase();
    match l.as_str() {
        "tcp" | "6" => Some("tcp".into()),
        "udp" | "17" => Some("udp".into()),
        "icmp" | "1" => Some("icmp".into()),
        "icmpv6" | "ipv6-icmp" | "58" => Some("icmpv6".into()),
        n => n.parse::<u8>().ok().map(|n| n.to_string()),
    }
}

fn typed(field: Field, op: Op, raw: &str) -> Result<Literal, String> {
    match field.kind() {
        FieldKind::Text => {
            if raw.is_empty() && op == Op::Contains {
                return Err(format!("'{field} ~' needs some text to look for"));
            }
            Ok(Literal::Text(raw.to_owned()))
        }
        FieldKind::Choice if field == Field::Proto => {
            normalize_proto(raw).map(Literal::Text).ok_or_else(|| {
                format!("'{raw}' is not a protocol (tcp, udp, icmp, icmpv6 or a number 0-255)")
            })
        }
        FieldKind::Choice => {
            let l = raw.to_ascii_lowercase();
            if field.choices().contains(&l.as_str()) {
                Ok(Literal::Text(l))
            } else {
                Err(format!(
                    "'{raw}' is not a value of '{field}' ({})",
                    field.choices().join(", ")
                ))
            }
        }
        FieldKind::Port => match raw.parse::<u64>() {
            Ok(n) if n <= 65535 => Ok(Literal::Num(n)),
            _ => Err(format!("'{}' is not a port (0 to 65535)", shorten(raw))),
        },
        FieldKind::Number => match raw.parse::<u64>() {
            Ok(n) if n <= u64::from(u32::MAX) => Ok(Literal::Num(n)),
            _ => Err(format!(
                "'{}' is not a number from 0 to {}",
                shorten(raw),
                u32::MAX
            )),
        },
        FieldKind::Address if op == Op::Subnet => Net::parse(raw).map(Literal::Net),
        FieldKind::Address => raw
            .parse::<IpAddr>()
            .map(|a| Literal::Addr(a.to_canonical()))
            .map_err(|_| {
                if raw.contains('/') {
                    format!("'{raw}' is a network: use '{field} << {raw}'")
                } else {
                    format!("'{}' is not an IP address", shorten(raw))
                }
            }),
    }
}

/// At most 40 characters of a value, for messages.
fn shorten(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(40).collect::<String>())
    }
}
