//! Tokens of the filter language, with their byte spans.

use super::{FilterError, MAX_VALUE_BYTES};

/// A token kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok {
    /// A bare word (field name, keyword-like value, number, address).
    Word(String),
    /// A quoted string, unescaped.
    Str(String),
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `,`
    Comma,
    /// `=` or `==`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `~`
    Contains,
    /// `!~`
    NotContains,
    /// `<<`
    Subnet,
    /// `!<<`
    NotSubnet,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `AND` or `&&`
    And,
    /// `OR` or `||`
    Or,
    /// `NOT` or `!`
    Not,
    /// `IN`
    In,
}

impl Tok {
    /// Whether the token compares a field with a value.
    pub fn is_operator(&self) -> bool {
        matches!(
            self,
            Tok::Eq
                | Tok::Ne
                | Tok::Contains
                | Tok::NotContains
                | Tok::Subnet
                | Tok::NotSubnet
                | Tok::Lt
                | Tok::Le
                | Tok::Gt
                | Tok::Ge
                | Tok::In
        )
    }
}

/// A token and its bytes in the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The kind.
    pub tok: Tok,
    /// First byte.
    pub start: usize,
    /// Byte after the last.
    pub end: usize,
}

/// Whether `c` may appear in a bare word.
pub fn word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-' | '@' | '+')
}

/// Splits a filter into tokens.
pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// A lexer over `src`.
    pub fn new(src: &'a str) -> Self {
        Lexer { src, pos: 0 }
    }

    /// Every token, or the first error.
    pub fn tokens(mut self) -> Result<Vec<Token>, FilterError> {
        let mut out = Vec::new();
        while let Some(t) = self.next_token()? {
            out.push(t);
        }
        Ok(out)
    }

    /// Tokens up to the first error, and the error (for completion of partial text).
    pub fn tokens_lenient(mut self) -> (Vec<Token>, Option<FilterError>) {
        let mut out = Vec::new();
        loop {
            match self.next_token() {
                Ok(Some(t)) => out.push(t),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn err(&self, start: usize, end: usize, msg: impl Into<String>) -> FilterError {
        FilterError::at(self.src, start, end, msg)
    }

    fn next_token(&mut self) -> Result<Option<Token>, FilterError> {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        let start = self.pos;
        let Some(c) = self.peek() else {
            return Ok(None);
        };
        let fixed: &[(&str, Tok)] = &[
            ("!<<", Tok::NotSubnet),
            ("<<", Tok::Subnet),
            ("<=", Tok::Le),
            (">=", Tok::Ge),
            ("<>", Tok::Ne),
            ("!=", Tok::Ne),
            ("!~", Tok::NotContains),
            ("==", Tok::Eq),
            ("&&", Tok::And),
            ("||", Tok::Or),
            ("=", Tok::Eq),
            ("<", Tok::Lt),
            (">", Tok::Gt),
            ("~", Tok::Contains),
            ("!", Tok::Not),
            ("(", Tok::LParen),
            (")", Tok::RParen),
            (",", Tok::Comma),
        ];
        for (text, tok) in fixed {
            if self.rest().starts_with(text) {
                self.pos += text.len();
                return Ok(Some(Token {
                    tok: tok.clone(),
                    start,
                    end: self.pos,
                }));
            }
        }
        if c == '"' || c == '\'' {
            return self.string(c).map(Some);
        }
        if word_char(c) {
            let len: usize = self
                .rest()
                .chars()
                .take_while(|c| word_char(*c))
                .map(char::len_utf8)
                .sum();
            self.pos += len;
            let w = &self.src[start..self.pos];
            if w.len() > MAX_VALUE_BYTES {
                return Err(self.err(
                    start,
                    self.pos,
                    format!(
                        "a value of {} bytes is too long (at most {MAX_VALUE_BYTES})",
                        w.len()
                    ),
                ));
            }
            let tok = match w.to_ascii_uppercase().as_str() {
                "AND" => Tok::And,
                "OR" => Tok::Or,
                "NOT" => Tok::Not,
                "IN" => Tok::In,
                _ => Tok::Word(w.to_owned()),
            };
            return Ok(Some(Token {
                tok,
                start,
                end: self.pos,
            }));
        }
        let end = start + c.len_utf8();
        let shown = if c.is_control() {
            format!("U+{:04X}", u32::from(c))
        } else {
            format!("'{c}'")
        };
        Err(self.err(
            start,
            end,
            format!("unexpected character {shown}; quote values that contain it"),
        ))
    }

    fn string(&mut self, quote: char) -> Result<Token, FilterError> {
        let start = self.pos;
        self.pos += 1;
        let mut s = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err(start, self.pos, "unterminated string"));
            };
            let at = self.pos;
            self.pos += c.len_utf8();
            match c {
                '\\' => match self.peek() {
                    Some(e) if e == '\\' || e == '"' || e == '\'' => {
                        self.pos += 1;
                        s.push(e);
                    }
                    _ => {
                        return Err(self.err(
                            at,
                            self.pos + self.peek().map_or(0, char::len_utf8),
                            "unknown escape: only \\\\, \\\" and \\' are allowed in strings",
                        ))
                    }
                },
                c if c == quote => break,
                c if c.is_control() => {
                    return Err(self.err(
                        at,
                        self.pos,
                        format!("control character U+{:04X} in a string", u32::from(c)),
                    ))
                }
                c => s.push(c),
            }
            if s.len() > MAX_VALUE_BYTES {
                let end = self.src[start..]
                    .find(quote)
                    .filter(|i| *i > 0)
                    .map_or(self.src.len(), |i| start + i + 1);
                return Err(self.err(
                    start,
                    end.max(self.pos),
                    format!("a value longer than {MAX_VALUE_BYTES} bytes"),
                ));
            }
        }
        Ok(Token {
            tok: Tok::Str(s),
            start,
            end: self.pos,
        })
    }
}
