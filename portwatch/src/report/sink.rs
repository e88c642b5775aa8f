//! Report sinks: files written atomically into an output directory (temporary file in the same
//! directory, fsync, rename, then fsync of the directory), so a reader never sees half a report.
use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Format, Report, render};

/// Why a report file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create report directory {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write report file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("report file name {name:?} is not a plain file name (expected no directory parts)")]
    BadName { name: String },
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Permissions of report files (before the umask).
#[cfg(unix)]
pub const REPORT_MODE: u32 = 0o640;

/// Writes `dir/name` atomically with what `fill` writes. Creates `dir` if needed. On error the
/// previous file (if any) is left untouched and no temporary file remains.
pub fn write_atomic(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<PathBuf, SinkError> {
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(SinkError::BadName {
            name: name.to_owned(),
        });
    }
    fs::create_dir_all(dir).map_err(|source| SinkError::CreateDir {
        dir: dir.to_owned(),
        source,
    })?;
    let path = dir.join(name);
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let werr = |source| SinkError::Write {
        path: path.clone(),
        source,
    };
    let result = (|| -> io::Result<()> {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        // Reports name hosts, peers and processes: owner read-write, group read, nobody else.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, REPORT_MODE);
        let f = opts.open(&tmp)?;
        let mut bw = BufWriter::new(f);
        fill(&mut bw)?;
        let f = bw.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)?;
        sync_dir(dir)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(werr(e));
    }
    Ok(path)
}

/// Makes the rename durable (a directory fsync on Unix; Windows has no equivalent).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// A file stem for a node's latest report: `portwatch-<node>` (characters outside
/// `[A-Za-z0-9._-]` become `_`).
pub fn latest_stem(r: &Report) -> String {
    format!("portwatch-{}", safe(&r.node.name))
}

/// A file stem for a node's report at the end of its window:
/// `portwatch-<node>-<YYYYMMDDTHHMMSSZ>`.
pub fn timestamped_stem(r: &Report) -> String {
    let t: String = r
        .window
        .end
        .utc
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    format!("{}-{t}", latest_stem(r))
}

fn safe(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// Writes the report in each format as `dir/<stem>.<ext>`, atomically; returns the paths.
pub fn write_report(
    dir: &Path,
    stem: &str,
    report: &Report,
    formats: &[Format],
) -> Result<Vec<PathBuf>, SinkError> {
    formats
        .iter()
        .map(|f| {
            write_atomic(dir, &format!("{stem}.{}", f.extension()), |mut w| {
                render(report, *f, &mut w)
            })
        })
        .collect()
}
