//! `coracle-agent apply-delta`: rebuild a layer tar from a delta and the old layer. The daemon
//! applies deltas inside its pulls; this is the same code path for operators in the field and
//! for the cross-build smoke test under qemu.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;
use coracle_images::delta::{self, BaseDir};
use coracle_images::unpack::{unpack_layer, UnpackLimits};
use coracle_proto::Digest;

/// What `apply-delta` was asked to do.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("base").required(true).multiple(true)))]
pub struct ApplyDeltaArgs {
    /// An old layer as the agent's store holds it (unpacked, its skeleton beside it);
    /// repeat for deltas over several layers.
    #[arg(long = "from-dir", group = "base")]
    pub from_dirs: Vec<PathBuf>,
    /// An old layer as a tar (plain, gzip or zstd), unpacked first as a pull would.
    #[arg(long = "from-tar", group = "base")]
    pub from_tars: Vec<PathBuf>,
    /// The delta file (as the controller's registry serves it).
    pub delta: PathBuf,
    /// Where to write the rebuilt layer tar; written only if its digest checks out.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// The diff_id the rebuilt layer must have. A whole-layer delta (made for small
    /// layers) does not carry it, so it needs this; other deltas are checked against it.
    #[arg(long = "diff-id")]
    pub diff_id: Option<Digest>,
    /// Memory budget in bytes for applying.
    #[arg(long, default_value_t = delta::DEFAULT_BUDGET)]
    pub budget: u64,
}

/// Applies the delta and returns the rebuilt layer's diff_id.
pub fn apply_delta(args: &ApplyDeltaArgs) -> anyhow::Result<Digest> {
    let scratch = Scratch(scratch_dir(&args.output));
    let mut dirs = args
        .from_dirs
        .iter()
        .map(|dir| scan(dir))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut unpacked = Vec::new();
    for (i, tar) in args.from_tars.iter().enumerate() {
        std::fs::create_dir_all(&scratch.0)
            .with_context(|| format!("create {}", scratch.0.display()))?;
        let dir = scratch.0.join(i.to_string());
        let file = File::open(tar).with_context(|| format!("open old layer {}", tar.display()))?;
        let reader = coracle_images::codec::decompress_sniffed(file)
            .with_context(|| format!("detect compression of {}", tar.display()))?;
        let layer = unpack_layer(reader, &dir, None, &UnpackLimits::default())
            .with_context(|| format!("unpack old layer {}", tar.display()))?;
        unpacked.push((layer.diff_id, scan(&dir)?));
    }
    let file =
        File::open(&args.delta).with_context(|| format!("open delta {}", args.delta.display()))?;
    let context = || format!("apply delta {}", args.delta.display());
    if dirs.is_empty() {
        // Every base's diff_id is known: match them to the delta's header by name.
        let given: Vec<String> = unpacked.iter().map(|(id, _)| id.to_string()).collect();
        let resolve = |wanted: &[delta::BaseName]| {
            wanted
                .iter()
                .map(
                    |name| match unpacked.iter().position(|(have, _)| name.names(have)) {
                        Some(i) => Ok(unpacked.swap_remove(i).1),
                        None => Err(delta::DeltaError::MissingBase { base: *name }),
                    },
                )
                .collect()
        };
        return delta::apply_to_file_with(file, &args.output, args.budget, args.diff_id, resolve)
            .with_context(|| format!("the old layers given are {}", given.join(", ")))
            .with_context(context);
    }
    dirs.extend(unpacked.into_iter().map(|(_, dir)| dir));
    delta::apply_to_file(file, dirs, args.diff_id, &args.output, args.budget).with_context(context)
}

fn scan(dir: &Path) -> anyhow::Result<BaseDir> {
    BaseDir::scan(dir.to_path_buf()).with_context(|| format!("list old layer {}", dir.display()))
}

/// Unpacked old layers go beside the output, so they share its filesystem.
fn scratch_dir(output: &Path) -> PathBuf {
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.join(format!(".coracle-apply-delta-{}", std::process::id()))
}

/// Removes the unpacked old layers when done, also on error.
struct Scratch(PathBuf);
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
