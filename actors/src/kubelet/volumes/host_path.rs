//! `hostPath`: a path on the node bound as it is, after the check its `type` asks for
//! (pkg/volume/hostpath's `checkType`, with its messages): `DirectoryOrCreate` and
//! `FileOrCreate` create what is missing, the others only check.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::HostPathVolumeSource;

use super::{SetUpContext, VolumeError, VolumePlugin};

pub struct HostPath(pub HostPathVolumeSource);

/// The types Kubernetes knows (the empty string: no check).
pub const TYPES: &[&str] = &[
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];

/// Check (and for the `OrCreate` types, make) `path` as `kind` says.
pub fn check_type(path: &Path, kind: &str) -> Result<(), VolumeError> {
    let meta = std::fs::metadata(path).ok();
    let shown = path.display().to_string();
    let fail = |what| {
        Err(VolumeError::HostPathType {
            path: shown.clone(),
            what,
        })
    };
    let is = |f: fn(&std::fs::FileType) -> bool| meta.as_ref().is_some_and(|m| f(&m.file_type()));
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" if meta.is_none() => {
            std::fs::create_dir_all(path).map_err(VolumeError::io("creating", path))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                .map_err(VolumeError::io("setting the mode of", path))
        }
        "DirectoryOrCreate" | "Directory" => {
            if is(std::fs::FileType::is_dir) {
                Ok(())
            } else {
                fail("directory")
            }
        }
        "FileOrCreate" if meta.is_none() => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(|_| ())
            .map_err(VolumeError::io("creating", path)),
        "FileOrCreate" | "File" => {
            if is(std::fs::FileType::is_file) {
                Ok(())
            } else {
                fail("file")
            }
        }
        "Socket" => {
            if is(FileTypeExt::is_socket) {
                Ok(())
            } else {
                fail("socket file")
            }
        }
        "CharDevice" => {
            if is(FileTypeExt::is_char_device) {
                Ok(())
            } else {
                fail("character device")
            }
        }
        "BlockDevice" => {
            if is(FileTypeExt::is_block_device) {
                Ok(())
            } else {
                fail("block device")
            }
        }
        other => Err(VolumeError::InvalidHostPathType(other.to_string())),
    }
}

#[async_trait::async_trait]
impl VolumePlugin for HostPath {
    fn plugin_dir(&self) -> Option<&'static str> {
        None
    }

    async fn set_up(&self, _ctx: &SetUpContext<'_>, _dir: &Path) -> Result<PathBuf, VolumeError> {
        let path = PathBuf::from(&self.0.path);
        check_type(&path, self.0.type_.as_deref().unwrap_or_default())?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_checks_what_it_names_in_the_kubelets_words() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, "x").expect("write");
        let msg = |p: &Path, t: &str| check_type(p, t).map_err(|e| e.to_string());
        assert!(msg(dir.path(), "Directory").is_ok());
        assert_eq!(
            msg(&file, "Directory"),
            Err(format!(
                "hostPath type check failed: {} is not a directory",
                file.display()
            ))
        );
        assert!(msg(&file, "File").is_ok());
        assert_eq!(
            msg(dir.path(), "File"),
            Err(format!(
                "hostPath type check failed: {} is not a file",
                dir.path().display()
            ))
        );
        let missing = dir.path().join("nope");
        assert!(
            msg(&missing, "Directory").is_err(),
            "Directory does not create"
        );
        assert_eq!(
            msg(&file, "Socket"),
            Err(format!(
                "hostPath type check failed: {} is not a socket file",
                file.display()
            ))
        );
        assert_eq!(
            msg(&file, "CharDevice"),
            Err(format!(
                "hostPath type check failed: {} is not a character device",
                file.display()
            ))
        );
        assert!(msg(Path::new("/dev/null"), "CharDevice").is_ok());
        assert_eq!(
            msg(&file, "BlockDevice"),
            Err(format!(
                "hostPath type check failed: {} is not a block device",
                file.display()
            ))
        );
        assert!(msg(&file, "").is_ok(), "no type, no check");
    }

    #[test]
    fn the_or_create_types_make_what_is_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("a/b");
        check_type(&d, "DirectoryOrCreate").expect("dir");
        assert!(d.is_dir());
        let f = dir.path().join("a/file");
        check_type(&f, "FileOrCreate").expect("file");
        assert!(f.is_file());
        assert!(
            check_type(&f, "DirectoryOrCreate").is_err(),
            "exists as a file"
        );
    }
}
