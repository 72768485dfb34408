//! `GET /devices/{id}/services/{svc}/exec` (WebSocket): a process in the service's running
//! container, relayed over the device's own MQTT connection (`sessions`). Needs the deploy
//! scope, and unless the caller is the admin, the policy's `exec` grant for the device's
//! tags; every exec is audited (`service.exec`, with its command), and so is a denial.
//! Framing: `exec_frames`.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use coracle_proto::session::MAX_CHUNK;
use coracle_proto::{DeviceId, ServiceName, SessionInput, SessionKind, WindowSize};

use super::commands::target;
use super::error::ApiError;
use super::exec_frames::{output_frame, ClientControl, ServerEnd};
use super::AppState;
use crate::access::{Caller, Scope};
use crate::sessions::{SessionHandle, SessionMessage};

/// How long the client has to send its `start` message.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest command line accepted (it goes into one protocol body and the audit log).
const MAX_COMMAND_BYTES: usize = 8 * 1024;

pub async fn exec(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((device, service)): Path<(String, String)>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        // A page of another site opening a shell with the operator's cookie.
        return Err(ApiError::bad_request(
            "the exec WebSocket's Origin is not this controller",
        ));
    }
    let (id, service) = target(&state, &device, &service)?;
    let target_name = format!("{id}/{service}");
    if caller.scope != Scope::Admin && !state.fleet.allows_exec(&id)? {
        super::audit::record(&state, &caller, "service.exec.denied", &target_name, "");
        return Err(ApiError::ExecDenied {
            actor: caller.actor,
            device: id.to_string(),
        });
    }
    Ok(upgrade
        .max_message_size(MAX_CHUNK * 4)
        .on_upgrade(move |socket| relay(state, caller, id, service, socket)))
}

async fn relay(
    state: AppState,
    caller: Caller,
    device: DeviceId,
    service: ServiceName,
    mut socket: WebSocket,
) {
    let Some((argv, tty)) = read_start(&mut socket).await else {
        return end(
            &mut socket,
            "bad_request",
            "the first message must be {\"type\":\"start\",\"command\":[…]} with a command",
        )
        .await;
    };
    let target_name = format!("{device}/{service}");
    let detail = format!(
        "{}{}",
        if tty.is_some() { "-t " } else { "" },
        argv.join(" ")
    );
    super::audit::record(&state, &caller, "service.exec", &target_name, &detail);
    tracing::info!(device = %device, service = %service, actor = %caller.actor, "exec session");
    let kind = SessionKind::Exec { service, argv, tty };
    let mut session = match state.remote.open(&device, kind).await {
        Ok(session) => session,
        Err(err) => {
            let err = ApiError::from(err);
            let message = super::error::error_chain(&err);
            let code = crate::api::error::code_of(&err);
            return end(&mut socket, code, &message).await;
        }
    };
    let finish = pump(&mut socket, &mut session).await;
    let text = match finish {
        Some(end) => serde_json::to_string(&end).unwrap_or_default(),
        None => return, // The client went away; dropping the session closes it.
    };
    let _ = socket.send(Message::Text(text.into())).await;
    let _ = socket.send(Message::Close(None)).await;
}

/// Relays until the session ends (`Some`) or the client goes away (`None`).
async fn pump(socket: &mut WebSocket, session: &mut SessionHandle) -> Option<ServerEnd> {
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let input = match incoming {
                    Some(Ok(Message::Binary(data))) => {
                        for piece in data.chunks(MAX_CHUNK) {
                            session.send(SessionInput::Stdin(piece.to_vec())).await.ok()?;
                        }
                        continue;
                    }
                    Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                        Ok(ClientControl::Resize { rows, cols }) => {
                            SessionInput::Resize(WindowSize { rows, cols })
                        }
                        Ok(ClientControl::Eof) => SessionInput::CloseStdin,
                        _ => continue,
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    _ => return None,
                };
                session.send(input).await.ok()?;
            }
            message = session.next() => match message? {
                SessionMessage::Data { stream, data } => {
                    let frame = output_frame(stream, &data);
                    socket.send(Message::Binary(frame.into())).await.ok()?;
                    session.passed_on().await.ok()?;
                }
                SessionMessage::Exited(code) => return Some(ServerEnd::Exit { code }),
                SessionMessage::Failed(message) => {
                    return Some(ServerEnd::Error { code: "session_failed".into(), message })
                }
            },
        }
    }
}

/// The client's `start`: the command and, with a terminal, its size.
async fn read_start(socket: &mut WebSocket) -> Option<(Vec<String>, Option<WindowSize>)> {
    let first = tokio::time::timeout(START_TIMEOUT, socket.recv())
        .await
        .ok()??
        .ok()?;
    let Message::Text(text) = first else {
        return None;
    };
    match serde_json::from_str(&text).ok()? {
        ClientControl::Start {
            command,
            tty,
            rows,
            cols,
        } if !command.is_empty()
            && command.iter().map(String::len).sum::<usize>() <= MAX_COMMAND_BYTES =>
        {
            Some((command, tty.then_some(WindowSize { rows, cols })))
        }
        _ => None,
    }
}

/// A browser's upgrade carries `Origin`; it must name this host (the dashboard's page).
/// Clients that send none (the CLI) authenticate with a bearer token.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

async fn end(socket: &mut WebSocket, code: &str, message: &str) {
    let end = ServerEnd::Error {
        code: code.into(),
        message: message.into(),
    };
    let text = serde_json::to_string(&end).unwrap_or_default();
    let _ = socket.send(Message::Text(text.into())).await;
    let _ = socket.send(Message::Close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_hosts_pages_may_open_a_shell() {
        let mut headers = HeaderMap::new();
        assert!(same_origin(&headers), "no Origin: not a browser");
        headers.insert(header::HOST, "10.0.0.1:8443".parse().unwrap());
        headers.insert(header::ORIGIN, "https://10.0.0.1:8443".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!same_origin(&headers));
    }
}
