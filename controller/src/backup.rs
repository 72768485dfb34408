//! `coracle backup FILE` and `coracle restore FILE`: the whole controller in one tar file,
//! taken while it serves.
//!
//! What a backup holds: a consistent snapshot of the database (SQLite's `VACUUM INTO`, which
//! reads inside one transaction, so a deploy or rollout step half written is never seen),
//! every key, certificate and config file of the data dir with its mode, and the registry's
//! blobs. Left out: upload sessions in progress, the WAL files of the live database, and
//! `api.url` (written again at every start).
//!
//! Order matters while the controller writes: the registry's tags and manifests are
//! copied before its blobs, and a blob is written before anything names it, so every blob a
//! copied manifest names is in the backup (blobs are immutable once stored). A push that
//! lands during the backup may be missing from it, whole.
//!
//! A restore goes into a new or empty data dir only, through a sibling temp dir renamed into
//! place at the end, so a failed restore leaves nothing half written. Every entry must be a
//! plain file or directory with a relative path inside the data dir; anything else (links,
//! devices, `..`, absolute paths) refuses the whole archive, naming the entry.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The archive member that says what the archive is; first in every backup.
const MANIFEST: &str = "coracle-backup.json";
const FORMAT: u32 = 1;
const DATABASE: &str = "coracle.db";

/// Data dir entries a backup leaves out (see the module doc).
const SKIPPED: &[&str] = &[
    DATABASE,
    "coracle.db-wal",
    "coracle.db-shm",
    "coracle.db-journal",
    "uploads",
    "api.url",
];

/// Copied last, after everything that names blobs.
const BLOBS: &str = "blobs";

/// Why a backup or restore failed; nothing is left half written either way.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "the fleet database of {dir} is on PostgreSQL ([store] url), which coracle backup does \
         not copy: back it up with pg_dump, and the data dir (keys, blobs) with tar"
    )]
    PostgresStore { dir: PathBuf },
    #[error("{dir} is not a controller data dir (no {DATABASE})")]
    NotADataDir { dir: PathBuf },
    #[error("snapshot the database {path}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is a {kind} in the data dir; a backup holds only files and directories")]
    UnsupportedFile { path: PathBuf, kind: &'static str },
    #[error("refusing to restore into {dir}: it is not empty (move it away, or restore into a new directory)")]
    TargetNotEmpty { dir: PathBuf },
    #[error("{archive} is not a Coracle backup: {reason}")]
    NotABackup { archive: PathBuf, reason: String },
    #[error("{archive}: entry {entry:?} refused: {reason}; nothing was restored")]
    HostileEntry {
        archive: PathBuf,
        entry: String,
        reason: &'static str,
    },
    #[error("the restored database {path} fails its integrity check: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BackupError + 'a {
    move |source| BackupError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

/// The first member of every backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    created_unix: i64,
    controller_version: String,
}

/// What a backup or restore moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    pub files: u64,
    pub bytes: u64,
}

/// Writes a backup of the data dir `data_dir` to `out` (mode 0600: it holds every secret).
pub fn create(data_dir: &Path, out: &Path) -> Result<Counted, BackupError> {
    if crate::datadir::DataDir::existing(data_dir)
        .postgres_store_note()
        .exists()
    {
        return Err(BackupError::PostgresStore {
            dir: data_dir.to_path_buf(),
        });
    }
    if !data_dir.join(DATABASE).is_file() {
        return Err(BackupError::NotADataDir {
            dir: data_dir.to_path_buf(),
        });
    }
    let partial = with_suffix(out, ".partial");
    let written = write_archive(data_dir, &partial);
    match written {
        Ok(counted) => {
            fs::rename(&partial, out).map_err(io_err("rename the finished backup to", out))?;
            Ok(counted)
        }
        Err(err) => {
            let _ = fs::remove_file(&partial);
            Err(err)
        }
    }
}

/// Writes the archive to `partial` (see the module doc for what goes in, in which order).
fn write_archive(data_dir: &Path, partial: &Path) -> Result<Counted, BackupError> {
    let beside = partial
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let scratch = tempfile::tempdir_in(beside).map_err(io_err("make a scratch dir in", beside))?;
    let snapshot = scratch.path().join(DATABASE);
    snapshot_database(&data_dir.join(DATABASE), &snapshot)?;

    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(partial)
        .map_err(io_err("create", partial))?;
    let mut tar = tar::Builder::new(io::BufWriter::new(file));
    tar.mode(tar::HeaderMode::Complete);
    let mut counted = Counted::default();
    let manifest = serde_json::to_vec_pretty(&Manifest {
        format: FORMAT,
        created_unix: unix_now(),
        controller_version: env!("CARGO_PKG_VERSION").to_string(),
    })
    .map_err(|e| BackupError::Io {
        step: "encode the backup manifest for",
        path: partial.to_path_buf(),
        source: io::Error::other(e),
    })?;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(u64::try_from(unix_now()).unwrap_or(0));
    tar.append_data(&mut header, MANIFEST, manifest.as_slice())
        .map_err(io_err("write", partial))?;
    add_file(
        &mut tar,
        &snapshot,
        Path::new(DATABASE),
        &mut counted,
        partial,
    )?;
    add_tree(
        &mut tar,
        data_dir,
        Path::new(""),
        &mut counted,
        partial,
        true,
    )?;
    let blobs = data_dir.join(BLOBS);
    if blobs.is_dir() {
        add_tree(
            &mut tar,
            &blobs,
            Path::new(BLOBS),
            &mut counted,
            partial,
            false,
        )?;
    }
    let file = tar
        .into_inner()
        .map_err(io_err("finish", partial))?
        .into_inner()
        .map_err(|e| BackupError::Io {
            step: "flush",
            path: partial.to_path_buf(),
            source: e.into_error(),
        })?;
    file.sync_all().map_err(io_err("fsync", partial))?;
    Ok(counted)
}

/// A consistent copy of the live database, taken inside one read transaction.
fn snapshot_database(database: &Path, snapshot: &Path) -> Result<(), BackupError> {
    let snap_err = |source| BackupError::Snapshot {
        path: database.to_path_buf(),
        source,
    };
    let conn = rusqlite::Connection::open(database).map_err(snap_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(snap_err)?;
    let target = snapshot.to_string_lossy().into_owned();
    conn.execute("VACUUM INTO ?1", [target]).map_err(snap_err)?;
    Ok(())
}

/// Adds the entries under `dir` as `prefix/…`, sorted; at the top level (`top`) the
/// skipped names and the blobs (added last, by the caller) are left out.
fn add_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    prefix: &Path,
    counted: &mut Counted,
    archive: &Path,
    top: bool,
) -> Result<(), BackupError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io_err("list", dir))?
        .collect::<Result<_, _>>()
        .map_err(io_err("list", dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if top && (name == BLOBS || SKIPPED.iter().any(|s| name == *s)) {
            continue;
        }
        let path = entry.path();
        let inside = prefix.join(&name);
        let kind = fs::symlink_metadata(&path)
            .map_err(io_err("read", &path))?
            .file_type();
        if kind.is_dir() {
            tar.append_dir(&inside, &path)
                .map_err(io_err("add to the backup", &path))?;
            add_tree(tar, &path, &inside, counted, archive, false)?;
        } else if kind.is_file() {
            add_file(tar, &path, &inside, counted, archive)?;
        } else {
            return Err(BackupError::UnsupportedFile {
                path,
                kind: if kind.is_symlink() {
                    "symbolic link"
                } else {
                    "special file"
                },
            });
        }
    }
    Ok(())
}

fn add_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    inside: &Path,
    counted: &mut Counted,
    archive: &Path,
) -> Result<(), BackupError> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    tar.append_file(inside, &mut file)
        .map_err(io_err("add to the backup", archive))?;
    counted.files += 1;
    counted.bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(())
}

/// Restores `archive` into `data_dir`, which must not exist or be empty.
pub fn restore(archive: &Path, data_dir: &Path) -> Result<Counted, BackupError> {
    let not_empty = fs::read_dir(data_dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if not_empty {
        return Err(BackupError::TargetNotEmpty {
            dir: data_dir.to_path_buf(),
        });
    }
    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".coracle-restore-")
        .tempdir_in(parent)
        .map_err(io_err("make a staging dir in", parent))?;
    let counted = unpack(archive, staging.path())?;
    check_database(&staging.path().join(DATABASE))?;
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o700))
        .map_err(io_err("set the mode of", staging.path()))?;
    // An empty target dir is replaced; a missing one is created by the rename.
    if data_dir.exists() {
        fs::remove_dir(data_dir).map_err(io_err("replace the empty", data_dir))?;
    }
    let staged = staging.keep();
    fs::rename(&staged, data_dir).map_err(io_err("move the restored data dir to", data_dir))?;
    Ok(counted)
}

fn unpack(archive: &Path, into: &Path) -> Result<Counted, BackupError> {
    let file = File::open(archive).map_err(io_err("open", archive))?;
    let mut tar = tar::Archive::new(io::BufReader::new(file));
    tar.set_preserve_permissions(true);
    let mut counted = Counted::default();
    let mut entries = tar.entries().map_err(io_err("read", archive))?;
    let not_a_backup = |reason: String| BackupError::NotABackup {
        archive: archive.to_path_buf(),
        reason,
    };
    let first = entries
        .next()
        .ok_or_else(|| not_a_backup("it is empty".into()))?
        .map_err(io_err("read", archive))?;
    check_manifest(first).map_err(not_a_backup)?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("read", archive))?;
        let path = entry
            .path()
            .map_err(io_err("read an entry name in", archive))?
            .into_owned();
        let hostile = |reason| BackupError::HostileEntry {
            archive: archive.to_path_buf(),
            entry: path.display().to_string(),
            reason,
        };
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(hostile("not a plain relative path"));
        }
        match entry.header().entry_type() {
            tar::EntryType::Regular => {
                counted.files += 1;
                counted.bytes += entry.size();
            }
            tar::EntryType::Directory => {}
            _ => return Err(hostile("not a plain file or directory")),
        }
        if !entry.unpack_in(into).map_err(io_err("unpack into", into))? {
            return Err(hostile("outside the data dir"));
        }
    }
    Ok(counted)
}

fn check_manifest<R: io::Read>(mut first: tar::Entry<'_, R>) -> Result<(), String> {
    let name = first.path().map_err(|e| e.to_string())?.into_owned();
    if name != Path::new(MANIFEST) {
        return Err(format!(
            "its first entry is {}, not {MANIFEST}",
            name.display()
        ));
    }
    let mut text = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(&mut first, 64 << 10), &mut text)
        .map_err(|e| e.to_string())?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("{MANIFEST}: {e}"))?;
    if manifest.format != FORMAT {
        return Err(format!(
            "backup format {} (this controller reads format {FORMAT})",
            manifest.format
        ));
    }
    Ok(())
}

fn check_database(path: &Path) -> Result<(), BackupError> {
    let corrupt = |detail: String| BackupError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    if !path.is_file() {
        return Err(corrupt("the backup holds no database".into()));
    }
    let conn = rusqlite::Connection::open(path).map_err(|e| corrupt(e.to_string()))?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| corrupt(e.to_string()))?;
    if verdict != "ok" {
        return Err(corrupt(verdict));
    }
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir(root: &Path) -> PathBuf {
        let dir = root.join("data");
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::create_dir_all(dir.join("uploads")).unwrap();
        let conn = rusqlite::Connection::open(dir.join(DATABASE)).unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (42);")
            .unwrap();
        fs::write(dir.join("admin.token"), "secret").unwrap();
        fs::set_permissions(dir.join("admin.token"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(dir.join("blobs/sha256/ab"), "blob").unwrap();
        fs::write(dir.join("uploads/half"), "x").unwrap();
        fs::write(dir.join("api.url"), "https://x").unwrap();
        dir
    }

    #[test]
    fn a_backup_restores_files_modes_and_the_database_and_leaves_out_transient_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = data_dir(tmp.path());
        let archive = tmp.path().join("backup.tar");
        let counted = create(&dir, &archive).unwrap();
        assert_eq!(counted.files, 3, "database, token, blob");
        assert_eq!(
            fs::metadata(&archive).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let restored = tmp.path().join("restored");
        restore(&archive, &restored).unwrap();
        assert_eq!(
            fs::read_to_string(restored.join("admin.token")).unwrap(),
            "secret"
        );
        let mode = fs::metadata(restored.join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            fs::metadata(&restored).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::read_to_string(restored.join("blobs/sha256/ab")).unwrap(),
            "blob"
        );
        assert!(!restored.join("uploads").exists() && !restored.join("api.url").exists());
        let conn = rusqlite::Connection::open(restored.join(DATABASE)).unwrap();
        let x: i64 = conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 42);

        // Never over a data dir in use.
        let err = restore(&archive, &restored).unwrap_err();
        assert!(matches!(err, BackupError::TargetNotEmpty { .. }), "{err}");
    }

    #[test]
    fn hostile_or_foreign_archives_restore_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |name: &str, entries: &[(&str, &[u8], tar::EntryType)]| {
            let path = tmp.path().join(name);
            let mut tar = tar::Builder::new(File::create(&path).unwrap());
            for (entry, body, kind) in entries {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(*kind);
                header.set_size(body.len() as u64);
                header.set_mode(0o600);
                // `set_path` refuses `..`; write the raw name as an attacker would.
                let raw = &mut header.as_old_mut().name;
                raw[..entry.len()].copy_from_slice(entry.as_bytes());
                if *kind == tar::EntryType::Symlink {
                    header.set_link_name("/etc/passwd").unwrap();
                }
                header.set_cksum();
                tar.append(&header, *body).unwrap();
            }
            tar.finish().unwrap();
            path
        };
        let manifest = br#"{"format":1,"created_unix":0,"controller_version":"t"}"#;
        let cases = [
            (
                "foreign.tar",
                vec![("notes.txt", &b"hi"[..], tar::EntryType::Regular)],
                "not a Coracle backup",
            ),
            (
                "escape.tar",
                vec![
                    (MANIFEST, &manifest[..], tar::EntryType::Regular),
                    ("../evil", &b"x"[..], tar::EntryType::Regular),
                ],
                "../evil",
            ),
            (
                "link.tar",
                vec![
                    (MANIFEST, &manifest[..], tar::EntryType::Regular),
                    ("ca.pem", &b""[..], tar::EntryType::Symlink),
                ],
                "not a plain file",
            ),
            (
                "nodb.tar",
                vec![(MANIFEST, &manifest[..], tar::EntryType::Regular)],
                "no database",
            ),
        ];
        for (name, entries, expected) in cases {
            let archive = write(name, &entries);
            let target = tmp.path().join(format!("into-{name}"));
            let err = restore(&archive, &target).unwrap_err().to_string();
            assert!(err.contains(expected), "{name}: {err}");
            assert!(!target.exists(), "{name}: something was restored");
            assert!(!tmp.path().join("evil").exists());
        }
        let leftovers = fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".coracle-restore-")
            })
            .count();
        assert_eq!(leftovers, 0, "staging dirs are removed");
    }
}
