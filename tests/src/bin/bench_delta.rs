//! Delta benchmark on real version pairs served by PyPI (`pip download --no-deps`): each wheel
//! is unpacked into a layer tar (`usr/lib/python3/site-packages/...`, sorted, mtime 0). For each
//! pair it prints the full layer (gzip -6, zstd -19), our delta, and the general-purpose delta
//! tools on the whole tar (`zstd -19 --long --patch-from`, `bsdiff`, `xdelta3 -9`), our apply
//! time and peak RSS, and ratios; then our unpack throughput beside `tar -x`. One more pair is
//! generated here: 40,000 small files (a node_modules-like tree) with 1 % of them changed.
//!
//! Run by hand (needs network for pip, and Debian's zstd, bsdiff, xdelta3):
//! `cargo build --release -p coracle-controller -p coracle-tests && target/release/bench_delta`

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use coracle_images::unpack::{unpack_layer, UnpackLimits};

/// (package, old version, new version, what it shows)
const PAIRS: &[(&str, &str, &str, &str)] = &[
    ("django", "5.1.3", "5.1.4", "pure python"),
    ("numpy", "2.1.2", "2.1.3", "native .so + python"),
    ("cryptography", "43.0.1", "43.0.3", "native (Rust) .so"),
    (MANY_FILES, "1", "2", "40k small files"),
];

/// A generated pair (no download): 40,000 small files, like a node_modules tree, of which
/// version 2 changes every 97th and adds 400. Its tar skeleton (20 MB) spans many chunks,
/// which is what the skeleton's reference windows cost on apply.
const MANY_FILES: &str = "many-files";
const MANY_FILES_COUNT: u32 = 40_000;

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
    let coracle = sibling_binary("coracle")?;
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>9} {:>8} {:>8}",
        "pair",
        "tar",
        "gzip-6",
        "zstd-19",
        "ours",
        "zstd-pf",
        "bsdiff",
        "xdelta3",
        "apply ms",
        "RSS MB",
        "ours/best"
    );
    let mut full_layer = None;
    // BENCH_ONLY=numpy runs just the pairs whose package name contains it.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for (pkg, old, new, kind) in PAIRS.iter().filter(|p| p.0.contains(only.as_str())) {
        let (old_tar, new_tar) = if *pkg == MANY_FILES {
            (many_files_layer(&work, 1)?, many_files_layer(&work, 2)?)
        } else {
            (layer_for(&work, pkg, old)?, layer_for(&work, pkg, new)?)
        };
        let row = measure_pair(&work, &coracle, &old_tar, &new_tar)?;
        let best_tool = row.zstd_patch_from.min(row.bsdiff).min(row.xdelta3);
        println!(
            "{:<34} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>9} {:>8.1} {:>8.2}x",
            format!("{pkg} {old}->{new} ({kind})"),
            row.tar,
            row.gzip,
            row.zstd,
            row.ours,
            row.zstd_patch_from,
            row.bsdiff,
            row.xdelta3,
            row.apply_ms,
            row.apply_rss_kb as f64 / 1024.0,
            row.ours as f64 / best_tool as f64
        );
        println!(
            "{:<34} ours = {:.1}% of zstd-19, {:.2}x zstd-pf, {:.2}x bsdiff, {:.2}x xdelta3; bsdiff peak RSS {:.0} MB",
            "", 100.0 * row.ours as f64 / row.zstd as f64, row.ours as f64 / row.zstd_patch_from as f64,
            row.ours as f64 / row.bsdiff as f64, row.ours as f64 / row.xdelta3 as f64, row.bsdiff_rss_kb as f64 / 1024.0
        );
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
    gzip: u64,
    zstd: u64,
    ours: u64,
    zstd_patch_from: u64,
    bsdiff: u64,
    xdelta3: u64,
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

    let gzip = compressed_size("gzip", &["-6", "-c"], new_tar)?;
    let zstd = compressed_size("zstd", &["-19", "-c", "-q"], new_tar)?;
    let delta = out("delta");
    run_measured(
        Command::new(coracle)
            .args(["image", "delta", "create", "--from"])
            .arg(old_tar)
            .arg("--to")
            .arg(new_tar)
            .arg("-o")
            .arg(&delta)
            .stdout(Stdio::null()),
    )?;
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
    let start = Instant::now();
    let (_, apply_rss_kb) = run_measured(
        Command::new(coracle)
            .args(["image", "delta", "apply", "--from-dir"])
            .arg(&old_dir)
            .arg(&delta)
            .arg("-o")
            .arg(&rebuilt)
            .stdout(Stdio::null()),
    )?;
    let apply_ms = start.elapsed().as_millis();
    // Compare by digest: reading both tars into this process would raise its RSS, which a
    // spawned child inherits as its starting ru_maxrss.
    let digest = |p: &Path| {
        coracle_images::digest::digest_file(p).map_err(|e| format!("hash {}: {e}", p.display()))
    };
    if digest(&rebuilt)? != digest(new_tar)? {
        return Err(format!(
            "{} was not rebuilt byte for byte",
            new_tar.display()
        ));
    }
    let _ = std::fs::remove_dir_all(&old_dir);
    let _ = std::fs::remove_file(coracle_images::skeleton::skeleton_path(&old_dir));
    Ok(Row {
        tar: size(new_tar)?,
        gzip,
        zstd,
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

/// Download the wheel (cached) and turn it into a layer tar.
fn layer_for(work: &Path, pkg: &str, version: &str) -> BenchResult<PathBuf> {
    let tar = work.join(format!("{pkg}-{version}.tar"));
    if tar.is_file() {
        return Ok(tar);
    }
    let wheels = work.join("wheels");
    run_measured(
        Command::new("pip")
            .args([
                "download",
                "--no-deps",
                "--quiet",
                "--only-binary=:all:",
                "--python-version",
                "3.11",
                "--platform",
                "manylinux2014_x86_64",
                "-d",
            ])
            .arg(&wheels)
            .arg(format!("{pkg}=={version}")),
    )?;
    let prefix = format!("{}-{}-", pkg.replace('-', "_"), version);
    let wheel = std::fs::read_dir(&wheels)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .to_lowercase()
                    .starts_with(&prefix.to_lowercase())
            })
        })
        .ok_or_else(|| format!("pip did not leave a wheel for {pkg}=={version}"))?;
    let root = work.join(format!("{pkg}-{version}.root"));
    let site = root.join("usr/lib/python3/site-packages");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&site).map_err(|e| e.to_string())?;
    run_measured(
        Command::new("unzip")
            .arg("-q")
            .arg(&wheel)
            .arg("-d")
            .arg(&site),
    )?;
    run_measured(
        Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--format=gnu",
                "-cf",
            ])
            .arg(&tar)
            .arg("-C")
            .arg(&root)
            .arg("usr"),
    )?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(tar)
}

/// The generated layer of [`MANY_FILES`], version 1 or 2.
fn many_files_layer(work: &Path, version: u32) -> BenchResult<PathBuf> {
    let path = work.join(format!("{MANY_FILES}-{version}.tar"));
    if path.is_file() {
        return Ok(path);
    }
    let fail = |e: std::io::Error| format!("write {}: {e}", path.display());
    let partial = path.with_extension("tar.partial");
    let mut tar = tar::Builder::new(std::fs::File::create(&partial).map_err(fail)?);
    let count = MANY_FILES_COUNT + if version == 2 { 400 } else { 0 };
    for i in 0..count {
        let changed = version == 2 && i % 97 == 0;
        let body = format!(
            "// module {i} of package {}\nexport const id = {i};\nexport const name = \"m{i}\";\n{}",
            i / 50,
            if changed { "export const patched = true;\n" } else { "" }
        )
        .repeat(2 + (i % 5) as usize);
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        let name = format!("app/node_modules/pkg{:04}/lib/m{i:05}.js", i / 50);
        tar.append_data(&mut header, name, body.as_bytes())
            .map_err(fail)?;
    }
    tar.into_inner().and_then(|f| f.sync_all()).map_err(fail)?;
    std::fs::rename(&partial, &path).map_err(fail)?;
    Ok(path)
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
