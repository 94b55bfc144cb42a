//! Servers of a test's own, for faults that would disturb the shared ones:
//! a tansu broker that can be paused or lose its data, and a PostgreSQL
//! cluster that can be restarted. Both listen on free loopback ports.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free loopback port (free when asked; taken right after by the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Waits until something accepts connections on `port`.
async fn wait_for_port(port: u16, what: &str) {
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < until,
            "{what} did not listen on 127.0.0.1:{port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `name` on PATH, else where `cargo install` or Debian put it.
fn program(name: &str, elsewhere: &[PathBuf]) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(elsewhere.iter().cloned())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed (scripts/test.sh installs what the tests need)")
        })
}

fn signal(child: &Child, signal: i32) {
    let pid = i32::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) on the pid of our own child process.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "signal {signal} sent"
    );
}

/// A tansu broker with memory storage: it keeps nothing across a restart.
pub struct Broker {
    port: u16,
    child: Child,
}

impl Broker {
    pub async fn start() -> Self {
        let port = free_port();
        let child = Self::spawn(port);
        wait_for_port(port, "tansu").await;
        Self { port, child }
    }

    fn spawn(port: u16) -> Child {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
            .unwrap_or_default();
        let url = format!("tcp://127.0.0.1:{port}");
        Command::new(program("tansu", &[home.join("bin")]))
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts")
    }

    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker without closing its connections (SIGSTOP): it
    /// answers nothing until [`Broker::resume`].
    pub fn pause(&self) {
        signal(&self.child, libc::SIGSTOP);
    }

    pub fn resume(&self) {
        signal(&self.child, libc::SIGCONT);
    }

    /// Kills the broker (SIGKILL) and starts an empty one on the same port:
    /// every topic and message is gone.
    pub async fn lose_everything(&mut self) {
        self.child.kill().expect("tansu killed");
        self.child.wait().expect("tansu gone");
        self.child = Self::spawn(self.port);
        wait_for_port(self.port, "tansu").await;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL cluster of the test's own, made with the machine's
/// PostgreSQL programs (as the `postgres` account when run as root, which
/// PostgreSQL refuses to run as).
pub struct Postgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl Postgres {
    pub async fn start() -> Self {
        let installed: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|versions| versions.flatten().map(|v| v.path().join("bin")).collect())
            .unwrap_or_default();
        let pg_ctl = program("pg_ctl", &installed);
        let bin = pg_ctl.parent().expect("a folder").to_owned();
        let dir = std::env::temp_dir().join(format!("accountable-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a folder for the cluster");
        let cluster = Self {
            port: free_port(),
            dir,
            bin,
        };
        if running_as_root() {
            cluster.run(
                OsStr::new("chown"),
                &[OsStr::new("postgres"), cluster.dir.as_os_str()],
                false,
            );
        }
        let initdb = cluster.bin.join("initdb");
        cluster.run(
            initdb.as_os_str(),
            &[
                OsStr::new("-D"),
                cluster.dir.as_os_str(),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("--auth=trust"),
                OsStr::new("--no-sync"),
            ],
            true,
        );
        cluster.start_again().await;
        cluster
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (fast shutdown: sessions are ended, as in a restart).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast"]);
    }

    pub async fn start_again(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        self.pg_ctl(&["start", "-l", &log.to_string_lossy(), "-o", &options]);
        wait_for_port(self.port, "PostgreSQL").await;
    }

    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut all = vec![OsStr::new("-D"), self.dir.as_os_str(), OsStr::new("-w")];
        all.extend(args.iter().map(OsStr::new));
        self.run(pg_ctl.as_os_str(), &all, true);
    }

    /// Runs `program` to its end, as `postgres` when asked and run as root.
    fn run(&self, program: &OsStr, args: &[&OsStr], as_postgres: bool) {
        let output = command(program, as_postgres)
            .args(args)
            .output()
            .expect("the program runs");
        assert!(
            output.status.success(),
            "{program:?} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = command(self.bin.join("pg_ctl").as_os_str(), true)
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `program`, run as `postgres` when asked and run as root.
fn command(program: &OsStr, as_postgres: bool) -> Command {
    if as_postgres && running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
