//! Credential rotations on the device: the commands the supervisor never sees.
//!
//! A [`Command::RotatePullToken`] carries the controller's scheduled new registry pull token,
//! sealed to this device's key (labelled [`PULL_TOKEN_LABEL`]): it is kept and used from the
//! next request on ([`PullToken::replace`]), then `Done` lets the controller revoke the token
//! two epochs back.
//!
//! `coracle device rotate`: a [`Command::RotatePassword`] carries a new broker password
//! sealed to this device's key;
//! [`CredentialRotation::run`] takes it off the command stream and, in order:
//!
//! 1. opens the box (it must carry [`ROTATED_PASSWORD_LABEL`]);
//! 2. writes the bootstrap file with the new password (temp file 0600, fsync, rename, fsync
//!    dir), so a restart from here on uses it;
//! 3. has the transport disconnect cleanly and reconnect with it;
//! 4. replies `Done` over the new connection — the controller revokes the old password only
//!    then.
//!
//! If the broker refuses the new password, or the link is not back in time, the old file
//! and password are put back and the reply is `Failed` naming why; the controller then
//! keeps the old password. Every other command goes on to the supervisor unchanged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use coracle_proto::command::{PULL_TOKEN_LABEL, ROTATED_PASSWORD_LABEL};
use coracle_proto::{
    Bootstrap, BrokerAuth, Command, CommandOutcome, CommandReply, CommandRequest, DeviceId, Sealed,
};
use tokio::sync::{mpsc, watch};

use crate::pull::{PullToken, PullTokenError};
use crate::runtime::error_chain as chain;
use crate::sealing_key::SealingKey;
use crate::transport::{Link, TransportHandle};

/// How long the link may take to come back with the new password.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a rotation was refused or undone; the text goes back to the controller.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("the sealed box does not open with this device's key")]
    Open(#[source] coracle_proto::SealError),
    #[error("the sealed box is not a broker password")]
    NotAPassword,
    #[error("read bootstrap file {path}")]
    ReadBootstrap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse bootstrap file {path}")]
    ParseBootstrap {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("bootstrap file {path} authenticates with a client certificate, not a password")]
    NotPasswordAuth { path: PathBuf },
    #[error("write bootstrap file {path}")]
    WriteBootstrap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the sealed box is not a registry pull token")]
    NotAPullToken,
    #[error(transparent)]
    PullToken(#[from] PullTokenError),
    #[error("the broker refused the new password; the old one is kept")]
    Refused,
    #[error(
        "the broker link did not come back within {0:?} with the new password; the old one is kept"
    )]
    Timeout(Duration),
}

/// What the rotation needs: where the bootstrap file is, the key that opens the box, and
/// the transport whose credentials it switches.
#[derive(Debug)]
pub struct CredentialRotation {
    pub device: DeviceId,
    pub bootstrap: PathBuf,
    pub key: SealingKey,
    pub transport: TransportHandle,
    pub link: watch::Receiver<Link>,
    /// The engine's token for the controller's registry (`None`: it pulls with none).
    pub pull_token: Option<PullToken>,
}

impl CredentialRotation {
    /// Serves `commands` until it closes: rotations here, the rest to `supervisor`.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<CommandRequest>,
        supervisor: mpsc::Sender<CommandRequest>,
    ) {
        while let Some(request) = commands.recv().await {
            let outcome = match &request.command {
                Command::RotatePassword { sealed } => {
                    let sealed = sealed.clone();
                    let rotated = self.rotate(&sealed).await;
                    self.answer("broker password", rotated)
                }
                Command::RotatePullToken { epoch, sealed } => {
                    let taken = self.take_pull_token(*epoch, sealed);
                    self.answer("registry pull token", taken)
                }
                _ => {
                    if supervisor.send(request).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            self.transport.reply(CommandReply {
                id: request.id,
                outcome,
            });
        }
    }

    fn answer(&self, what: &str, done: Result<(), RotationError>) -> CommandOutcome {
        match done {
            Ok(()) => {
                tracing::info!(device = %self.device, "{what} rotated");
                CommandOutcome::Done
            }
            Err(err) => {
                let reason = chain(&err);
                tracing::warn!(device = %self.device, error = %reason, "{what} rotation failed");
                CommandOutcome::Failed { reason }
            }
        }
    }

    /// Opens a scheduled pull token and makes it the one the engine sends.
    fn take_pull_token(&self, epoch: u32, sealed: &Sealed) -> Result<(), RotationError> {
        let pull_token = self.pull_token.as_ref().ok_or(PullTokenError::NoToken)?;
        let plain = self
            .key
            .open(&self.device, sealed)
            .map_err(RotationError::Open)?;
        let token = plain
            .strip_prefix(PULL_TOKEN_LABEL)
            .and_then(|t| std::str::from_utf8(t).ok())
            .filter(|t| !t.is_empty() && t.len() <= 512 && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or(RotationError::NotAPullToken)?;
        pull_token.replace(epoch, token.to_string())?;
        Ok(())
    }

    async fn rotate(&mut self, sealed: &Sealed) -> Result<(), RotationError> {
        let plain = self
            .key
            .open(&self.device, sealed)
            .map_err(RotationError::Open)?;
        let password = plain
            .strip_prefix(ROTATED_PASSWORD_LABEL)
            .and_then(|p| std::str::from_utf8(p).ok())
            .filter(|p| !p.is_empty() && p.len() <= 256 && !p.contains(['\0', '\n']))
            .ok_or(RotationError::NotAPassword)?
            .to_string();
        let path = self.bootstrap.clone();
        let old_text =
            std::fs::read_to_string(&path).map_err(|source| RotationError::ReadBootstrap {
                path: path.clone(),
                source,
            })?;
        let mut bootstrap: Bootstrap =
            toml::from_str(&old_text).map_err(|source| RotationError::ParseBootstrap {
                path: path.clone(),
                source,
            })?;
        let BrokerAuth::Password {
            username,
            password: old_password,
        } = &mut bootstrap.auth
        else {
            return Err(RotationError::NotPasswordAuth { path });
        };
        let (username, old_password) = (
            username.clone(),
            std::mem::replace(old_password, password.clone()),
        );
        let new_text = toml::to_string(&bootstrap).map_err(|e| RotationError::WriteBootstrap {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomically(&path, new_text.as_bytes())?;
        match self.reconnect(&username, &password).await {
            Ok(()) => Ok(()),
            Err(err) => {
                // Back to what worked: the file first, so a restart finds the old password.
                write_atomically(&path, old_text.as_bytes())?;
                if let Err(again) = self.reconnect(&username, &old_password).await {
                    tracing::error!(device = %self.device, error = %chain(&again), "the old broker password does not reconnect either");
                }
                Err(err)
            }
        }
    }

    /// Switches the transport to `password` and waits until the link is up with it.
    async fn reconnect(&mut self, username: &str, password: &str) -> Result<(), RotationError> {
        let before = match *self.link.borrow_and_update() {
            Link::Up { connects } => connects,
            _ => 0,
        };
        self.transport
            .switch_credentials(username.to_string(), password.to_string());
        let back = self.link.wait_for(|link| match link {
            Link::Up { connects } => *connects > before,
            Link::CredentialsRefused => true,
            Link::Down => false,
        });
        match tokio::time::timeout(RECONNECT_TIMEOUT, back).await {
            Ok(Ok(link)) if matches!(*link, Link::Up { .. }) => Ok(()),
            Ok(_) => Err(RotationError::Refused),
            Err(_) => Err(RotationError::Timeout(RECONNECT_TIMEOUT)),
        }
    }
}

/// Replaces `path` with `bytes`: temp file (0600) beside it, fsync, rename, fsync the dir
/// (the image store's crash-safe write).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RotationError> {
    coracle_images::store::write_atomic_with_mode(path, bytes, 0o600).map_err(|source| {
        RotationError::WriteBootstrap {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Every command but a rotation goes on to the supervisor, in order; a rotation whose
    /// box does not open, or holds the wrong kind of secret, changes nothing and is not
    /// passed on; a pull token is taken and kept.
    #[tokio::test(flavor = "current_thread")]
    async fn other_commands_reach_the_supervisor_and_rotations_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap = dir.path().join("bootstrap.toml");
        std::fs::write(&bootstrap, "untouched").unwrap();
        let device = coracle_proto::samples::device();
        let settings = crate::transport::TransportSettings {
            device: device.clone(),
            broker: crate::transport::BrokerAddress {
                host: "127.0.0.1".into(),
                port: 1,
                tls: false,
            },
            tls: None,
            credentials: None,
            deployment_key: coracle_proto::SigningKey::from_bytes(&[1; 32]).verifying_key(),
            key_chain_file: None,
            keep_alive: Duration::from_secs(5),
            reconnect_min_ms: 50,
            reconnect_max_ms: 500,
            max_events: 16,
        };
        let (transport, _driver, inbox) = crate::transport::transport(settings);
        let pull_token = PullToken::load(
            Some("boot".into()),
            dir.path().join(crate::pull::PULL_TOKEN_FILE),
        );
        let key = SealingKey::load_or_create(dir.path()).unwrap();
        let hex = key.public_hex();
        let public: [u8; 32] = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        let seal =
            |plain: &[u8]| coracle_proto::sealed::seal(&public, &device, [9; 32], plain).unwrap();
        let pull_box = seal(&[PULL_TOKEN_LABEL, b"pi:1:abcd"].concat());
        let password_box = seal(&[ROTATED_PASSWORD_LABEL, b"pw"].concat());
        let rotation = CredentialRotation {
            device,
            bootstrap: bootstrap.clone(),
            key,
            transport,
            link: inbox.link,
            pull_token: Some(pull_token.clone()),
        };
        let (commands_tx, commands) = mpsc::channel(4);
        let (to_supervisor, mut supervisor) = mpsc::channel(4);
        tokio::spawn(rotation.run(commands, to_supervisor));
        let forged = Sealed {
            ephemeral: [3; 32],
            ciphertext: vec![0; 48],
        };
        for (id, command) in [
            (1, Command::RotatePassword { sealed: forged }),
            // A password box is not a pull token, and an older epoch is refused.
            (
                2,
                Command::RotatePullToken {
                    epoch: 2,
                    sealed: password_box,
                },
            ),
            (
                3,
                Command::RotatePullToken {
                    epoch: 1,
                    sealed: pull_box.clone(),
                },
            ),
            (4, Command::Recheck),
        ] {
            commands_tx
                .send(CommandRequest { id, command })
                .await
                .unwrap();
        }
        let passed = supervisor.recv().await.unwrap();
        assert_eq!((passed.id, passed.command), (4, Command::Recheck));
        assert_eq!(std::fs::read_to_string(&bootstrap).unwrap(), "untouched");
        // Commands are served in order, so the pull token was taken before the recheck.
        assert_eq!(
            (pull_token.current().as_deref(), pull_token.epoch()),
            (Some("pi:1:abcd"), 1)
        );
        let kept = PullToken::load(
            Some("boot".into()),
            dir.path().join(crate::pull::PULL_TOKEN_FILE),
        );
        assert_eq!(kept.epoch(), 1, "a restart pulls with the rotated token");
    }

    #[test]
    fn the_bootstrap_file_is_replaced_whole_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootstrap.toml");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file is left behind");
    }
}
