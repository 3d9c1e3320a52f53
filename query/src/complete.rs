//! Completion for the filter box: what the text before the cursor expects
//! (a field, an operator, a value of a field, a connective), the partial word
//! to replace, and the candidates; values come from the store.

use serde::Serialize;

use crate::{
    field::{Field, FieldKind},
    filter::{lexer::word_char, quote, Lexer, Tok},
};

/// What the cursor position expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// A field name.
    Field,
    /// An operator for the field.
    Operator,
    /// A value of the field.
    Value,
    /// AND, OR, or a closing parenthesis.
    Connective,
    /// Nothing sensible (the text before the cursor does not parse).
    Nothing,
}

/// Where completion applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Context {
    /// What is expected.
    pub expect: Expect,
    /// The field, for operators and values.
    pub field: Option<Field>,
    /// The partial word before the cursor (unquoted).
    pub prefix: String,
    /// Start of the text a candidate replaces, UTF-16 units.
    pub start: usize,
    /// End (the cursor), UTF-16 units.
    pub end: usize,
}

/// A candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Text to insert (quoted when needed).
    pub text: String,
    /// What it is.
    pub detail: String,
}

fn utf16_to_byte(s: &str, u: usize) -> usize {
    let mut n = 0;
    for (i, c) in s.char_indices() {
        if n >= u {
            return i;
        }
        n += c.len_utf16();
    }
    s.len()
}

fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

#[derive(Clone, Copy)]
enum State {
    Field,
    Op(Field),
    NotIn(Field),
    ListOpen(Field),
    Value(Field, bool),
    ListNext(Field),
    After,
    Bad,
}

/// The completion context at `cursor` (UTF-16 units) in `src`.
pub fn context(src: &str, cursor: usize) -> Context {
    let cut = utf16_to_byte(src, cursor);
    let before = &src[..cut];
    let (mut tokens, err) = Lexer::new(before).tokens_lenient();
    // The partial word or quoted string under the cursor.
    let mut prefix = String::new();
    let mut start_b = cut;
    if let Some(e) = err {
        // Only an unterminated quote is completable: its text is the prefix.
        let q = before
            .char_indices()
            .rev()
            .find(|(_, c)| *c == '"' || *c == '\'')
            .map(|(i, _)| i);
        match q {
            Some(i) if e.message.contains("unterminated") => {
                prefix = before[i + 1..].to_owned();
                start_b = i;
            }
            _ => {
                return Context {
                    expect: Expect::Nothing,
                    field: None,
                    prefix,
                    start: cursor,
                    end: cursor,
                }
            }
        }
    } else if before.chars().next_back().is_some_and(word_char) {
        if let Some(t) = tokens.last() {
            if t.end == cut {
                if let Tok::Word(w) = &t.tok {
                    prefix = w.clone();
                } else {
                    prefix = before[t.start..].to_owned();
                }
                start_b = t.start;
                tokens.pop();
            }
        }
    }
    let mut st = State::Field;
    for t in &tokens {
        st = match (st, &t.tok) {
            (State::Field, Tok::Not | Tok::LParen) => State::Field,
            (State::Field, Tok::Word(w)) => Field::parse(w).map_or(State::Bad, State::Op),
            (State::Op(f), Tok::Not) => State::NotIn(f),
            (State::Op(f) | State::NotIn(f), Tok::In) => State::ListOpen(f),
            (State::Op(f), tok) if tok.is_operator() => State::Value(f, false),
            (State::ListOpen(f), Tok::LParen) => State::Value(f, true),
            (State::Value(f, true), Tok::Word(_) | Tok::Str(_)) => State::ListNext(f),
            (State::Value(_, false), Tok::Word(_) | Tok::Str(_)) => State::After,
            (State::ListNext(f), Tok::Comma) => State::Value(f, true),
            (State::ListNext(_), Tok::RParen) => State::After,
            (State::After, Tok::And | Tok::Or) => State::Field,
            (State::After, Tok::RParen) => State::After,
            _ => State::Bad,
        };
    }
    let (expect, field) = match st {
        State::Field => (Expect::Field, None),
        State::Op(f) | State::NotIn(f) => (Expect::Operator, Some(f)),
        State::Value(f, _) => (Expect::Value, Some(f)),
        State::ListOpen(_) => (Expect::Nothing, None),
        State::ListNext(_) | State::After => (Expect::Connective, None),
        State::Bad => (Expect::Nothing, None),
    };
    Context {
        expect,
        field,
        prefix,
        start: utf16_len(&src[..start_b]),
        end: cursor.min(utf16_len(src)),
    }
}

/// The value as it must be typed (quoted when it is not a plain word).
pub fn value_text(v: &str) -> String {
    let keyword = ["and", "or", "not", "in"].contains(&v.to_ascii_lowercase().as_str());
    if v.is_empty() || keyword || !v.chars().all(word_char) {
        quote(v)
    } else {
        v.to_owned()
    }
}

/// Candidates that do not need the store: fields, operators, choices, connectives.
pub fn static_items(ctx: &Context) -> Vec<Item> {
    let p = ctx.prefix.to_ascii_lowercase();
    match (ctx.expect, ctx.field) {
        (Expect::Field, _) => Field::ALL
            .iter()
            .filter(|f| f.name().starts_with(&p))
            .map(|f| Item {
                text: f.name().to_owned(),
                detail: f.help().to_owned(),
            })
            .collect(),
        (Expect::Operator, Some(f)) => crate::filter::parser_operators(f.kind())
            .iter()
            .filter(|o| o.to_ascii_lowercase().starts_with(&p))
            .map(|o| Item {
                text: (*o).to_owned(),
                detail: op_help(o).to_owned(),
            })
            .collect(),
        (Expect::Value, Some(f)) if f.kind() == FieldKind::Choice => f
            .choices()
            .iter()
            .filter(|c| c.starts_with(&p))
            .map(|c| Item {
                text: (*c).to_owned(),
                detail: f.name().to_owned(),
            })
            .collect(),
        (Expect::Connective, _) => ["AND", "OR", ")"]
            .iter()
            .filter(|c| c.to_ascii_lowercase().starts_with(&p))
            .map(|c| Item {
                text: (*c).to_owned(),
                detail: String::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn op_help(o: &str) -> &'static str {
    match o {
        "=" => "equals",
        "!=" => "differs",
        "IN" => "one of (a, b)",
        "NOT IN" => "none of (a, b)",
        "~" => "contains (ASCII case-insensitive)",
        "!~" => "does not contain",
        "<<" => "in the network (10.0.0.0/8)",
        "!<<" => "not in the network",
        "<" | "<=" | ">" | ">=" => "compares numbers",
        _ => "",
    }
}

/// Store values matching the prefix (case-insensitive start, then contains), as items.
pub fn value_items(
    field: Field,
    values: &[(String, u64)],
    prefix: &str,
    limit: usize,
) -> Vec<Item> {
    let p = prefix.to_ascii_lowercase();
    let starts = values
        .iter()
        .filter(|(v, _)| !v.is_empty() && v.to_ascii_lowercase().starts_with(&p));
    let contains = values.iter().filter(|(v, _)| {
        let l = v.to_ascii_lowercase();
        !v.is_empty() && !l.starts_with(&p) && l.contains(&p)
    });
    starts
        .chain(contains)
        .take(limit)
        .map(|(v, bytes)| Item {
            text: value_text(v),
            detail: format!("{} · {bytes} bytes", field.name()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(s: &str) -> Context {
        context(s, s.encode_utf16().count())
    }

    #[test]
    fn contexts() {
        let c = ctx("");
        assert_eq!(c.expect, Expect::Field);
        let c = ctx("cont");
        assert_eq!(
            (c.expect, c.prefix.as_str(), c.start, c.end),
            (Expect::Field, "cont", 0, 4)
        );
        assert_eq!(static_items(&c)[0].text, "container");
        let c = ctx("container ");
        assert_eq!(
            (c.expect, c.field),
            (Expect::Operator, Some(Field::Container))
        );
        let c = ctx("container = we");
        assert_eq!(
            (c.expect, c.field, c.prefix.as_str(), c.start),
            (Expect::Value, Some(Field::Container), "we", 12)
        );
        let c = ctx("container = \"we b");
        assert_eq!(
            (c.expect, c.prefix.as_str(), c.start),
            (Expect::Value, "we b", 12)
        );
        let c = ctx("proto IN (tcp, u");
        assert_eq!((c.expect, c.field), (Expect::Value, Some(Field::Proto)));
        assert_eq!(static_items(&c)[0].text, "udp");
        let c = ctx("proto = tcp ");
        assert_eq!(c.expect, Expect::Connective);
        let c = ctx("proto = tcp AND NOT (us");
        assert_eq!((c.expect, c.prefix.as_str()), (Expect::Field, "us"));
        assert_eq!(ctx("bogus ").expect, Expect::Nothing);
        assert_eq!(ctx("a ; ").expect, Expect::Nothing);
        // The cursor in the middle: only the text before it counts.
        let c = context("container = web AND proto = tcp", 12);
        assert_eq!(c.expect, Expect::Value);
    }

    #[test]
    fn values_are_ranked_and_quoted() {
        let vals = vec![
            ("my web".to_owned(), 10),
            ("web".to_owned(), 5),
            ("api".to_owned(), 1),
            ("OR".to_owned(), 1),
        ];
        let items = value_items(Field::Container, &vals, "we", 10);
        let texts: Vec<&str> = items.iter().map(|i| i.text.as_str()).collect();
        assert_eq!(texts, vec!["web", "\"my web\""]);
        assert_eq!(value_text("OR"), "\"OR\"");
    }
}
