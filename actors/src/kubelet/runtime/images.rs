//! Images skiff builds itself, because no registry is reachable: the pause image (from the
//! project's own static pause program, compiled by `build.rs`) and a busybox test image
//! (from Debian's `busybox-static`). Both are `FROM scratch` images built through the
//! engine's build API from a tar context written here, so nothing is ever pulled.

use std::path::Path;
use std::time::Duration;

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use tracing::{debug, info, instrument};

use super::docker::engine_error;
use super::RuntimeError;

/// The pause program compiled by `actors/build.rs` from `pause/pause.c`.
pub const PAUSE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// Tag of the pause image every sandbox runs.
pub const PAUSE_IMAGE: &str = "skiff/pause:1.0";

/// Tag of the busybox test image (httpd, sh, sleep, wget, nc, ...).
pub const BUSYBOX_IMAGE: &str = "skiff/busybox:latest";

/// Where Debian's `busybox-static` installs its binary.
pub const DEBIAN_BUSYBOX: &str = "/bin/busybox";

/// Applets linked in the busybox image's `/bin` (each a symlink to `busybox`).
const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ash", "httpd", "sleep", "echo", "cat", "ls", "wget", "nc", "env", "hostname", "true",
    "false", "kill", "ps", "mkdir", "printf", "test", "[", "grep", "sed", "awk", "head", "tail",
    "wc", "id", "date", "rm", "cp", "mv", "ln", "touch", "chmod", "pwd", "uname", "tr", "cut",
    "sort", "seq", "xargs", "find", "ip", "ifconfig", "netstat", "nslookup", "dd", "df", "du",
    "free", "top", "uptime", "yes", "basename", "dirname", "stat", "timeout", "whoami", "stty",
    "tee", "vi", "ping", "pidof", "killall", "tar", "gzip", "md5sum", "tty",
];

/// A build, even of two small files, must not hang a pod worker forever.
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// One entry of an image's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageFile {
    /// A regular file at `path` (absolute in the image) with permission bits `mode`.
    File {
        path: String,
        contents: Vec<u8>,
        mode: u32,
    },
    /// A symbolic link at `path` pointing at `target` (kept verbatim, may be relative).
    Symlink { path: String, target: String },
    /// A directory at `path` with permission bits `mode` (e.g. 0o1777 for `/tmp`).
    Dir { path: String, mode: u32 },
}

/// The runtime defaults of a built image (Dockerfile `ENTRYPOINT`, `CMD`, `ENV`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The pause image's contents: just `/pause`, which is also its entrypoint.
pub fn pause_image() -> (Vec<ImageFile>, ImageConfig) {
    let files = vec![ImageFile::File {
        path: "/pause".into(),
        contents: PAUSE_BINARY.to_vec(),
        mode: 0o755,
    }];
    let config = ImageConfig {
        entrypoint: vec!["/pause".into()],
        ..ImageConfig::default()
    };
    (files, config)
}

/// The busybox image's contents around a given busybox binary.
pub fn busybox_image(busybox: Vec<u8>) -> (Vec<ImageFile>, ImageConfig) {
    let mut files = vec![
        ImageFile::Dir {
            path: "/bin".into(),
            mode: 0o755,
        },
        ImageFile::Dir {
            path: "/tmp".into(),
            mode: 0o1777,
        },
        ImageFile::Dir {
            path: "/root".into(),
            mode: 0o700,
        },
        // Tools like `id`, `whoami` and httpd's user lookups read these.
        ImageFile::File {
            path: "/etc/passwd".into(),
            contents: b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
                .to_vec(),
            mode: 0o644,
        },
        ImageFile::File {
            path: "/etc/group".into(),
            contents: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
            mode: 0o644,
        },
        ImageFile::File {
            path: "/bin/busybox".into(),
            contents: busybox,
            mode: 0o755,
        },
    ];
    let mut applets: Vec<&str> = BUSYBOX_APPLETS.to_vec();
    applets.sort_unstable();
    applets.dedup();
    files.extend(applets.into_iter().map(|applet| ImageFile::Symlink {
        path: format!("/bin/{applet}"),
        target: "busybox".into(),
    }));
    let config = ImageConfig {
        cmd: vec!["sh".into()],
        env: vec![("PATH".into(), "/bin".into())],
        ..ImageConfig::default()
    };
    (files, config)
}

/// Whether the engine has an image by this reference.
pub async fn image_present(docker: &Docker, image: &str) -> Result<bool, RuntimeError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(engine_error(e, image)),
    }
}

/// Builds [`PAUSE_IMAGE`] when the engine lacks it.
pub async fn ensure_pause_image(docker: &Docker) -> Result<(), RuntimeError> {
    ensure_pause_image_tagged(docker, PAUSE_IMAGE).await
}

/// Serialises "build if missing" across every runtime of the process: several Docker
/// nodes in one process starting pods at once would otherwise each build the same image
/// and leave the losers' copies dangling.
static BUILD_IF_MISSING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Builds the pause image under `tag` when the engine lacks it (tests use their own tag).
pub async fn ensure_pause_image_tagged(docker: &Docker, tag: &str) -> Result<(), RuntimeError> {
    let _building = BUILD_IF_MISSING.lock().await;
    if image_present(docker, tag).await? {
        return Ok(());
    }
    let (files, config) = pause_image();
    build_image(docker, tag, &files, &config).await
}

/// Builds [`BUSYBOX_IMAGE`] from a static busybox binary (Debian: `/bin/busybox` from
/// `busybox-static`).
pub async fn build_busybox_image(docker: &Docker, busybox_path: &Path) -> Result<(), RuntimeError> {
    let busybox = tokio::fs::read(busybox_path).await.map_err(|e| {
        RuntimeError::Failed(format!(
            "cannot read busybox at {}: {e} (Debian: apt-get install busybox-static)",
            busybox_path.display()
        ))
    })?;
    let (mut files, config) = busybox_image(busybox);
    files.extend(libc_resolver().await);
    build_image(docker, BUSYBOX_IMAGE, &files, &config).await
}

/// The host's C library and its `getent`, where present: busybox resolves names with its
/// own code, while applications in pods use the C library's resolver (search path,
/// `ndots`), which a test then exercises with `getent hosts <name>`.
async fn libc_resolver() -> Vec<ImageFile> {
    // (host path, image path): getent goes where the image's PATH finds it.
    const FILES: &[(&str, &str)] = &[
        ("/usr/bin/getent", "/bin/getent"),
        (
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/x86_64-linux-gnu/libc.so.6",
        ),
        ("/lib64/ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2"),
    ];
    let mut files = Vec::new();
    for (host, image) in FILES {
        match tokio::fs::read(host).await {
            Ok(contents) => files.push(ImageFile::File {
                path: image.to_string(),
                contents,
                mode: 0o755,
            }),
            // Another architecture or C library: busybox alone.
            Err(_) => return Vec::new(),
        }
    }
    files.push(ImageFile::File {
        path: "/etc/nsswitch.conf".into(),
        contents: b"hosts: files dns\n".to_vec(),
        mode: 0o644,
    });
    files
}

/// Builds [`BUSYBOX_IMAGE`] only when the engine lacks it.
pub async fn ensure_busybox_image(
    docker: &Docker,
    busybox_path: &Path,
) -> Result<(), RuntimeError> {
    let _building = BUILD_IF_MISSING.lock().await;
    if image_present(docker, BUSYBOX_IMAGE).await? {
        return Ok(());
    }
    build_busybox_image(docker, busybox_path).await
}

/// Builds a `FROM scratch` image holding `files` and tags it `tag`.
#[instrument(skip(docker, files, config), fields(image = %tag, files = files.len()))]
pub async fn build_image(
    docker: &Docker,
    tag: &str,
    files: &[ImageFile],
    config: &ImageConfig,
) -> Result<(), RuntimeError> {
    let context = build_context(files, config)?;
    // The classic builder (the default version) needs no BuildKit session and is what an
    // engine without BuildKit (Debian's docker.io 20.10) offers.
    let options = BuildImageOptionsBuilder::default()
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut progress = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let drain = async {
        while let Some(step) = progress.next().await {
            let info = step.map_err(|e| engine_error(e, tag))?;
            if let Some(line) = info
                .stream
                .as_deref()
                .map(str::trim)
                .filter(|l| !l.is_empty())
            {
                debug!(step = %line, "build");
            }
        }
        Ok::<(), RuntimeError>(())
    };
    tokio::time::timeout(BUILD_TIMEOUT, drain)
        .await
        .map_err(|_| RuntimeError::Failed(format!("building image {tag} timed out")))??;
    // The build stream can end without an error line yet without a tagged image (an
    // engine that lost the connection midway): make sure the result exists.
    if !image_present(docker, tag).await? {
        return Err(RuntimeError::Failed(format!(
            "build of {tag} produced no image"
        )));
    }
    info!("image built");
    Ok(())
}

/// The build context: a `Dockerfile` plus the image's files under `rootfs/`.
pub fn build_context(files: &[ImageFile], config: &ImageConfig) -> Result<Vec<u8>, RuntimeError> {
    let mut tar = TarWriter::default();
    tar.file("Dockerfile", dockerfile(config).as_bytes(), 0o644)?;
    tar.dir("rootfs", 0o755)?;
    for file in files {
        match file {
            ImageFile::File {
                path,
                contents,
                mode,
            } => tar.file(&rootfs_path(path)?, contents, *mode)?,
            ImageFile::Symlink { path, target } => tar.symlink(&rootfs_path(path)?, target)?,
            ImageFile::Dir { path, mode } => tar.dir(&rootfs_path(path)?, *mode)?,
        }
    }
    Ok(tar.finish())
}

/// `COPY rootfs/ /` keeps modes and symlinks; exec-form JSON arrays avoid a shell, which a
/// scratch image does not have.
fn dockerfile(config: &ImageConfig) -> String {
    let mut text = String::from("FROM scratch\nCOPY rootfs/ /\n");
    for (key, value) in &config.env {
        text.push_str(&format!("ENV {key}={}\n", json_string(value)));
    }
    if !config.entrypoint.is_empty() {
        text.push_str(&format!("ENTRYPOINT {}\n", json_array(&config.entrypoint)));
    }
    if !config.cmd.is_empty() {
        text.push_str(&format!("CMD {}\n", json_array(&config.cmd)));
    }
    text
}

fn json_string(value: &str) -> String {
    serde_json::Value::String(value.to_string()).to_string()
}

fn json_array(values: &[String]) -> String {
    serde_json::Value::from(values.to_vec()).to_string()
}

/// `/bin/sh` → `rootfs/bin/sh`; rejects paths that would escape the context.
fn rootfs_path(path: &str) -> Result<String, RuntimeError> {
    let relative = path.trim_start_matches('/');
    let bad = relative.is_empty()
        || relative
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(RuntimeError::Failed(format!("invalid image path {path:?}")));
    }
    Ok(format!("rootfs/{relative}"))
}

const BLOCK: usize = 512;

/// A minimal writer of POSIX ustar archives: regular files, directories and symlinks,
/// owned by root, mtime 0 (deterministic contexts let the engine's build cache hit).
#[derive(Default)]
pub struct TarWriter {
    out: Vec<u8>,
}

#[derive(Clone, Copy)]
enum EntryKind {
    File,
    Symlink,
    Dir,
}

impl EntryKind {
    fn flag(self) -> u8 {
        match self {
            EntryKind::File => b'0',
            EntryKind::Symlink => b'2',
            EntryKind::Dir => b'5',
        }
    }
}

impl TarWriter {
    pub fn file(&mut self, path: &str, contents: &[u8], mode: u32) -> Result<(), RuntimeError> {
        self.header(path, EntryKind::File, mode, contents.len() as u64, "")?;
        self.out.extend_from_slice(contents);
        self.pad();
        Ok(())
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), RuntimeError> {
        self.header(path, EntryKind::Symlink, 0o777, 0, target)
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), RuntimeError> {
        self.header(
            &format!("{}/", path.trim_end_matches('/')),
            EntryKind::Dir,
            mode,
            0,
            "",
        )
    }

    /// The archive with its end marker (two zero blocks).
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&[0; 2 * BLOCK]);
        self.out
    }

    fn pad(&mut self) {
        let rem = self.out.len() % BLOCK;
        if rem != 0 {
            self.out.resize(self.out.len() + BLOCK - rem, 0);
        }
    }

    fn header(
        &mut self,
        path: &str,
        kind: EntryKind,
        mode: u32,
        size: u64,
        link: &str,
    ) -> Result<(), RuntimeError> {
        let mut h = [0u8; BLOCK];
        let (prefix, name) = split_ustar_path(path)?;
        if link.len() > 100 {
            return Err(RuntimeError::Failed(format!(
                "symlink target too long: {link}"
            )));
        }
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], u64::from(mode & 0o7777));
        octal(&mut h[108..116], 0); // uid
        octal(&mut h[116..124], 0); // gid
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 0); // mtime
        h[156] = kind.flag();
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        // The checksum is computed with its own field read as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let digits = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(digits.as_bytes());
        self.out.extend_from_slice(&h);
        Ok(())
    }
}

/// ustar stores names up to 100 bytes, or a prefix of up to 155 bytes, a `/`, and a name.
fn split_ustar_path(path: &str) -> Result<(&str, &str), RuntimeError> {
    if path.len() <= 100 {
        return Ok(("", path));
    }
    let too_long = || RuntimeError::Failed(format!("path too long for ustar: {path}"));
    // Split at the last '/' that leaves both halves within their limits.
    path.char_indices()
        .rfind(|&(i, c)| c == '/' && i <= 155 && path.len() - i - 1 <= 100 && i + 1 < path.len())
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .ok_or_else(too_long)
}

/// Zero-padded octal, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    let digits = &digits.as_bytes()[digits.len().saturating_sub(width)..];
    field[..width].copy_from_slice(digits);
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny ustar reader, enough to check what the writer produced.
    struct Entry {
        name: String,
        flag: u8,
        mode: u32,
        link: String,
        data: Vec<u8>,
    }

    fn field_str(bytes: &[u8]) -> String {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }

    fn field_octal(bytes: &[u8]) -> u64 {
        u64::from_str_radix(field_str(bytes).trim(), 8).unwrap()
    }

    fn read_tar(tar: &[u8]) -> Vec<Entry> {
        assert_eq!(tar.len() % BLOCK, 0);
        let mut entries = Vec::new();
        let mut at = 0;
        while tar[at..at + BLOCK].iter().any(|&b| b != 0) {
            let h = &tar[at..at + BLOCK];
            let mut check = h.to_vec();
            check[148..156].copy_from_slice(b"        ");
            let sum: u64 = check.iter().map(|&b| u64::from(b)).sum();
            assert_eq!(field_octal(&h[148..156]), sum, "checksum");
            assert_eq!(&h[257..263], b"ustar\0");
            let prefix = field_str(&h[345..500]);
            let name = field_str(&h[..100]);
            let size = field_octal(&h[124..136]) as usize;
            let data = tar[at + BLOCK..at + BLOCK + size].to_vec();
            entries.push(Entry {
                name: if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                },
                flag: h[156],
                mode: field_octal(&h[100..108]) as u32,
                link: field_str(&h[157..257]),
                data,
            });
            at += BLOCK + size.div_ceil(BLOCK) * BLOCK;
        }
        assert!(tar[at..].iter().all(|&b| b == 0));
        assert_eq!(tar.len() - at, 2 * BLOCK, "two zero blocks end the archive");
        entries
    }

    #[test]
    fn tar_writer_round_trips_files_dirs_and_symlinks_with_modes() {
        let mut tar = TarWriter::default();
        tar.dir("rootfs/bin", 0o755).unwrap();
        tar.file("rootfs/bin/busybox", b"\x7fELF-ish", 0o755)
            .unwrap();
        tar.symlink("rootfs/bin/sh", "busybox").unwrap();
        tar.dir("rootfs/tmp", 0o1777).unwrap();
        let entries = read_tar(&tar.finish());

        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].name, "rootfs/bin/");
        assert_eq!(entries[0].flag, b'5');
        assert_eq!(entries[1].name, "rootfs/bin/busybox");
        assert_eq!((entries[1].flag, entries[1].mode), (b'0', 0o755));
        assert_eq!(entries[1].data, b"\x7fELF-ish");
        assert_eq!(
            (entries[2].flag, entries[2].link.as_str()),
            (b'2', "busybox")
        );
        assert_eq!(entries[3].mode, 0o1777);
    }

    #[test]
    fn file_data_is_padded_to_whole_blocks() {
        let mut tar = TarWriter::default();
        tar.file("a", &[1; 513], 0o644).unwrap();
        tar.file("b", &[2; 512], 0o600).unwrap();
        let bytes = tar.finish();
        // header + 2 data blocks, header + 1 data block, 2 end blocks.
        assert_eq!(bytes.len(), BLOCK * (3 + 2 + 2));
        let entries = read_tar(&bytes);
        assert_eq!(entries[0].data.len(), 513);
        assert_eq!(entries[1].mode, 0o600);
    }

    #[test]
    fn long_paths_are_split_into_prefix_and_name() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let mut tar = TarWriter::default();
        tar.file(&long, b"x", 0o644).unwrap();
        let entries = read_tar(&tar.finish());
        assert_eq!(entries[0].name, long);
    }

    #[test]
    fn paths_that_cannot_fit_ustar_are_rejected() {
        let mut tar = TarWriter::default();
        assert!(tar.file(&"x".repeat(300), b"", 0o644).is_err());
    }

    #[test]
    fn image_paths_must_stay_inside_the_root() {
        assert_eq!(rootfs_path("/bin/sh").unwrap(), "rootfs/bin/sh");
        assert!(rootfs_path("/../etc/passwd").is_err());
        assert!(rootfs_path("/").is_err());
        assert!(rootfs_path("a//b").is_err());
    }

    #[test]
    fn dockerfile_uses_exec_form_and_quoted_env() {
        let config = ImageConfig {
            entrypoint: vec!["/pause".into()],
            cmd: vec!["sh".into(), "-c".into(), "echo \"hi\"".into()],
            env: vec![("PATH".into(), "/bin".into())],
        };
        assert_eq!(
            dockerfile(&config),
            "FROM scratch\nCOPY rootfs/ /\nENV PATH=\"/bin\"\nENTRYPOINT [\"/pause\"]\n\
             CMD [\"sh\",\"-c\",\"echo \\\"hi\\\"\"]\n"
        );
    }

    #[test]
    fn build_context_holds_the_dockerfile_and_the_rootfs() {
        let (files, config) = busybox_image(b"busybox".to_vec());
        let entries = read_tar(&build_context(&files, &config).unwrap());
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names[0], "Dockerfile");
        assert!(names.contains(&"rootfs/bin/busybox"));
        for applet in [
            "sh", "httpd", "sleep", "wget", "nc", "printf", "test", "hostname",
        ] {
            let link = entries
                .iter()
                .find(|e| e.name == format!("rootfs/bin/{applet}"))
                .unwrap_or_else(|| panic!("{applet} is linked"));
            assert_eq!(link.link, "busybox");
        }
        let dockerfile = String::from_utf8(entries[0].data.clone()).unwrap();
        assert!(dockerfile.contains("CMD [\"sh\"]"));
    }

    #[test]
    fn pause_image_embeds_the_compiled_static_pause_program() {
        assert_eq!(&PAUSE_BINARY[..4], b"\x7fELF");
        let (files, config) = pause_image();
        assert_eq!(config.entrypoint, vec!["/pause".to_string()]);
        assert!(matches!(&files[0], ImageFile::File { path, mode: 0o755, .. } if path == "/pause"));
    }
}
