//! `coracle image import|ls|inspect`: images in the controller's registry storage, read and
//! written directly in the data dir. Storage is content-addressed and every file lands by
//! atomic rename, so this works whether `coracle serve` is running or not (the registry sees
//! an import at once), like `docker load` without needing the daemon up.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use coracle_images::digest::HashingReader;
use coracle_images::import::{open_archive, open_layout, ImageSource, LayerBlob};
use coracle_images::oci::{ImageConfig, Manifest, Platform};

use super::progress::Transfer;
use crate::datadir::DataDir;
use crate::registry::{check_repository, check_tag, BlobDigest, BlobStore, Registry};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Import an OCI layout dir, an oci-archive tar or a docker-archive tar into the registry.
    Import {
        /// The image: a directory (OCI layout) or a tar (oci-archive or docker-archive).
        path: PathBuf,
        /// Repository and tag to store it under (default: the file name, tag `latest`).
        #[arg(long)]
        tag: Option<String>,
        /// Platform to pick from a multi-arch image, e.g. linux/arm64 (default: this host's).
        #[arg(long)]
        platform: Option<String>,
        /// The controller's data directory.
        #[arg(long, env = "CORACLE_DATA_DIR", default_value = "coracle-data")]
        data_dir: PathBuf,
    },
    /// List repositories, tags, manifest digests and image sizes (per platform for a
    /// multi-platform image).
    Ls {
        #[arg(long, env = "CORACLE_DATA_DIR", default_value = "coracle-data")]
        data_dir: PathBuf,
        /// Print JSON (repositories with their tags) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show an image's manifest, platform and layers (size and diff_id), or each platform's
    /// image of a multi-platform one.
    Inspect {
        /// `repo:tag` or `repo@sha256:...`.
        reference: String,
        #[arg(long, env = "CORACLE_DATA_DIR", default_value = "coracle-data")]
        data_dir: PathBuf,
        /// Print the tag's JSON (digest, size, layers or platforms) instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl StoreCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Import {
                path,
                tag,
                platform,
                data_dir,
            } => import(&path, tag, platform, &data_dir),
            Self::Ls { data_dir, json } => ls(&open_registry(&data_dir)?, json),
            Self::Inspect {
                reference,
                data_dir,
                json,
            } => inspect(&open_registry(&data_dir)?, &reference, json),
        }
    }
}

pub(super) fn open_registry(data_dir: &Path) -> anyhow::Result<Registry> {
    let dir =
        DataDir::open(data_dir).with_context(|| format!("open data dir {}", data_dir.display()))?;
    let blobs = BlobStore::open(dir.blobs(), dir.uploads()).context("open blob store")?;
    // The CLI never serves HTTP, so the registry's auth token is not needed.
    Registry::open(
        dir.root().join("registry"),
        blobs,
        crate::access::AdminToken::new("", None),
    )
    .context("open registry")
}

/// `repo:tag` (tag defaults to `latest`).
fn split_tag(text: &str) -> anyhow::Result<(String, String)> {
    let (repo, tag) = match text.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (text, "latest"),
    };
    check_repository(repo).with_context(|| format!("--tag {text:?}: bad repository"))?;
    check_tag(tag).with_context(|| format!("--tag {text:?}: bad tag"))?;
    Ok((repo.to_string(), tag.to_string()))
}

fn default_repository(path: &Path) -> String {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("image")
        .to_ascii_lowercase();
    let cleaned: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "image".into()
    } else {
        trimmed.into()
    }
}

fn import(
    path: &Path,
    tag: Option<String>,
    platform: Option<String>,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let (repo, tag) = match tag {
        Some(text) => split_tag(&text)?,
        None => (default_repository(path), "latest".to_string()),
    };
    let platform = match platform {
        Some(text) => Platform::parse(&text)
            .with_context(|| format!("--platform {text:?}: expected os/arch[/variant]"))?,
        None => Platform::this_build(),
    };
    let registry = open_registry(data_dir)?;
    let scratch = data_dir.join("registry").join("import-scratch");
    let source = if path.is_dir() {
        open_layout(path, &platform)
    } else {
        open_archive(path, &scratch, &platform)
    }
    .with_context(|| format!("{} is not a readable OCI or docker image", path.display()))?;
    let digest = store(&registry, &source, &repo, &tag)
        .with_context(|| format!("import {}", path.display()))?;
    println!("imported {repo}:{tag} {}", digest.as_str());
    ask_server_for_deltas(data_dir, &repo);
    Ok(())
}

/// Tells a `coracle serve` running on this data dir to encode the new tag's deltas now
/// rather than at its next rescan. Best effort: without a server nothing is lost, the
/// workers plan every repository when it starts.
fn ask_server_for_deltas(data_dir: &Path, repo: &str) {
    let args = super::ApiArgs {
        data_dir: data_dir.to_path_buf(),
        api: None,
        token: None,
        json: false,
    };
    let asked = super::ApiClient::from_args(&args).and_then(|client| {
        client.send::<_, serde_json::Value>(
            "plan deltas",
            "POST",
            "/images/deltas/plan",
            &serde_json::json!({ "repository": repo }),
        )
    });
    if let Err(err) = asked {
        tracing::debug!(error = %format!("{err:#}"), "no running controller asked to plan deltas");
    }
}

/// Verifies every layer (blob digest and diff_id) before anything becomes visible, then
/// stores layers, config, manifest and tag.
fn store(
    registry: &Registry,
    source: &ImageSource,
    repo: &str,
    tag: &str,
) -> anyhow::Result<BlobDigest> {
    let count = source.layers.len();
    for (n, layer) in source.layers.iter().enumerate() {
        verify_layer(layer, n + 1, count)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("start runtime")?;
    runtime.block_on(async {
        for layer in &source.layers {
            let bytes = tokio::fs::read(&layer.path)
                .await
                .with_context(|| format!("read layer {}", layer.path.display()))?;
            registry.blobs.put_bytes(&bytes).await?;
        }
        registry.blobs.put_bytes(&source.config_bytes).await?;
        // The source's own bytes, so the stored digest is the one its index names.
        let digest = registry
            .put_manifest(
                repo,
                tag,
                &source.manifest_media_type,
                &source.manifest_bytes,
            )
            .await?
            .digest;
        anyhow::Ok(digest)
    })
}

/// Checks the layer blob's digest and diff_id in one read of the file, reported as a
/// transfer (`layer N/COUNT sha256:… 1.2 MB in 0.1 s (12 MB/s) verified`).
fn verify_layer(layer: &LayerBlob, n: usize, count: usize) -> anyhow::Result<()> {
    let path = &layer.path;
    let file = File::open(path).with_context(|| format!("open layer {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let short: String = layer.digest.to_string().chars().take(19).collect();
    let mut transfer = Transfer::start(format!("layer {n}/{count} {short}"), size);
    let mut blob = HashingReader::new(transfer.reader(file));
    let diff_id = (|| {
        let mut reader = coracle_images::codec::decompress_sniffed(&mut blob)?;
        let mut hasher = coracle_images::digest::DigestHasher::default();
        std::io::copy(&mut reader, &mut hasher)?;
        std::io::Result::Ok(hasher.finish())
    })();
    // The rest of the blob (after the compressed stream's end, or after a decompression
    // error) still counts for its digest, which is checked first: a tampered blob is
    // named as such, not as a corrupt stream.
    let checked = blob
        .finish()
        .with_context(|| format!("read layer {}", path.display()))
        .and_then(|(actual, _)| {
            if actual != layer.digest {
                bail!(
                    "layer blob {} has digest {actual}, not the {} its manifest names",
                    path.display(),
                    layer.digest
                );
            }
            let diff_id =
                diff_id.with_context(|| format!("decompress layer {}", path.display()))?;
            if diff_id != layer.diff_id {
                bail!(
                    "layer {} unpacks to {diff_id}, not the diff_id {} its config names",
                    layer.digest,
                    layer.diff_id
                );
            }
            Ok(())
        });
    transfer.finish(if checked.is_ok() {
        "verified"
    } else {
        "refused"
    });
    checked
}

fn ls(registry: &Registry, json: bool) -> anyhow::Result<()> {
    if json {
        let listing: Vec<serde_json::Value> = registry
            .repositories()?
            .into_iter()
            .map(|repo| {
                let tags: Vec<_> = registry
                    .tags(&repo)
                    .unwrap_or_default()
                    .iter()
                    .map(|tag| crate::api::images::tag_info(registry, &repo, tag))
                    .collect();
                serde_json::json!({ "name": repo, "tags": tags })
            })
            .collect();
        return super::output::print_json(&listing);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<30} {:<16} {:<71} SIZE",
        "REPOSITORY", "TAG", "DIGEST"
    )?;
    for repo in registry.repositories()? {
        for tag in registry.tags(&repo).unwrap_or_default() {
            let info = crate::api::images::tag_info(registry, &repo, &tag);
            let size = match &info.problem {
                Some(_) => "-".to_string(),
                None if info.platforms.is_empty() => info.size.to_string(),
                None => format!("{} ({} platforms)", info.size, info.platforms.len()),
            };
            writeln!(out, "{repo:<30} {tag:<16} {:<71} {size}", info.digest)?;
        }
    }
    Ok(())
}

fn load_manifest(registry: &Registry, digest: &BlobDigest) -> anyhow::Result<Manifest> {
    let path = registry.blobs.path(digest);
    let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    Manifest::parse(&bytes).with_context(|| format!("manifest {} is not an image", digest.as_str()))
}

fn inspect(registry: &Registry, reference: &str, json: bool) -> anyhow::Result<()> {
    let (repo, reference) = match reference.split_once('@') {
        Some((repo, digest)) => (repo.to_string(), digest.to_string()),
        None => split_tag(reference)?,
    };
    let (digest, media_type) = registry
        .resolve(&repo, &reference)
        .with_context(|| format!("no image {repo}:{reference}"))?;
    let info = crate::api::images::tag_info(registry, &repo, &reference);
    if json {
        return super::output::print_json(&info);
    }
    if !info.platforms.is_empty() {
        let mut out = std::io::stdout().lock();
        writeln!(out, "image     {repo}:{reference}")?;
        writeln!(out, "index     {} ({media_type})", digest.as_str())?;
        writeln!(out, "platforms")?;
        for platform in &info.platforms {
            match &platform.problem {
                Some(problem) => writeln!(
                    out,
                    "  {:<16} {}  unreadable: {problem}",
                    platform.platform, platform.digest
                )?,
                None => writeln!(
                    out,
                    "  {:<16} {}  {} layers, {} bytes",
                    platform.platform,
                    platform.digest,
                    platform.layers.len(),
                    platform.size
                )?,
            }
        }
        return Ok(());
    }
    let manifest = load_manifest(registry, &digest)?;
    let config_digest = BlobDigest::parse(&manifest.config.digest.to_string())?;
    let config_path = registry.blobs.path(&config_digest);
    let config = ImageConfig::parse(
        &std::fs::read(&config_path)
            .with_context(|| format!("read config {}", config_path.display()))?,
    )
    .context("parse image config")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "image     {repo}:{reference}")?;
    writeln!(out, "manifest  {} ({media_type})", digest.as_str())?;
    let variant = config
        .variant
        .as_deref()
        .map(|v| format!("/{v}"))
        .unwrap_or_default();
    writeln!(
        out,
        "platform  {}/{}{variant}",
        config.os, config.architecture
    )?;
    writeln!(
        out,
        "config    {} ({} bytes)",
        manifest.config.digest, manifest.config.size
    )?;
    writeln!(out, "layers")?;
    for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        writeln!(
            out,
            "  {} {:>10} bytes  diff_id {diff_id}  {}",
            layer.digest, layer.size, layer.media_type
        )?;
    }
    Ok(())
}
