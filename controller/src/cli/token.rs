//! `coracle token create|ls|revoke` (scope admin) and `coracle audit`: API tokens for
//! automation and the log of who did what.

use clap::{Args, Subcommand};

use super::output::{local_time, print_json};
use super::{ApiArgs, ApiClient};
use crate::api::tokens::{CreateTokenRequest, CreatedToken};
use crate::store::{ApiTokenRecord, AuditEntry};

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API token and print its secret (shown this once; stored hashed).
    Create {
        /// read: GET endpoints and registry pulls; deploy: also deploys, rollouts, restarts;
        /// admin: everything.
        #[arg(long)]
        scope: String,
        /// Its name in `token ls` and the audit log (default: SCOPE-xxxxxx).
        #[arg(long)]
        name: Option<String>,
    },
    /// List API tokens (names and scopes, never secrets).
    Ls,
    /// Revoke an API token: it stops working at once.
    Revoke { name: String },
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let api = ApiClient::from_args(&args.api)?;
    match args.command {
        TokenCommand::Create { scope, name } => {
            let request = CreateTokenRequest { scope, name };
            let created: CreatedToken =
                api.send("create API token", "POST", "/tokens", &request)?;
            eprintln!(
                "token {} (scope {}) created; its secret is shown only now:",
                created.record.name, created.record.scope
            );
            println!("{}", created.token);
        }
        TokenCommand::Ls => {
            let tokens: Vec<ApiTokenRecord> = api.get("list API tokens", "/tokens")?;
            if args.api.json {
                return print_json(&tokens);
            }
            println!(
                "{:<24} {:<7} {:<19} {:<20} STATE",
                "NAME", "SCOPE", "CREATED", "BY"
            );
            for t in tokens {
                let state = match t.revoked_unix {
                    Some(at) => format!("revoked {}", local_time(Some(at))),
                    None => "live".into(),
                };
                println!(
                    "{:<24} {:<7} {:<19} {:<20} {state}",
                    t.name,
                    t.scope,
                    local_time(Some(t.created_unix)),
                    t.created_by
                );
            }
        }
        TokenCommand::Revoke { name } => {
            api.delete("revoke API token", &format!("/tokens/{name}"))?;
            println!("token {name} revoked");
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// How many of the latest entries.
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

/// `coracle audit`: the latest entries, oldest first.
pub fn run_audit(args: AuditArgs) -> anyhow::Result<()> {
    let api = ApiClient::from_args(&args.api)?;
    let mut entries: Vec<AuditEntry> =
        api.get("read audit log", &format!("/audit?limit={}", args.limit))?;
    entries.reverse();
    if args.api.json {
        return print_json(&entries);
    }
    for e in entries {
        println!(
            "{} {:<24} {:<16} {:<20} {}",
            local_time(Some(e.at_unix)),
            e.actor,
            e.action,
            e.target,
            e.detail
        );
    }
    Ok(())
}
