//! Private PostgreSQL and RabbitMQ, for a machine where the server packages
//! are installed but nothing answers on the stock ports (a laptop after a
//! reboot, a fresh CI image, a container).
//!
//! When a process is given no `DATABASE_URL` (no `AMQP_URL`) and nothing
//! answers on 5432 (5672), the main job and the test suite start a private
//! PostgreSQL cluster (RabbitMQ node, management plugin on) from the
//! installed packages: its own ports ([`POSTGRES_PORT`], [`AMQP_PORT`],
//! [`MANAGEMENT_PORT`]) and data directory under the build's `target/`
//! (`target/switchyard-services/`; as root, PostgreSQL's goes to the system's
//! temporary directory when its `postgres` user cannot enter that), waited for, used, and left running for
//! the next command; `switchyard --stop-services` stops them. Several
//! processes starting at once take a file lock in turn: the first starts a
//! service, the others find it answering. Explicit URLs are never second
//! guessed, and a service that answers on its stock port is used as it is.
//! Every other process ([`resolve`]) only looks: with no URL given and
//! nothing on the stock port, it uses a private service that answers.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::settings::{AMQP_URL, DATABASE_URL, MANAGEMENT_URL, Settings};

/// The private PostgreSQL's port.
pub const POSTGRES_PORT: u16 = 55432;
/// The private RabbitMQ's AMQP port.
pub const AMQP_PORT: u16 = 55672;
/// The private RabbitMQ's management API port.
pub const MANAGEMENT_PORT: u16 = 55673;
/// The private RabbitMQ's Erlang distribution port (its CLI tools use it).
const DISTRIBUTION_PORT: u16 = 55674;
/// The private RabbitMQ's node name.
const NODE_NAME: &str = "switchyard-private@localhost";
/// The stock ports, used as they are when something answers there.
const STOCK_POSTGRES_PORT: u16 = 5432;
const STOCK_AMQP_PORT: u16 = 5672;
/// Longest wait for a private service to answer after its start.
const START_PATIENCE: Duration = Duration::from_secs(120);

/// The private PostgreSQL's URL (database `switchyard`, created if missing).
pub fn private_database_url() -> String {
    format!("postgres://postgres@127.0.0.1:{POSTGRES_PORT}/switchyard")
}

/// The private RabbitMQ's URL (its stock guest account, from loopback).
pub fn private_amqp_url() -> String {
    format!("amqp://guest:guest@127.0.0.1:{AMQP_PORT}/%2f")
}

/// The private RabbitMQ's management API.
pub fn private_management_url() -> String {
    format!("http://127.0.0.1:{MANAGEMENT_PORT}")
}

/// Which server a process without explicit URLs is to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// A URL was given: used as it is.
    Explicit,
    /// Something answers on the stock port: used as it is.
    Stock,
    /// The private service (running, or started by [`ensure`]).
    Private,
    /// Nothing answers anywhere: the stock default, whose error will say so.
    Nothing,
}

/// What [`ensure`] found or did, per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Services {
    /// PostgreSQL.
    pub postgres: Choice,
    /// RabbitMQ.
    pub rabbitmq: Choice,
    /// Whether this call started a private service.
    pub started: bool,
}

/// Why the private services could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LocalServicesError {
    /// The server packages are not installed.
    #[error(
        "{0} not installed, and nothing answers on its stock port. Install the servers, then run \
         the command again:\n  Debian/Ubuntu: sudo apt-get install postgresql rabbitmq-server\n  \
         macOS:         brew install postgresql@17 rabbitmq\n  or, with Docker, the services \
         alone: docker compose up -d rabbitmq postgres\n(or set DATABASE_URL and AMQP_URL to \
         servers elsewhere)"
    )]
    NotInstalled(&'static str),
    /// A private service did not come up.
    #[error("the private {service} did not start: {reason} (its log: {log})")]
    DidNotStart {
        /// Which.
        service: &'static str,
        /// What went wrong.
        reason: String,
        /// Where its log is.
        log: String,
    },
    /// A file or directory of the private services could not be made.
    #[error("cannot prepare {path}: {error}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        error: std::io::Error,
    },
}

/// Whether something accepts connections on `127.0.0.1:port` now.
pub fn answers(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok()
}

/// Where the private services keep their data and logs: `SWITCHYARD_SERVICES_DIR`,
/// else `switchyard-services/` in [`target_directory`].
pub fn directory() -> PathBuf {
    match std::env::var_os("SWITCHYARD_SERVICES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => target_directory().join("switchyard-services"),
    }
}

/// The `target/` directory the running binary was built in (the one that
/// holds Cargo's `CACHEDIR.TAG`), else the system's temporary directory.
pub fn target_directory() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(std::env::temp_dir)
}

/// Makes sure a PostgreSQL and a RabbitMQ answer for a process given
/// `lookup`'s environment, starting the private ones where no URL is given
/// and nothing answers on the stock port (see the module's documentation).
/// Blocks while a service starts (a minute at most; the first start of a
/// node takes longest).
pub fn ensure(lookup: impl Fn(&str) -> Option<String>) -> Result<Services, LocalServicesError> {
    let wants_postgres = lookup(DATABASE_URL).is_none() && !answers(STOCK_POSTGRES_PORT);
    let wants_rabbitmq = lookup(AMQP_URL).is_none() && !answers(STOCK_AMQP_PORT);
    let mut services = Services {
        postgres: choice(
            lookup(DATABASE_URL).is_some(),
            STOCK_POSTGRES_PORT,
            POSTGRES_PORT,
        ),
        rabbitmq: choice(lookup(AMQP_URL).is_some(), STOCK_AMQP_PORT, AMQP_PORT),
        started: false,
    };
    if !wants_postgres && !wants_rabbitmq {
        return Ok(services);
    }
    let dir = directory();
    create_dir(&dir)?;
    // One process at a time starts services; the others then find them.
    let lock_path = dir.join("lock");
    let lock = std::fs::File::create(&lock_path).map_err(|error| io(&lock_path, error))?;
    lock.lock().map_err(|error| io(&lock_path, error))?;
    if wants_postgres && !answers(POSTGRES_PORT) {
        start_postgres(&dir)?;
        services.started = true;
    }
    if wants_rabbitmq && !(answers(AMQP_PORT) && answers(MANAGEMENT_PORT)) {
        start_rabbitmq(&dir)?;
        services.started = true;
    }
    drop(lock);
    if wants_postgres {
        services.postgres = Choice::Private;
    }
    if wants_rabbitmq {
        services.rabbitmq = Choice::Private;
    }
    Ok(services)
}

fn choice(explicit: bool, stock: u16, private: u16) -> Choice {
    if explicit {
        Choice::Explicit
    } else if answers(stock) {
        Choice::Stock
    } else if answers(private) {
        Choice::Private
    } else {
        Choice::Nothing
    }
}

/// `settings` pointed at the private services wherever `lookup` gave no
/// URL, nothing answers on the stock port and the private service answers.
/// Explicit URLs are kept as they are.
pub fn resolve(mut settings: Settings, lookup: impl Fn(&str) -> Option<String>) -> Settings {
    if choice(
        lookup(DATABASE_URL).is_some(),
        STOCK_POSTGRES_PORT,
        POSTGRES_PORT,
    ) == Choice::Private
    {
        settings.database_url = private_database_url().into();
    }
    if choice(lookup(AMQP_URL).is_some(), STOCK_AMQP_PORT, AMQP_PORT) == Choice::Private {
        settings.amqp_url = private_amqp_url().into();
        if lookup(MANAGEMENT_URL).is_none() {
            settings = settings.with_management_url(private_management_url());
        }
    }
    settings
}

/// The settings of the environment, pointed at the private services where
/// [`resolve`] says so: what every binary starts from.
pub fn settings_from_env() -> Result<Settings, crate::settings::SettingsError> {
    let lookup = |name: &str| std::env::var(name).ok();
    Ok(resolve(Settings::from_env()?, lookup))
}

/// `rabbitmqctl`, aimed at the node of the broker URL `amqp_url`: the
/// private node (its name and Erlang cookie) when the URL is the private
/// port on this machine, else the stock node.
pub fn rabbitmqctl(amqp_url: &str) -> Command {
    let private = amqp_url
        .parse::<lapin::uri::AMQPUri>()
        .is_ok_and(|uri| uri.authority.port == AMQP_PORT);
    let ctl = PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmqctl");
    if !private {
        return Command::new("rabbitmqctl");
    }
    let mut command = Command::new(if ctl.is_file() {
        ctl
    } else {
        PathBuf::from("rabbitmqctl")
    });
    command.args(["-n", NODE_NAME]).env(
        "HOME",
        recorded_or("rabbitmq", directory().join("rabbitmq")),
    );
    command
}

/// Where the running private services were started from: the private
/// ports are the same for every checkout, so a node started by one (a
/// second clone, a CI run beside a developer's tree) is the one every
/// other finds answering, and `rabbitmqctl` needs that node's home (its
/// Erlang cookie). Each start records it here. (`stop` stops only its own
/// directory's services: another checkout's tests may be using theirs.)
fn record(service: &str) -> PathBuf {
    std::env::temp_dir().join(format!("switchyard-private-{service}"))
}

fn write_record(service: &str, path: &Path) {
    let _ = std::fs::write(record(service), path.as_os_str().as_encoded_bytes());
}

/// The directory recorded for `service` when it still exists, else
/// `fallback`.
fn recorded_or(service: &str, fallback: PathBuf) -> PathBuf {
    std::fs::read(record(service))
        .ok()
        .map(|bytes| PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()))
        .filter(|path| path.is_dir())
        .unwrap_or(fallback)
}

/// Stops the private services that run; what was stopped.
pub fn stop() -> Result<Vec<&'static str>, LocalServicesError> {
    let dir = directory();
    let mut stopped = Vec::new();
    // Only this directory's: services another checkout started are its own
    // to stop (its tests may be using them).
    let home = postgres_home(&dir)?;
    let data = home.join("postgres");
    if data.join("postmaster.pid").is_file() {
        let mut command = as_postgres_user(&postgres_tool("pg_ctl")?);
        command
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "stop"]);
        run(command, "PostgreSQL", &home.join("postgres.log"))?;
        stopped.push("PostgreSQL");
    }
    let rabbitmq_home = dir.join("rabbitmq");
    let pid_file = rabbitmq_home.join("pid");
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let pid = pid.trim().to_owned();
        let signalled = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        let _ = std::fs::remove_file(&pid_file);
        if signalled {
            // Until the node's process is gone: a node started again
            // before would find its name taken.
            let deadline = Instant::now() + Duration::from_secs(60);
            let alive = || {
                Command::new("kill")
                    .args(["-0", &pid])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            };
            while alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            stopped.push("RabbitMQ");
            if recorded_or("rabbitmq", PathBuf::new()) == rabbitmq_home {
                let _ = std::fs::remove_file(record("rabbitmq"));
            }
        }
    }
    Ok(stopped)
}

fn start_postgres(dir: &Path) -> Result<(), LocalServicesError> {
    let dir = &postgres_home(dir)?;
    let data = dir.join("postgres");
    let log = dir.join("postgres.log");
    let initdb = postgres_tool("initdb")?;
    if !data.join("PG_VERSION").is_file() {
        create_dir(&data)?;
        give_to_postgres_user(dir)?;
        let mut command = as_postgres_user(&initdb);
        command.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ]);
        run(command, "PostgreSQL", &log)?;
    }
    give_to_postgres_user(dir)?;
    let mut command = as_postgres_user(&postgres_tool("pg_ctl")?);
    command
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "60", "-o"])
        .arg(format!(
            "-p {POSTGRES_PORT} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        ))
        .arg("start");
    run(command, "PostgreSQL", &log)?;
    wait_for(POSTGRES_PORT, "PostgreSQL", &log)
}

fn start_rabbitmq(dir: &Path) -> Result<(), LocalServicesError> {
    let server = rabbitmq_server()?;
    let home = dir.join("rabbitmq");
    create_dir(&home.join("log"))?;
    let write = |name: &str, text: &str| {
        let path = home.join(name);
        std::fs::write(&path, text).map_err(|error| io(&path, error))
    };
    write("enabled_plugins", "[rabbitmq_management].\n")?;
    write(
        "rabbitmq.conf",
        &format!(
            "listeners.tcp.default = {AMQP_PORT}\nmanagement.tcp.port = {MANAGEMENT_PORT}\n\
             management.tcp.ip = 127.0.0.1\n"
        ),
    )?;
    let log = home.join("console.log");
    let console = std::fs::File::create(&log).map_err(|error| io(&log, error))?;
    let console_err = console.try_clone().map_err(|error| io(&log, error))?;
    let mut command = Command::new(server);
    command
        .env("RABBITMQ_NODENAME", NODE_NAME)
        .env("RABBITMQ_NODE_PORT", AMQP_PORT.to_string())
        .env("RABBITMQ_DIST_PORT", DISTRIBUTION_PORT.to_string())
        .env("RABBITMQ_MNESIA_BASE", home.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", home.join("log"))
        .env(
            "RABBITMQ_ENABLED_PLUGINS_FILE",
            home.join("enabled_plugins"),
        )
        .env("RABBITMQ_CONFIG_FILE", home.join("rabbitmq.conf"))
        .env("RABBITMQ_PID_FILE", home.join("pid"))
        // The Erlang cookie of the node and of its CLI tools.
        .env("HOME", &home)
        .current_dir(&home)
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(console_err);
    // Its own process group: a Ctrl-C in the terminal that started it
    // does not stop it; it is left running for the next command.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .map_err(|error| LocalServicesError::DidNotStart {
            service: "RabbitMQ",
            reason: error.to_string(),
            log: log.display().to_string(),
        })?;
    let deadline = Instant::now() + START_PATIENCE;
    while !(answers(AMQP_PORT) && answers(MANAGEMENT_PORT)) {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LocalServicesError::DidNotStart {
                service: "RabbitMQ",
                reason: format!("the node exited ({status})"),
                log: log.display().to_string(),
            });
        }
        if Instant::now() >= deadline {
            return Err(LocalServicesError::DidNotStart {
                service: "RabbitMQ",
                reason: format!(
                    "nothing answered on {AMQP_PORT} within {} s",
                    START_PATIENCE.as_secs()
                ),
                log: log.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let pid = home.join("pid");
    if !pid.is_file() {
        let _ = std::fs::File::create(&pid).and_then(|mut file| writeln!(file, "{}", child.id()));
    }
    write_record("rabbitmq", &home);
    Ok(())
}

/// An installed PostgreSQL server tool: in the newest of Debian's
/// `/usr/lib/postgresql/*/bin` or Homebrew's `postgresql@*`, else on the
/// `PATH`.
fn postgres_tool(name: &str) -> Result<PathBuf, LocalServicesError> {
    let roots = [
        Path::new("/usr/lib/postgresql"),
        Path::new("/opt/homebrew/opt"),
        Path::new("/usr/local/opt"),
    ];
    find_postgres_tool(name, &roots, std::env::var_os("PATH"))
}

fn find_postgres_tool(
    name: &str,
    roots: &[&Path],
    path: Option<std::ffi::OsString>,
) -> Result<PathBuf, LocalServicesError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        let debian = root.ends_with("postgresql");
        let mut tools: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|dir| {
                let file = dir.file_name().and_then(|name| name.to_str()).unwrap_or("");
                debian || file.starts_with("postgresql")
            })
            .map(|dir| dir.join("bin").join(name))
            .collect();
        // Newest version first.
        tools.sort_by_key(|tool| std::cmp::Reverse(version_of(tool)));
        candidates.extend(tools);
    }
    candidates.extend(on_path(name, path));
    candidates
        .into_iter()
        .find(|tool| tool.is_file())
        .ok_or(LocalServicesError::NotInstalled(
            "PostgreSQL's server (initdb, pg_ctl) is",
        ))
}

/// The version in the name of the directory that holds `tool`'s `bin/`
/// (`15`, `postgresql@17`).
fn version_of(tool: &Path) -> u32 {
    let name = tool
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .unwrap_or("");
    let digits: String = name
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or(0)
}

/// RabbitMQ's server script: Debian's own (not the `/usr/sbin` wrapper,
/// which runs the system node's user and directories), else on the `PATH`.
fn rabbitmq_server() -> Result<PathBuf, LocalServicesError> {
    find_rabbitmq_server(Path::new("/usr/lib/rabbitmq/bin"), std::env::var_os("PATH"))
}

fn find_rabbitmq_server(
    debian: &Path,
    path: Option<std::ffi::OsString>,
) -> Result<PathBuf, LocalServicesError> {
    std::iter::once(debian.join("rabbitmq-server"))
        .chain(on_path("rabbitmq-server", path))
        .find(|server| server.is_file())
        .ok_or(LocalServicesError::NotInstalled(
            "RabbitMQ's server (rabbitmq-server) is",
        ))
}

fn on_path(name: &str, path: Option<std::ffi::OsString>) -> Vec<PathBuf> {
    path.map(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .collect()
    })
    .unwrap_or_default()
}

/// PostgreSQL refuses to run as root: as root, its tools run as the
/// `postgres` user its package made, on a data directory given to it.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

fn as_postgres_user(tool: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(tool);
        command
    } else {
        Command::new(tool)
    }
}

/// Where the private PostgreSQL keeps its data directory and log: beside
/// the other service in `dir`, unless PostgreSQL runs as the `postgres`
/// user (see [`is_root`]) and that user cannot enter `dir` (a checkout
/// under a private home or a `mktemp -d` directory): then in a directory
/// of the system's temporary directory named after `dir`, so that
/// [`stop`] finds the same one.
fn postgres_home(dir: &Path) -> Result<PathBuf, LocalServicesError> {
    if !is_root() || postgres_user_enters(dir) {
        return Ok(dir.to_path_buf());
    }
    let digest = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let name: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let home = std::env::temp_dir().join(format!("switchyard-postgres-{name}"));
    create_dir(&home)?;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755))
        .map_err(|error| io(&home, error))?;
    Ok(home)
}

/// Whether the `postgres` user can reach `dir` (every directory above it
/// searchable). Missing directories are made first, as [`ensure`] does.
fn postgres_user_enters(dir: &Path) -> bool {
    let _ = std::fs::create_dir_all(dir);
    Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn give_to_postgres_user(dir: &Path) -> Result<(), LocalServicesError> {
    if !is_root() {
        return Ok(());
    }
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir.join("postgres"))
        .status()
        .map_err(|error| io(dir, error))?;
    if !status.success() {
        return Err(LocalServicesError::DidNotStart {
            service: "PostgreSQL",
            reason: "its data directory could not be given to the postgres user".to_owned(),
            log: dir.display().to_string(),
        });
    }
    // The log file lies beside the data directory.
    let log = dir.join("postgres.log");
    if !log.exists() {
        std::fs::File::create(&log).map_err(|error| io(&log, error))?;
    }
    let _ = Command::new("chown")
        .arg("postgres:postgres")
        .arg(&log)
        .status();
    Ok(())
}

fn run(mut command: Command, service: &'static str, log: &Path) -> Result<(), LocalServicesError> {
    let output =
        command
            .stdin(Stdio::null())
            .output()
            .map_err(|error| LocalServicesError::DidNotStart {
                service,
                reason: error.to_string(),
                log: log.display().to_string(),
            })?;
    if output.status.success() {
        return Ok(());
    }
    Err(LocalServicesError::DidNotStart {
        service,
        reason: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        log: log.display().to_string(),
    })
}

fn wait_for(port: u16, service: &'static str, log: &Path) -> Result<(), LocalServicesError> {
    let deadline = Instant::now() + START_PATIENCE;
    while !answers(port) {
        if Instant::now() >= deadline {
            return Err(LocalServicesError::DidNotStart {
                service,
                reason: format!("nothing answered on {port}"),
                log: log.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn create_dir(path: &Path) -> Result<(), LocalServicesError> {
    std::fs::create_dir_all(path).map_err(|error| io(path, error))
}

fn io(path: &Path, error: std::io::Error) -> LocalServicesError {
    LocalServicesError::Io {
        path: path.display().to_string(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_server_packages_are_named_with_the_commands_that_install_them() {
        let nowhere = std::env::temp_dir().join("switchyard-no-such-dir");
        let error = find_postgres_tool("initdb", &[&nowhere], None).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("PostgreSQL's server (initdb, pg_ctl) is not installed"),
            "{message}"
        );
        for command in [
            "sudo apt-get install postgresql rabbitmq-server",
            "brew install postgresql@17 rabbitmq",
            "docker compose up -d rabbitmq postgres",
        ] {
            assert!(message.contains(command), "{message}");
        }
        let error =
            find_rabbitmq_server(&nowhere, Some(nowhere.clone().into_os_string())).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("RabbitMQ's server (rabbitmq-server) is not installed")
        );
    }

    #[test]
    fn the_newest_installed_postgresql_is_found_and_the_path_comes_after() {
        let root = std::env::temp_dir().join(format!("switchyard-pg-{}", std::process::id()));
        for version in ["9", "15", "13"] {
            let bin = root.join("postgresql").join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("initdb"), "").unwrap();
        }
        let on_path = root.join("path");
        std::fs::create_dir_all(&on_path).unwrap();
        std::fs::write(on_path.join("initdb"), "").unwrap();
        let found = find_postgres_tool(
            "initdb",
            &[&root.join("postgresql")],
            Some(on_path.clone().into_os_string()),
        )
        .unwrap();
        assert_eq!(found, root.join("postgresql/15/bin/initdb"));
        let found =
            find_postgres_tool("initdb", &[], Some(on_path.clone().into_os_string())).unwrap();
        assert_eq!(found, on_path.join("initdb"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn postgres_keeps_its_data_where_the_postgres_user_can_reach_it() {
        let private =
            std::env::temp_dir().join(format!("switchyard-private-parent-{}", std::process::id()));
        let dir = private.join("checkout/target/switchyard-services");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let home = postgres_home(&dir).unwrap();
        if is_root() {
            assert_ne!(
                home, dir,
                "postgres cannot enter a 0700 directory's children"
            );
            assert!(
                postgres_user_enters(&home),
                "{} is out of reach",
                home.display()
            );
            // The same place every time, so that a stop finds it.
            assert_eq!(postgres_home(&dir).unwrap(), home);
            std::fs::remove_dir_all(&home).unwrap();
            std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(postgres_home(&dir).unwrap(), dir);
        } else {
            assert_eq!(home, dir);
        }
        std::fs::remove_dir_all(&private).unwrap();
    }

    #[test]
    fn the_recorded_home_of_a_running_node_is_found_and_a_stale_one_ignored() {
        let service = format!("test-record-{}", std::process::id());
        let fallback = PathBuf::from("/nowhere/fallback");
        assert_eq!(recorded_or(&service, fallback.clone()), fallback);
        let home = std::env::temp_dir().join(format!("{service}-home"));
        std::fs::create_dir_all(&home).unwrap();
        write_record(&service, &home);
        assert_eq!(recorded_or(&service, fallback.clone()), home);
        std::fs::remove_dir_all(&home).unwrap();
        assert_eq!(
            recorded_or(&service, fallback.clone()),
            fallback,
            "gone: stale"
        );
        std::fs::remove_file(record(&service)).unwrap();
    }

    #[test]
    fn explicit_urls_are_never_second_guessed() {
        let lookup = |name: &str| match name {
            "DATABASE_URL" => Some("postgres://app@db.example:6543/app".to_owned()),
            "AMQP_URL" => Some("amqp://app:secret@mq.example:5673/%2f".to_owned()),
            _ => None,
        };
        let settings = Settings::from_lookup(lookup).unwrap();
        let resolved = resolve(settings, lookup);
        assert_eq!(
            resolved.expose_database_url(),
            "postgres://app@db.example:6543/app"
        );
        assert_eq!(
            resolved.expose_amqp_url(),
            "amqp://app:secret@mq.example:5673/%2f"
        );
        assert_eq!(resolved.management_url(), None);
    }

    #[test]
    fn rabbitmqctl_is_aimed_at_the_private_node_only_for_the_private_port() {
        let private = rabbitmqctl(&private_amqp_url());
        let arguments: Vec<_> = private.get_args().collect();
        assert_eq!(arguments, ["-n", NODE_NAME]);
        let stock = rabbitmqctl(crate::settings::DEFAULT_AMQP_URL);
        assert_eq!(stock.get_args().count(), 0);
    }
}
