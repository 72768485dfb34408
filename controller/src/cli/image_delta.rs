//! `coracle image delta create|apply`: delta layers on plain layer tars, for operators and
//! benchmarks.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use coracle_images::delta::{self, BaseLayer, EncodeOptions};
use coracle_images::unpack::{unpack_layer, UnpackLimits};

#[derive(Debug, Subcommand)]
pub enum DeltaCommand {
    /// Encode a delta that rebuilds NEW.tar from the files of OLD.tar.
    Create {
        /// The old layer tar (uncompressed), as the device holds it.
        #[arg(long = "from")]
        from: PathBuf,
        /// The new layer tar (uncompressed).
        #[arg(long = "to")]
        to: PathBuf,
        /// Where to write the delta (tar+zstd, or a whole-layer delta for a small layer).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// zstd level for literals, patches and the delta stream.
        #[arg(long, default_value_t = 19)]
        level: i32,
        /// Memory budget (bytes) the delta must be applicable within.
        #[arg(long, default_value_t = delta::DEFAULT_BUDGET)]
        budget: u64,
    },
    /// Rebuild the new layer tar byte for byte from a delta and the old layer unpacked.
    Apply {
        /// The old layer unpacked (as on a device); repeat for deltas over several layers.
        #[arg(long = "from-dir", required = true)]
        from_dir: Vec<PathBuf>,
        /// The delta file.
        delta: PathBuf,
        /// Where to write the rebuilt tar; written only if its digest matches.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// The diff_id the rebuilt layer must have (`create` prints it). A whole-layer delta
        /// does not carry it, so it needs this; other deltas are checked against it.
        #[arg(long = "diff-id")]
        diff_id: Option<coracle_images::Digest>,
        /// Memory budget (bytes) for applying.
        #[arg(long, default_value_t = delta::DEFAULT_BUDGET)]
        budget: u64,
    },
}

impl DeltaCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Create {
                from,
                to,
                output,
                level,
                budget,
            } => create(&from, &to, &output, level, budget),
            Self::Apply {
                from_dir,
                delta,
                output,
                diff_id,
                budget,
            } => {
                return_large_buffers_to_os();
                let file = File::open(&delta)
                    .with_context(|| format!("open delta {}", delta.display()))?;
                let bases = from_dir
                    .into_iter()
                    .map(|dir| {
                        delta::BaseDir::scan(dir.clone())
                            .with_context(|| format!("list old layer {}", dir.display()))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let digest = delta::apply_to_file(file, bases, diff_id, &output, budget)
                    .with_context(|| format!("apply delta {}", delta.display()))?;
                println!("rebuilt {} ({digest})", output.display());
                Ok(())
            }
        }
    }
}

/// glibc raises its mmap threshold after large frees and then keeps freed windows on the
/// heap; a fixed threshold returns every window buffer to the OS when it is dropped, so the
/// process stays within the delta's memory budget.
fn return_large_buffers_to_os() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; it is called before any window buffer
    // exists and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Removes the unpacked old layer and its skeleton when done.
struct ScratchDir(PathBuf);
impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(coracle_images::skeleton::skeleton_path(&self.0));
    }
}

fn create(from: &Path, to: &Path, output: &Path, level: i32, budget: u64) -> anyhow::Result<()> {
    let scratch_parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let scratch =
        ScratchDir(scratch_parent.join(format!(".coracle-delta-old-{}", std::process::id())));
    let limits = UnpackLimits {
        max_bytes: u64::MAX,
        ..UnpackLimits::default()
    };
    let old_tar = File::open(from).with_context(|| format!("open old layer {}", from.display()))?;
    let old = unpack_layer(old_tar, &scratch.0, None, &limits)
        .with_context(|| format!("unpack old layer {}", from.display()))?;
    let base = BaseLayer {
        diff_id: old.diff_id,
        dir: &scratch.0,
        index: &old.index,
    };
    let out = File::create(output).with_context(|| format!("create {}", output.display()))?;
    let options = EncodeOptions {
        level,
        apply_budget: budget,
        ..EncodeOptions::default()
    };
    let report = delta::encode(to, &[base], scratch_parent, BufWriter::new(out), &options)
        .with_context(|| format!("encode delta {} -> {}", from.display(), to.display()))?;
    let full =
        delta::full_zstd_size(to, level).with_context(|| format!("compress {}", to.display()))?;
    let ratio = report.delta_bytes as f64 / full.max(1) as f64;
    if let Some(id) = report.new_diff_id {
        println!("new layer     {id} ({} bytes)", report.new_tar_bytes);
    }
    println!(
        "delta         {} bytes -> {}",
        report.delta_bytes,
        output.display()
    );
    if report.format_version == delta::whole::WHOLE_FORMAT_VERSION {
        println!(
            "  whole layer one zstd frame over the old tar (the op stream was {} bytes); \
             apply it with --diff-id",
            report.ops_delta_bytes
        );
    }
    println!(
        "  built from  literal {} / copied {} / zstd-patched {} / bsdiff-patched {} bytes",
        report.literal_bytes,
        report.copied_bytes,
        report.zstd_patched_bytes,
        report.bsdiff_patched_bytes
    );
    println!(
        "  skeleton    {} bytes of tar headers and padding, ~{} bytes encoded",
        report.skeleton_bytes, report.skeleton_cost_bytes
    );
    println!("full zstd -{level} {full} bytes");
    if ratio > delta::PAYS_BELOW_RATIO {
        println!("ratio         {ratio:.3} of the full layer: the delta does not pay, serve the full layer");
    } else {
        println!("ratio         {ratio:.3} of the full layer");
    }
    Ok(())
}
