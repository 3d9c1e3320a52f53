//! The explorer's pages and static assets, embedded in the binary. Every
//! asset is also embedded gzip-compressed (build.rs) and sent as such to
//! clients that accept it. Asset names carry a hash of their content, so they
//! are served with a one-year cache; pages are not cached. Pages are one shell
//! (`page.html`) whose script builds the view from the URL: nothing from the
//! request is written into the HTML.

use std::sync::OnceLock;

use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
};

use crate::api::{error::AppError, AppState};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    gzip: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $gz:literal, $ty:literal) => {
        Asset {
            name: $name,
            content_type: $ty,
            body: include_bytes!(concat!("../assets/", $name)),
            gzip: include_bytes!(concat!(env!("OUT_DIR"), "/", $gz)),
        }
    };
}

/// Same list as build.rs.
const ASSETS: &[Asset] = &[
    asset!("flowlens.css", "flowlens.css.gz", "text/css; charset=utf-8"),
    asset!("favicon.svg", "favicon.svg.gz", "image/svg+xml"),
    asset!("app.js", "app.js.gz", "text/javascript; charset=utf-8"),
    asset!(
        "overview.js",
        "overview.js.gz",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "visualize.js",
        "visualize.js.gz",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "conversations.js",
        "conversations.js.gz",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "topology.js",
        "topology.js.gz",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "entity.js",
        "entity.js.gz",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "vendor/echarts/echarts.min.js",
        "vendor_echarts_echarts.min.js.gz",
        "text/javascript; charset=utf-8"
    ),
];

/// FNV-1a, enough to name a version of a file.
fn hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `vendor/echarts/echarts.min.js` -> `echarts.min.<hash>.js`.
fn hashed(a: &Asset) -> String {
    let h = format!("{:012x}", hash(a.body) & 0xffff_ffff_ffff);
    let base = a.name.rsplit('/').next().unwrap_or(a.name);
    match base.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{h}.{ext}"),
        None => format!("{base}.{h}"),
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

/// The hashed URL name of an asset.
fn url_name(name: &str) -> &'static str {
    names()
        .iter()
        .find(|(_, i)| ASSETS.get(*i).is_some_and(|a| a.name == name))
        .map_or("", |(n, _)| n.as_str())
}

fn html(body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// An explorer page: the shell with the page's script.
fn page(script: &str, title: &str, charts: bool) -> Response {
    let echarts = if charts {
        format!(
            "<script src=\"/assets/{}\" defer></script>",
            url_name("vendor/echarts/echarts.min.js")
        )
    } else {
        String::new()
    };
    html(
        include_str!("../assets/page.html")
            .replace("{{css}}", url_name("flowlens.css"))
            .replace("{{icon}}", url_name("favicon.svg"))
            .replace("{{title}}", title)
            .replace("{{echarts}}", &echarts)
            .replace("{{app}}", url_name("app.js"))
            .replace("{{page}}", url_name(script)),
    )
}

/// `GET /`: the overview.
pub async fn overview() -> Response {
    page("overview.js", "overview", true)
}

/// `GET /visualize`.
pub async fn visualize() -> Response {
    page("visualize.js", "visualize", true)
}

/// `GET /conversations`.
pub async fn conversations() -> Response {
    page("conversations.js", "conversations", false)
}

/// `GET /topology`.
pub async fn topology() -> Response {
    page("topology.js", "topology", true)
}

/// `GET /{container,process,user,remote,host}/<name>`: an entity's page
/// (the script reads the kind and name from the URL).
pub async fn entity() -> Response {
    page("entity.js", "entity", true)
}

/// `GET /login` (only when a token is required).
pub async fn login_page(State(st): State<AppState>) -> Response {
    if st.0.token.is_none() {
        return AppError::NotFound.into_response();
    }
    html(
        include_str!("../assets/login.html")
            .replace("{{css}}", url_name("flowlens.css"))
            .replace("{{icon}}", url_name("favicon.svg")),
    )
}

fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|e| {
                let mut p = e.split(';');
                let name = p.next().unwrap_or("").trim();
                let refused = p.any(|q| q.trim().replace(' ', "") == "q=0");
                name.eq_ignore_ascii_case("gzip") && !refused
            })
        })
    })
}

/// `GET /assets/<name>.<hash>.<ext>`.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(a) = names()
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, i)| ASSETS.get(*i))
    else {
        return AppError::NotFound.into_response();
    };
    let gz = accepts_gzip(&headers);
    let mut r = if gz { a.gzip } else { a.body }.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if gz {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r
}

/// Total bytes of a page's assets as sent compressed (for the docs and
/// the page-weight test): shell excluded.
pub fn compressed_weight(charts: bool) -> usize {
    ASSETS
        .iter()
        .filter(|a| charts || !a.name.contains("echarts"))
        .map(|a| a.gzip.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_accepted_unless_refused() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate, br"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0"),
        );
        assert!(!accepts_gzip(&h));
    }

    #[test]
    fn every_asset_has_a_distinct_hashed_name_and_valid_gzip() {
        let n = names();
        for (i, (a, _)) in n.iter().enumerate() {
            assert!(n.iter().skip(i + 1).all(|(b, _)| a != b), "{a}");
        }
        for a in ASSETS {
            let mut d = flate2::read::GzDecoder::new(a.gzip);
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut d, &mut out).expect("gzip");
            assert_eq!(out, a.body, "{}", a.name);
        }
    }

    #[test]
    fn all_assets_of_a_page_weigh_less_than_600_kb_compressed() {
        assert!(
            compressed_weight(true) < 600 * 1024,
            "{}",
            compressed_weight(true)
        );
    }
}
