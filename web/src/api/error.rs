//! One error type for every handler, answered as JSON:
//! `{"error": {"code": "...", "message": "...", "param": "filter", "start": 3, "end": 8}}`.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use flowlens_query::filter::FilterError;
use serde::Serialize;

use crate::store::StoreError;

/// An error answer.
#[derive(Debug)]
pub enum AppError {
    /// A parameter is missing, malformed or out of range.
    BadParam {
        /// The parameter.
        param: &'static str,
        /// Why.
        message: String,
    },
    /// The filter does not parse or does not apply.
    Filter(FilterError),
    /// No or a wrong bearer token.
    Unauthorized,
    /// Refused (e.g. a foreign Host header).
    Forbidden(String),
    /// No such endpoint.
    NotFound,
    /// The store could not answer.
    Store(StoreError),
    /// Too many questions at once.
    Busy,
    /// The question took too long.
    Timeout,
}

impl AppError {
    /// A bad parameter.
    pub fn param(param: &'static str, message: impl Into<String>) -> Self {
        AppError::BadParam {
            param,
            message: message.into(),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        AppError::Store(e)
    }
}

impl From<FilterError> for AppError {
    fn from(e: FilterError) -> Self {
        AppError::Filter(e)
    }
}

#[derive(Serialize)]
struct Body {
    error: Detail,
}

#[derive(Serialize)]
struct Detail {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<usize>,
}

impl AppError {
    fn parts(&self) -> (StatusCode, Detail) {
        let d = |code, message: String| Detail {
            code,
            message,
            param: None,
            start: None,
            end: None,
        };
        match self {
            AppError::BadParam { param, message } => (
                StatusCode::BAD_REQUEST,
                Detail {
                    param: Some(param),
                    ..d("bad_parameter", format!("{param}: {message}"))
                },
            ),
            AppError::Filter(e) => (
                StatusCode::BAD_REQUEST,
                Detail {
                    param: Some("filter"),
                    start: Some(e.start),
                    end: Some(e.end),
                    ..d("bad_filter", e.message.clone())
                },
            ),
            AppError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                d(
                    "unauthorized",
                    "a bearer token is required (Authorization: Bearer <token>, or log in at /login)".into(),
                ),
            ),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, d("forbidden", m.clone())),
            AppError::NotFound => (
                StatusCode::NOT_FOUND,
                d("not_found", "no such endpoint (GET /api lists them)".into()),
            ),
            AppError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                d("busy", "too many questions at once; try again".into()),
            ),
            AppError::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                d("timeout", "the question took too long; narrow the range or the filter".into()),
            ),
            AppError::Store(e) => {
                let (status, code) = match e {
                    StoreError::Influx(_) => (StatusCode::BAD_GATEWAY, "influxdb"),
                    StoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                    StoreError::TooManyGroups(_) => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "too_many_groups")
                    }
                    StoreError::TooMuchData { .. } => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "too_much_data")
                    }
                    StoreError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                };
                (status, d(code, e.to_string()))
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, detail) = self.parts();
        let mut r = (status, Json(Body { error: detail })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            if let Ok(v) = "Bearer realm=\"flowlens\"".parse() {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        r
    }
}
