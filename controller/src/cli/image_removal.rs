//! `coracle image rm|gc`: removing images from the controller's registry storage, in the
//! data dir directly (like `image import`, with or without `coracle serve` running).
//! `rm` removes a tag, or a manifest by digest with its tags; `gc` then removes the blobs
//! nothing names, never one a device's desired state still pins (`registry/gc.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use coracle_proto::{DesiredState, Signed};

use super::image_store::open_registry;
use crate::datadir::DataDir;
use crate::registry::{check_repository, BlobDigest};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum RemovalCommand {
    /// Remove `REPO:TAG` (the tag), or `REPO@sha256:…` (the manifest and its tags). The
    /// blobs stay until `coracle image gc`.
    Rm {
        reference: String,
        #[arg(long, default_value = "coracle-data")]
        data_dir: PathBuf,
    },
    /// Remove the blobs no manifest and no device's desired state names.
    Gc {
        /// Keep blobs written less than this many seconds ago (a push in progress).
        #[arg(long, default_value_t = 3600)]
        min_age_s: u64,
        /// Report what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value = "coracle-data")]
        data_dir: PathBuf,
        /// The controller's `[store] url`, when its fleet database is on PostgreSQL.
        #[arg(long, env = "CORACLE_STORE_URL")]
        store_url: Option<String>,
    },
}

impl RemovalCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Rm {
                reference,
                data_dir,
            } => rm(&reference, &data_dir),
            Self::Gc {
                min_age_s,
                dry_run,
                data_dir,
                store_url,
            } => gc(
                &data_dir,
                store_url.as_deref(),
                Duration::from_secs(min_age_s),
                dry_run,
            ),
        }
    }
}

/// `REPO@DIGEST` or `REPO:TAG` → (repository, reference).
fn split_reference(text: &str) -> anyhow::Result<(String, String)> {
    let (repo, reference) = text
        .split_once('@')
        .or_else(|| text.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')))
        .with_context(|| format!("{text:?} is not REPO:TAG or REPO@DIGEST"))?;
    check_repository(repo).with_context(|| format!("{text:?}: bad repository"))?;
    Ok((repo.to_string(), reference.to_string()))
}

fn rm(reference: &str, data_dir: &Path) -> anyhow::Result<()> {
    let registry = open_registry(data_dir)?;
    let (repo, reference) = split_reference(reference)?;
    registry
        .delete_manifest(&repo, &reference)
        .with_context(|| format!("remove {repo}:{reference}"))?;
    println!("removed {repo} {reference}");
    Ok(())
}

fn gc(
    data_dir: &Path,
    store_url: Option<&str>,
    min_age: Duration,
    dry_run: bool,
) -> anyhow::Result<()> {
    let registry = open_registry(data_dir)?;
    let pinned = pinned_manifests(data_dir, store_url)?;
    let report = registry
        .collect_garbage(&pinned, min_age, dry_run)
        .context("collect registry garbage")?;
    let verb = if dry_run { "would remove" } else { "removed" };
    for digest in &report.removed {
        println!("{verb} {}", digest.as_str());
    }
    println!(
        "{verb} {} blobs ({} bytes); kept {} ({} pinned by desired states)",
        report.removed.len(),
        report.removed_bytes,
        report.kept,
        pinned.len()
    );
    Ok(())
}

/// The image manifests of every device's stored desired state. The signature is not
/// checked: this only decides what to keep, and keeping more is always safe. A state that
/// cannot be decoded stops the collection, since its images would be unknown.
fn pinned_manifests(data_dir: &Path, store_url: Option<&str>) -> anyhow::Result<Vec<BlobDigest>> {
    let dir =
        DataDir::open(data_dir).with_context(|| format!("open data dir {}", data_dir.display()))?;
    // Without the URL, a new empty SQLite database would pin nothing and free every blob.
    if store_url.is_none() && dir.postgres_store_note().exists() {
        anyhow::bail!(
            "the fleet database is on PostgreSQL: pass --store-url (the [store] url of the \
             controller's config)"
        );
    }
    let store =
        Store::open_configured(store_url, &dir.database()).context("open the fleet database")?;
    let mut pinned = Vec::new();
    for (device, body) in store.all_desired().context("read desired states")? {
        let signed: Signed<DesiredState> = coracle_proto::decode(&body)
            .with_context(|| format!("decode the desired state of {device}"))?;
        let state = DesiredState::decode(&signed.payload)
            .with_context(|| format!("decode the desired state of {device}"))?;
        // Images of other registries too: the same manifest may be stored here.
        for service in state.services {
            pinned.push(
                BlobDigest::parse(&service.image.digest.to_string())
                    .with_context(|| format!("desired state of {device}: image digest"))?,
            );
        }
    }
    Ok(pinned)
}
