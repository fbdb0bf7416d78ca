//! The kubelet's atomic writer (pkg/volume/util/atomic_writer.go), for the volumes whose
//! content the kubelet writes: configMap, secret, downwardAPI, projected.
//!
//! A volume directory holds a timestamped directory (`..2026_01_02_15_04_05.123456789`)
//! with the files, a `..data` symlink to it, and one user-visible symlink per top-level
//! name (`key -> ..data/key`). An update writes a new timestamped directory and swaps
//! `..data` with a rename, so a reader sees either the old content or the new, never a mix;
//! then the links of names no longer in the payload go, and the old directory with them.
//! A bind of one file (a `subPath` mount) holds the old inode: it keeps the old content,
//! as in Kubernetes.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The symlink to the current timestamped directory.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";
const MAX_PATH: usize = 4096;
const MAX_SEGMENT: usize = 255;

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    /// Permission bits (0..0777).
    pub mode: u32,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |source| WriteError::Io { what, path, source }
}

/// `validatePath`: relative, no `..` element, nothing starting with `..` (the writer's own
/// names), within the length limits.
pub fn validate_path(path: &str) -> Result<(), WriteError> {
    let bad = |reason| {
        Err(WriteError::InvalidPath {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("must not be empty");
    }
    if path.len() > MAX_PATH {
        return bad("must be less than or equal to 4096 characters");
    }
    if Path::new(path).is_absolute() {
        return bad("must be relative path");
    }
    if path.starts_with("..") {
        return bad("must not start with '..'");
    }
    for segment in path.split('/') {
        if segment == ".." {
            return bad("must not contain '..'");
        }
        if segment.len() > MAX_SEGMENT {
            return bad("each path segment must be less than or equal to 255 characters");
        }
    }
    Ok(())
}

/// The first component of a payload path: the name the user sees in the volume's root.
fn top_level(path: &str) -> Option<String> {
    Path::new(path).components().find_map(|c| match c {
        Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
        _ => None,
    })
}

/// The timestamped directory `..data` points at now, if any.
fn current_dir(dir: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(dir.join(DATA_DIR)).ok()?;
    let full = dir.join(target);
    full.is_dir().then_some(full)
}

/// Whether `dir` already holds exactly `payload`.
fn holds(dir: &Path, payload: &Payload) -> bool {
    let mut files = BTreeSet::new();
    if list_files(dir, dir, &mut files).is_err() {
        return false;
    }
    if files.len() != payload.len() {
        return false;
    }
    payload.iter().all(|(path, file)| {
        let full = dir.join(path);
        let same_mode = std::fs::metadata(&full)
            .map(|m| m.permissions().mode() & 0o7777 == file.mode)
            .unwrap_or(false);
        same_mode && std::fs::read(&full).is_ok_and(|d| d == file.data)
    })
}

fn list_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            list_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

fn timestamped_name() -> String {
    let now = chrono::Utc::now();
    format!(
        "..{}.{}",
        now.format("%Y_%m_%d_%H_%M_%S"),
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Write `payload` into the volume directory `dir` (created if missing). Returns whether
/// anything changed: an unchanged payload is not rewritten.
pub fn write(dir: &Path, payload: &Payload) -> Result<bool, WriteError> {
    for path in payload.keys() {
        validate_path(path)?;
    }
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let old = current_dir(dir);
    if old.as_deref().is_some_and(|o| holds(o, payload)) {
        return Ok(false);
    }

    // 1. The new content, complete, in a directory of its own.
    let name = timestamped_name();
    let ts = dir.join(&name);
    std::fs::create_dir(&ts).map_err(io_err("creating", &ts))?;
    for (path, file) in payload {
        let full = ts.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        std::fs::write(&full, &file.data).map_err(io_err("writing", &full))?;
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(file.mode))
            .map_err(io_err("setting the mode of", &full))?;
    }

    // 2. Swap `..data` in one rename.
    let tmp = dir.join(DATA_DIR_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&name, &tmp).map_err(io_err("linking", &tmp))?;
    let data = dir.join(DATA_DIR);
    std::fs::rename(&tmp, &data).map_err(io_err("renaming to", &data))?;

    // 3. The names the user sees: new ones linked, vanished ones removed.
    let wanted: BTreeSet<String> = payload.keys().filter_map(|p| top_level(p)).collect();
    for top in &wanted {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_DIR).join(top), &link).map_err(io_err("linking", &link))?;
        }
    }
    for entry in std::fs::read_dir(dir).map_err(io_err("reading", dir))? {
        let Ok(entry) = entry else { continue };
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with("..") || wanted.contains(&file_name) {
            continue;
        }
        let _ = std::fs::remove_file(entry.path());
    }

    // 4. The old content goes once nothing points at it.
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    fn payload(items: &[(&str, &str)]) -> Payload {
        items
            .iter()
            .map(|(p, d)| (p.to_string(), file(d, 0o644)))
            .collect()
    }

    #[test]
    fn files_are_links_into_the_data_dir_which_points_at_a_timestamped_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let changed = write(
            dir.path(),
            &payload(&[("color", "blue"), ("conf/a.yaml", "a: 1")]),
        )
        .expect("write");
        assert!(changed);
        let data = std::fs::read_link(dir.path().join(DATA_DIR)).expect("..data link");
        assert!(data.to_string_lossy().starts_with("..20"), "{data:?}");
        assert_eq!(
            std::fs::read_link(dir.path().join("color")).expect("link"),
            Path::new("..data/color")
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("conf")).expect("link"),
            Path::new("..data/conf")
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("conf/a.yaml")).expect("read"),
            "a: 1"
        );
    }

    #[test]
    fn an_update_swaps_the_data_dir_removes_vanished_names_and_the_old_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), &payload(&[("color", "blue"), ("size", "L")])).expect("write");
        let first = std::fs::read_link(dir.path().join(DATA_DIR)).expect("link");
        assert!(!write(dir.path(), &payload(&[("color", "blue"), ("size", "L")])).expect("same"));
        assert_eq!(
            std::fs::read_link(dir.path().join(DATA_DIR)).expect("link"),
            first,
            "an unchanged payload is not rewritten"
        );
        assert!(write(dir.path(), &payload(&[("color", "red")])).expect("update"));
        let second = std::fs::read_link(dir.path().join(DATA_DIR)).expect("link");
        assert_ne!(first, second);
        assert!(!dir.path().join(&first).exists(), "the old dir is removed");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("color")).expect("read"),
            "red"
        );
        assert!(std::fs::symlink_metadata(dir.path().join("size")).is_err());
    }

    #[test]
    fn modes_are_set_and_a_mode_change_alone_is_an_update() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Payload::new();
        p.insert("key".into(), file("x", 0o400));
        write(dir.path(), &p).expect("write");
        let mode = |d: &Path| {
            std::fs::metadata(d.join("key"))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(dir.path()), 0o400);
        p.insert("key".into(), file("x", 0o640));
        assert!(write(dir.path(), &p).expect("write"));
        assert_eq!(mode(dir.path()), 0o640);
    }

    #[test]
    fn paths_that_escape_or_collide_with_the_writers_names_are_refused() {
        for bad in ["/etc/passwd", "../x", "a/../../x", "..data", ""] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
        assert!(validate_path("a/b.c/..d").is_ok());
    }
}
