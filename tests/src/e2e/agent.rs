//! A real `coracle-agent` as one device: inside its test host's network namespace (entered
//! with `nsenter --net`, so it shares the machine's mounts and cgroup hierarchies the way a
//! device's agent shares its host's), with its own data dir, state dir and cgroup parent.
//! Dropping it stops the agent, kills its containers and removes what they left.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

use super::binary;
use crate::netns::TestHost;
use crate::process::TestProcess;

/// Settings a test may change from the defaults.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The data dir (store, containers); `<dir>/<name>/data` when `None`.
    pub data_dir: Option<PathBuf>,
    /// `[limits] disk_reserve_mib`: what the store keeps free.
    pub disk_reserve_mib: u32,
    /// `[update] confirm_timeout_s`: how long a new agent build may take to connect.
    pub confirm_timeout_s: u32,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            data_dir: None,
            disk_reserve_mib: 64,
            confirm_timeout_s: 120,
        }
    }
}

/// One device's agent.
#[derive(Debug)]
pub struct Agent {
    pub name: String,
    pub host: TestHost,
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    config: PathBuf,
    pub cgroup_parent: String,
    process: Option<TestProcess>,
}

/// What one "image pulled" line of the agent says.
#[derive(Debug, Clone)]
pub struct PullReport {
    pub line: String,
    /// Bytes fetched from the registry.
    pub bytes: u64,
    /// Layers that came as deltas, and in full.
    pub deltas: u64,
    pub full: u64,
}

impl Agent {
    /// Writes the agent's config under `dir/<name>` and starts it on `host`.
    pub fn start(
        name: &str,
        host: &TestHost,
        dir: &Path,
        bootstrap: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_with(name, host, dir, bootstrap, &AgentOptions::default())
    }

    /// [`Agent::start`] with `options`.
    pub fn start_with(
        name: &str,
        host: &TestHost,
        dir: &Path,
        bootstrap: &Path,
        options: &AgentOptions,
    ) -> anyhow::Result<Self> {
        let dir = dir.join(name);
        let data_dir = options.data_dir.clone().unwrap_or_else(|| dir.join("data"));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        // Unique per process and device, so parallel tests never share a cgroup.
        let cgroup_parent = format!("coracle-e2e-{}-{name}", std::process::id());
        let config = dir.join("agent.toml");
        let text = format!(
            "data_dir = {data:?}\nbootstrap = {bootstrap:?}\ncontrol_socket = {socket:?}\n\
             health_interval_s = 5\n\n[limits]\ndisk_reserve_mib = {reserve}\n\n[runtime]\n\
             state_dir = {state:?}\ncgroup_parent = \"{cgroup_parent}\"\n\n[network]\n\
             netns_dir = {netns:?}\n\n[update]\nconfirm_timeout_s = {confirm}\n",
            data = data_dir.display().to_string(),
            reserve = options.disk_reserve_mib,
            confirm = options.confirm_timeout_s,
            bootstrap = bootstrap.display().to_string(),
            socket = dir.join("agent.sock").display().to_string(),
            state = dir.join("run").display().to_string(),
            // The agent runs in its test host's network namespace, so its bridges and
            // nftables table are that host's; the namespace mounts are its own.
            netns = dir.join("netns").display().to_string(),
        );
        std::fs::write(&config, text).with_context(|| format!("write {}", config.display()))?;
        let mut agent = Self {
            name: name.to_string(),
            host: host.clone(),
            dir,
            data_dir,
            config,
            cgroup_parent,
            process: None,
        };
        agent.spawn()?;
        Ok(agent)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.host.netns))
            .arg(binary("coracle-agent")?)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        let mut process = TestProcess::spawn(cmd)?;
        process.wait_for_line("agent running", Duration::from_secs(20))?;
        self.process = Some(process);
        Ok(())
    }

    /// Waits for a line of the agent's output.
    pub fn wait_for_line(&mut self, wanted: &str, timeout: Duration) -> anyhow::Result<String> {
        let process = self.process.as_mut().context("the agent is not running")?;
        Ok(process.wait_for_line(wanted, timeout)?)
    }

    /// Kills the agent with SIGKILL, as a crash or power cut would; containers keep running.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.signal(Signal::SIGKILL)?;
            process.wait_timeout(Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Starts the agent again with the same config and state.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9()?;
        self.spawn()
    }

    /// Everything the agent printed so far.
    pub fn output(&self) -> String {
        self.process
            .as_ref()
            .map(TestProcess::output)
            .unwrap_or_default()
    }

    /// `coracle-agent ps` over the local control socket.
    pub fn ps(&self) -> anyhow::Result<String> {
        let out = Command::new(binary("coracle-agent")?)
            .arg("--config")
            .arg(&self.config)
            .arg("ps")
            .output()
            .context("run coracle-agent ps")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The pid of each container's main process, from the runtime's state files.
    pub fn container_pids(&self) -> Vec<(String, i32)> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("run")) else {
            return Vec::new();
        };
        let mut pids = Vec::new();
        for entry in entries.flatten() {
            let state = entry.path().join("state.json");
            let Ok(text) = std::fs::read_to_string(&state) else {
                continue;
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let running = json["status"] == "Running";
            if let (true, Some(pid)) = (running, json["pid"].as_i64()) {
                let id = entry.file_name().to_string_lossy().into_owned();
                pids.push((id, i32::try_from(pid).unwrap_or(0)));
            }
        }
        pids.sort();
        pids
    }

    /// The agent's main process (the one this harness started; an update keeps its pid).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(TestProcess::pid)
    }

    /// Zombies whose parent is the agent: shims or helpers it never reaped.
    pub fn zombie_children(&self) -> Vec<u32> {
        let Some(agent) = self.process.as_ref().map(TestProcess::pid) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
                let mut rest = stat.rsplit_once(')')?.1.split_whitespace();
                let state = rest.next()?;
                let ppid: u32 = rest.next()?.parse().ok()?;
                (state == "Z" && ppid == agent).then_some(pid)
            })
            .collect()
    }

    /// Mount points under this agent's directories (container root filesystems), but for
    /// the network namespaces of bridged containers (see `netns_mounts`).
    pub fn mounts(&self) -> Vec<String> {
        let netns = self.netns_dir().display().to_string();
        self.all_mounts()
            .into_iter()
            .filter(|point| !point.starts_with(&netns))
            .collect()
    }

    /// The network namespaces the agent holds for its bridged containers: one per such
    /// container, by service name.
    pub fn netns_mounts(&self) -> Vec<String> {
        let netns = self.netns_dir().display().to_string();
        self.all_mounts()
            .into_iter()
            .filter_map(|point| {
                let id = point.strip_prefix(&netns)?.trim_start_matches('/');
                // A start-first update leaves the service in its second slot.
                Some(id.strip_suffix("+2").unwrap_or(id).to_string())
            })
            .collect()
    }

    fn netns_dir(&self) -> PathBuf {
        self.dir.join("netns")
    }

    fn all_mounts(&self) -> Vec<String> {
        let prefix = self.dir.display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(&prefix))
            .map(str::to_string)
            .collect()
    }

    /// Child cgroups under this agent's parent in the memory hierarchy (cgroup v1).
    pub fn cgroups(&self) -> Vec<String> {
        let parent = Path::new("/sys/fs/cgroup/memory").join(&self.cgroup_parent);
        let Ok(entries) = std::fs::read_dir(parent) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Downloads left in the store's partial dir.
    /// The agent's last "image pulled" log line and its counts.
    pub fn last_pull(&self) -> anyhow::Result<PullReport> {
        let output = self.output();
        let line = output
            .lines()
            .rfind(|l| l.contains("image pulled"))
            .context("no 'image pulled' line in the agent's log")?
            .to_string();
        let field = |name: &str| -> anyhow::Result<u64> {
            line.split(&format!("{name}="))
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("no {name}= in {line}"))
        };
        Ok(PullReport {
            bytes: field("bytes")?,
            deltas: field("delta")?,
            full: field("full")?,
            line,
        })
    }

    /// Bytes of downloads held part way (see `partial_downloads`).
    pub fn partial_bytes(&self) -> u64 {
        self.partial_downloads()
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    pub fn partial_downloads(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.data_dir.join("store/partial"))
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Stops the agent and every container it started; removes their mounts and cgroups.
    fn teardown(&mut self) {
        if let Some(process) = self.process.take() {
            let _ = process.terminate(Duration::from_secs(10));
        }
        for (_, pid) in self.container_pids() {
            if pid > 0 {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        for point in self.all_mounts().iter().rev() {
            let _ = nix::mount::umount2(point.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        if !crate::cgroups::remove_parent(&self.cgroup_parent) {
            eprintln!(
                "cgroup parent {} is still there after 5 s",
                self.cgroup_parent
            );
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.teardown();
    }
}
