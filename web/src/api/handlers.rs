//! Handlers: parse and bound the parameters, ask the store on the blocking
//! pool (a few at once, with a time limit), shape the answer. docs/api.md
//! documents every endpoint.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Form, Json,
};
use flowlens_query::{
    complete::{self, Expect},
    conversations::{to_csv, ConversationBuilder, SortKey},
    cube::TrafficQuery,
    field::{Dim, Field, FieldKind},
    filter::{parser_operators, Atom, Expr, Literal, Op},
    shape::{
        graph::{graph, valid_expand, GRAPH_DIMS, MAX_EXPAND},
        sankey::sankey as shape_sankey,
        series::{series as shape_series, table, SeriesResult, SeriesSpec},
        Unit,
    },
    time::{choose_step, rfc3339, Buckets, TimeRange},
};
use serde_json::{json, Value};

use super::{error::AppError, params::Params, AppState, Inner};
use crate::{
    health,
    metrics::{build_info, render_prometheus, Kind, Sample},
};

/// Runs a store question on the blocking pool, a few at once, within the time limit.
async fn run<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&Inner) -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let permit = tokio::time::timeout(Duration::from_secs(10), st.0.slots.acquire())
        .await
        .map_err(|_| AppError::Busy)?
        .map_err(|_| AppError::Busy)?;
    let inner = Arc::clone(&st.0);
    let task = tokio::task::spawn_blocking(move || f(&inner));
    let r = match tokio::time::timeout(st.0.limits.query_timeout, task).await {
        Err(_) => Err(AppError::Timeout),
        Ok(Err(e)) => Err(AppError::Store(crate::store::StoreError::Internal(
            format!("the question failed: {e}"),
        ))),
        Ok(Ok(r)) => r,
    };
    drop(permit);
    r
}

fn query_echo(range: TimeRange, step: i64, filter: &Option<Expr>) -> Value {
    json!({
        "from": rfc3339(range.from),
        "to": rfc3339(range.to),
        "from_ms": range.from / 1_000_000,
        "to_ms": range.to / 1_000_000,
        "step_s": step / 1_000_000_000,
        "filter": filter.as_ref().map(|f| f.to_string()),
    })
}

struct TrafficArgs {
    range: TimeRange,
    filter: Option<Expr>,
    dims: Vec<Dim>,
    top: usize,
    points: u64,
    unit: Unit,
    bidirectional: bool,
}

fn traffic_args(st: &AppState, p: &Params, max_dims: usize) -> Result<TrafficArgs, AppError> {
    let l = &st.0.limits;
    let range = p.range(st.now(), l.max_range_ns)?;
    let filter = p.filter()?;
    let dims = p.dims("dims", &[], 0, max_dims)?;
    let top = p.num("top", 10, 1, l.max_top)? as usize;
    let points = p.num("points", 120, 1, l.max_points)?;
    let unit = p.unit()?;
    let bidirectional = p.flag("bidirectional")?;
    if bidirectional && dims.contains(&Dim::Direction) {
        return Err(AppError::param(
            "bidirectional",
            "the bidirectional view already splits by direction; remove direction from dims",
        ));
    }
    Ok(TrafficArgs {
        range,
        filter,
        dims,
        top,
        points,
        unit,
        bidirectional,
    })
}

const SERIES_PARAMS: &[&str] = &[
    "from",
    "to",
    "filter",
    "dims",
    "top",
    "points",
    "unit",
    "bidirectional",
];

/// `GET /api/series` and `GET /api/top` ask the same question and differ in
/// the answer's shape: the fields both carry, then `add` the rest.
async fn shaped_traffic(
    st: &AppState,
    p: &Params,
    add: fn(&mut serde_json::Map<String, Value>, &TrafficArgs, SeriesResult),
) -> Result<Json<Value>, AppError> {
    p.allow(SERIES_PARAMS)?;
    let a = traffic_args(st, p, 3)?;
    let step = choose_step(a.range, a.points as u32, 0);
    let echo = query_echo(a.range, step, &a.filter);
    run(st, move |i| {
        let mut a = a;
        let q = TrafficQuery::new(a.range, step, &a.dims, a.filter.take());
        let ans = i.store.traffic(&q)?;
        let r = shape_series(
            &ans.cube,
            &SeriesSpec {
                dims: a.dims.clone(),
                unit: a.unit,
                top: a.top,
                bidirectional: a.bidirectional,
            },
        );
        let mut out = serde_json::Map::new();
        out.insert("query".into(), echo);
        out.insert("dims".into(), json!(a.dims));
        out.insert("unit".into(), json!(a.unit.series_unit()));
        out.insert("total_unit".into(), json!(a.unit.total_unit()));
        out.insert("source".into(), json!(ans.source));
        out.insert("notices".into(), json!(ans.notices));
        add(&mut out, &a, r);
        Ok(Json(Value::Object(out)))
    })
    .await
}

/// `GET /api/series`
pub async fn series(State(st): State<AppState>, p: Params) -> Result<Json<Value>, AppError> {
    shaped_traffic(&st, &p, |out, a, r| {
        out.insert("bidirectional".into(), json!(a.bidirectional));
        out.insert("times".into(), json!(r.times));
        out.insert("series".into(), json!(r.series));
        out.insert("totals".into(), json!(r.totals));
    })
    .await
}

/// `GET /api/top`
pub async fn top(State(st): State<AppState>, p: Params) -> Result<Json<Value>, AppError> {
    shaped_traffic(&st, &p, |out, _, r| {
        out.insert("rows".into(), json!(table(&r)));
        out.insert("totals".into(), json!(r.totals));
    })
    .await
}

/// `GET /api/sankey`
pub async fn sankey(State(st): State<AppState>, p: Params) -> Result<Json<Value>, AppError> {
    p.allow(&["from", "to", "filter", "dims", "top", "unit"])?;
    let l = &st.0.limits;
    let range = p.range(st.now(), l.max_range_ns)?;
    let filter = p.filter()?;
    let dims = p.dims("dims", &[Dim::Container, Dim::Peer], 2, 3)?;
    let top = p.num("top", 10, 1, l.max_top)? as usize;
    let unit = p.unit()?;
    let step = choose_step(range, 1, 0);
    let echo = query_echo(range, step, &filter);
    run(&st, move |i| {
        let q = TrafficQuery::new(range, step, &dims, filter);
        let ans = i.store.traffic(&q)?;
        let s = shape_sankey(&ans.cube, &dims, unit, top);
        Ok(Json(json!({
            "query": echo,
            "dims": dims,
            "unit": unit.total_unit(),
            "source": ans.source,
            "notices": ans.notices,
            "nodes": s.nodes,
            "links": s.links,
            "total": s.total,
            "combinations": s.combinations,
        })))
    })
    .await
}

/// `GET /api/conversations` (JSON page, or `format=csv` for the whole filtered set).
pub async fn conversations(State(st): State<AppState>, p: Params) -> Result<Response, AppError> {
    p.allow(&[
        "from", "to", "filter", "sort", "order", "limit", "offset", "format",
    ])?;
    let l = st.0.limits.clone();
    let range = p.range(st.now(), l.max_range_ns)?;
    let filter = p.filter()?;
    if let (Some(f), Some(src)) = (&filter, p.str("filter")) {
        f.check_conversation_scope(src)?;
    }
    let sort = match p.str("sort") {
        None => SortKey::Bytes,
        Some(s) => SortKey::parse(s).ok_or_else(|| {
            AppError::param(
                "sort",
                format!(
                    "'{}' is not a sort key ({})",
                    super::params::shorten(s),
                    SortKey::NAMES.join(", ")
                ),
            )
        })?,
    };
    let descending = match p.str("order") {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(s) => {
            return Err(AppError::param(
                "order",
                format!("'{}' is not asc or desc", super::params::shorten(s)),
            ))
        }
    };
    let csv = match p.str("format") {
        None | Some("json") => false,
        Some("csv") => true,
        Some(s) => {
            return Err(AppError::param(
                "format",
                format!("'{}' is not json or csv", super::params::shorten(s)),
            ))
        }
    };
    let limit = if csv {
        p.num("limit", l.max_csv_rows, 1, l.max_csv_rows)?
    } else {
        p.num("limit", 100, 1, l.max_rows)?
    } as usize;
    let offset = p.num("offset", 0, 0, 10_000_000)? as usize;
    let echo = query_echo(range, 0, &filter);
    run(&st, move |i| {
        let mut b = ConversationBuilder::new(range, filter);
        let notices = i.store.conversations(&mut b)?;
        if b.overflowed() {
            return Err(AppError::Store(crate::store::StoreError::TooMuchData {
                limit: flowlens_query::conversations::MAX_CONVERSATIONS,
            }));
        }
        let (page, totals, total_rows) = b.finish(sort, descending, offset, limit);
        if csv {
            let mut r = to_csv(&page).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"flowlens-conversations.csv\""),
            );
            if offset + page.len() < total_rows {
                h.insert("x-flowlens-truncated", HeaderValue::from_static("true"));
            }
            return Ok(r);
        }
        Ok(Json(json!({
            "query": echo,
            "sort": sort,
            "order": if descending { "desc" } else { "asc" },
            "offset": offset,
            "limit": limit,
            "total_rows": total_rows,
            "totals": totals,
            "notices": notices,
            "rows": page,
        }))
        .into_response())
    })
    .await
}

/// `GET /api/topology`
pub async fn topology(State(st): State<AppState>, p: Params) -> Result<Json<Value>, AppError> {
    p.allow(&["from", "to", "filter", "expand", "edges", "unit"])?;
    let l = &st.0.limits;
    let range = p.range(st.now(), l.max_range_ns)?;
    let filter = p.filter()?;
    let edges = p.num("edges", 100, 1, l.max_edges)? as usize;
    let unit = p.unit()?;
    let mut expand = BTreeSet::new();
    for id in p.str("expand").unwrap_or("").split(',').map(str::trim) {
        if id.is_empty() {
            continue;
        }
        if !valid_expand(id) {
            return Err(AppError::param(
                "expand",
                format!(
                    "'{}' is not an expandable node id (host:<name> or container:<host>/<name>)",
                    super::params::shorten(id)
                ),
            ));
        }
        expand.insert(id.to_owned());
    }
    if expand.len() > MAX_EXPAND {
        return Err(AppError::param(
            "expand",
            format!("at most {MAX_EXPAND} nodes can be expanded"),
        ));
    }
    let step = choose_step(range, 1, 0);
    let echo = query_echo(range, step, &filter);
    run(&st, move |i| {
        let q = TrafficQuery::new(range, step, &GRAPH_DIMS, filter);
        let ans = i.store.traffic(&q)?;
        let g = graph(&ans.cube, unit, &expand, edges);
        Ok(Json(json!({
            "query": echo,
            "unit": unit.total_unit(),
            "expand": expand,
            "source": ans.source,
            "notices": ans.notices,
            "nodes": g.nodes,
            "edges": g.edges,
            "edges_total": g.edges_total,
        })))
    })
    .await
}

fn entity_filter(kind: &str, name: &str) -> Result<(Field, Expr), AppError> {
    let field = match kind {
        "host" => Field::Host,
        "container" => Field::Container,
        "process" => Field::Process,
        "user" => Field::User,
        "remote" => Field::Peer,
        _ => {
            return Err(AppError::param(
                "kind",
                format!(
                    "'{}' is not an entity kind (host, container, process, user, remote)",
                    super::params::shorten(kind)
                ),
            ))
        }
    };
    if name.is_empty() || name.len() > flowlens_query::filter::MAX_VALUE_BYTES {
        return Err(AppError::param("name", "give a name of 1 to 256 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(AppError::param(
            "name",
            "control characters are not allowed",
        ));
    }
    if field == Field::Peer && name.parse::<std::net::IpAddr>().is_err() {
        return Err(AppError::param(
            "name",
            format!("'{}' is not an IP address", super::params::shorten(name)),
        ));
    }
    Ok((
        field,
        Expr::Atom(Atom {
            field,
            op: Op::Eq,
            values: vec![Literal::Text(name.to_owned())],
            negated: false,
            span: (0, 0),
        }),
    ))
}

/// `GET /api/entity?kind=container&name=web`
pub async fn entity(State(st): State<AppState>, p: Params) -> Result<Json<Value>, AppError> {
    p.allow(&["kind", "name", "from", "to", "filter", "points", "top"])?;
    let l = &st.0.limits;
    let range = p.range(st.now(), l.max_range_ns)?;
    let kind = p
        .str("kind")
        .ok_or_else(|| {
            AppError::param("kind", "required (host, container, process, user, remote)")
        })?
        .to_owned();
    let name = p
        .str("name")
        .ok_or_else(|| AppError::param("name", "required"))?
        .to_owned();
    let (field, own) = entity_filter(&kind, &name)?;
    let filter = match p.filter()? {
        Some(f) => Expr::And(vec![own, f]),
        None => own,
    };
    let points = p.num("points", 120, 1, l.max_points)?;
    let top = p.num("top", 10, 1, l.max_top)? as usize;
    let step = choose_step(range, points as u32, 0);
    let echo = query_echo(range, step, &Some(filter.clone()));
    run(&st, move |i| {
        let ask = |dims: &[Dim], step: i64| -> Result<_, AppError> {
            let q = TrafficQuery::new(range, step, dims, Some(filter.clone()));
            Ok(i.store.traffic(&q)?)
        };
        let over_time = ask(&[], step)?;
        let s = shape_series(
            &over_time.cube,
            &SeriesSpec {
                dims: vec![],
                unit: Unit::Bytes,
                top: 1,
                bidirectional: true,
            },
        );
        let whole = choose_step(range, 1, 0);
        let mut notices = over_time.notices.clone();
        let mut tables = serde_json::Map::new();
        let mut groups: Vec<(&str, Dim)> = vec![("peers", Dim::Peer), ("ports", Dim::ServerPort)];
        for (k, d, f) in [
            ("containers", Dim::Container, Field::Container),
            ("processes", Dim::Process, Field::Process),
            ("users", Dim::User, Field::User),
        ] {
            if f != field {
                groups.push((k, d));
            }
        }
        for (k, d) in groups {
            let a = ask(&[d], whole)?;
            notices.extend(a.notices);
            let r = shape_series(
                &a.cube,
                &SeriesSpec {
                    dims: vec![d],
                    unit: Unit::Bytes,
                    top,
                    bidirectional: false,
                },
            );
            tables.insert(
                k.to_owned(),
                json!({ "source": a.source, "rows": table(&r) }),
            );
        }
        let mut conv_filter = filter.clone();
        if let Expr::And(v) = &mut conv_filter {
            v.retain(|e| !e.fields().contains(Field::Direction));
        }
        let mut b = ConversationBuilder::new(range, Some(conv_filter));
        notices.extend(i.store.conversations(&mut b)?);
        let (rows, totals, _) = b.finish(SortKey::Bytes, true, 0, top);
        notices.sort();
        notices.dedup();
        Ok(Json(json!({
            "query": echo,
            "kind": kind,
            "name": name,
            "source": over_time.source,
            "notices": notices,
            "series": s.series,
            "times": s.times,
            "totals": {
                "bytes_out": s.totals.out,
                "bytes_in": s.totals.r#in,
                "bytes": s.totals.total,
            },
            "tables": tables,
            "conversations": {
                "totals": totals,
                "rows": rows,
            },
        })))
    })
    .await
}

fn all_samples(i: &Inner) -> Vec<Sample> {
    let mut v = Vec::new();
    i.metrics.samples(&mut v);
    i.store.samples(&mut v);
    i.counters.samples(&mut v);
    build_info(&mut v);
    v
}

/// Samples every metric into the health log (the server calls it every few seconds).
pub fn sample_health(st: &AppState) {
    let v = all_samples(&st.0);
    st.0.health.record(st.now(), &health::values(&v));
}

/// `GET /api/health`
pub async fn health(State(st): State<AppState>, p: Params) -> Result<Json<Value>, AppError> {
    p.allow(&["from", "to", "points", "metrics"])?;
    let l = &st.0.limits;
    let range = p.range(st.now(), l.max_range_ns)?;
    let points = p.num("points", 120, 1, l.max_points)?;
    let prefixes: Vec<String> = p
        .str("metrics")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    for m in &prefixes {
        if m.len() > 128
            || !m
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(AppError::param(
                "metrics",
                format!(
                    "'{}' is not a metric name prefix",
                    super::params::shorten(m)
                ),
            ));
        }
    }
    let step = choose_step(range, points as u32, 0);
    let echo = query_echo(range, step, &None);
    run(&st, move |i| {
        let now = all_samples(i);
        let kinds: std::collections::HashMap<String, Kind> =
            now.iter().map(|s| (s.key(), s.kind)).collect();
        let rows = i.health.history(range)?;
        let pre: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let buckets = Buckets::new(range, step);
        let series = health::series(&rows, &buckets, &kinds, &pre);
        let losses: Vec<Value> = now
            .iter()
            .filter(|s| {
                s.name == "flowlens_lost_total"
                    || s.name.ends_with("_lost_total")
                    || s.name.contains("dropped")
            })
            .map(|s| json!({ "metric": s.key(), "value": s.value, "help": s.help }))
            .collect();
        Ok(Json(json!({
            "query": echo,
            "store": i.store.status(),
            "losses": losses,
            "metrics": now,
            "series": series,
        })))
    })
    .await
}

/// `GET /api/complete?filter=...&cursor=N`
pub async fn complete(State(st): State<AppState>, p: Params) -> Result<Json<Value>, AppError> {
    p.allow(&["filter", "cursor", "from", "to", "limit"])?;
    let l = &st.0.limits;
    let range = p.range(st.now(), l.max_range_ns)?;
    let text = p.str("filter").unwrap_or("").to_owned();
    if text.len() > flowlens_query::filter::MAX_FILTER_BYTES {
        return Err(AppError::param(
            "filter",
            format!(
                "{} bytes; at most {} are accepted",
                text.len(),
                flowlens_query::filter::MAX_FILTER_BYTES
            ),
        ));
    }
    let len = text.encode_utf16().count() as u64;
    let cursor = p.num("cursor", len, 0, len)? as usize;
    let limit = p.num("limit", 20, 1, 100)? as usize;
    run(&st, move |i| {
        let ctx = complete::context(&text, cursor);
        let mut items = complete::static_items(&ctx);
        if let (Expect::Value, Some(f)) = (ctx.expect, ctx.field) {
            if f.kind() != FieldKind::Choice {
                let values = i.store.values(f, range)?;
                items = complete::value_items(f, &values, &ctx.prefix, limit);
            }
        }
        items.truncate(limit);
        Ok(Json(json!({
            "expect": ctx.expect,
            "field": ctx.field,
            "prefix": ctx.prefix,
            "start": ctx.start,
            "end": ctx.end,
            "items": items,
        })))
    })
    .await
}

/// `GET /api`: endpoints, the filter language, limits, the store.
pub async fn index(State(st): State<AppState>, p: Params) -> Result<Json<Value>, AppError> {
    p.allow(&[])?;
    let fields: Vec<Value> = Field::ALL
        .iter()
        .map(|f| {
            json!({
                "name": f.name(),
                "aliases": f.aliases(),
                "kind": f.kind(),
                "scope": f.scope(),
                "help": f.help(),
                "operators": parser_operators(f.kind()),
                "choices": f.choices(),
                "dimension": f.dim().is_some(),
            })
        })
        .collect();
    let l = &st.0.limits;
    let store = st.0.store.status();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "docs": "docs/api.md",
        "endpoints": [
            {"path": "/api/series", "params": SERIES_PARAMS, "about": "traffic over time by up to 3 dimensions, top N + Other"},
            {"path": "/api/top", "params": SERIES_PARAMS, "about": "top-N table with totals and min/max/avg/p95"},
            {"path": "/api/sankey", "params": ["from", "to", "filter", "dims", "top", "unit"], "about": "sankey between 2 or 3 dimensions"},
            {"path": "/api/conversations", "params": ["from", "to", "filter", "sort", "order", "limit", "offset", "format"], "about": "conversation list, totals, CSV"},
            {"path": "/api/topology", "params": ["from", "to", "filter", "expand", "edges", "unit"], "about": "graph of hosts, containers, processes, remote endpoints"},
            {"path": "/api/entity", "params": ["kind", "name", "from", "to", "filter", "points", "top"], "about": "a container, process, user, host or remote address: traffic, peers, ports"},
            {"path": "/api/health", "params": ["from", "to", "points", "metrics"], "about": "self-metrics and loss counters, now and over time"},
            {"path": "/api/complete", "params": ["filter", "cursor", "from", "to", "limit"], "about": "filter completion"},
            {"path": "/metrics", "params": [], "about": "Prometheus text format"},
        ],
        "fields": fields,
        "dims": Dim::ALL.iter().map(|d| d.name()).collect::<Vec<_>>(),
        "units": ["bytes", "packets", "conversations"],
        "sort_keys": SortKey::NAMES,
        "limits": {
            "max_range_s": l.max_range_ns / 1_000_000_000,
            "max_points": l.max_points,
            "max_top": l.max_top,
            "max_rows": l.max_rows,
            "max_csv_rows": l.max_csv_rows,
            "max_edges": l.max_edges,
            "query_timeout_s": l.query_timeout.as_secs(),
        },
        "store": store,
    })))
}

/// `GET /metrics` (Prometheus text format).
pub async fn metrics(State(st): State<AppState>) -> Response {
    let inner = Arc::clone(&st.0);
    let text = tokio::task::spawn_blocking(move || render_prometheus(&all_samples(&inner)))
        .await
        .unwrap_or_default();
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Unknown paths.
pub async fn not_found() -> AppError {
    AppError::NotFound
}

/// `POST /login` (form `token=`): sets the token cookie and goes to `/`.
pub async fn login(
    State(st): State<AppState>,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Result<Response, AppError> {
    let Some(t) = &st.0.token else {
        return Err(AppError::NotFound);
    };
    let given = form.get("token").map(String::as_str).unwrap_or("");
    if !t.matches(given) {
        st.0.counters
            .unauthorized
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(AppError::Unauthorized);
    }
    let cookie = format!(
        "flowlens_token={}; HttpOnly; SameSite=Strict; Path=/",
        t.expose()
    );
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/"));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}
