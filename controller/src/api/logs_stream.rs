//! `GET /devices/{id}/services/{svc}/logs/stream?since=&tail=&timestamps=&follow=`: a
//! service's log as plain text, streamed (chunked) over a remote session (`sessions`):
//! the lines since `since` (RFC 3339, Unix seconds, or a duration back from now: `10m`,
//! `1h30m`), the last `tail` of them, with their device time when `timestamps`; with
//! `follow`, new lines until the client hangs up (the session then ends on the device).
//! Errors before the first byte are the usual JSON errors (404 no such service, 409
//! offline, 504 no answer); a session that breaks off later ends the body unfinished.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use coracle_proto::SessionKind;
use serde::Deserialize;

use super::commands::target;
use super::error::ApiError;
use super::AppState;
use crate::sessions::{SessionHandle, SessionMessage};

/// The query string.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    pub since: Option<String>,
    pub tail: Option<u32>,
    #[serde(default)]
    pub timestamps: bool,
    #[serde(default)]
    pub follow: bool,
}

pub async fn stream(
    State(state): State<AppState>,
    Path((device, service)): Path<(String, String)>,
    Query(query): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let (id, service) = target(&state, &device, &service)?;
    let since_unix_ns = match &query.since {
        Some(text) => Some(parse_since(text, now_unix_ns()).map_err(ApiError::bad_request)?),
        None => None,
    };
    let kind = SessionKind::Logs {
        service,
        since_unix_ns,
        tail: query.tail,
        timestamps: query.timestamps,
        follow: query.follow,
    };
    let session = state.remote.open(&id, kind).await?;
    let body = futures_util::stream::unfold(Some(session), next_chunk);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response())
}

/// The next piece of the body; the session is dropped (closed on the device) with the
/// stream, whether it ended or the client went away.
async fn next_chunk(
    session: Option<SessionHandle>,
) -> Option<(Result<Vec<u8>, std::io::Error>, Option<SessionHandle>)> {
    let mut session = session?;
    match session.next().await? {
        SessionMessage::Data { data, .. } => {
            if session.passed_on().await.is_err() {
                return Some((Err(std::io::Error::other("the broker link broke")), None));
            }
            Some((Ok(data), Some(session)))
        }
        SessionMessage::Exited(_) => None,
        SessionMessage::Failed(message) => Some((Err(std::io::Error::other(message)), None)),
    }
}

fn now_unix_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `since` as Docker takes it: an RFC 3339 time, Unix seconds (with a fraction), or a
/// duration back from `now_ns` (`90s`, `10m`, `1h30m`, `2d`).
pub fn parse_since(text: &str, now_ns: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Some(at) = coracle_proto::time::parse_rfc3339(text) {
        return Ok(at);
    }
    if let Ok(secs) = text.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok((secs * 1e9) as i64);
        }
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => {
                return Err(format!(
                    "since {text:?}: not a time, Unix seconds or a duration like 10m"
                ))
            }
        };
        let n: i64 = number
            .parse()
            .map_err(|_| format!("since {text:?}: a unit without a number"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(format!(
            "since {text:?}: not a time, Unix seconds or a duration like 10m"
        ));
    }
    Ok(now_ns.saturating_sub(total.saturating_mul(1_000_000_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_seconds_and_durations() {
        let now = 10_000 * 1_000_000_000;
        assert_eq!(parse_since("1970-01-01T00:00:01Z", now), Ok(1_000_000_000));
        assert_eq!(parse_since("2.5", now), Ok(2_500_000_000));
        assert_eq!(parse_since("10m", now), Ok(now - 600 * 1_000_000_000));
        assert_eq!(parse_since("1h30m", now), Ok(now - 5400 * 1_000_000_000));
        for bad in ["", "10", "m", "10x", "yesterday"] {
            if bad == "10" {
                continue; // plain seconds
            }
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }
}
