//! The benchmark's version pairs and how each side becomes a layer tar. Every download is
//! pinned by sha256 and cached under the bench dir, so the table can be rebuilt; only the
//! Debian base pair is built by `mmdebstrap` from the archive as it stands (Debian changes
//! bookworm only at point releases, bookworm-security as advisories land).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run_measured, BenchResult};

/// One side of a pair.
pub enum Source {
    /// A PyPI wheel (`pip download`), unpacked into `usr/lib/python3/site-packages`.
    Wheel {
        pkg: &'static str,
        version: &'static str,
        sha256: &'static str,
    },
    /// Debian packages from deb.debian.org (`debian/` or `debian-security/` pool path),
    /// extracted with `dpkg-deb -x` as `apt-get install` would lay them out.
    Debs(&'static [(&'static str, &'static str)]),
    /// An npm package (`npm pack`), unpacked into `usr/lib/node_modules/<name>`.
    Npm {
        spec: &'static str,
        sha256: &'static str,
    },
    /// A generated node_modules-like tree ([`many_files_layer`]), version 1 or 2.
    ManyFiles(u32),
    /// `mmdebstrap --variant=minbase` of bookworm from these apt sources.
    Minbase(&'static [&'static str]),
}

pub struct Pair {
    pub name: &'static str,
    pub kind: &'static str,
    pub old: Source,
    pub new: Source,
}

const fn wheel(pkg: &'static str, version: &'static str, sha256: &'static str) -> Source {
    Source::Wheel {
        pkg,
        version,
        sha256,
    }
}

const BOOKWORM: &str = "deb http://deb.debian.org/debian bookworm main";

pub const PAIRS: &[Pair] = &[
    Pair {
        name: "django 5.1.3->5.1.4",
        kind: "pure python",
        old: wheel("django", "5.1.3", "8b38a9a12da3ae00cb0ba72da985ec4b14de6345046b1e174b1fd7254398f818"),
        new: wheel("django", "5.1.4", "236e023f021f5ce7dee5779de7b286565fdea5f4ab86bae5338e3f7b69896cf0"),
    },
    Pair {
        name: "requests 2.32.2->2.32.3",
        kind: "pure python patch release",
        old: wheel("requests", "2.32.2", "fc06670dd0ed212426dfeb94fc1b983d917c4f9847c863f313c9dfaaffb7c23c"),
        new: wheel("requests", "2.32.3", "70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6"),
    },
    Pair {
        name: "numpy 2.1.2->2.1.3",
        kind: "native .so + python",
        old: wheel("numpy", "2.1.2", "e2b49c3c0804e8ecb05d59af8386ec2f74877f7ca8fd9c1e00be2672e4d399b1"),
        new: wheel("numpy", "2.1.3", "bc6f24b3d1ecc1eebfbf5d6051faa49af40b03be1aaa781ebdadcbc090b4539b"),
    },
    Pair {
        name: "cryptography 43.0.1->43.0.3",
        kind: "native (Rust) .so",
        old: wheel("cryptography", "43.0.1", "58d4e9129985185a06d849aa6df265bdd5a74ca6e1b736a77959b498e0505b85"),
        new: wheel("cryptography", "43.0.3", "0f996e7268af62598f2fc1204afa98a3b5712313a55c4c9d434aef49cadc91d4"),
    },
    Pair {
        name: "many-files 1->2",
        kind: "40k small files",
        old: Source::ManyFiles(1),
        new: Source::ManyFiles(2),
    },
    Pair {
        name: "openssl 3.0.20->3.0.22",
        kind: "Debian package upgrade",
        old: Source::Debs(&[
            ("debian/pool/main/o/openssl/openssl_3.0.20-1~deb12u2_amd64.deb", "4d218561dc838de081de97f54584c4a29e77e26c7ed9fe3440d776d8e6071bf9"),
            ("debian/pool/main/o/openssl/libssl3_3.0.20-1~deb12u2_amd64.deb", "89be24b41bff568ee6e7caf5680a3d808e80315ed92e407056ce0fa7a5bda025"),
        ]),
        new: Source::Debs(&[
            ("debian-security/pool/updates/main/o/openssl/openssl_3.0.22-1~deb12u2_amd64.deb", "5cdf0b735b1c8a96ae0bf83ed328c83c2170f8320dedb035e98705b60b2d0cfe"),
            ("debian-security/pool/updates/main/o/openssl/libssl3_3.0.22-1~deb12u2_amd64.deb", "cb4784740daa9b3b0eaea2b444bbefa686794afbbf3d678d238c1fd9875f2efd"),
        ]),
    },
    Pair {
        name: "python3.11 deb12u8->deb12u9",
        kind: "security rebuild, native runtime",
        old: Source::Debs(&[
            ("debian/pool/main/p/python3.11/python3.11-minimal_3.11.2-6+deb12u8_amd64.deb", "4aba533f7cc5e7b93b7ff24482840e96813f5bcde9cce028395b65a0d799ccee"),
            ("debian/pool/main/p/python3.11/libpython3.11-minimal_3.11.2-6+deb12u8_amd64.deb", "f3beaa03994ffedacf73c43a0843d53b062d347115d8af65bee2034552a4e6f9"),
            ("debian/pool/main/p/python3.11/libpython3.11-stdlib_3.11.2-6+deb12u8_amd64.deb", "890b3540dad8a1ccc0deeca025db735bcc82629a76adacbe3b50fcc06ed528ca"),
            ("debian/pool/main/p/python3.11/libpython3.11_3.11.2-6+deb12u8_amd64.deb", "63845d53d5f64d2362cfb6007ec175ad1c6044cebe60a1885eff76d2ce637c35"),
        ]),
        new: Source::Debs(&[
            ("debian-security/pool/updates/main/p/python3.11/python3.11-minimal_3.11.2-6+deb12u9_amd64.deb", "b5f855ab922dfcd5d1a3223b2118c3dae13ffc7751b0cd5dc24740386323a33a"),
            ("debian-security/pool/updates/main/p/python3.11/libpython3.11-minimal_3.11.2-6+deb12u9_amd64.deb", "69f41cfa3f4ba17284e538f843069d7529c53c207d2ae17a5b02785944870e33"),
            ("debian-security/pool/updates/main/p/python3.11/libpython3.11-stdlib_3.11.2-6+deb12u9_amd64.deb", "10f13e000ee757f5f2d2d3569f9e30546214a0c850acd78695feae373bfa3e53"),
            ("debian-security/pool/updates/main/p/python3.11/libpython3.11_3.11.2-6+deb12u9_amd64.deb", "5737023cb469c012203bc6f4e6f522459d7561be499a69139df278785ec62129"),
        ]),
    },
    Pair {
        name: "postgresql-15 15.18->15.20",
        kind: "database minor release, 3 debs",
        old: Source::Debs(&[
            ("debian/pool/main/p/postgresql-15/postgresql-15_15.18-0+deb12u1_amd64.deb", "6974c43ddec4f383d099e7d642cd59d0af83c2c90c0fb153a4179aa1bb4d73c1"),
            ("debian/pool/main/p/postgresql-15/postgresql-client-15_15.18-0+deb12u1_amd64.deb", "fc98076d378231baac95d6eae09a3e01730cd706f4d00bbcda6ba580d38355a1"),
            ("debian/pool/main/p/postgresql-15/libpq5_15.18-0+deb12u1_amd64.deb", "baef57c288d7d8c09c84cd461da35d28f981aa71c60448c1d95b52110cc9faf9"),
        ]),
        new: Source::Debs(&[
            ("debian-security/pool/updates/main/p/postgresql-15/postgresql-15_15.20-0+deb12u1_amd64.deb", "8566850f295c2cb5034ff5dd5b40caf97eea81b75a841c8d1f691c05ab8815db"),
            ("debian-security/pool/updates/main/p/postgresql-15/postgresql-client-15_15.20-0+deb12u1_amd64.deb", "779332f35a5adc7c97376a7bb6dd8a6a6b48f594953f01eecfaead2eab09dab1"),
            ("debian-security/pool/updates/main/p/postgresql-15/libpq5_15.20-0+deb12u1_amd64.deb", "ac8a72cc33453f75ac605b4f6b8f9febae303b9d9a61255a042a87a7f69ac5c7"),
        ]),
    },
    Pair {
        name: "esbuild 0.25.11->0.25.12",
        kind: "Go static binary (npm)",
        old: Source::Npm {
            spec: "@esbuild/linux-x64@0.25.11",
            sha256: "e9e893cfe6a327b97b8d749a2d477d7379ef87eb576b88e03e91b7d07ec935e0",
        },
        new: Source::Npm {
            spec: "@esbuild/linux-x64@0.25.12",
            sha256: "f7efc127658a108dcda9d4210b01804ee8f5d6b3acbd6d63f20aa51d3b50bd5f",
        },
    },
    Pair {
        name: "babel-standalone 7.28.4->7.28.5",
        kind: "minified JS bundle (npm)",
        old: Source::Npm {
            spec: "@babel/standalone@7.28.4",
            sha256: "abe1d3dfe38b902afc7a4da8d6b9a0ea23e5a795e39d94bf09a23b0197c42a17",
        },
        new: Source::Npm {
            spec: "@babel/standalone@7.28.5",
            sha256: "ab51d15b14f07b90a5814ab0060344b2a0ced71c34ec3c0fedda610d47066ed8",
        },
    },
    Pair {
        name: "debian minbase bookworm->+security",
        kind: "Debian base upgrade",
        old: Source::Minbase(&[BOOKWORM]),
        new: Source::Minbase(&[
            BOOKWORM,
            "deb http://deb.debian.org/debian bookworm-updates main",
            "deb http://deb.debian.org/debian-security bookworm-security main",
        ]),
    },
];

/// The layer tar of one side of a pair (built once, cached in `work`).
pub fn layer(work: &Path, pair: &Pair, side: &str) -> BenchResult<PathBuf> {
    let slug: String = pair
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let tar = work.join("layers").join(format!("{slug}.{side}.tar"));
    if tar.is_file() {
        return Ok(tar);
    }
    std::fs::create_dir_all(work.join("layers")).map_err(|e| e.to_string())?;
    let source = if side == "old" { &pair.old } else { &pair.new };
    let partial = tar.with_extension("partial");
    let root = tar.with_extension("root");
    let _ = std::fs::remove_dir_all(&root);
    match source {
        Source::ManyFiles(version) => many_files_layer(&partial, *version)?,
        Source::Minbase(sources) => {
            let mut cmd = Command::new("mmdebstrap");
            cmd.args([
                "--variant=minbase",
                "--format=tar",
                "--mode=root",
                "--quiet",
                "bookworm",
            ])
            .arg(&partial)
            .args(*sources)
            // Fixed mtimes for what mmdebstrap writes itself (package files keep theirs).
            .env("SOURCE_DATE_EPOCH", "0");
            run_measured(&mut cmd)?;
        }
        Source::Wheel {
            pkg,
            version,
            sha256,
        } => {
            let wheel = download_wheel(work, pkg, version, sha256)?;
            let site = root.join("usr/lib/python3/site-packages");
            std::fs::create_dir_all(&site).map_err(|e| e.to_string())?;
            run_measured(
                Command::new("unzip")
                    .arg("-q")
                    .arg(&wheel)
                    .arg("-d")
                    .arg(&site),
            )?;
            tar_tree(&root, &partial, true)?;
        }
        Source::Debs(debs) => {
            std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
            for (path, sha256) in *debs {
                let deb = download_deb(work, path, sha256)?;
                run_measured(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
            }
            tar_tree(&root, &partial, false)?;
        }
        Source::Npm { spec, sha256 } => {
            let tgz = download_npm(work, spec, sha256)?;
            let name = spec.rsplit_once('@').map_or(*spec, |(name, _)| name);
            let dir = root.join("usr/lib/node_modules").join(name);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            run_measured(
                Command::new("tar")
                    .args(["-xzf"])
                    .arg(&tgz)
                    .arg("-C")
                    .arg(&dir)
                    .arg("--strip-components=1"),
            )?;
            tar_tree(&root, &partial, false)?;
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&partial, &tar).map_err(|e| format!("rename {}: {e}", tar.display()))?;
    Ok(tar)
}

/// A sorted GNU tar of `root`'s contents, owned by root; `zero_mtime` for sources whose
/// unpacking stamps the time of day (unzip), so reruns give the same bytes.
fn tar_tree(root: &Path, tar: &Path, zero_mtime: bool) -> BenchResult<()> {
    let mut cmd = Command::new("tar");
    cmd.args([
        "--sort=name",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--format=gnu",
    ]);
    if zero_mtime {
        cmd.arg("--mtime=@0");
    }
    cmd.arg("-cf").arg(tar).arg("-C").arg(root);
    // The top-level names, not `.`: image layers carry no `./` prefix.
    let mut top: Vec<_> = std::fs::read_dir(root)
        .map_err(|e| format!("list {}: {e}", root.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    top.sort();
    cmd.args(top);
    run_measured(&mut cmd).map(|_| ())
}

fn check_sha256(file: &Path, sha256: &str) -> BenchResult<()> {
    let (digest, _) = coracle_images::digest::digest_file(file)
        .map_err(|e| format!("hash {}: {e}", file.display()))?;
    if digest.to_string() != format!("sha256:{sha256}") {
        return Err(format!(
            "{} is {digest}, the benchmark pins sha256:{sha256}",
            file.display()
        ));
    }
    Ok(())
}

fn download_deb(work: &Path, pool_path: &str, sha256: &str) -> BenchResult<PathBuf> {
    let dir = work.join("debs");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let name = pool_path.rsplit('/').next().unwrap_or(pool_path);
    let deb = dir.join(name);
    if !deb.is_file() {
        let partial = deb.with_extension("partial");
        run_measured(
            Command::new("curl")
                .args(["-fsSL", "-o"])
                .arg(&partial)
                .arg(format!("http://deb.debian.org/{pool_path}")),
        )?;
        std::fs::rename(&partial, &deb).map_err(|e| e.to_string())?;
    }
    check_sha256(&deb, sha256)?;
    Ok(deb)
}

fn download_npm(work: &Path, spec: &str, sha256: &str) -> BenchResult<PathBuf> {
    let dir = work.join("npm");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // `npm pack @scope/name@1.2.3` writes `scope-name-1.2.3.tgz`.
    let file = format!(
        "{}.tgz",
        spec.trim_start_matches('@').replace(['/', '@'], "-")
    );
    let tgz = dir.join(file);
    if !tgz.is_file() {
        run_measured(
            Command::new("npm")
                .args(["pack", "--silent", "--pack-destination"])
                .arg(&dir)
                .arg(spec)
                .stdout(std::process::Stdio::null()),
        )?;
    }
    check_sha256(&tgz, sha256)?;
    Ok(tgz)
}

fn download_wheel(work: &Path, pkg: &str, version: &str, sha256: &str) -> BenchResult<PathBuf> {
    let wheels = work.join("wheels");
    let prefix = format!("{}-{}-", pkg.replace('-', "_"), version).to_lowercase();
    let find = || {
        std::fs::read_dir(&wheels).ok().and_then(|dir| {
            dir.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().to_lowercase().starts_with(&prefix))
            })
        })
    };
    if find().is_none() {
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
    }
    let wheel = find().ok_or_else(|| format!("pip did not leave a wheel for {pkg}=={version}"))?;
    check_sha256(&wheel, sha256)?;
    Ok(wheel)
}

/// 40,000 small files, like a node_modules tree; version 2 changes every 97th and adds 400.
/// Its tar skeleton (20 MB) spans many chunks, which is what the skeleton's reference
/// windows cost on apply.
fn many_files_layer(path: &Path, version: u32) -> BenchResult<()> {
    const COUNT: u32 = 40_000;
    let fail = |e: std::io::Error| format!("write {}: {e}", path.display());
    let mut tar = tar::Builder::new(std::fs::File::create(path).map_err(fail)?);
    let count = COUNT + if version == 2 { 400 } else { 0 };
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
    Ok(())
}
