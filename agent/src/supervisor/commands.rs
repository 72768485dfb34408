//! Commands from the controller (`cmd`): logs tail (bounded), restart, recheck; and the
//! local control socket's requests (status, logs, exec).

use std::time::Duration;

use coracle_proto::{Command, CommandOutcome, CommandReply, CommandRequest};
use tokio::sync::oneshot;

use super::jobs::Subject;
use super::{blocking, Supervisor};
use crate::control::{AgentStatus, LocalReply, LocalRequest};
use crate::reconcile::Action;

impl Supervisor {
    pub(super) async fn on_command(&mut self, request: CommandRequest) {
        let outcome = match request.command {
            Command::LogsTail {
                service,
                lines,
                max_bytes,
            } => {
                let engine = self.engine.clone();
                // The reply must fit one protocol body whatever the controller asked for.
                let max_bytes = max_bytes.min(self.options.log_tail_max_bytes);
                match blocking(move || engine.logs_tail(&service, lines, max_bytes)).await {
                    Ok(tail) => CommandOutcome::Logs {
                        lines: tail.lines,
                        truncated: tail.truncated,
                    },
                    Err(err) => CommandOutcome::Failed {
                        reason: err.to_string(),
                    },
                }
            }
            Command::Restart { service } => {
                let subject = Subject::Service(service.clone());
                if !self.observed.containers.contains_key(&service) {
                    CommandOutcome::Failed {
                        reason: format!("no container for service {service}"),
                    }
                } else if self.jobs.is_busy(&subject) {
                    CommandOutcome::Failed {
                        reason: format!(
                            "service {service} is being updated; try again when it is done"
                        ),
                    }
                } else {
                    // Answered when the restart job ends.
                    match self.spawn_job(
                        subject,
                        vec![Action::Restart { service }],
                        Some(request.id),
                    ) {
                        Ok(()) => return,
                        Err(err) => CommandOutcome::Failed {
                            reason: err.to_string(),
                        },
                    }
                }
            }
            Command::Recheck => {
                self.last_reported = None;
                self.reconcile().await;
                CommandOutcome::Done
            }
            // `credential_rotation` answers these before the supervisor; one that reaches
            // it came by another way (a test) and is refused rather than half done.
            Command::RotatePassword { .. } | Command::RotatePullToken { .. } => {
                CommandOutcome::Failed {
                    reason: "credential rotation is handled by the daemon, not the supervisor"
                        .into(),
                }
            }
        };
        self.transport.reply(CommandReply {
            id: request.id,
            outcome,
        });
    }
}

impl Supervisor {
    /// Answers the local control socket. An exec runs in its own task (it may take up to
    /// its timeout) and answers from there; the others are answered at once. The CLI may
    /// have hung up: then the answer goes nowhere.
    pub(super) async fn on_local(
        &mut self,
        request: LocalRequest,
        connected: bool,
        reply: oneshot::Sender<LocalReply>,
    ) {
        if let LocalRequest::Exec {
            service,
            argv,
            timeout_ms,
        } = request
        {
            let engine = self.engine.clone();
            let timeout = Duration::from_millis(u64::from(timeout_ms));
            tokio::spawn(async move {
                let answer = match blocking(move || {
                    engine.exec(&service, crate::reconcile::Role::Current, &argv, timeout)
                })
                .await
                {
                    Ok(outcome) => LocalReply::Exec {
                        exit_code: outcome.exit_code,
                        output: outcome.output,
                        timed_out: outcome.timed_out,
                    },
                    Err(err) => LocalReply::Failed {
                        reason: err.to_string(),
                    },
                };
                let _ = reply.send(answer);
            });
            return;
        }
        let _ = reply.send(self.local_answer(request, connected).await);
    }

    async fn local_answer(&mut self, request: LocalRequest, connected: bool) -> LocalReply {
        match request {
            LocalRequest::Status => {
                let (queued, dropped) = self.transport.queued_events();
                LocalReply::Status(Box::new(AgentStatus {
                    reported: self.current_report(),
                    broker_connected: connected,
                    queued_events: queued as u64,
                    dropped_events: dropped,
                }))
            }
            LocalRequest::Logs { service, lines, .. } => {
                let engine = self.engine.clone();
                let max_bytes = self.options.log_tail_max_bytes;
                match blocking(move || engine.logs_tail(&service, lines, max_bytes)).await {
                    Ok(tail) => LocalReply::Logs { lines: tail.lines },
                    Err(err) => LocalReply::Failed {
                        reason: err.to_string(),
                    },
                }
            }
            LocalRequest::Exec { .. } => LocalReply::Failed {
                reason: "exec is answered by its own task".into(),
            },
        }
    }
}
