//! Query-string parameters: each endpoint names the ones it takes (anything
//! else is refused), and every value is parsed into a typed, bounded value
//! with an error that names the parameter.

use std::collections::BTreeMap;

use axum::{
    body::to_bytes,
    extract::{FromRequest, Request},
    http::{header, Method},
};
use flowlens_query::{
    field::Dim,
    filter::{parse_optional, Expr},
    shape::Unit,
    time::{resolve_range, TimeRange},
};

use super::error::AppError;

/// Longest query string accepted, bytes.
pub const MAX_QUERY_BYTES: usize = 32 << 10;

/// The decoded query string.
#[derive(Debug, Default)]
pub struct Params {
    map: BTreeMap<String, String>,
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = AppError;

    /// GET: the query string. POST: a form body (for filters too long for a URL).
    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        if req.method() != Method::POST {
            return Params::parse(req.uri().query().unwrap_or(""));
        }
        if req.uri().query().is_some_and(|q| !q.is_empty()) {
            return Err(AppError::param(
                "query",
                "give the parameters either in the URL or in the body",
            ));
        }
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form {
            return Err(AppError::param("body", "POST a form (application/x-www-form-urlencoded) with the same parameters as the query string"));
        }
        let body = to_bytes(req.into_body(), MAX_QUERY_BYTES + 1)
            .await
            .map_err(|_| AppError::param("body", format!("the request body is too large; at most {MAX_QUERY_BYTES} bytes are accepted")))?;
        let text = std::str::from_utf8(&body).map_err(|_| AppError::param("body", "not UTF-8"))?;
        Params::parse(text)
    }
}

impl Params {
    /// Decodes `a=1&b=2`; a repeated or overlong parameter is an error.
    pub fn parse(q: &str) -> Result<Self, AppError> {
        if q.len() > MAX_QUERY_BYTES {
            return Err(AppError::param(
                "query",
                format!(
                    "the query string is {} bytes long; at most {MAX_QUERY_BYTES} are accepted",
                    q.len()
                ),
            ));
        }
        let mut map = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            if k.len() > 64 {
                return Err(AppError::param("query", "a parameter name is too long"));
            }
            if map.insert(k.clone().into_owned(), v.into_owned()).is_some() {
                return Err(AppError::param(
                    "query",
                    format!("'{}' is given more than once", shorten(&k)),
                ));
            }
        }
        Ok(Params { map })
    }

    /// Refuses parameters the endpoint does not take.
    pub fn allow(&self, keys: &[&str]) -> Result<(), AppError> {
        match self.map.keys().find(|k| !keys.contains(&k.as_str())) {
            Some(k) => Err(AppError::param(
                "query",
                format!(
                    "unknown parameter '{}' (this endpoint takes: {})",
                    shorten(k),
                    keys.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// A raw value.
    pub fn str(&self, k: &str) -> Option<&str> {
        self.map
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A bounded integer (default when absent).
    pub fn num(&self, k: &'static str, default: u64, min: u64, max: u64) -> Result<u64, AppError> {
        let Some(s) = self.str(k) else {
            return Ok(default);
        };
        match s.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(AppError::param(
                k,
                format!("'{}' is not a number from {min} to {max}", shorten(s)),
            )),
        }
    }

    /// `true`/`false`/`1`/`0`.
    pub fn flag(&self, k: &'static str) -> Result<bool, AppError> {
        match self.str(k) {
            None => Ok(false),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(s) => Err(AppError::param(
                k,
                format!("'{}' is not true or false", shorten(s)),
            )),
        }
    }

    /// `from`/`to`.
    pub fn range(&self, now_ns: i64, max_range_ns: i64) -> Result<TimeRange, AppError> {
        resolve_range(self.str("from"), self.str("to"), now_ns, max_range_ns).map_err(|m| {
            let p = if m.starts_with("to") { "to" } else { "from" };
            AppError::param(p, m)
        })
    }

    /// The parsed filter (`filter=`).
    pub fn filter(&self) -> Result<Option<Expr>, AppError> {
        Ok(parse_optional(self.str("filter"))?)
    }

    /// A comma-separated list of dimensions.
    pub fn dims(
        &self,
        k: &'static str,
        default: &[Dim],
        min: usize,
        max: usize,
    ) -> Result<Vec<Dim>, AppError> {
        let Some(s) = self.str(k) else {
            return Ok(default.to_vec());
        };
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let d = Dim::parse(part).ok_or_else(|| {
                let known: Vec<&str> = Dim::ALL.iter().map(|d| d.name()).collect();
                AppError::param(
                    k,
                    format!(
                        "'{}' is not a dimension ({})",
                        shorten(part),
                        known.join(", ")
                    ),
                )
            })?;
            if out.contains(&d) {
                return Err(AppError::param(k, format!("'{d}' is given twice")));
            }
            out.push(d);
        }
        if !(min..=max).contains(&out.len()) {
            return Err(AppError::param(
                k,
                format!("give {min} to {max} dimensions (got {})", out.len()),
            ));
        }
        Ok(out)
    }

    /// `unit=bytes|packets|conversations`.
    pub fn unit(&self) -> Result<Unit, AppError> {
        match self.str("unit") {
            None => Ok(Unit::Bytes),
            Some(s) => Unit::parse(s).ok_or_else(|| {
                AppError::param(
                    "unit",
                    format!(
                        "'{}' is not a unit (bytes, packets, conversations)",
                        shorten(s)
                    ),
                )
            }),
        }
    }
}

/// At most 40 characters of user text, for messages.
pub fn shorten(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(40).collect::<String>())
    }
}
