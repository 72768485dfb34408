//! `VitalsReader`: reads the real `/proc`, `/sys/class/thermal` and `statvfs` of the data
//! dir into a `HealthSample` (without per-container samples, which the supervisor adds).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use coracle_proto::HealthSample;

use super::parse::{cpu_times, load1_centi, meminfo_kib, thermal_decicelsius, uptime_s, CpuTimes};

/// Why disk figures could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VitalsError {
    #[error("statvfs of {path} failed")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads device vitals; keeps the previous CPU reading to compute a busy share.
#[derive(Debug)]
pub struct VitalsReader {
    proc_root: PathBuf,
    thermal_root: PathBuf,
    disk_path: PathBuf,
    cores: u32,
    last_cpu: Option<CpuTimes>,
}

impl VitalsReader {
    /// A reader of the real system; disk figures are for the filesystem holding `disk_path`.
    pub fn new(disk_path: &Path) -> Self {
        Self::with_roots(
            Path::new("/proc"),
            Path::new("/sys/class/thermal"),
            disk_path,
        )
    }

    /// A reader with every root given (tests point them at fixture trees).
    pub fn with_roots(proc_root: &Path, thermal_root: &Path, disk_path: &Path) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Self {
            proc_root: proc_root.to_path_buf(),
            thermal_root: thermal_root.to_path_buf(),
            disk_path: disk_path.to_path_buf(),
            cores,
            last_cpu: None,
        }
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.proc_root.join(name)).ok()
    }

    /// One sample. Vitals that cannot be read are left at zero / `None` and logged at debug.
    pub fn sample(&mut self) -> HealthSample {
        let mut sample = HealthSample::default();
        if let Some(now) = self.read("stat").as_deref().and_then(cpu_times) {
            if let Some(earlier) = self.last_cpu {
                sample.cpu_permille = now.permille_since(&earlier, self.cores);
            }
            self.last_cpu = Some(now);
        }
        if let Some((total, used)) = self.read("meminfo").as_deref().and_then(meminfo_kib) {
            sample.mem_total_kib = total;
            sample.mem_used_kib = used;
        }
        sample.uptime_s = self
            .read("uptime")
            .as_deref()
            .and_then(uptime_s)
            .unwrap_or(0);
        sample.load1_centi = self
            .read("loadavg")
            .as_deref()
            .and_then(load1_centi)
            .unwrap_or(0);
        sample.temp_decicelsius = self.temperature();
        match disk_mib(&self.disk_path) {
            Ok((free, total)) => {
                sample.disk_free_mib = free;
                sample.disk_total_mib = total;
            }
            Err(err) => tracing::debug!(error = %err, "disk vitals unavailable"),
        }
        sample
    }

    /// The first thermal zone (by name) with a readable temperature.
    fn temperature(&self) -> Option<i16> {
        let mut zones: Vec<PathBuf> = std::fs::read_dir(&self.thermal_root)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.as_bytes().starts_with(b"thermal_zone"))
            })
            .collect();
        zones.sort();
        zones
            .iter()
            .find_map(|zone| thermal_decicelsius(&std::fs::read_to_string(zone.join("temp")).ok()?))
    }
}

/// `(free, total)` MiB of the filesystem holding `path` (free as available to non-root).
pub fn disk_mib(path: &Path) -> Result<(u32, u32), VitalsError> {
    let space = coracle_images::store::disk_space(path).map_err(|source| VitalsError::Statvfs {
        path: path.to_path_buf(),
        source,
    })?;
    let mib = |bytes: u64| u32::try_from(bytes >> 20).unwrap_or(u32::MAX);
    Ok((mib(space.available), mib(space.total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fixture_tree_and_computes_cpu_between_samples() {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        let thermal = dir.path().join("thermal");
        std::fs::create_dir_all(&proc_root).unwrap();
        std::fs::create_dir_all(thermal.join("thermal_zone1")).unwrap();
        std::fs::create_dir_all(thermal.join("thermal_zone0")).unwrap();
        std::fs::create_dir_all(thermal.join("cooling_device0")).unwrap();
        std::fs::write(thermal.join("thermal_zone0/temp"), "48500\n").unwrap();
        std::fs::write(thermal.join("thermal_zone1/temp"), "99000\n").unwrap();
        let write = |name: &str, text: &str| std::fs::write(proc_root.join(name), text).unwrap();
        write("stat", "cpu  100 0 0 900 0 0 0 0 0 0\n");
        write("meminfo", "MemTotal: 1000 kB\nMemAvailable: 250 kB\n");
        write("uptime", "3600.5 100.0\n");
        write("loadavg", "1.25 0.5 0.1 1/2 3\n");
        let mut reader = VitalsReader::with_roots(&proc_root, &thermal, dir.path());
        reader.cores = 2;
        let first = reader.sample();
        assert_eq!(first.cpu_permille, 0, "no previous reading yet");
        assert_eq!((first.mem_total_kib, first.mem_used_kib), (1000, 750));
        assert_eq!(first.uptime_s, 3600);
        assert_eq!(first.load1_centi, 125);
        assert_eq!(first.temp_decicelsius, Some(485));
        assert!(first.disk_total_mib > 0 && first.disk_free_mib <= first.disk_total_mib);
        write("stat", "cpu  150 0 0 950 0 0 0 0 0 0\n");
        assert_eq!(reader.sample().cpu_permille, 1000, "half busy on 2 cores");
    }

    #[test]
    fn real_system_vitals_are_plausible() {
        let mut reader = VitalsReader::new(Path::new("/"));
        let s = reader.sample();
        assert!(
            s.mem_total_kib > 0 && s.mem_used_kib <= s.mem_total_kib,
            "{s:?}"
        );
        assert!(s.uptime_s > 0);
        assert!(s.disk_total_mib > 0);
    }

    #[test]
    fn statvfs_of_a_missing_path_names_it() {
        let err = disk_mib(Path::new("/nonexistent/coracle")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/coracle"), "{err}");
    }
}
