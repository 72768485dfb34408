//! `coracle backup FILE` (while the controller serves) and `coracle restore FILE` (into a
//! new data dir, before starting a controller on it); see `crate::backup`.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the backup (a tar file, mode 0600: it holds every key).
    file: PathBuf,
    /// The controller's data directory (read directly: run this on the controller's host).
    #[arg(long, env = "CORACLE_DATA_DIR", default_value = "coracle-data")]
    data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file `coracle backup` wrote.
    file: PathBuf,
    /// The data directory to restore into; it must not exist or be empty.
    #[arg(long, env = "CORACLE_DATA_DIR", default_value = "coracle-data")]
    data_dir: PathBuf,
}

pub fn run_backup(args: BackupArgs) -> anyhow::Result<()> {
    let counted = crate::backup::create(&args.data_dir, &args.file)?;
    println!(
        "backup of {} written to {}: {} files, {} bytes",
        args.data_dir.display(),
        args.file.display(),
        counted.files,
        counted.bytes
    );
    Ok(())
}

pub fn run_restore(args: RestoreArgs) -> anyhow::Result<()> {
    let counted = crate::backup::restore(&args.file, &args.data_dir)?;
    println!(
        "restored {} into {}: {} files, {} bytes; start it with `coracle serve` on that data dir",
        args.file.display(),
        args.data_dir.display(),
        counted.files,
        counted.bytes
    );
    Ok(())
}
