//! Static assets embedded in the binary. Asset names carry a hash of their
//! content, so they are served with a one-year cache; pages are not cached.
//! The real explorer pages come with their own issue; this is the placeholder
//! index that lists the API.

use std::sync::OnceLock;

use axum::{
    extract::{Path, State},
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};

use crate::api::{error::AppError, AppState};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[Asset {
    name: "flowlens.css",
    content_type: "text/css; charset=utf-8",
    body: include_bytes!("../assets/flowlens.css"),
}];

/// FNV-1a, enough to name a version of a file.
fn hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `flowlens.css` -> `flowlens.<hash>.css`.
fn hashed(a: &Asset) -> String {
    let h = format!("{:012x}", hash(a.body) & 0xffff_ffff_ffff);
    match a.name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{h}.{ext}"),
        None => format!("{}.{h}", a.name),
    }
}

fn names() -> &'static Vec<(String, usize)> {
    static N: OnceLock<Vec<(String, usize)>> = OnceLock::new();
    N.get_or_init(|| {
        ASSETS
            .iter()
            .enumerate()
            .map(|(i, a)| (hashed(a), i))
            .collect()
    })
}

fn page(template: &'static str) -> Response {
    let css = names().first().map_or("", |(n, _)| n.as_str());
    let mut r = template.replace("{{css}}", css).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /`: the placeholder index.
pub async fn index() -> Response {
    page(include_str!("../assets/index.html"))
}

/// `GET /login` (only when a token is required).
pub async fn login_page(State(st): State<AppState>) -> Response {
    if st.0.token.is_none() {
        return AppError::NotFound.into_response();
    }
    page(include_str!("../assets/login.html"))
}

/// `GET /assets/<name>.<hash>.<ext>`.
pub async fn asset(Path(name): Path<String>) -> Response {
    let Some(a) = names()
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, i)| ASSETS.get(*i))
    else {
        return AppError::NotFound.into_response();
    };
    let mut r = a.body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    r
}
