//! Debian's PostgreSQL for tests: `initdb` into a temp dir, `postgres` listening on a unix
//! socket only (no TCP port to collide on), waited for by its "ready" log line, and stopped by
//! pid on drop. The server runs as the `postgres` user when the tests run as root, which
//! PostgreSQL refuses to be.
//!
//! `PostgresServer::start` gives a test its own server; `shared_database` gives each caller a
//! new database on one server per test process (initdb takes seconds, a database does not).

use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid, User};

use crate::process::{ProcessError, TestProcess};

/// Why the test PostgreSQL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("cannot prepare the server's directory {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the user postgres (to run the server as when root) does not exist")]
    NoPostgresUser,
    #[error("cannot run {program}")]
    Run {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed: {output}")]
    Failed { program: PathBuf, output: String },
    #[error("postgres did not start")]
    Start(#[source] ProcessError),
}

/// Where Debian installs the server binaries (`/usr/lib/postgresql/<major>/bin`), the newest
/// major version first; `None` when the `postgresql` package is not installed.
pub fn binaries() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A running PostgreSQL server, stopped on drop.
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    socket_dir: PathBuf,
    owner: Option<(Uid, Gid)>,
    process: TestProcess,
    /// Data directory and socket directory; removed after the server stopped.
    dir: tempfile::TempDir,
}

/// The port only names the socket file (`.s.PGSQL.<port>`) in the server's own directory.
const PORT: u16 = 5432;

impl PostgresServer {
    /// Starts a server, or returns `Ok(None)` after printing why when PostgreSQL is not
    /// installed.
    pub fn start() -> Result<Option<Self>, PostgresError> {
        let Some(bin) = binaries() else {
            eprintln!(
                "skipped: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres; \
                 apt-get install postgresql)"
            );
            return Ok(None);
        };
        let dir = tempfile::Builder::new()
            .prefix("coracle-pg-")
            .tempdir()
            .map_err(|source| PostgresError::Prepare {
                path: std::env::temp_dir(),
                source,
            })?;
        let owner = server_owner()?;
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        for path in [dir.path(), &socket_dir] {
            prepare_dir(path, owner)?;
        }
        run(as_owner(Command::new(bin.join("initdb")), owner)
            .args([
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "--encoding=UTF8",
            ])
            .arg("-D")
            .arg(&data))?;
        let mut server = as_owner(Command::new(bin.join("postgres")), owner);
        server
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&socket_dir)
            .args(["-p", &PORT.to_string(), "-c", "listen_addresses="])
            // A test database need not survive a power cut.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"]);
        let mut process = TestProcess::spawn(server).map_err(PostgresError::Start)?;
        process
            .wait_for_line("ready to accept connections", Duration::from_secs(60))
            .map_err(PostgresError::Start)?;
        Ok(Some(Self {
            bin,
            socket_dir,
            owner,
            process,
            dir,
        }))
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, PostgresError> {
        run(
            as_owner(Command::new(self.bin.join("createdb")), self.owner)
                .arg("-h")
                .arg(&self.socket_dir)
                .args(["-p", &PORT.to_string(), "-U", "postgres", name]),
        )?;
        Ok(self.url(name))
    }

    /// The URL of database `name` (the socket directory as the host, percent-encoded).
    pub fn url(&self, name: &str) -> String {
        let host = self.socket_dir.to_string_lossy().replace('/', "%2F");
        format!("postgres://postgres@{host}:{PORT}/{name}")
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The directory holding the data directory and the socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // Fast shutdown: clients are disconnected, then the server exits; the TestProcess
        // drop kills it should it hang.
        if self.process.signal(Signal::SIGINT).is_ok() {
            let _ = self.process.wait_timeout(Duration::from_secs(20));
        }
    }
}

/// A new database on this test process's shared server (started on first use), or
/// `Ok(None)` when PostgreSQL is not installed.
pub fn shared_database() -> Result<Option<String>, PostgresError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    shared_database_named(&format!("test_{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// Database `name` on the shared server, created on its first use (a controller started
/// again in one test finds its data).
pub fn shared_database_named(name: &str) -> Result<Option<String>, PostgresError> {
    /// Outer `None`: not tried yet; inner `None`: PostgreSQL is not installed.
    static SERVER: Mutex<Option<Option<PostgresServer>>> = Mutex::new(None);
    static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut server = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    if server.is_none() {
        let started = PostgresServer::start()?;
        if let Some(started) = &started {
            stop_at_exit(started.pid(), started.dir().to_path_buf());
        }
        *server = Some(started);
    }
    let Some(Some(server)) = server.as_ref() else {
        return Ok(None);
    };
    let mut created = CREATED.lock().unwrap_or_else(|p| p.into_inner());
    if !created.iter().any(|c| c == name) {
        server.create_database(name)?;
        created.push(name.to_string());
    }
    Ok(Some(server.url(name)))
}

/// Statics are never dropped: the shared server is stopped, and its directory removed,
/// when the test process exits.
fn stop_at_exit(pid: u32, dir: PathBuf) {
    static TO_STOP: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());
    extern "C" fn stop_all() {
        let servers = std::mem::take(&mut *TO_STOP.lock().unwrap_or_else(|p| p.into_inner()));
        for (pid, dir) in servers {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
            // Immediate shutdown: nothing in a test database needs keeping.
            if nix::sys::signal::kill(pid, Signal::SIGQUIT).is_ok() {
                let _ = nix::sys::wait::waitpid(pid, None);
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let mut servers = TO_STOP.lock().unwrap_or_else(|p| p.into_inner());
    if servers.is_empty() {
        // SAFETY: registers a plain function with no arguments; it runs once at exit.
        unsafe { libc::atexit(stop_all) };
    }
    servers.push((pid, dir));
}

/// The user the server must run as: `postgres` when we are root, else ourselves.
fn server_owner() -> Result<Option<(Uid, Gid)>, PostgresError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres")
        .ok()
        .flatten()
        .ok_or(PostgresError::NoPostgresUser)?;
    Ok(Some((user.uid, user.gid)))
}

fn prepare_dir(path: &Path, owner: Option<(Uid, Gid)>) -> Result<(), PostgresError> {
    let err = |source| PostgresError::Prepare {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    if let Some((uid, gid)) = owner {
        chown(path, Some(uid.as_raw()), Some(gid.as_raw())).map_err(err)?;
    }
    Ok(())
}

fn as_owner(mut cmd: Command, owner: Option<(Uid, Gid)>) -> Command {
    if let Some((uid, gid)) = owner {
        // std drops root's supplementary groups when it changes the uid.
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
    // The server's own directory: a cwd it can read (root's may not be).
    cmd.current_dir("/");
    cmd
}

fn run(cmd: &mut Command) -> Result<(), PostgresError> {
    let program = PathBuf::from(cmd.get_program());
    let output = cmd.output().map_err(|source| PostgresError::Run {
        program: program.clone(),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(PostgresError::Failed {
        program,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}
