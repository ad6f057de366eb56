//! A throwaway PostgreSQL server for tests that need a real one (history store, SQL catalog):
//! started from Debian's binaries in a temp dir on a loopback port, stopped when dropped. It
//! must not know what the tests store in it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::common::{ChildGuard, free_port};

/// A random number, different on every call (for passwords and random delays).
pub fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// A throwaway PostgreSQL server in a temp dir, on a loopback port picked at run time, with
/// password authentication over TCP. Stopped (fast shutdown) when dropped.
pub struct PostgresServer {
    pub server: ChildGuard,
    pub port: u16,
    pub password: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The directory holding `initdb` and `postgres`: `pg_config --bindir`, Debian's
/// `/usr/lib/postgresql/<version>/bin`, or `PATH`.
pub fn postgres_bindir() -> Option<PathBuf> {
    let has_binaries = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(|entry| entry.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    let on_path =
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect::<Vec<_>>()).unwrap_or_default();
    from_pg_config.into_iter().chain(debian.into_iter().rev()).chain(on_path).find(|dir| has_binaries(dir))
}

fn id_of(flag: &str, user: Option<&str>) -> u32 {
    let output = Command::new("id").arg(flag).args(user).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap()
}

impl PostgresServer {
    pub fn start(bindir: &Path) -> PostgresServer {
        let dir = tempfile::tempdir().unwrap();
        // PostgreSQL refuses to run as root: as root, run it as the `postgres` user.
        let owner = (id_of("-u", None) == 0).then(|| (id_of("-u", Some("postgres")), id_of("-g", Some("postgres"))));
        let as_owner = |command: &mut Command| {
            if let Some((uid, gid)) = owner {
                command.uid(uid).gid(gid);
            }
        };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let password = format!("pw-{:x}", random_u64());
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, &password).unwrap();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&password_file, Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--no-sync", "--auth-local=trust"])
            .args(["--auth-host=scram-sha-256", "--pwfile"])
            .arg(&password_file)
            .current_dir(dir.path());
        as_owner(&mut initdb);
        let output = initdb.stdin(Stdio::null()).output().unwrap();
        assert!(output.status.success(), "initdb failed: {}", String::from_utf8_lossy(&output.stderr));
        let port = free_port();
        let log = dir.path().join("postgres.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut postgres = Command::new(bindir.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .arg("-k")
            .arg(dir.path())
            .current_dir(dir.path())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        as_owner(&mut postgres);
        let server = ChildGuard::spawn("postgres", &mut postgres);
        PostgresServer { server, port, password, log, _dir: dir }
    }

    pub fn uri(&self, password: &str) -> String {
        format!("postgres://postgres:{password}@127.0.0.1:{}/postgres", self.port)
    }

    /// The server log so far, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the server accepts password logins over TCP.
    pub async fn wait_ready(&self) {
        let uri = self.uri(&self.password);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match sqlx::postgres::PgConnection::connect(&uri).await {
                Ok(connection) => {
                    let _ = connection.close().await;
                    return;
                }
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("postgres did not come up: {error}\nlog:\n{}", self.log_text()),
            }
        }
    }

    /// Creates the database `name` (waits for the server first) and returns its URI.
    pub async fn create_database(&self, name: &str) -> String {
        self.wait_ready().await;
        let mut connection = sqlx::postgres::PgConnection::connect(&self.uri(&self.password)).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut connection).await.unwrap();
        let _ = connection.close().await;
        self.database_uri(name, &self.password)
    }

    /// The URI of database `name` on this server, logging in with `password`.
    pub fn database_uri(&self, name: &str, password: &str) -> String {
        format!("postgres://postgres:{password}@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown; ChildGuard's own drop SIGKILLs what is left.
        let _ = Command::new("kill").arg("-INT").arg(self.server.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
