//! Files that must never be torn, and the lock that keeps two runs apart. The state, the LLM
//! answers, recordings and the user's `.git/info/exclude` go through [`write_atomic`]; review
//! artifacts through [`write_artifact`]; every run holds a [`RunLock`].

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another improve run (pid {pid}) is using {dir}: wait for it to finish or stop it first"
    )]
    Locked { dir: String, pid: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A file improve could not write, named in the error.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the artifact {path}: {source}")]
pub struct WriteError {
    pub path: String,
    pub source: std::io::Error,
}

/// Holds a lock until dropped. The kernel releases a `flock` when its process dies, even under
/// `kill -9`, so a lock left by a dead run is taken over without any guesswork about pids.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Takes an exclusive `flock` on `path`, writing our pid into it for the message another run
/// shows (`what` names what is locked). A lock held a moment by a `status` probe is waited out
/// (up to a second).
pub fn lock_file(path: &Path, what: &Path) -> Result<RunLock, LockError> {
    let lock_err = |source| LockError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(lock_err)?;
    let mut tries = 0;
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(lock_err(err));
        }
        tries += 1;
        if tries >= 10 {
            let pid = std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            return Err(LockError::Locked {
                dir: what.display().to_string(),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid
                },
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    file.set_len(0).map_err(lock_err)?;
    writeln!(file, "{}", std::process::id()).map_err(lock_err)?;
    Ok(RunLock { _file: file })
}

/// Whether someone holds the lock on `path`, asked without taking it (so `status` never
/// disturbs a run that is starting).
pub fn is_locked(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0
}

/// The one helper that writes files that must never be torn: state, artifacts the resume
/// relies on, recordings. Temp file in the same folder, write, fsync, rename, fsync the folder:
/// a crash at any instant leaves the previous or the next version.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // A bare file name has an empty parent: that is the current folder.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    // The temp file is created 0600; keep the mode of the file it replaces (the user's
    // .git/info/exclude, say), and make new files readable like any other.
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions())
        .unwrap_or_else(|_| std::os::unix::fs::PermissionsExt::from_mode(0o644));
    tmp.as_file().set_permissions(mode)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// [`write_atomic`], with the path in the error.
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic(path, bytes).map_err(|source| WriteError {
        path: path.display().to_string(),
        source,
    })
}

/// Writes an artifact for the review (prompt, proposal, diff...). Not fsynced: a resume never
/// relies on one (each is made again when its step is redone); only the LLM answers and the
/// state are. It is still renamed into place, so a reader never sees half a file.
pub fn write_artifact(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let written = (|| {
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    })();
    written.map_err(|source| WriteError {
        path: path.display().to_string(),
        source,
    })
}

/// A JSON file written by improve, read back; None when it is missing or does not parse (the
/// step that wrote it is then redone).
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_keep_the_mode_of_the_file_they_replace() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        write_atomic(&path, b"a").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"b").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"b");
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holder_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("lock");
        let first = lock_file(&path, tmp.path()).unwrap();
        assert!(is_locked(&path));
        let err = lock_file(&path, tmp.path()).unwrap_err();
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        assert!(!is_locked(&path));
        lock_file(&path, tmp.path()).unwrap();
    }

    #[test]
    fn an_artifact_in_a_missing_folder_is_written_and_a_bad_path_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b/c.txt");
        write_artifact(&path, b"x").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        let blocked = path.join("under-a-file");
        let err = write_artifact(&blocked, b"y").unwrap_err();
        assert!(err.to_string().contains("under-a-file"), "{err}");
    }
}
