//! Small OCI images for end-to-end tests, made here: one gzip layer from a list of files,
//! written as an OCI image layout that `skopeo` pushes. Debian's busybox-static gives the
//! images a shell and an HTTP server without any network download.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use coracle_proto::Digest;
use flate2::write::GzEncoder;

/// Where Debian's `busybox-static` installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// One file of the layer.
#[derive(Debug, Clone)]
pub struct LayerFile {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl LayerFile {
    pub fn new(path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        Self {
            path: path.to_string(),
            contents: contents.into(),
            mode,
        }
    }
}

/// The files of a busybox image whose `/www/index.html` says `page`, plus `extra`.
pub fn busybox_files(page: &str, extra: Vec<LayerFile>) -> anyhow::Result<Vec<LayerFile>> {
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("read {BUSYBOX} (Debian package busybox-static)"))?;
    let mut files = vec![
        LayerFile::new("bin/busybox", busybox, 0o755),
        LayerFile::new("www/index.html", page.as_bytes(), 0o644),
    ];
    files.extend(extra);
    Ok(files)
}

/// A built image layout and what it holds.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// `oci:<dir>:<tag>` for skopeo.
    pub source: String,
    pub layout: PathBuf,
    pub layer_digest: Digest,
    pub layer_size: u64,
    pub diff_id: Digest,
}

/// Writes an OCI layout under `dir` with one image, tagged `tag`, for the machine's platform.
pub fn build_layout(dir: &Path, tag: &str, files: &[LayerFile]) -> anyhow::Result<BuiltImage> {
    layout_from_tar(dir, tag, &layer_tar(files)?, &[])
}

/// Writes an OCI layout under `dir` whose one gzip layer is `tar`, tagged `tag`, for the
/// machine's platform, with `cmd` as its `Cmd` when not empty.
pub fn layout_from_tar(
    dir: &Path,
    tag: &str,
    tar: &[u8],
    cmd: &[&str],
) -> anyhow::Result<BuiltImage> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("create {}", blobs.display()))?;
    let diff_id = Digest::of(tar);
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).context("gzip layer")?;
    let layer = gz.finish().context("gzip layer")?;
    let layer_digest = write_blob(&blobs, &layer)?;
    let mut image_config = serde_json::json!({"WorkingDir": "/"});
    if !cmd.is_empty() {
        image_config["Cmd"] = serde_json::json!(cmd);
    }
    let config = serde_json::json!({
        "architecture": go_arch(),
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
    })
    .to_string();
    let config_digest = write_blob(&blobs, config.as_bytes())?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest.to_string(), "size": layer.len()}],
    })
    .to_string();
    let manifest_digest = write_blob(&blobs, manifest.as_bytes())?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest.to_string(), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    write(&dir.join("index.json"), index.to_string().as_bytes())?;
    write(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(BuiltImage {
        source: format!("oci:{}:{tag}", dir.display()),
        layout: dir.to_path_buf(),
        layer_digest,
        layer_size: layer.len() as u64,
        diff_id,
    })
}

fn layer_tar(files: &[LayerFile]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for file in files {
        let mut parent = Path::new(&file.path).parent();
        while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(dir.to_path_buf());
            parent = dir.parent();
        }
    }
    for dir in &dirs {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(1_700_000_000);
        builder
            .append_data(&mut header, dir, std::io::empty())
            .with_context(|| format!("tar dir {}", dir.display()))?;
    }
    for file in files {
        let mut header = tar::Header::new_ustar();
        header.set_mode(file.mode);
        header.set_size(file.contents.len() as u64);
        header.set_mtime(1_700_000_000);
        builder
            .append_data(&mut header, &file.path, file.contents.as_slice())
            .with_context(|| format!("tar {}", file.path))?;
    }
    builder.into_inner().context("finish layer tar")
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> anyhow::Result<Digest> {
    let digest = Digest::of(bytes);
    write(&blobs.join(digest.hex()), bytes)?;
    Ok(digest)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}

/// The machine's architecture in OCI's spelling.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Bytes gzip cannot shrink (xorshift from `seed`), so a layer is as large as its files:
/// what a transfer costs on the wire is what a test sees.
pub fn noise(len: usize, mut seed: u32) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed.to_le_bytes()[0]
        })
        .collect()
}
