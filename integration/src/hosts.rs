//! Machines of their own inside this one, for tests of what crosses hosts: each [`Host`]
//! is a network namespace (its own addresses, routes and netfilter tables) running its own
//! Docker Engine (own data root, exec root, containerd and socket) and, when started, its
//! own `skiff node`. The hosts and this machine share one L2 segment, a bridge in a
//! namespace of its own ([`Lan`]), on `10.201.<n>.0/24`: this machine is `.1`, host `k` is
//! `.10+k`. Everything is removed when the values are dropped, also when a test fails.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run a command; its output, whatever its status.
fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd} could not be run: {e}"))
}

/// Run a command that must succeed.
fn must(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Stop a child with SIGTERM, then SIGKILL if it is still there after `grace`.
fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on the pid of a child we own and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The segment the hosts share with this machine.
pub struct Lan {
    tag: String,
    net: u8,
    ns: String,
    root_if: String,
}

impl Lan {
    /// `tag` (a few letters) names the namespaces and links, `net` picks `10.201.<net>.0/24`.
    pub fn new(tag: &str, net: u8) -> Lan {
        let lan = Lan {
            tag: tag.to_string(),
            net,
            ns: format!("sk{tag}lan"),
            root_if: format!("sk{tag}r"),
        };
        // What a run that was killed may have left.
        lan.remove();
        must("ip", &["netns", "add", &lan.ns]);
        must("ip", &["-n", &lan.ns, "link", "set", "lo", "up"]);
        must(
            "ip",
            &["-n", &lan.ns, "link", "add", "br0", "type", "bridge"],
        );
        must("ip", &["-n", &lan.ns, "link", "set", "br0", "up"]);
        must(
            "ip",
            &[
                "link",
                "add",
                &lan.root_if,
                "type",
                "veth",
                "peer",
                "name",
                "up0",
                "netns",
                &lan.ns,
            ],
        );
        must(
            "ip",
            &["-n", &lan.ns, "link", "set", "up0", "master", "br0", "up"],
        );
        let addr = format!("{}/24", lan.root_ip());
        must("ip", &["addr", "add", &addr, "dev", &lan.root_if]);
        must("ip", &["link", "set", &lan.root_if, "up"]);
        lan
    }

    /// This machine's address on the segment.
    pub fn root_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, self.net, 1)
    }

    /// Host `k` (1, 2, ...) on the segment, with its Docker Engine running.
    pub fn host(&self, k: u8) -> Host {
        Host::start(self, k)
    }

    fn remove(&self) {
        for i in 1..=9 {
            let _ = run("ip", &["netns", "delete", &format!("sk{}h{i}", self.tag)]);
        }
        let _ = run("ip", &["netns", "delete", &self.ns]);
        let _ = run("ip", &["link", "delete", &self.root_if]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A host: a network namespace with its own Docker Engine and, once started, a node.
pub struct Host {
    pub ns: String,
    pub ip: Ipv4Addr,
    dir: tempfile::TempDir,
    dockerd: Option<Child>,
    node: Option<Child>,
}

impl Host {
    fn start(lan: &Lan, k: u8) -> Host {
        let ns = format!("sk{}h{k}", lan.tag);
        let ip = Ipv4Addr::new(10, 201, lan.net, 10 + k);
        let _ = run("ip", &["netns", "delete", &ns]);
        must("ip", &["netns", "add", &ns]);
        must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        let port = format!("h{k}");
        must(
            "ip",
            &[
                "-n", &lan.ns, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ],
        );
        must(
            "ip",
            &["-n", &lan.ns, "link", "set", &port, "master", "br0", "up"],
        );
        must(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        must("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        // A place of its own for the engine; short, for the sockets' path limit.
        let dir = tempfile::Builder::new()
            .prefix("skh")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let mut host = Host {
            ns,
            ip,
            dir,
            dockerd: None,
            node: None,
        };
        host.start_docker();
        host
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The engine's socket, for `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path("docker.sock").display())
    }

    fn start_docker(&mut self) {
        std::fs::write(self.path("daemon.json"), "{}").expect("daemon.json");
        let log = std::fs::File::create(self.path("dockerd.log")).expect("log");
        // nsenter, not `ip netns exec`: that one remounts /sys, hiding the cgroups.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg("dockerd")
            .arg("--config-file")
            .arg(self.path("daemon.json"))
            .arg("--data-root")
            .arg(self.path("data"))
            .arg("--exec-root")
            .arg(self.path("exec"))
            .arg("--pidfile")
            .arg(self.path("docker.pid"))
            .arg("-H")
            .arg(self.docker_host())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("dockerd");
        self.dockerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.docker(&["info"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Docker Engine of {} did not start: {}",
                self.ns,
                std::fs::read_to_string(self.path("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `docker` against this host's engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        let host = self.docker_host();
        let mut all = vec!["-H", host.as_str()];
        all.extend_from_slice(args);
        run("docker", &all)
    }

    /// Copy images from this machine's engine into the host's.
    pub fn load_images(&self, images: &[&str]) {
        let mut save = Command::new("docker")
            .arg("save")
            .args(images)
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let out = Command::new("docker")
            .args(["-H", &self.docker_host(), "load"])
            .stdin(save.stdout.take().expect("pipe"))
            .output()
            .expect("docker load");
        let saved = save.wait().expect("docker save");
        assert!(saved.success(), "docker save {images:?}: {saved}");
        assert!(
            out.status.success(),
            "docker load into {}: {}",
            self.ns,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A command inside the host's network namespace.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Output {
        let net = format!("--net=/run/netns/{}", self.ns);
        let mut all = vec![net.as_str(), cmd];
        all.extend_from_slice(args);
        run("nsenter", &all)
    }

    /// Start `skiff node` here, joining `server`.
    pub fn start_node(&mut self, skiff: &Path, args: &[String]) {
        let log = std::fs::File::create(self.path("node.log")).expect("log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg(skiff)
            .arg("node")
            .arg("--data-dir")
            .arg(self.path("node"))
            .arg("--address")
            .arg(self.ip.to_string())
            .args(args)
            .env("DOCKER_HOST", self.docker_host())
            .env("SKIFF_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("skiff node");
        self.node = Some(child);
    }

    /// The node's log so far (for assertion messages).
    pub fn node_log(&self) -> String {
        std::fs::read_to_string(self.path("node.log")).unwrap_or_default()
    }

    /// Stop the node (SIGTERM, as a service manager does) and wait for it.
    pub fn stop_node(&mut self) {
        if let Some(mut child) = self.node.take() {
            terminate(&mut child, Duration::from_secs(20));
        }
    }

    /// The ids of the containers of pod `pod`'s container `container` on this host.
    pub fn container_of(&self, pod: &str, container: &str) -> Option<String> {
        let out = self.docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=io.skiff.pod.name={pod}"),
            "--filter",
            &format!("label=io.skiff.container.name={container}"),
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(str::to_string)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop_node();
        let ids = self.docker(&["ps", "-aq"]);
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.docker(&args);
        }
        if let Some(mut child) = self.dockerd.take() {
            terminate(&mut child, Duration::from_secs(20));
        }
        let _ = run("ip", &["netns", "delete", &self.ns]);
        // What the engine may have left mounted under its data root.
        let data = self.path("data");
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
            if m.starts_with(&*data.to_string_lossy())
                || m.starts_with(&*self.path("exec").to_string_lossy())
            {
                let _ = run("umount", &["-l", m]);
            }
        }
    }
}
