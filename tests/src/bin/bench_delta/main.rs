//! Delta benchmark on real version pairs of different kinds ([`inputs::PAIRS`]: PyPI wheels,
//! Debian packages and a Debian base system, npm packages with a Go binary or a JS bundle,
//! and a generated 40,000-file tree), each side turned into a layer tar. For each pair it
//! prints the full layer (zstd -19), our delta, the general-purpose delta tools on the whole
//! tar measured in the same run (`zstd -19 --long --patch-from`, `bsdiff`, `xdelta3 -9`), our
//! size over the best of them, our encode time, our apply time and peak RSS (as on a device:
//! from the old layer unpacked), and bsdiff's peak RSS; then our unpack throughput beside
//! `tar -x`.
//!
//! Run by hand as root (needs pip, npm, curl to deb.debian.org, mmdebstrap, dpkg-deb, and
//! Debian's zstd, bsdiff, xdelta3); downloads are pinned by sha256 and cached in `BENCH_DIR`:
//! `cargo build --release -p coracle-controller -p coracle-tests && target/release/bench_delta`

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use coracle_images::unpack::{unpack_layer, UnpackLimits};

mod inputs;

type BenchResult<T> = Result<T, String>;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench_delta: {e}");
        std::process::exit(1);
    }
}

fn run() -> BenchResult<()> {
    let work = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("coracle-bench-delta"));
    std::fs::create_dir_all(&work).map_err(|e| format!("create {}: {e}", work.display()))?;
    // BENCH_UNPACK=layer.tar measures only unpack throughput on that tar.
    if let Some(tar) = std::env::var_os("BENCH_UNPACK") {
        return unpack_throughput(&work, Path::new(&tar));
    }
    // BENCH_CORACLE=/path/to/coracle measures another build (say, before a change).
    let coracle = match std::env::var_os("BENCH_CORACLE") {
        Some(path) => PathBuf::from(path),
        None => sibling_binary("coracle")?,
    };
    println!(
        "{:<36} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8} {:>7} {:>8} {:>7}",
        "pair",
        "tar",
        "zstd-19",
        "ours",
        "zstd-pf",
        "bsdiff",
        "xdelta3",
        "ours/best",
        "enc s",
        "apply ms",
        "RSS MB",
        "bsd MB"
    );
    let mut full_layer = None;
    // BENCH_ONLY=numpy runs just the pairs whose name contains it.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for pair in inputs::PAIRS
        .iter()
        .filter(|p| p.name.contains(only.as_str()))
    {
        let old_tar = inputs::layer(&work, pair, "old")?;
        let new_tar = inputs::layer(&work, pair, "new")?;
        let row = measure_pair(&work, &coracle, &old_tar, &new_tar)?;
        let best_tool = row.zstd_patch_from.min(row.bsdiff).min(row.xdelta3);
        println!(
            "{:<36} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8.2}x {:>8.1} {:>7} {:>8.1} {:>7.0}",
            pair.name,
            row.tar,
            row.zstd,
            row.ours,
            row.zstd_patch_from,
            row.bsdiff,
            row.xdelta3,
            row.ours as f64 / best_tool as f64,
            row.encode_ms as f64 / 1000.0,
            row.apply_ms,
            row.apply_rss_kb as f64 / 1024.0,
            row.bsdiff_rss_kb as f64 / 1024.0,
        );
        println!("{:<36} ({})", "", pair.kind);
        if full_layer.as_ref().is_none_or(|(_, size)| *size < row.tar) {
            full_layer = Some((new_tar.clone(), row.tar));
        }
    }
    if let Some((tar, _)) = full_layer {
        unpack_throughput(&work, &tar)?;
    }
    Ok(())
}

struct Row {
    tar: u64,
    zstd: u64,
    ours: u64,
    zstd_patch_from: u64,
    bsdiff: u64,
    xdelta3: u64,
    encode_ms: u128,
    apply_ms: u128,
    apply_rss_kb: i64,
    bsdiff_rss_kb: i64,
}

fn measure_pair(work: &Path, coracle: &Path, old_tar: &Path, new_tar: &Path) -> BenchResult<Row> {
    let name = new_tar
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = |ext: &str| work.join(format!("{name}.{ext}"));
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| format!("stat {}: {e}", p.display()))
    };

    let zstd = compressed_size("zstd", &["-19", "-c", "-q"], new_tar)?;
    // BENCH_BUDGET=33554432 encodes and applies for a device with that memory budget (a
    // 512 MB board gives the agent 32 MiB) instead of the default 64 MiB.
    let budget = std::env::var("BENCH_BUDGET")
        .unwrap_or_else(|_| coracle_images::delta::DEFAULT_BUDGET.to_string());
    let delta = out("delta");
    let start = Instant::now();
    run_measured(
        Command::new(coracle)
            .args(["image", "delta", "create", "--budget", &budget, "--from"])
            .arg(old_tar)
            .arg("--to")
            .arg(new_tar)
            .arg("-o")
            .arg(&delta)
            .stdout(Stdio::null()),
    )?;
    let encode_ms = start.elapsed().as_millis();
    let pf = out("zstd-pf");
    run_measured(
        Command::new("zstd")
            .args(["-19", "--long=27", "-q", "-f"])
            .arg(format!("--patch-from={}", old_tar.display()))
            .arg(new_tar)
            .arg("-o")
            .arg(&pf),
    )?;
    let bs = out("bsdiff");
    let (_, bsdiff_rss_kb) =
        run_measured(Command::new("bsdiff").arg(old_tar).arg(new_tar).arg(&bs))?;
    let xd = out("xdelta3");
    run_measured(
        Command::new("xdelta3")
            .args(["-9", "-f", "-e", "-s"])
            .arg(old_tar)
            .arg(new_tar)
            .arg(&xd),
    )?;

    // Apply as on a device: the old layer unpacked, rebuild the tar byte for byte.
    let old_dir = work.join(format!("{name}.old-dir"));
    let _ = std::fs::remove_dir_all(&old_dir);
    let limits = UnpackLimits::default();
    let old_file = std::fs::File::open(old_tar).map_err(|e| e.to_string())?;
    unpack_layer(old_file, &old_dir, None, &limits)
        .map_err(|e| format!("unpack {}: {e}", old_tar.display()))?;
    let rebuilt = out("rebuilt.tar");
    // Compare by digest: reading both tars into this process would raise its RSS, which a
    // spawned child inherits as its starting ru_maxrss.
    let digest = |p: &Path| {
        coracle_images::digest::digest_file(p).map_err(|e| format!("hash {}: {e}", p.display()))
    };
    // As the agent does: the layer it asked for is known (a whole-layer delta needs it).
    let (new_diff_id, _) = digest(new_tar)?;
    let start = Instant::now();
    let (_, apply_rss_kb) = run_measured(
        Command::new(coracle)
            .args(["image", "delta", "apply", "--budget", &budget])
            .arg("--diff-id")
            .arg(new_diff_id.to_string())
            .arg("--from-dir")
            .arg(&old_dir)
            .arg(&delta)
            .arg("-o")
            .arg(&rebuilt)
            .stdout(Stdio::null()),
    )?;
    let apply_ms = start.elapsed().as_millis();
    if digest(&rebuilt)?.0 != new_diff_id {
        return Err(format!(
            "{} was not rebuilt byte for byte",
            new_tar.display()
        ));
    }
    let _ = std::fs::remove_dir_all(&old_dir);
    let _ = std::fs::remove_file(coracle_images::skeleton::skeleton_path(&old_dir));
    Ok(Row {
        tar: size(new_tar)?,
        zstd,
        encode_ms,
        ours: size(&delta)?,
        zstd_patch_from: size(&pf)?,
        bsdiff: size(&bs)?,
        xdelta3: size(&xd)?,
        apply_ms,
        apply_rss_kb,
        bsdiff_rss_kb,
    })
}

/// Our unpack (hashing + checks + syncfs) against GNU tar on the largest layer.
fn unpack_throughput(work: &Path, tar: &Path) -> BenchResult<()> {
    let bytes = std::fs::metadata(tar).map_err(|e| e.to_string())?.len() as f64;
    let limits = UnpackLimits::default();
    // Alternate the two, three rounds each, and keep the best: ext4 inode allocation after
    // the previous round's deletions penalises whichever runs first.
    let (mut ours, mut gnu) = (f64::MAX, f64::MAX);
    for round in 0..3 {
        let ours_dir = work.join(format!("unpack-ours-{round}"));
        let tar_dir = work.join(format!("unpack-tar-{round}"));
        let _ = std::fs::remove_dir_all(&ours_dir);
        let _ = std::fs::remove_dir_all(&tar_dir);
        std::fs::create_dir_all(&tar_dir).map_err(|e| e.to_string())?;
        // Start each run with no dirty pages of others to flush.
        run_measured(&mut Command::new("sync"))?;
        let start = Instant::now();
        let file = std::fs::File::open(tar).map_err(|e| e.to_string())?;
        unpack_layer(file, &ours_dir, None, &limits).map_err(|e| e.to_string())?;
        ours = ours.min(start.elapsed().as_secs_f64());
        run_measured(&mut Command::new("sync"))?;
        let start = Instant::now();
        run_measured(
            Command::new("tar")
                .arg("-xf")
                .arg(tar)
                .arg("-C")
                .arg(&tar_dir),
        )?;
        run_measured(Command::new("sync").arg("-f").arg(&tar_dir))?;
        gnu = gnu.min(start.elapsed().as_secs_f64());
        let _ = std::fs::remove_dir_all(&ours_dir);
        let _ = std::fs::remove_dir_all(&tar_dir);
        let _ = std::fs::remove_file(coracle_images::skeleton::skeleton_path(&ours_dir));
    }
    println!(
        "\nunpack {} ({:.1} MB, best of 3): coracle (checks + sha256 + skeleton + syncfs) {:.0} MB/s, tar -x + sync -f {:.0} MB/s, ratio {:.2}x",
        tar.display(),
        bytes / 1e6,
        bytes / 1e6 / ours,
        bytes / 1e6 / gnu,
        gnu / ours
    );
    Ok(())
}

fn compressed_size(tool: &str, args: &[&str], input: &Path) -> BenchResult<u64> {
    // Count the output as it streams by (holding it would inflate the RSS of later children).
    let mut child = Command::new(tool)
        .args(args)
        .arg(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{tool}: {e}"))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| format!("{tool}: no stdout"))?;
    let bytes =
        std::io::copy(&mut stdout, &mut std::io::sink()).map_err(|e| format!("{tool}: {e}"))?;
    let status = child.wait().map_err(|e| format!("{tool}: {e}"))?;
    if !status.success() {
        return Err(format!("{tool} failed on {}", input.display()));
    }
    Ok(bytes)
}

/// Run to completion; return (exit ok, peak RSS in KiB) of exactly this child.
fn run_measured(cmd: &mut Command) -> BenchResult<((), i64)> {
    let shown = format!("{cmd:?}");
    let child = cmd
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{shown}: {e}"))?;
    let pid = i32::try_from(child.id()).map_err(|e| e.to_string())?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unwaited child; `status` and `usage` are valid for writes.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc != pid {
        return Err(format!(
            "{shown}: wait4: {}",
            std::io::Error::last_os_error()
        ));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("{shown} failed with status {status}"));
    }
    Ok(((), usage.ru_maxrss))
}

fn sibling_binary(name: &str) -> BenchResult<PathBuf> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = me.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it with `cargo build --release -p coracle-controller`",
            path.display()
        ))
    }
}
